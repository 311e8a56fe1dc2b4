"""The classifier: a Hugging Face backbone, a pooling rule and a head.

``TextClassifier`` runs either from tokens (``input_ids`` ...) or from cached pooled
``features`` (feature extraction trains the head on those). It saves as a directory the
backbone's ``save_pretrained`` can read, plus ``head.safetensors`` and the run manifest
(``nlp_transfer.json``, :mod:`nlp_transfer.manifest`) describing pooling, head and labels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from nlp_transfer.errors import ModelError
from nlp_transfer.manifest import RunManifest, read_manifest, write_manifest
from nlp_transfer.models.adapters import base_of, is_adapted, load_adapter, prompt_length, save_adapter
from nlp_transfer.models.domain import grad_reverse
from nlp_transfer.models.layers import final_norm, find_layers, keep_layers
from nlp_transfer.tasks import Task, get_task
from nlp_transfer.utils.environment import library_versions
from nlp_transfer.utils.logs import quiet

HEAD_FILE = "head.safetensors"
# Manifest fields that describe the model itself (kept in TextClassifier.meta); the rest describe the run.
MODEL_FIELDS = (
    "kind",
    "head",
    "head_dropout",
    "head_hidden_size",
    "head_activation",
    "max_length",
    "long_text",
    "source_checkpoint",
    "feature_layer",
    "backbone_dtype",
    "pad_token",
    "label_separator",
    "label_columns",
    "adapter",
    "merged_adapter",
)


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
    """Backbone + pooling + head for a task (see :mod:`nlp_transfer.tasks`). ``loss_fn`` computes the
    loss when ``labels`` are given; ``thresholds`` are the multi-label decision thresholds (saved
    with the model); ``meta`` holds the manifest fields that describe the model (:data:`MODEL_FIELDS`)."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        pooling: str,
        labels: list[str],
        meta: dict | None = None,
        task: str | Task = "single_label",
        loss: dict | None = None,
        thresholds: list[float] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pooling = pooling
        self.labels = list(labels)
        self.meta = dict(meta or {})
        # Class weights of the single-label loss (train.class_weights); not saved: they only shape training.
        self.register_buffer("class_weights", None, persistent=False)
        self.domain_head: nn.Module | None = None  # domain-adversarial training only; never saved with the run
        t = get_task(task)
        self.set_task(t, t.build_loss(**(loss or {})), thresholds)

    def set_class_weights(self, weights: list[float] | None) -> None:
        ref = self.head[-1].weight
        self.class_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=ref.device)

    def set_task(self, task: str | Task, loss_fn: nn.Module | None = None, thresholds: list[float] | None = None) -> TextClassifier:
        """Train and predict for ``task`` with ``loss_fn`` (default: the task's own loss)."""
        self.task = get_task(task)
        self.loss_fn = loss_fn if loss_fn is not None else self.task.build_loss()
        _, default = self.task.threshold_plan("per_label", self.labels)
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None and default is not None else default
        return self

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def encode(self, input_ids, attention_mask, token_type_ids=None, **_) -> torch.Tensor:
        """Pooled features [B, H] from tokens."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.prompt_length:
            return self._encode_prompted(kwargs)
        out = self.backbone(**self._positions(kwargs))
        return pool(out.last_hidden_state, attention_mask, self.pooling, getattr(out, "pooler_output", None))

    def _positions(self, kwargs: dict) -> dict:
        if self.meta.get("kind") == "decoder":
            # Decoders number positions from the first column, padding included: count real
            # tokens instead, so a text gets the same states padded left, right or not at all.
            kwargs["position_ids"] = (kwargs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return kwargs

    def layer_features(self, input_ids, attention_mask, layers: list[int], poolings: list[str], token_type_ids=None, **_) -> torch.Tensor:
        """Pooled features of several layers in one forward pass: [B, len(layers) * len(poolings), H], layer-major.

        Layer N's vector is what :meth:`encode` gives with ``model.feature_layer: N`` (the final norm of
        architectures that have one applied, as the cut model applies it); ``pooler`` pooling applies the
        backbone's pooler to that layer. Only the layers up to the deepest one asked for run."""
        _, blocks = find_layers(self.backbone)
        states: dict[int, torch.Tensor] = {}
        deepest = max(layers)

        class _Stop(Exception):
            pass

        def keep(n):
            def hook(_module, _inputs, output):
                states[n] = output[0] if isinstance(output, tuple) else output
                if n == deepest:
                    raise _Stop

            return hook

        handles = [blocks[n - 1].register_forward_hook(keep(n)) for n in sorted(set(layers))]
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        try:
            self.backbone(**self._positions(kwargs))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        norm, pooler = final_norm(self.backbone), getattr(self.backbone, "pooler", None)
        out = []
        for n in layers:
            hidden = norm(states[n]) if norm is not None else states[n]
            for how in poolings:
                out.append(pool(hidden, attention_mask, how, pooler(hidden) if how == "pooler" and pooler is not None else None))
        return torch.stack(out, dim=1)

    @property
    def prompt_length(self) -> int:
        """Virtual tokens in front of every input (prompt tuning), else 0."""
        return prompt_length(self.backbone)

    def _encode_prompted(self, kwargs: dict) -> torch.Tensor:
        """Prompt tuning: the trained virtual-token embeddings go in front of the text's, every input gets
        their positions (decoders: counted over real tokens, as without prompts) and token type 0, and
        the pooling reads the text's states only: the first real token is still the ``cls`` position.
        peft's own forward would drop token types (sentence pairs) and decoder positions, so it is done
        here, with peft's prompt encoder."""
        ids, mask = kwargs.pop("input_ids"), kwargs.pop("attention_mask")
        base, n, b = base_of(self.backbone), self.prompt_length, ids.shape[0]
        embeds = base.get_input_embeddings()(ids)
        prompts = self.backbone.get_prompt(batch_size=b).to(embeds.dtype)
        full_mask = torch.cat([mask.new_ones(b, n), mask], dim=1)
        args = {"inputs_embeds": torch.cat([prompts, embeds], dim=1), "attention_mask": full_mask}
        if "token_type_ids" in kwargs:
            tt = kwargs["token_type_ids"]
            args["token_type_ids"] = torch.cat([tt.new_zeros(b, n), tt], dim=1)
        if self.meta.get("kind") == "decoder":
            args["position_ids"] = (full_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = base(**args).last_hidden_state[:, n:]
        pooler = getattr(base, "pooler", None) if self.pooling == "pooler" else None
        return pool(hidden, mask, self.pooling, pooler(hidden) if pooler is not None else None)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        features=None,
        labels=None,
        features_only: bool = False,
        n_source: int | None = None,
        domain_lambda: float | None = None,
    ):
        """``{"loss", "logits"}``; ``features_only``: ``{"features"}``, the pooled vectors (contrastive training).

        Domain-adversarial training (``domain_lambda`` set, a ``domain_head`` attached): the first ``n_source``
        rows are labelled source texts, the rest unlabelled target texts, all encoded in one pass; the head
        and the loss see the source rows, and ``domain_loss`` is the domain classifier's cross-entropy (target
        = 1) on every row's features through a gradient reversal of strength ``domain_lambda``."""
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids)
        if features_only:
            return {"features": features}
        if domain_lambda is not None:
            return self._domain_forward(features, labels, n_source, domain_lambda)
        # The head runs outside autocast: in-run evaluation (cached features, or a model accelerate wraps in
        # autocast) and a reloaded model's predictions then compute the same logits from the same features.
        with torch.autocast(features.device.type, enabled=False):
            logits = self.head(features.to(self.head[-1].weight.dtype))
        loss = self.loss_fn(logits, labels, self.class_weights) if labels is not None else None
        return {"loss": loss, "logits": logits}

    def _domain_forward(self, features, labels, n_source: int, lam: float) -> dict:
        out = self.forward(features=features[:n_source], labels=labels)
        with torch.autocast(features.device.type, enabled=False):
            d = self.domain_head(grad_reverse(features.float(), lam)).squeeze(-1)
        is_target = torch.arange(len(d), device=d.device) >= n_source
        out["domain_loss"] = nn.functional.binary_cross_entropy_with_logits(d, is_target.float())
        out["domain_accuracy"] = ((d > 0) == is_target).float().mean().detach()
        return out

    # ---- persistence -------------------------------------------------------------------
    def manifest(self, **run: object) -> RunManifest:
        """The run manifest of this model; ``run`` adds what the run decided (precision, eval_batch_size, name)."""
        fields = {k: v for k, v in self.meta.items() if k in MODEL_FIELDS}
        return RunManifest(
            labels=self.labels,
            task=self.task.name,
            pooling=self.pooling,
            thresholds=self.thresholds,
            loss=getattr(self.loss_fn, "spec", None),
            versions=library_versions(),
            **fields,
            **run,
        )

    def save_pretrained(self, directory: str | Path, tokenizer=None, **run: object) -> None:
        """Weights, head, tokenizer and the manifest (:meth:`manifest`, with ``run``) into ``directory``."""
        from safetensors.torch import save_file

        from nlp_transfer.models.interop import native_classifier

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = self.backbone.config
        cfg.id2label = dict(enumerate(self.labels))
        cfg.label2id = {n: i for i, n in enumerate(self.labels)}
        if self.task.problem_type:  # so AutoModelForSequenceClassification picks the same loss
            cfg.problem_type = self.task.problem_type
        # Where pooling and head are the architecture's own, save in its XForSequenceClassification
        # layout so plain transformers loads it too (see interop.py); AutoModel reads either layout.
        native, why_not = native_classifier(self)
        if is_adapted(self.backbone):  # the adapter alone: the manifest names the base it belongs to
            save_adapter(self.backbone, d)
        else:
            quiet((native or self.backbone).save_pretrained, d)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, str(d / HEAD_FILE))
        manifest = self.manifest(**run)
        manifest.transformers_class = type(native).__name__ if native is not None else None
        manifest.transformers_note = why_not or None
        write_manifest(d, manifest)
        if tokenizer is not None:
            tokenizer.save_pretrained(d)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> TextClassifier:
        """A saved model; a missing, damaged or foreign file is a one-line :class:`ModelError`."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        d = Path(directory)
        m = read_manifest(d)
        base = _adapter_base(d, m) if m.adapter else None  # a missing or different base: one line, before the rest
        try:
            # A bf16 backbone stays bf16; an adapter run: the adapter on its base checkpoint.
            backbone = base if base is not None else quiet(AutoModel.from_pretrained, str(d), dtype="auto")
            head = build_head(backbone.config.hidden_size, len(m.labels), m.head, m.head_dropout, m.head_hidden_size, m.head_activation)
            head.load_state_dict(load_file(str(d / HEAD_FILE)))
        except Exception as e:  # noqa: BLE001 - safetensors, torch and transformers each raise their own types here
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"the model weights in '{d}' could not be loaded ({type(e).__name__}: {first[:200]}); "
                "the run directory is damaged: copy it again or retrain"
            ) from None
        if getattr(backbone, "pooler", None) is not None and m.pooling != "pooler":
            backbone.pooler = None
        if base is not None:
            backbone = load_adapter(backbone, d, m.adapter.get("base_fingerprint"), m.adapter["base_checkpoint"])
        meta = {k: v for k, v in dataclasses.asdict(m).items() if k in MODEL_FIELDS}
        model = cls(backbone, head, m.pooling, m.labels, meta, m.task, m.loss, m.thresholds)
        return model.to(device).eval()


def _adapter_base(d: Path, m: RunManifest) -> nn.Module:
    """The base checkpoint an adapter run names, loaded as training loaded it (pad row included)."""
    from transformers import AutoModel

    from nlp_transfer.models.hub import grow_embeddings, load_tokenizer, resolve_checkpoint

    name, gguf, found = m.adapter["base_checkpoint"], m.adapter.get("gguf_file"), m.adapter.get("base_path")
    try:
        try:
            base = quiet(AutoModel.from_pretrained, resolve_checkpoint(name, gguf))
        except (OSError, ModelError, ValueError):
            if not (found and Path(found).is_dir()):  # a relative path from elsewhere, a hub id offline, ...
                raise
            base = quiet(AutoModel.from_pretrained, found)  # where training found it (the fingerprint still decides)
    except (OSError, ModelError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"the adapter run '{d}' needs its base checkpoint '{name}'"
            + (f" (GGUF file {gguf})" if gguf else "")
            + f", which could not be loaded ({first}); make that checkpoint available "
            "(the manifest's adapter.base_checkpoint names it), or retrain"
        ) from None
    if m.feature_layer is not None:  # as training cut it (before the fingerprint is checked)
        keep_layers(base, m.feature_layer, f"'{name}'")
    if m.kind == "decoder":  # as the decoder recipe left it: no cache, the pad token (and its row, if added)
        tokenizer = load_tokenizer(str(d))
        grow_embeddings(base, len(tokenizer))
        base.config.use_cache, base.config.pad_token_id = False, tokenizer.pad_token_id
    return base


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
