"""Domain-adversarial training's two pieces (DANN, Ganin et al. 2016): the gradient reversal layer and the
domain classifier that reads the pooled features through it."""

from __future__ import annotations

import torch
from torch import nn


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """``x`` on the way forward; the gradient times ``-lam`` on the way back."""
    return _Reverse.apply(x, float(lam))


def build_domain_head(hidden_size: int, width: int | None = None) -> nn.Sequential:
    """Source-or-target classifier on pooled features: one hidden layer, one logit (target = 1)."""
    w = width or hidden_size
    return nn.Sequential(nn.Linear(hidden_size, w), nn.ReLU(), nn.Linear(w, 1))
