"""Where things live on disk: the cache root, and installed packages found without importing them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$NLP_TRANSFER_CACHE``, else ``~/.cache/nlp_transfer`` (features, converted checkpoints)."""
    base = cache_dir or os.environ.get("NLP_TRANSFER_CACHE") or Path.home() / ".cache" / "nlp_transfer"
    return Path(base).expanduser()


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, without importing it (some packages import heavy or networked modules)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def require_package(package: str, pip_name: str, what: str, error: type) -> Path:
    """:func:`package_dir`, or ``error`` saying how to install the package."""
    d = package_dir(package)
    if d is None:
        raise error(f"{what} needs the package '{pip_name}'; install it with: pip install --no-deps {pip_name}")
    return d
