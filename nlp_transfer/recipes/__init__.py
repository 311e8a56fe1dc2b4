"""Recipe modules: build a classifier and its tokenizer from a checkpoint."""

from .decoder import build_decoder_classifier, is_decoder_checkpoint
from .encoder import build_encoder_classifier, resolve_checkpoint

__all__ = ["build_encoder_classifier", "build_decoder_classifier", "is_decoder_checkpoint", "resolve_checkpoint"]
