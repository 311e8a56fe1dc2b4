"""Checkpoints by name: catalog short names, local directories, GGUF files, hub ids; their backbones and tokenizers."""

from __future__ import annotations

from pathlib import Path

import torch

from nlp_transfer.config import ModelConfig
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.models import catalog
from nlp_transfer.models.layers import keep_layers
from nlp_transfer.utils.logs import quiet


def resolve_checkpoint(name_or_path: str, gguf_file: str | None = None) -> str:
    """A catalog short name, an existing local directory, or a hub id (returned as given).

    With ``gguf_file``: the cached ordinary checkpoint converted from that GGUF file.
    """
    if gguf_file is not None:
        from nlp_transfer.models.gguf import gguf_checkpoint, locate_gguf

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
            f"checkpoint path '{name_or_path}' does not exist; fix model.name_or_path (catalog names: {', '.join(catalog.MODELS)})"
        )
    return name_or_path  # a hub id, for online users


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return quiet(AutoTokenizer.from_pretrained, path)
    except OSError as e:
        raise ModelError(f"could not load a tokenizer from '{path}': {str(e).splitlines()[0]}") from None


def _random_backbone(path: str):
    """The checkpoint's architecture with fresh random weights (``model.pretrained: false``)."""
    from transformers import AutoConfig, AutoModel

    return quiet(AutoModel.from_config, quiet(AutoConfig.from_pretrained, path))


def load_backbone(cfg: ModelConfig):
    """(backbone, tokenizer) of ``cfg``'s checkpoint: pretrained weights, or random ones with
    ``model.pretrained: false``, in ``model.backbone_dtype``; with ``model.feature_layer``, cut above that layer."""
    from transformers import AutoModel

    path = resolve_checkpoint(cfg.name_or_path, cfg.gguf_file)
    try:
        dtype = getattr(torch, cfg.backbone_dtype)
        backbone = quiet(AutoModel.from_pretrained, path, dtype=dtype) if cfg.pretrained else _random_backbone(path).to(dtype)
    except OSError as e:
        raise ModelError(
            f"could not load checkpoint '{cfg.name_or_path}': {str(e).splitlines()[0]} (catalog names: {', '.join(catalog.MODELS)})"
        ) from None
    if cfg.feature_layer is not None:  # the layers above it never run: drop them
        keep_layers(backbone, cfg.feature_layer, f"'{cfg.name_or_path}'")
    return backbone, load_tokenizer(path)


def grow_embeddings(backbone, vocab_size: int) -> None:
    """Grow the input embeddings to ``vocab_size`` rows (a token the tokenizer added, e.g. ``<pad>``).

    The new rows are drawn from a fixed seed, so rebuilding the same checkpoint (an adapter
    run's base, reloaded) gives the same rows, and the same weights fingerprint.
    """
    if vocab_size <= backbone.get_input_embeddings().num_embeddings:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone.resize_token_embeddings(vocab_size, mean_resizing=False)


def position_limit(config) -> int | None:
    """The most positions the architecture can read (``max_position_embeddings``), or None without a limit."""
    n = getattr(config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def check_max_length(cfg: ModelConfig, config) -> None:
    """``model.max_length`` beyond the checkpoint's position embeddings fails in one line, naming the limit."""
    limit = position_limit(config)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(
            f"model.max_length={cfg.max_length} exceeds what '{cfg.name_or_path}' can read: {limit} positions "
            f"(its config's max_position_embeddings); set model.max_length to at most {limit}, "
            "and model.chunking=true to use longer texts whole"
        )
