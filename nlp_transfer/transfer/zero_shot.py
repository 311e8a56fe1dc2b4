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
their first token; a multi-token word is represented by its first token.
"""

from __future__ import annotations

import torch

from nlp_transfer.errors import ConfigError


def label_word_tokens(tokenizer, labels: list[str], label_words: dict[str, str] | None) -> dict[str, dict]:
    """``{label: {"word": w, "token": t, "id": i}}``: the first token of each label's word."""
    words = dict(label_words or {})
    unknown = sorted(set(words) - set(labels))
    if unknown:
        raise ConfigError(f"model.label_words names {', '.join(map(repr, unknown))}, which the data does not have; "
                          f"its labels are: {', '.join(labels)}")
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
            raise ConfigError(f"model.label_words: the words for '{seen[info['id']]}' and '{label}' start with the same token "
                              f"{info['token']!r}; choose words that differ in their first token")
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


def init_zero_shot_head(model, tokenizer, labels: list[str], label_words: dict[str, str] | None, checkpoint: str) -> dict:
    """Set ``model.head``'s linear layer to the label words' output embeddings; returns what it used."""
    if model.meta.get("kind") != "decoder":
        raise ConfigError("transfer.mode=zero_shot reads a language model's next-token prediction and needs a decoder "
                          "(GPT-2, Llama, SmolLM2, ...); for an encoder use setfit or feature_extraction")
    words = label_word_tokens(tokenizer, labels, label_words)
    weight = output_embeddings(model.backbone, checkpoint)
    linear = model.head[-1]
    with torch.no_grad():
        linear.weight.copy_(weight[[words[name]["id"] for name in labels]].to(linear.weight.dtype))
        linear.bias.zero_()
    for m in model.head:
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    model.meta["head_dropout"] = 0.0
    return words
