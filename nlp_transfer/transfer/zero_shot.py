"""Zero-shot classification with a decoder: no training, the language model's own next-token guess.

Each text is put in ``model.prompt`` (e.g. ``"Review: {text}\\nSentiment:"``) and the model's
state at the prompt's last token is read. The language model would score every vocabulary
token there with its output embeddings; the logits of the first token of each label's word
(``model.label_words``, default the label names) are those embeddings' rows times that state.
So the zero-shot classifier is the decoder, last-token pooling and a linear head whose rows are
the label words' output embeddings (bias 0): softmax over its logits is the model's next-token
distribution renormalised over the label words. It saves, reloads and predicts like any run,
and is the "0 labels" point of a label-efficiency curve.

Scored by the first token of each word only (one forward pass per text): words must differ in
their first token; a multi-token word is represented by its first token. Small models prefer some
words whatever the text; ``model.calibration_text`` (default ``"N/A"``) subtracts the scores of that
content-free input in the same prompt (contextual calibration, Zhao et al. 2021), as the head's bias.
"""

from __future__ import annotations

import torch

from nlp_transfer.errors import ConfigError


def label_word_tokens(tokenizer, labels: list[str], label_words: dict[str, str] | None) -> dict[str, dict]:
    """``{label: {"word": w, "token": t, "id": i}}``: the first token of each label's word."""
    words = dict(label_words or {})
    unknown = sorted(set(words) - set(labels))
    if unknown:
        raise ConfigError(
            f"model.label_words names {', '.join(map(repr, unknown))}, which the data does not have; its labels are: {', '.join(labels)}"
        )
    out = {}
    for label in labels:
        word = words.get(label, " " + label)  # after a prompt the word follows a space
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"model.label_words: the word for '{label}' ({word!r}) has no tokens")
        out[label] = {"word": word, "token": tokenizer.convert_ids_to_tokens(ids[0]), "id": int(ids[0])}
    seen: dict[int, str] = {}
    for label, info in out.items():
        if info["id"] in seen:
            raise ConfigError(
                f"model.label_words: the words for '{seen[info['id']]}' and '{label}' start with the same token "
                f"{info['token']!r}; choose words that differ in their first token"
            )
        seen[info["id"]] = label
    return out


def output_embeddings(backbone, checkpoint: str) -> torch.Tensor:
    """The language model's output embeddings [vocab, H]: the input embeddings where they are tied (GPT-2,
    SmolLM2), else the checkpoint's own language-model head."""
    if getattr(backbone.config, "tie_word_embeddings", False):
        return backbone.get_input_embeddings().weight
    from transformers import AutoModelForCausalLM

    from nlp_transfer.utils.logs import quiet

    lm = quiet(AutoModelForCausalLM.from_pretrained, checkpoint)
    return lm.get_output_embeddings().weight


def init_zero_shot_head(model, tokenizer, labels: list[str], model_cfg, checkpoint: str) -> dict:
    """Set ``model.head``'s linear layer to the label words' output embeddings (and, with
    ``model.calibration_text``, its bias to minus their scores on that content-free input); returns
    what it used."""
    if model.meta.get("kind") != "decoder":
        raise ConfigError(
            "transfer.mode=zero_shot reads a language model's next-token prediction and needs a decoder "
            "(GPT-2, Llama, SmolLM2, ...); for an encoder use setfit or feature_extraction"
        )
    words = label_word_tokens(tokenizer, labels, model_cfg.label_words)
    weight = output_embeddings(model.backbone, checkpoint)
    linear = model.head[-1]
    with torch.no_grad():
        linear.weight.copy_(weight[[words[name]["id"] for name in labels]].to(linear.weight.dtype))
        linear.bias.zero_()
    for m in model.head:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.meta["head_dropout"] = 0.0
    info = {"label_words": words, "calibration_text": model_cfg.calibration_text}
    if model_cfg.calibration_text is not None:
        info["calibration"] = calibrate(model, tokenizer, model_cfg)
    return info


@torch.no_grad()
def calibrate(model, tokenizer, model_cfg) -> dict[str, float]:
    """Contextual calibration (Zhao et al. 2021): the label scores of the content-free
    ``model.calibration_text`` in the prompt become the head's negative bias, so that input scores
    every label alike and a text's scores are read relative to the model's prior."""
    from nlp_transfer.data.chunking import LongTextSpec, encode

    enc = encode(tokenizer, [model_cfg.calibration_text], None, LongTextSpec.from_config(model_cfg))
    enc.pop("doc_id")
    device = next(model.parameters()).device
    batch = {k: torch.tensor(v, device=device) for k, v in enc.items()}
    was_training = model.training
    model.eval()
    scores = model(**batch)["logits"][0]
    model.train(was_training)
    model.head[-1].bias.copy_(-scores)
    return {label: round(float(v), 4) for label, v in zip(model.labels, scores)}
