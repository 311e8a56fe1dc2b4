"""Recipe modules: build a classifier and its tokenizer from a checkpoint."""

from .encoder import build_encoder_classifier, resolve_checkpoint

__all__ = ["build_encoder_classifier", "resolve_checkpoint"]
