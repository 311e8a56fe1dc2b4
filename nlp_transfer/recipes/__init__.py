"""Recipe modules: build a classifier and its tokenizer from a checkpoint.

:mod:`~nlp_transfer.recipes.encoder` for BERT-style encoders, :mod:`~nlp_transfer.recipes.decoder`
for GPT-style decoders; :func:`build_classifier` picks by the checkpoint's config.
"""

from nlp_transfer.config import ModelConfig
from nlp_transfer.models.hub import resolve_checkpoint
from nlp_transfer.recipes.decoder import build_decoder_classifier, is_decoder_checkpoint
from nlp_transfer.recipes.encoder import build_encoder_classifier


def build_classifier(cfg, labels: list[str]):
    """(model, tokenizer) for ``cfg`` (a RecipeConfig or its ModelConfig): the recipe module of the checkpoint's architecture."""
    model_cfg = cfg if isinstance(cfg, ModelConfig) else cfg.model
    if is_decoder_checkpoint(model_cfg):
        return build_decoder_classifier(model_cfg, labels)
    return build_encoder_classifier(model_cfg, labels)


__all__ = ["build_classifier", "build_encoder_classifier", "build_decoder_classifier", "is_decoder_checkpoint", "resolve_checkpoint"]
