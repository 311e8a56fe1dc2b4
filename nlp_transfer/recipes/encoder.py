"""BERT-style encoders (BERT, RoBERTa, DistilBERT, MiniLM, DeBERTa, ...).

``auto`` pooling is the architecture's own: the pooler where the model has one (BERT),
else the first token (RoBERTa, DistilBERT, DeBERTa all classify from it).
"""

from __future__ import annotations

from nlp_transfer.config import ModelConfig
from nlp_transfer.data.chunking import LongTextSpec
from nlp_transfer.errors import ModelError
from nlp_transfer.models.classifier import TextClassifier, build_head, enable_gradient_checkpointing
from nlp_transfer.models.hub import check_max_length, load_backbone


def assemble(cfg: ModelConfig, backbone, pooling: str, labels: list[str], kind: str, **meta) -> TextClassifier:
    """Backbone + a fresh head for ``labels``; ``meta`` (with the head's settings) is saved with it."""
    check_max_length(cfg, backbone.config)
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
        "feature_layer": backbone.config.num_hidden_layers if cfg.feature_layer is not None else None,
        "gguf_file": cfg.gguf_file,  # not a manifest field of its own: an adapter run records it with its base
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
