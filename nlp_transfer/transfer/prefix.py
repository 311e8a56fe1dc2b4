"""The frozen prefix of a partially fine-tuned model, computed once and replayed.

``partial``: the hidden states that enter the first trained layer do not change during
training. :func:`encode_prefix` computes them once per example and :class:`FrozenPrefix`
swaps the frozen lower layers for a replay of those states, so each step runs only the
embeddings lookup and the trained layers. Both paths give the same loss and gradients
(tests check it): frozen modules run in eval mode either way.
"""

from __future__ import annotations

import torch
from torch import nn

from nlp_transfer.models.layers import find_layers
from nlp_transfer.transfer.caches import encode_rows


class PrefixDataset(torch.utils.data.Dataset):
    """Tokenized examples plus the cached hidden states [length, H] of each one."""

    def __init__(self, tokens, states: list[torch.Tensor]):
        assert len(tokens) == len(states)
        self.tokens, self.states = tokens, states

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {**self.tokens[i], "prefix_states": self.states[i]}


class PrefixCollator:
    """Pads tokens with ``collate`` and the cached states to the same length and side."""

    def __init__(self, collate, padding_side: str = "right"):
        self.collate, self.padding_side = collate, padding_side

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        states = [ex.pop("prefix_states") for ex in examples]
        batch = self.collate(examples)
        b, t = batch["input_ids"].shape
        out = states[0].new_zeros(b, t, states[0].shape[-1])
        for i, s in enumerate(states):
            if self.padding_side == "left":
                out[i, t - len(s) :] = s
            else:
                out[i, : len(s)] = s
        batch["prefix_states"] = out
        return batch


def encode_prefix(
    model, ds, collate, batch_size: int, accelerator, first_trained: int, desc: str = "caching", progress: bool = True
) -> list[torch.Tensor]:
    """Hidden states entering layer ``first_trained`` for every example: [length_i, H] each."""
    model.eval()
    _, layers = find_layers(model.backbone)
    captured = {}
    hook = layers[first_trained - 1].register_forward_hook(
        lambda m, a, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out)
    )
    upper = {i: layers[i] for i in range(first_trained, len(layers))}
    for i in upper:  # the layers above are not needed to build the cache
        layers[i] = _PassThrough()

    def fn(batch):
        model.encode(**batch)
        h, mask = captured["h"], batch["attention_mask"].bool()
        return [h[j][mask[j]] for j in range(len(h))]

    try:
        return encode_rows(fn, ds, collate, batch_size, accelerator, desc, progress)
    finally:
        hook.remove()
        for i, layer in upper.items():
            layers[i] = layer


class _PassThrough(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _Inject(nn.Module):
    """Stands in for the last frozen layer: returns the cached states of the current batch."""

    def __init__(self):
        super().__init__()
        self.states: torch.Tensor | None = None

    def forward(self, hidden_states, *args, **kwargs):
        if self.states is None:
            raise RuntimeError("frozen-prefix replay needs 'prefix_states' in the batch")
        states, self.states = self.states, None
        return states.to(hidden_states.dtype)


class FrozenPrefix:
    """Swap layers ``0..first_trained-1`` of ``model`` for a replay of cached states.

    While installed, the model takes ``prefix_states`` (padded like ``input_ids``) in its
    batch; the embeddings still run (a lookup) but their output is ignored. ``remove()``
    puts the real layers back, so the saved model is whole.
    """

    def __init__(self, model: nn.Module, first_trained: int):
        if first_trained < 1:
            raise ValueError("nothing to cache below the first layer")
        self.model, self.first_trained = model, first_trained
        self.layers = find_layers(model.backbone)[1]
        self.saved: dict[int, nn.Module] = {}
        self.inject = _Inject()
        self.handle = None

    def install(self) -> FrozenPrefix:
        for i in range(self.first_trained):
            self.saved[i] = self.layers[i]
            self.layers[i] = _PassThrough()
        self.layers[self.first_trained - 1] = self.inject
        self.handle = self.model.register_forward_pre_hook(self._take_states, with_kwargs=True)
        return self

    def _take_states(self, module, args, kwargs):
        self.inject.states = kwargs.pop("prefix_states", None)
        return args, kwargs

    def remove(self) -> None:
        for i, layer in self.saved.items():
            self.layers[i] = layer
        self.saved.clear()
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def first_trained_layer(model: nn.Module) -> int:
    """Index of the lowest transformer layer with a trainable parameter (len(layers) if none)."""
    name, layers = find_layers(model.backbone)
    for i, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return len(layers)


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The frozen parts of the backbone, to run in eval mode (no dropout) as the caches see them.

    Everything outside the trained layers whose parameters are all frozen: embeddings and
    lower layers in ``partial``, the whole backbone in ``feature_extraction``. Dropout inside
    trained layers keeps working. Put them in eval mode after every ``model.train()``.
    """
    backbone = model.backbone
    _, layers = find_layers(backbone)
    trained = {id(m) for layer in list(layers)[first_trained_layer(model) :] for m in layer.modules()}
    holds_layers = {id(m) for m in backbone.modules() if any(c is layers for c in m.modules())}
    return [
        mod
        for mod in backbone.modules()
        if id(mod) not in trained and id(mod) not in holds_layers and not any(p.requires_grad for p in mod.parameters())
    ]
