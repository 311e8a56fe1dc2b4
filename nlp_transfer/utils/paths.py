"""Where things live on disk: the cache root, installed packages found without importing them, files written whole."""

from __future__ import annotations

import importlib.util
import os
import uuid
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


def atomic_write(path: Path, data: str | bytes) -> None:
    """``data`` into ``path`` through a temporary file, synced and renamed over it: the old file or the new, never
    half (also after kill -9 or a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
