"""Faster training steps on CPU, with the model's semantics unchanged.

Profiling a MiniLM fine-tuning step on CPU (bf16 autocast) shows two costs that have
nothing to do with the matrix multiplies:

* **dropout masks**: ``torch.bernoulli_`` draws one Mersenne-Twister number per element,
  single-threaded; the ~20 dropouts of a step took ~15% of it. :func:`dropout_mask` draws
  16-bit integers from numpy's PCG64 (seeded from torch's generator, so ``set_seed`` still
  makes runs repeatable) and keeps an element when its integer clears a threshold: the keep
  probability is 1 - p to within 2**-16.
* **memory returned to the OS every step**: glibc serves large blocks (the 47 MB dense
  gradient of MiniLM's word embeddings, activations) with ``mmap`` and unmaps them when
  freed, so every step page-faults them in again (~15% of a step here). :func:`keep_freed_memory`
  tells glibc to keep freed memory for reuse (what jemalloc/tcmalloc do for PyTorch on CPU).
* **attention with dropout**: PyTorch's CPU ``scaled_dot_product_attention`` falls back to
  its unfused "math" path when attention dropout is on, which upcasts and copies; without
  dropout its fused CPU kernel has a slow backward. :func:`attention` does the same
  computation as transformers' eager attention with the fast mask, and hands every other
  case (inference, GPUs, causal or grouped-query attention) to transformers' SDPA.

:func:`speed_up` applies all three: the model's ``nn.Dropout`` modules become
:class:`FastDropout` (same ``p``, same place), it uses the ``nlp_transfer`` attention, and
glibc keeps freed memory.
Nothing is saved differently: dropout has no weights and the attention choice is reset to
``sdpa`` in saved configs. ``train.fast_kernels: false`` switches it off.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ATTENTION = "nlp_transfer"


def dropout_mask(shape: torch.Size | tuple, p: float) -> torch.Tensor:
    """A boolean CPU keep-mask of ``shape``: False with probability ``p`` (to within 2**-16)."""
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))  # torch's generator decides: set_seed repeats it
    n = int(np.prod(shape))
    draws = np.random.default_rng(seed).integers(-(2**15), 2**15, n, dtype=np.int16)
    return torch.from_numpy(draws).view(shape) >= int(round(p * 2**16)) - 2**15


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with a cheaper mask on CPU (GPUs keep PyTorch's own)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    return (x * dropout_mask(x.shape, p)).mul_(1.0 / (1.0 - p))  # two passes; backward keeps the boolean mask


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same ``train()``/``eval()`` behaviour) with :func:`fast_dropout`."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fast_dropout(input, self.p, self.training)


def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """An ``AttentionInterface`` function: eager attention with fast dropout where SDPA is slow.

    Used when training on CPU with attention dropout, for bidirectional attention with as many
    key as query heads (BERT-style encoders). Everything else goes to transformers' SDPA path.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = kwargs.get("is_causal", getattr(module, "is_causal", False))
    if not (dropout > 0.0 and query.device.type == "cpu" and torch.is_grad_enabled() and not causal
            and key.shape[1] == query.shape[1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., : key.shape[-2]]
    probs = fast_dropout(torch.softmax(scores, dim=-1).to(value.dtype), dropout)
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), None


def keep_freed_memory() -> bool:
    """glibc only: serve large blocks from the heap and keep freed memory (no per-step page faults).

    Process-wide and not undone; the resident size then stays at its peak. False where not glibc.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def register() -> None:
    """Make ``attn_implementation="nlp_transfer"`` known to transformers (with SDPA's masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def speed_up(model: nn.Module) -> dict:
    """Fast dropout in every ``nn.Dropout`` of ``model``, the fast attention where its backbone
    uses SDPA, and :func:`keep_freed_memory`. Returns what changed:
    ``{"dropout": n, "attention": bool, "allocator": bool}``."""
    n = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                n += 1
    switched = False
    for m in model.modules():
        config = getattr(m, "config", None)
        if config is not None and getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(m, "set_attn_implementation"):
            register()
            m.set_attn_implementation(ATTENTION)
            switched = True
    return {"dropout": n, "attention": switched, "allocator": keep_freed_memory()}


def slow_down(model: nn.Module) -> None:
    """Undo :func:`speed_up`'s attention switch (before saving: configs name ``sdpa``)."""
    for m in model.modules():
        config = getattr(m, "config", None)
        if config is not None and getattr(config, "_attn_implementation", None) == ATTENTION and hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation("sdpa")
