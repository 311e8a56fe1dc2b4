"""The run manifest: what a run directory holds and how to use it, in one versioned file.

``nlp_transfer.json`` beside the weights says everything a reload needs: the labels and the
task, pooling and head, the token budget and long-text handling, the multi-label thresholds,
the probability calibration fitted on validation, the inference precision and batch size the
run was evaluated with, the library versions that wrote it, and the backend that runs it (``torch``,
or ``onnx`` for an ONNX export, whose ``onnx`` field names the file and how it was exported).
:func:`write_manifest` is its one writer and :func:`read_manifest` its one
reader; nothing else reads ``metrics.json`` or ``recipe.yaml`` to load a run.

Format 1 (before this schema) is read by upgrading it: its precision came from
``metrics.json`` and its batch size from ``recipe.yaml``. A newer format fails in one line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nlp_transfer.errors import ModelError

MANIFEST_FILE = "nlp_transfer.json"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
LONG_TEXT_DEFAULTS = {
    "truncation": "head",
    "head_fraction": 0.25,
    "chunking": False,
    "chunk_stride": 64,
    "chunk_aggregate": "mean",
    "max_chunks": None,
    "prompt": None,
}


@dataclass
class RunManifest:
    """The contract of a run directory (see the module docstring)."""

    labels: list[str]
    task: str = "single_label"
    kind: str = "encoder"  # encoder or decoder (decoders count positions over real tokens)
    pooling: str = "cls"
    head: str = "linear"
    head_dropout: float = 0.0
    head_hidden_size: int | None = None
    head_activation: str = "gelu"
    max_length: int = 128
    long_text: dict = field(default_factory=lambda: dict(LONG_TEXT_DEFAULTS))
    thresholds: list[float] | None = None  # multi-label decision thresholds
    # Fitted on validation after training (tasks/calibration.py): {"method": "temperature", "temperature": T} or
    # {"method": "platt", "scale": [...], "bias": [...]}; None: raw probabilities (regression, runs from before it).
    calibration: dict | None = None
    loss: dict | None = None  # the training loss's spec (so evaluation reports the same loss)
    precision: str = "no"  # autocast the run was evaluated with, and predicts with by default
    eval_batch_size: int = 64
    source_checkpoint: str | None = None
    feature_layer: int | None = None  # model.feature_layer: the backbone keeps layers 1..N of its checkpoint
    backbone_dtype: str = "float32"
    pad_token: str | None = None  # decoders: own, eos or added
    label_separator: str | None = None  # multi-label data written as joined strings
    label_columns: list[str] | None = None  # multi-label data written as 0/1 columns
    adapter: dict | None = None  # adapter runs: method, base_checkpoint, gguf_file, base_fingerprint (the base is not saved)
    merged_adapter: dict | None = None  # a run whose adapter was folded into the weights (nlp-transfer export --merge)
    transformers_class: str | None = None  # set where plain AutoModelForSequenceClassification loads the run
    transformers_note: str | None = None  # why not, otherwise
    name: str | None = None  # the recipe's name
    distillation: dict | None = None  # a distilled run: its teachers (paths, fingerprints), temperature and alpha
    backend: str = "torch"  # torch (safetensors weights) or onnx (nlp-transfer export --onnx: model.onnx, run on onnxruntime)
    onnx: dict | None = None  # ONNX exports: file, inputs, opset, quantize, exporter, max_logit_difference, source_run
    versions: dict = field(default_factory=dict)  # libraries that wrote the run
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> RunManifest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def write_manifest(directory: str | Path, manifest: RunManifest) -> Path:
    """Write ``manifest`` into ``directory`` (the one writer)."""
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps({**manifest.to_dict(), "format_version": FORMAT_VERSION}, indent=2))
    return path


def read_manifest(directory: str | Path) -> RunManifest:
    """The manifest of a run directory (the one reader); one-line :class:`ModelError` otherwise."""
    d = Path(directory)
    path = d / MANIFEST_FILE
    if not path.is_file():
        raise ModelError(f"'{d}' is not a run directory (no {MANIFEST_FILE}); pass the output.dir of a finished training run")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"the run manifest '{path}' is damaged ({str(e).splitlines()[0]}); copy the run again or retrain") from None
    if not isinstance(raw, dict) or "labels" not in raw:
        raise ModelError(f"the run manifest '{path}' has no labels; it was not written by nlp-transfer")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelError(
            f"run directory '{d}' has manifest format {version!r}; this nlp-transfer reads formats "
            f"{', '.join(map(str, READABLE_VERSIONS))}: use the nlp-transfer version that wrote it, or retrain"
        )
    if version == 1:
        raw = _upgrade_v1(d, raw)
    raw["long_text"] = {**LONG_TEXT_DEFAULTS, **(raw.get("long_text") or {})}
    return RunManifest.from_dict(raw)


def _upgrade_v1(d: Path, raw: dict) -> dict:
    """Format 1 kept the precision in metrics.json and the batch size in recipe.yaml."""
    out = dict(raw)
    metrics, recipe = d / "metrics.json", d / "recipe.yaml"
    try:
        env = json.loads(metrics.read_text()).get("environment", {}) if metrics.is_file() else {}
        train = ((yaml.safe_load(recipe.read_text()) or {}).get("train") or {}) if recipe.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError):
        env, train = {}, {}
    out["precision"] = env.get("mixed_precision") or "no"
    out["eval_batch_size"] = train.get("eval_batch_size") or 64
    return out
