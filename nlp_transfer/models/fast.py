"""Faster training and inference steps, with the model's semantics unchanged, applied only
inside a ``with`` block and undone completely when it ends.

Profiling a MiniLM fine-tuning step on CPU (bf16 autocast) shows costs that have nothing to
do with the matrix multiplies:

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
* **the last layer's unread positions**: with ``cls`` or ``pooler`` pooling only position 0
  of the last layer is read, so its query, attention output and feed-forward block for the
  other T - 1 positions are wasted work (about 1/7 of MiniLM's training step).
  :func:`first_token_forward` computes position 0 alone: ``last_hidden_state`` is [B, 1, H].

:func:`speedups` applies them for the duration of a ``with`` block and, on exit (exception
or not), puts back the very same ``nn.Dropout`` objects, each config's attention
implementation, transformers' attention registries and the last layer's class ``forward``.
Nothing is saved differently: dropout has no weights and transformers never saves
``_attn_implementation``. The speed-ups that touch transformers internals were written for
the versions in :data:`TESTED_TRANSFORMERS` and BERT-style layers; elsewhere they are left
off with a note, never applied half-right.

Only torch, numpy, the standard library and transformers (imported where used) are needed:
the classifier does not import this module; the trainer and predictor call :func:`speedups`.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from nlp_transfer.errors import ModelError
from nlp_transfer.models.layers import find_layers

ATTENTION = "nlp_transfer"
# [low, high): the transformers releases whose AttentionInterface, masks and BertLayer these were written for.
TESTED_TRANSFORMERS = ((5, 0), (6, 0))
# The poolings that read position 0 of the last layer and nothing else.
FIRST_TOKEN_POOLINGS = ("cls", "pooler")
# glibc's documented defaults (mallopt(3)); what it was set to before cannot be read back.
GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024

_P = inspect.Parameter
# BertLayer.forward in transformers 5.x (RoBERTa, ELECTRA, XLM-R ... copy it): what first_token_forward replaces.
LAYER_SIGNATURE = (
    ("self", _P.POSITIONAL_OR_KEYWORD),
    ("hidden_states", _P.POSITIONAL_OR_KEYWORD),
    ("attention_mask", _P.POSITIONAL_OR_KEYWORD),
    ("encoder_hidden_states", _P.POSITIONAL_OR_KEYWORD),
    ("encoder_attention_mask", _P.POSITIONAL_OR_KEYWORD),
    ("cache", _P.POSITIONAL_OR_KEYWORD),
    ("kwargs", _P.VAR_KEYWORD),
)


# ---- dropout ----------------------------------------------------------------------------
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


def apply_fast_dropout(model: nn.Module) -> tuple[int, Callable[[], None]]:
    """Every ``nn.Dropout`` of ``model`` becomes a :class:`FastDropout` (same ``p``, same mode,
    same place). Returns how many modules and the undo, which puts the original objects back."""
    swaps, fast_of = [], {}
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:  # subclasses may do more than dropout: leave them
                if id(child) not in fast_of:  # one module in two places stays one module
                    fast_of[id(child)] = FastDropout(child.p).train(child.training)
                swaps.append((parent, name, child, fast_of[id(child)]))
    for parent, name, _, fast in swaps:
        setattr(parent, name, fast)

    def undo() -> None:
        for parent, name, original, fast in reversed(swaps):
            # model.train()/eval() inside the block reached the replacement: the original must agree.
            original.train(fast.training)
            setattr(parent, name, original)

    return len(fast_of), undo


# ---- attention --------------------------------------------------------------------------
@functools.cache
def attention_kwargs() -> frozenset[str]:
    """The keyword arguments transformers hands to attention functions (``TransformersKwargs``,
    ``FlashAttentionKwargs``): what eager attention accepts, and all a layer may pass on."""
    from transformers.utils.generic import TransformersKwargs

    keys = set(TransformersKwargs.__annotations__)
    try:
        from transformers.modeling_flash_attention_utils import FlashAttentionKwargs
    except ImportError:
        pass
    else:
        keys |= set(FlashAttentionKwargs.__annotations__)
    return frozenset(keys)


def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """An ``AttentionInterface`` function: eager attention with fast dropout where SDPA is slow.

    Used when training on CPU with attention dropout, for bidirectional attention with as many
    key as query heads (BERT-style encoders). Everything else goes to transformers' SDPA path,
    keyword arguments and all. Our own path computes what transformers' ``eager_attention_forward``
    does, which takes ``**kwargs: Unpack[TransformersKwargs]``; any other keyword that is not None
    (a sliding window, a position bias ...) would change the result, so it raises rather than
    being ignored.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = kwargs.get("is_causal")
    if causal is None:  # as SDPA reads it: an explicit None means "the module decides"
        causal = getattr(module, "is_causal", False)
    if not (dropout > 0.0 and query.device.type == "cpu" and torch.is_grad_enabled() and not causal and key.shape[1] == query.shape[1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    # BertSelfAttention hands on encoder_hidden_states=None: a None switches nothing on, so it may pass.
    unknown = [k for k in kwargs.keys() - attention_kwargs() if kwargs[k] is not None]
    if unknown:
        raise TypeError(
            f"{ATTENTION} attention: unsupported keyword argument(s) {', '.join(sorted(unknown))}; "
            "its eager path would ignore them (switch train.fast_kernels off for this model)"
        )
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


def register_attention() -> Callable[[], None]:
    """Make ``attn_implementation="nlp_transfer"`` known to transformers (with SDPA's masks).

    Returns the undo: the entries leave both global registries again, or get back the value
    they had before. ``GeneralInterface`` has a public ``register`` but no unregister; both
    write and read the class's ``_global_mapping``, so the undo edits that dict.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    missing = object()
    saved = []
    for registry, fn in ((AttentionInterface, attention), (ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask)):
        saved.append((registry._global_mapping, registry._global_mapping.get(ATTENTION, missing)))
        registry.register(ATTENTION, fn)

    def undo() -> None:
        for mapping, previous in reversed(saved):
            if previous is missing:
                mapping.pop(ATTENTION, None)
            else:
                mapping[ATTENTION] = previous

    return undo


def apply_attention(model: nn.Module) -> tuple[list[str], Callable[[], None]]:
    """Switch every submodule whose config uses ``sdpa`` to :data:`ATTENTION`. Returns the
    names of the switched modules and the undo (each config back to what it was)."""
    # Parents pass their choice on to submodels; remember every config so the undo is exact.
    before = [
        (name, m, m.config._attn_implementation)
        for name, m in model.named_modules()
        if hasattr(m, "set_attn_implementation") and hasattr(getattr(m, "config", None), "_attn_implementation")
    ]

    def undo() -> None:
        for _, m, previous in before:  # outermost first, so inner models get their own value last
            if m.config._attn_implementation != previous:
                m.set_attn_implementation(previous)
            if m.config._attn_implementation != previous:  # e.g. None, which set_attn_implementation resolves
                m.config._attn_implementation = previous

    switched = []
    try:
        for name, m, _ in before:
            if m.config._attn_implementation == "sdpa":
                m.set_attn_implementation(ATTENTION)
                if m.config._attn_implementation == ATTENTION:  # transformers only warns where it cannot
                    switched.append(name)
    except BaseException:
        undo()  # half a switch must not outlive the error
        raise
    return switched, undo


# ---- first-token last layer -------------------------------------------------------------
def first_token_forward(
    layer, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, cache=None, **kwargs
):
    """A BERT-style layer's forward for the first position only: [B, T, H] in, [B, 1, H] out.

    Keys and values still come from every token; the query, the attention output, the
    feed-forward block and their dropouts run on position 0 alone: the same arithmetic as the
    layer's own forward for that position. Takes exactly ``BertLayer.forward``'s arguments and
    raises for what it cannot honour, instead of computing something else quietly.
    """
    for name, arg in (
        ("encoder_hidden_states", encoder_hidden_states),
        ("encoder_attention_mask", encoder_attention_mask),
        ("cache", cache),
    ):
        if arg is not None:
            raise TypeError(
                f"first-token layer: {name} is not supported (it runs self-attention for position 0 "
                "of an encoder only); leave first_token off"
            )
    unknown = kwargs.keys() - attention_kwargs()
    if unknown:
        raise TypeError(f"first-token layer: unexpected keyword argument(s) {', '.join(sorted(unknown))}")
    if kwargs.get("output_attentions") or getattr(layer.attention.self.config, "output_attentions", False):
        # Its attention module is never called, so transformers' hooks would record one layer too few.
        raise TypeError("first-token layer: output_attentions is not supported; leave first_token off")
    # The class forward checkpoints itself (GradientCheckpointingLayer); this instance forward must too.
    if getattr(layer, "gradient_checkpointing", False) and layer.training and torch.is_grad_enabled():
        return layer._gradient_checkpointing_func(functools.partial(_first_token_step, layer, **kwargs), hidden_states, attention_mask)
    return _first_token_step(layer, hidden_states, attention_mask, **kwargs)


def _first_token_step(layer, hidden_states, attention_mask, **kwargs):
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
    out, _ = attend(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling, **kwargs)
    attention_output = layer.attention.output(out.reshape(b, 1, -1).contiguous(), first)
    return layer.feed_forward_chunk(attention_output)


def first_token_problem(layer: nn.Module) -> str | None:
    """Why :func:`first_token_forward` cannot replace ``layer``'s forward, or None if it can."""
    version = transformers_problem()
    if version:
        return version
    name = type(layer).__name__
    if "forward" in vars(layer):
        return f"{name} already has an instance forward (applied twice?)"
    sa = getattr(getattr(layer, "attention", None), "self", None)
    if sa is None or not all(_linear(getattr(sa, n, None)) for n in ("query", "key", "value")):
        return f"{name} is not built like BERT's (no attention.self.query/key/value linear layers)"
    if not all(hasattr(sa, n) for n in ("attention_head_size", "scaling", "config", "dropout")):
        return f"{name} is not built like BERT's (attention.self lacks attention_head_size, scaling, config or dropout)"
    if not (hasattr(layer.attention, "output") and hasattr(layer, "feed_forward_chunk")):
        return f"{name} is not built like BERT's (no attention.output or feed_forward_chunk)"
    if getattr(layer, "is_decoder", True) or hasattr(layer, "crossattention"):
        return f"{name} is a decoder layer or has cross-attention"
    if getattr(sa.config, "position_embedding_type", "absolute") != "absolute":
        return f"{name} uses {sa.config.position_embedding_type} position embeddings inside attention"
    if getattr(layer, "chunk_size_feed_forward", 0):
        return f"{name} chunks its feed-forward block"
    try:
        params = inspect.signature(type(layer).forward).parameters.values()  # follows transformers' wrappers
    except (TypeError, ValueError):
        return f"the signature of {name}.forward cannot be read"
    if tuple((p.name, p.kind) for p in params) != LAYER_SIGNATURE:
        got = ", ".join(str(p) for p in params)
        return f"{name}.forward({got}) is not the BertLayer forward it was written for"
    return None


def _linear(module) -> bool:
    """A linear layer, or one wrapped by an adapter (peft's LoRA/IA³ layers keep it as ``base_layer``)."""
    return isinstance(module, nn.Linear) or isinstance(getattr(module, "base_layer", None), nn.Linear)


def apply_first_token(layer: nn.Module) -> Callable[[], None]:
    """Give ``layer`` :func:`first_token_forward` as its forward; returns the undo (the class
    forward back). Raises ValueError where :func:`first_token_problem` finds one."""
    problem = first_token_problem(layer)
    if problem:
        raise ValueError(f"first-token: {problem}")
    layer.forward = types.MethodType(first_token_forward, layer)  # an instance attribute: the class is untouched

    def undo() -> None:
        if "forward" in vars(layer):
            del layer.forward

    return undo


# ---- allocator --------------------------------------------------------------------------
def _mallopt(mmap_max: int, trim_threshold: int) -> bool:
    """Set glibc's M_MMAP_MAX and M_TRIM_THRESHOLD; False where not glibc or refused."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))


def keep_freed_memory() -> bool:
    """glibc only: serve large blocks from the heap and keep freed memory (no per-step page faults).

    Process-wide; the resident size then stays at its peak. :func:`default_allocator` sets
    glibc's defaults again. False where not glibc.
    """
    return _mallopt(0, 1 << 30)


def default_allocator() -> bool:
    """Undo :func:`keep_freed_memory` as far as glibc allows: its documented defaults again
    (M_MMAP_MAX 65536, M_TRIM_THRESHOLD 128 KiB). mallopt cannot be read back, so values set
    before (MALLOC_*_ environment variables, GLIBC_TUNABLES) are not restored, and glibc's
    dynamic mmap threshold, off once these were set, stays off. False where not glibc."""
    return _mallopt(GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD)


# ---- process-wide changes shared by blocks ----------------------------------------------
class _Shared:
    """A process-wide change several ``speedups`` blocks may hold at once (nested blocks, a
    trainer evaluating through a predictor): the first makes it, the last one out undoes it,
    so no block pulls the registry entry out from under a model that still uses it."""

    def __init__(self, make: Callable[[], Callable[[], None] | None]):
        self._make, self._undo, self._holders, self._lock = make, None, 0, threading.Lock()

    def acquire(self) -> Callable[[], None] | None:
        """Hold the change; returns its release, or None if it could not be made."""
        with self._lock:
            if self._holders == 0:
                self._undo = self._make()
                if self._undo is None:
                    return None
            self._holders += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._holders -= 1
                if self._holders == 0:
                    undo, self._undo = self._undo, None
                    undo()

        return release


_REGISTRY = _Shared(register_attention)
_ALLOCATOR = _Shared(lambda: default_allocator if keep_freed_memory() else None)


# ---- versions ---------------------------------------------------------------------------
def transformers_version() -> tuple[int, int] | None:
    """(major, minor) of the installed transformers, read when asked (tests fake it)."""
    import transformers

    m = re.match(r"(\d+)\.(\d+)", str(getattr(transformers, "__version__", "")))
    return (int(m[1]), int(m[2])) if m else None


def transformers_problem() -> str | None:
    """Why the installed transformers is not one these speed-ups were written for, or None."""
    import transformers

    (lo, hi), v = TESTED_TRANSFORMERS, transformers_version()
    if v is not None and lo <= v < hi:
        return None
    return f"transformers {getattr(transformers, '__version__', '?')} is outside the tested range >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"


# ---- the context manager ----------------------------------------------------------------
@dataclass
class SpeedUps:
    """What :func:`speedups` applied; ``notes`` say why a requested one was not."""

    dropouts: int = 0
    attention: bool = False
    first_token: bool = False
    allocator: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One log line."""
        done = [f"fast dropout in {self.dropouts} module(s)"] if self.dropouts else []
        done += [f"{ATTENTION} attention"] * self.attention + ["first-token last layer"] * self.first_token
        done += ["allocator keeps freed memory"] * self.allocator
        line = "speed-ups: " + (", ".join(done) or "none")
        return line + (f" (not applied: {'; '.join(self.notes)})" if self.notes else "")


def _dropout(model: nn.Module, stack: ExitStack, report: SpeedUps) -> None:
    report.dropouts, undo = apply_fast_dropout(model)
    stack.callback(undo)
    if not report.dropouts:
        report.notes.append("fast dropout: the model has no nn.Dropout")


def _attention(model: nn.Module, stack: ExitStack, report: SpeedUps) -> None:
    problem = transformers_problem()
    try:
        from transformers import AttentionInterface  # noqa: F401  (older releases have none)
    except ImportError:
        problem = problem or "this transformers has no AttentionInterface"
    if problem:
        return report.notes.append(f"fast attention: {problem}")
    impls = {
        m.config._attn_implementation
        for m in model.modules()
        if hasattr(m, "set_attn_implementation") and hasattr(getattr(m, "config", None), "_attn_implementation")
    }
    if "sdpa" not in impls:
        found = ", ".join(sorted(map(str, impls))) or "no transformers model"
        return report.notes.append(f"fast attention: nothing uses sdpa attention (found {found})")
    release = _REGISTRY.acquire()
    stack.callback(release)  # registered before the switch (transformers checks the name), removed after
    switched, undo = apply_attention(model)
    stack.callback(undo)
    report.attention = bool(switched)
    if not switched:
        report.notes.append("fast attention: set_attn_implementation left every sdpa model as it was")


def _first_token(model: nn.Module, stack: ExitStack, report: SpeedUps) -> None:
    if not hasattr(model, "pooling"):
        return report.notes.append("first-token: the model has no pooling attribute to say position 0 is all it reads")
    pooling = model.pooling
    if getattr(model, "prompt_length", 0):
        return report.notes.append("first-token: prompt tuning puts virtual tokens before the text's first token")
    if pooling not in FIRST_TOKEN_POOLINGS:
        return report.notes.append(f"first-token: pooling {pooling!r} reads more than position 0 (only cls, pooler)")
    try:
        _, layers = find_layers(getattr(model, "backbone", model))
    except ModelError as e:
        return report.notes.append(f"first-token: {e}")
    problem = first_token_problem(layers[-1])
    if problem:
        return report.notes.append(f"first-token: {problem}")
    stack.callback(apply_first_token(layers[-1]))
    report.first_token = True


def _allocator(stack: ExitStack, report: SpeedUps) -> None:
    release = _ALLOCATOR.acquire()
    if release is None:
        return report.notes.append("allocator: not glibc (or mallopt refused); left as it is")
    stack.callback(release)
    report.allocator = True


@contextmanager
def speedups(
    model: nn.Module, *, dropout: bool = True, attention: bool = True, first_token: bool = False, allocator: bool = True
) -> Iterator[SpeedUps]:
    """Apply the chosen speed-ups to ``model`` for the ``with`` block; yields a :class:`SpeedUps`.

    ``model`` is any module; ``first_token`` also wants ``model.pooling`` (cls or pooler) and
    ``model.backbone`` (else ``model`` itself) with BERT-style layers. A speed-up that does not
    fit is skipped with a note. On exit, exception or not, everything is put back: the same
    ``nn.Dropout`` objects in the same places (in the mode the block left the model in), each
    config's attention implementation, the ``nlp_transfer`` registry entries (removed once no
    block uses them, or their previous value), the last layer's class forward, and glibc's
    *default* allocator settings (mallopt cannot be read back; see :func:`default_allocator`).
    """
    report = SpeedUps()
    with ExitStack() as stack:  # each undo is registered as its change is made: LIFO, even mid-way
        if dropout:
            _dropout(model, stack, report)
        if attention:
            _attention(model, stack, report)
        if first_token:
            _first_token(model, stack, report)
        if allocator:
            _allocator(stack, report)
        yield report
