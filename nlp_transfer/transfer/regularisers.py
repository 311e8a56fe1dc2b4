"""Regularisers that pull a fine-tuned model towards where it started."""

from __future__ import annotations

import torch
from torch import nn


class L2SP:
    """Penalty ``strength / 2 * sum ||w - w_pretrained||^2`` over trainable backbone weights.

    Keeps L2-SP's pull towards the starting point (Li et al., 2018) instead of towards zero.
    """

    def __init__(self, model: nn.Module, strength: float):
        self.strength = strength
        self.pairs = [(p, p.detach().clone()) for name, p in model.named_parameters() if name.startswith("backbone.")]

    def __call__(self) -> torch.Tensor:
        total = sum(((p - ref.to(p.device)) ** 2).sum() for p, ref in self.pairs if p.requires_grad)
        return 0.5 * self.strength * total
