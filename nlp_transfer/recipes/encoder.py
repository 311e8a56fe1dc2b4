"""BERT-style encoders (BERT, RoBERTa, DistilBERT, MiniLM, DeBERTa, ...).

``auto`` pooling is the architecture's own: the pooler where the model has one (BERT),
else the first token (RoBERTa, DistilBERT, DeBERTa all classify from it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import catalog
from ..chunking import LongTextSpec
from ..config import ModelConfig
from ..errors import ModelError
from ..modeling import TextClassifier, _quiet, build_head, enable_gradient_checkpointing


def resolve_checkpoint(name_or_path: str, gguf_file: str | None = None) -> str:
    """A catalog short name, an existing local directory, or a hub id (returned as given).

    With ``gguf_file``: the cached ordinary checkpoint converted from that GGUF file.
    """
    if gguf_file is not None:
        from ..gguf import gguf_checkpoint, locate_gguf

        return str(gguf_checkpoint(locate_gguf(name_or_path, gguf_file)))
    local = catalog.resolve_model(name_or_path)
    if local is not None:
        return str(local)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"checkpoint directory '{name_or_path}' has no config.json; point model.name_or_path at a saved model")
        return str(p)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(
            f"checkpoint path '{name_or_path}' does not exist; fix model.name_or_path "
            f"(catalog names: {', '.join(catalog.MODELS)})"
        )
    return name_or_path  # a hub id, for online users


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return _quiet(AutoTokenizer.from_pretrained, path)
    except OSError as e:
        raise ModelError(f"could not load a tokenizer from '{path}': {str(e).splitlines()[0]}") from None


def _random_backbone(path: str):
    """The checkpoint's architecture with fresh random weights (``model.pretrained: false``)."""
    from transformers import AutoConfig, AutoModel

    return _quiet(AutoModel.from_config, _quiet(AutoConfig.from_pretrained, path))


def load_backbone(cfg: ModelConfig):
    """(backbone, tokenizer) of ``cfg``'s checkpoint: pretrained weights, or random ones with
    ``model.pretrained: false``, in ``model.backbone_dtype``."""
    from transformers import AutoModel

    path = resolve_checkpoint(cfg.name_or_path, cfg.gguf_file)
    try:
        dtype = getattr(torch, cfg.backbone_dtype)
        backbone = _quiet(AutoModel.from_pretrained, path, dtype=dtype) if cfg.pretrained else _random_backbone(path).to(dtype)
    except OSError as e:
        raise ModelError(
            f"could not load checkpoint '{cfg.name_or_path}': {str(e).splitlines()[0]} "
            f"(catalog names: {', '.join(catalog.MODELS)})"
        ) from None
    return backbone, load_tokenizer(path)


def assemble(cfg: ModelConfig, backbone, pooling: str, labels: list[str], kind: str, **meta) -> TextClassifier:
    """Backbone + a fresh head for ``labels``; ``meta`` (with the head's settings) is saved with it."""
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    head = build_head(backbone.config.hidden_size, len(labels), cfg.head, cfg.head_dropout, cfg.head_hidden_size, cfg.head_activation)
    meta = {
        "kind": kind,
        "head": cfg.head,
        "head_dropout": cfg.head_dropout,
        "head_hidden_size": cfg.head_hidden_size,
        "head_activation": cfg.head_activation,
        "max_length": cfg.max_length,
        "long_text": LongTextSpec.from_config(cfg).to_meta(),
        "source_checkpoint": cfg.name_or_path,
        **meta,
    }
    return TextClassifier(backbone, head, pooling, labels, meta)


def build_encoder_classifier(cfg: ModelConfig, labels: list[str]) -> tuple[TextClassifier, object]:
    """(model, tokenizer) for an encoder checkpoint with a fresh head for ``labels``."""
    backbone, tokenizer = load_backbone(cfg)
    has_pooler = getattr(backbone, "pooler", None) is not None
    pooling = cfg.pooling
    if pooling == "auto":
        pooling = "pooler" if has_pooler else "cls"
    if pooling == "pooler" and not has_pooler:
        raise ModelError(f"model.pooling='pooler' but '{cfg.name_or_path}' has no pooler; use cls, mean, max or last")
    if has_pooler and pooling != "pooler":
        backbone.pooler = None  # unused: saves compute and keeps DDP free of unused parameters
    return assemble(cfg, backbone, pooling, labels, "encoder"), tokenizer
