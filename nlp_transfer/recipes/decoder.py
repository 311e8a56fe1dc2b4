"""GPT-style decoders (GPT-2, Llama, SmolLM, Qwen, Mistral, ...): causal language models as backbones.

The base model (``AutoModel``: no language-model head) carries the classification head, as
for encoders. What differs, and is handled here so users never meet it:

- **Pad token.** Many decoder tokenizers have none. The end-of-sequence token serves (the
  attention mask hides padding, so sharing its id is harmless; the vocabulary is unchanged);
  only a tokenizer without one gets a new ``<pad>`` token and a grown embedding matrix.
  The model config's ``pad_token_id`` follows.
- **Pooling.** Under causal attention only the last real token has seen the whole text, so
  ``auto`` pooling is ``last`` (found from the mask, with padding on either side). ``cls``
  would read a token that has seen nothing after it, and is refused.
- **Positions.** Hugging Face decoders number positions from the first column, padding
  included, so left padding shifts them (absolute embeddings such as GPT-2's then change the
  output). ``TextClassifier`` passes position ids counted over real tokens for ``kind:
  decoder`` models: a text gives the same logits alone or in a batch, padded left or right.
- **No cache.** ``use_cache`` is switched off: a classifier never generates.
"""

from __future__ import annotations

from nlp_transfer.config import ModelConfig
from nlp_transfer.errors import ModelError
from nlp_transfer.models.classifier import TextClassifier
from nlp_transfer.models.hub import grow_embeddings, load_backbone, resolve_checkpoint
from nlp_transfer.recipes.encoder import assemble
from nlp_transfer.utils.logs import quiet


def is_decoder_config(config) -> bool:
    """A causal language model: saved as one (``*ForCausalLM``, ``*LMHeadModel``), or of a model
    type that is a causal LM and not also a masked LM (BERT and RoBERTa are both)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in getattr(config, "architectures", None) or []):
        return True
    if getattr(config, "is_encoder_decoder", False):
        return False
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def is_decoder_checkpoint(cfg: ModelConfig) -> bool:
    """Whether ``cfg`` names a decoder, from the checkpoint's config. False when the config cannot
    be read: the encoder recipe then says why."""
    from transformers import AutoConfig

    path = resolve_checkpoint(cfg.name_or_path, cfg.gguf_file)
    try:
        config = quiet(AutoConfig.from_pretrained, path)
    except (OSError, ValueError):
        return False
    return is_decoder_config(config)


def ensure_pad_token(tokenizer, backbone) -> str:
    """Give ``tokenizer`` a pad token and ``backbone`` the matching ``pad_token_id``.

    Returns how: ``"own"`` (it had one), ``"eos"`` (end-of-sequence reused) or ``"added"``
    (a new token; the embedding matrix grows by one row).
    """
    how = "own"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
            how = "eos"
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            how = "added"
    # The padding row is never attended to, so its value does not matter; it is seeded all the same.
    grow_embeddings(backbone, len(tokenizer))
    backbone.config.pad_token_id = tokenizer.pad_token_id
    return how


def decoder_pooling(requested: str, name: str) -> str:
    if requested == "auto":
        return "last"
    if requested == "cls":
        raise ModelError(
            f"model.pooling='cls' reads the first token, which decoder '{name}' computes before seeing the rest "
            "of the text; use last (auto), mean or max"
        )
    if requested == "pooler":
        raise ModelError(f"model.pooling='pooler' but decoder '{name}' has no pooler; use last (auto), mean or max")
    return requested


def build_decoder_classifier(cfg: ModelConfig, labels: list[str]) -> tuple[TextClassifier, object]:
    """(model, tokenizer) for a decoder checkpoint with a fresh head for ``labels``."""
    pooling = decoder_pooling(cfg.pooling, cfg.name_or_path)
    backbone, tokenizer = load_backbone(cfg)
    pad = ensure_pad_token(tokenizer, backbone)
    backbone.config.use_cache = False
    model = assemble(cfg, backbone, pooling, labels, "decoder", pad_token=pad, backbone_dtype=cfg.backbone_dtype)
    return model, tokenizer
