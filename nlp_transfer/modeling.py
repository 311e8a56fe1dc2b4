"""The classifier: a Hugging Face backbone, a pooling rule and a head.

``TextClassifier`` runs either from tokens (``input_ids`` ...) or from cached pooled
``features`` (feature extraction trains the head on those). It saves as a directory the
backbone's ``save_pretrained`` can read, plus ``head.safetensors`` and
``nlp_transfer.json`` describing pooling, head and labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError
from .tasks import build_loss

META_FILE = "nlp_transfer.json"
HEAD_FILE = "head.safetensors"
FORMAT_VERSION = 1


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, pooler_output: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per sequence from token states ``hidden`` [B, T, H] and ``mask`` [B, T]."""
    if how == "cls":
        return hidden[:, 0]
    if how == "pooler":
        if pooler_output is None:
            raise ModelError("model.pooling='pooler' but this backbone has no pooler; use cls, mean, max or last")
        return pooler_output
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    if how == "last":
        # Index of the last real token, whether padding is on the left or the right.
        pos = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * pos).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ModelError(f"unknown pooling '{how}'")


def _first_token_forward(layer, hidden_states, attention_mask=None, *args, **kwargs):
    """A BERT-style layer's forward for the first position only: [B, T, H] in, [B, 1, H] out.

    Keys and values still come from every token; the query, the attention output, the
    feed-forward block and their dropouts run on position 0 alone. Same arithmetic as the
    layer's own forward for that position.
    """
    if getattr(layer, "gradient_checkpointing", False) and layer.training and torch.is_grad_enabled():
        return layer._gradient_checkpointing_func(_first_token_step, layer, hidden_states, attention_mask)
    return _first_token_step(layer, hidden_states, attention_mask)


def _first_token_step(layer, hidden_states, attention_mask):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = layer.attention.self
    b, t, _ = hidden_states.shape
    d = sa.attention_head_size
    first = hidden_states[:, :1]
    query = sa.query(first).view(b, 1, -1, d).transpose(1, 2)
    key = sa.key(hidden_states).view(b, t, -1, d).transpose(1, 2)
    value = sa.value(hidden_states).view(b, t, -1, d).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
    out, _ = attend(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling)
    attention_output = layer.attention.output(out.reshape(b, 1, -1).contiguous(), first)
    return layer.feed_forward_chunk(attention_output)


def first_token_only(backbone: nn.Module) -> bool:
    """Make a BERT-style encoder's last layer compute position 0 only; True if it did.

    With ``cls`` or ``pooler`` pooling nothing else of the last layer's output is read, so
    its query, attention output and feed-forward block for the other T - 1 positions are
    wasted work: about 1/7 of MiniLM's training step. Applies to layers built like BERT's
    (``attention.self.query/key/value``, ``attention.output``, ``feed_forward_chunk``;
    RoBERTa, ELECTRA, XLM-R, MiniLM ...) without cross-attention; others are left as they are.
    ``backbone(...).last_hidden_state`` is then [B, 1, H]. The weights and what is saved do
    not change; :func:`all_tokens` undoes it.
    """
    from .transfer import find_layers

    try:
        _, layers = find_layers(backbone)
    except ModelError:
        return False
    last = layers[-1]
    sa = getattr(getattr(last, "attention", None), "self", None)
    built_like_bert = (
        sa is not None
        and all(isinstance(getattr(sa, n, None), nn.Linear) for n in ("query", "key", "value"))
        and hasattr(sa, "attention_head_size") and hasattr(sa, "scaling") and hasattr(sa, "config")
        and hasattr(last.attention, "output") and hasattr(last, "feed_forward_chunk")
        and not getattr(last, "is_decoder", True) and not hasattr(last, "crossattention")
        and getattr(sa.config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(last, "chunk_size_feed_forward", 0)
    )
    if not built_like_bert:
        return False
    last.forward = _first_token_forward.__get__(last)
    return True


def all_tokens(backbone: nn.Module) -> None:
    """Undo :func:`first_token_only`: the last layer computes every position again."""
    from .transfer import find_layers

    last = find_layers(backbone)[1][-1]
    if "forward" in vars(last):
        del last.forward


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def build_head(
    hidden_size: int,
    num_labels: int,
    kind: str = "linear",
    dropout: float = 0.1,
    mlp_hidden: int | None = None,
    activation: str = "gelu",
) -> nn.Sequential:
    """``linear`` or ``mlp`` head; ``logreg`` is a linear layer whose weights scikit-learn fits."""
    if kind == "logreg":
        return nn.Sequential(nn.Dropout(0.0), nn.Linear(hidden_size, num_labels))
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_labels))
    if kind == "mlp":
        if activation not in _ACTIVATIONS:
            raise ModelError(f"unknown head activation '{activation}'; use {', '.join(_ACTIVATIONS)}")
        h = mlp_hidden or hidden_size
        return nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden_size, h), _ACTIVATIONS[activation](), nn.Dropout(dropout), nn.Linear(h, num_labels)
        )
    raise ModelError(f"unknown head '{kind}'; use linear, mlp or logreg")


class TextClassifier(nn.Module):
    """Backbone + pooling + head for a task (``meta["task"]``, default single-label; see
    :mod:`nlp_transfer.tasks`). ``loss_fn`` computes the loss when ``labels`` are given;
    ``thresholds`` are the multi-label decision thresholds (saved with the model)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pooling: str, labels: list[str], meta: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pooling = pooling
        self.labels = list(labels)
        self.meta = dict(meta or {})
        # Only position 0 of the last layer is read by cls/pooler pooling: compute nothing else.
        self.first_token_only = pooling in ("cls", "pooler") and first_token_only(backbone)
        # Class weights of the single-label loss (train.class_weights); not saved: they only shape training.
        self.register_buffer("class_weights", None, persistent=False)
        task = self.meta.get("task", "single_label")
        self.set_task(task, build_loss(task, **(self.meta.get("loss") or {})), self.meta.get("thresholds"))

    def set_class_weights(self, weights: list[float] | None) -> None:
        ref = self.head[-1].weight
        self.class_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=ref.device)

    def set_task(self, task: str, loss_fn: nn.Module | None = None, thresholds: list[float] | None = None) -> "TextClassifier":
        """Train and predict for ``task`` with ``loss_fn`` (default: the task's own loss)."""
        self.task = task
        self.meta["task"] = task
        self.loss_fn = loss_fn if loss_fn is not None else build_loss(task)
        if task == "multi_label":
            self.thresholds = [float(t) for t in thresholds] if thresholds is not None else [0.5] * len(self.labels)
        else:
            self.thresholds = None
        return self

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def encode(self, input_ids, attention_mask, token_type_ids=None, **_) -> torch.Tensor:
        """Pooled features [B, H] from tokens."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.meta.get("kind") == "decoder":
            # Decoders number positions from the first column, padding included: count real
            # tokens instead, so a text gets the same states padded left, right or not at all.
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(**kwargs)
        return pool(out.last_hidden_state, attention_mask, self.pooling, getattr(out, "pooler_output", None))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, features=None, labels=None, **_):
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids)
        logits = self.head(features.to(self.head[-1].weight.dtype))
        loss = self.loss_fn(logits, labels, self.class_weights) if labels is not None else None
        return {"loss": loss, "logits": logits}

    # ---- persistence -------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, tokenizer=None) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = self.backbone.config
        cfg.id2label = dict(enumerate(self.labels))
        cfg.label2id = {n: i for i, n in enumerate(self.labels)}
        if self.task != "single_label":  # so AutoModelForSequenceClassification picks the same loss
            cfg.problem_type = {"multi_label": "multi_label_classification", "regression": "regression"}[self.task]
        # Where pooling and head are the architecture's own, save in its XForSequenceClassification
        # layout so plain transformers loads it too (see interop.py); AutoModel reads either layout.
        from .interop import native_classifier

        native, why_not = native_classifier(self)
        _quiet((native or self.backbone).save_pretrained, d)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, str(d / HEAD_FILE))
        meta = {**self.meta, "format_version": FORMAT_VERSION, "pooling": self.pooling, "labels": self.labels,
                "task": self.task, "thresholds": self.thresholds, "loss": getattr(self.loss_fn, "spec", None)}
        meta["transformers_class"] = type(native).__name__ if native is not None else None
        meta["transformers_note"] = why_not or None
        (d / META_FILE).write_text(json.dumps(meta, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(d)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TextClassifier":
        from safetensors.torch import load_file
        from transformers import AutoModel

        d = Path(directory)
        if not (d / META_FILE).is_file():
            raise ModelError(f"'{d}' is not a saved nlp-transfer model (no {META_FILE}); pass a run directory")
        meta = json.loads((d / META_FILE).read_text())
        backbone = _quiet(AutoModel.from_pretrained, str(d), dtype="auto")  # a bf16 backbone stays bf16
        if getattr(backbone, "pooler", None) is not None and meta["pooling"] != "pooler":
            backbone.pooler = None
        head = build_head(
            backbone.config.hidden_size, len(meta["labels"]), meta.get("head", "linear"), meta.get("head_dropout", 0.0),
            meta.get("head_hidden_size"), meta.get("head_activation", "gelu"),
        )
        head.load_state_dict(load_file(str(d / HEAD_FILE)))
        model = cls(backbone, head, meta["pooling"], meta["labels"], meta)
        return model.to(device).eval()


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """Recompute each layer in the backward pass (non-reentrant checkpointing, so frozen
    embeddings below the trained layers do not cut the gradient off)."""
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(backbone).__name__} does not support gradient checkpointing; set model.gradient_checkpointing=false")
    enable = getattr(backbone, "activation_checkpointing_enable", None)  # transformers >= 5.x; the old name warns
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _quiet(fn, *args, **kwargs):
    """Call a transformers loader with its informational warnings silenced."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
