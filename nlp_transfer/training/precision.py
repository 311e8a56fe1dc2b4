"""Precision and threads: what the hardware runs fast, decided once per run."""

from __future__ import annotations

import os

import torch

from nlp_transfer.errors import ConfigError
from nlp_transfer.utils.environment import env_threads


def resolve_precision(requested: str) -> str:
    """``auto`` -> bf16 where the hardware runs it natively (CUDA or a bf16-capable CPU), else no."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
    except (AttributeError, RuntimeError):
        return "no"


def check_precision(precision: str) -> None:
    """fp16 needs loss scaling, which accelerate does with CUDA's grad scaler only; on CPU it would
    run fp16 autocast unscaled (small gradients underflow to zero), so refuse it."""
    cpu_forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if precision == "fp16" and (not torch.cuda.is_available() or cpu_forced):
        raise ConfigError("train.mixed_precision=fp16 needs a GPU (loss scaling is CUDA-only); use bf16 on CPU, or no")


def allow_precision_change(precision: str) -> None:
    """Accelerate keeps one ``AcceleratorState`` per process and refuses a second precision.

    A single process that trains twice (sweeps, notebooks, tests) may change it: forget the
    old state (the process/device state is kept).
    """
    from accelerate.state import AcceleratorState, PartialState

    old = AcceleratorState._shared_state.get("_mixed_precision")
    if old is not None and old != precision and PartialState().num_processes == 1:
        AcceleratorState._reset_state()


def set_threads(num_threads: int | None) -> None:
    """CPU threads of this process: ``num_threads`` (the recipe's ``train.num_threads``), else
    ``$NLP_TRANSFER_NUM_THREADS`` (every command on a machine shared with other jobs), else the cores shared
    among the local processes. OMP_NUM_THREADS is not read: ``accelerate launch`` sets it to 1 for CPU runs."""
    num_threads = num_threads or env_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    elif not torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
