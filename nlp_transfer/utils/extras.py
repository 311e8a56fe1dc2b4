"""Optional dependencies: one message for a missing extra, the same everywhere.

    require_extra("serve", "nlp-transfer serve", ConfigError)   # fastapi and uvicorn installed, or raises
    # ConfigError: nlp-transfer serve needs fastapi, uvicorn (not installed): pip install 'nlp-transfer[serve]'

A core install (no extras) trains, predicts and evaluates; what needs more names its extra here.
"""

from __future__ import annotations

import importlib.util

from nlp_transfer.errors import ConfigError

__all__ = ["EXTRAS", "extra_hint", "missing_modules", "require_extra"]

# extra (pyproject.toml [project.optional-dependencies]) -> the modules it provides, as imported
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "select": ("transformer_ranker",),
    "trust": ("captum", "cleanlab"),
    "fewshot": ("setfit",),
    "plots": ("matplotlib",),
    "gguf": ("gguf",),
    "active": ("small_text",),
    "tune": ("optuna",),
}


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The modules of ``modules`` that are not installed (found without importing them: a check costs no import time)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def extra_hint(extra: str, what: str, missing: list[str] | tuple[str, ...] | None = None) -> str:
    """``WHAT needs M1, M2 (not installed): pip install 'nlp-transfer[EXTRA]'``."""
    names = ", ".join(missing or EXTRAS[extra])
    return f"{what} needs {names} (not installed): pip install 'nlp-transfer[{extra}]'"


def require_extra(extra: str, what: str, error: type[Exception] = ConfigError, modules: tuple[str, ...] | None = None) -> None:
    """Raise ``error`` with :func:`extra_hint` when any of ``modules`` (default: every module of ``extra``) is missing."""
    missing = missing_modules(tuple(modules or EXTRAS[extra]))
    if missing:
        raise error(extra_hint(extra, what, missing))
