"""Machine facts and library versions: what a rerun needs to match (recorded in every run)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nlp_transfer.errors import ConfigError

THREADS_ENV = "NLP_TRANSFER_NUM_THREADS"  # CPU threads per process for every command (a machine shared with other jobs)

LIBRARIES = (
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "tokenizers",
    "safetensors",
    "numpy",
    "scikit-learn",
    "peft",
    "nlp-transfer",
)


def env_threads() -> int | None:
    """``$NLP_TRANSFER_NUM_THREADS`` as a positive number of threads; None where it is unset or empty."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{THREADS_ENV}={value!r} is not a positive number of threads; set it to 1, 2, ... or unset it")
    return int(value)


def apply_env_threads() -> None:
    """``$NLP_TRANSFER_NUM_THREADS`` for a command about to start: torch reads OMP_NUM_THREADS when it starts
    (and ONNX sessions take torch's count), so a command that picks no thread count of its own uses it."""
    threads = env_threads()
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a run depends on (None where absent)."""
    return {name: package_version(name) for name in LIBRARIES}


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """Python, platform, processor, cores and memory."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": memory_gb(),
    }


def peak_memory_mb(device_type: str = "cpu") -> float | None:
    """Peak memory of this process so far: CUDA memory allocated on a GPU, else the resident set size."""
    if device_type == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports kilobytes
    except (ImportError, OSError):
        return None
