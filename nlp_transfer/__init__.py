"""nlp-transfer: transfer learning for text classification on Hugging Face checkpoints.

    from nlp_transfer import RecipeConfig, train, load_run
    cfg = RecipeConfig.from_yaml("recipes/rotten_tomatoes/minilm-full.yaml", ["train.epochs=1"])
    result = train(cfg.replace(transfer={"mode": "lora"}))
    result.predictor.predict(["a gorgeous, moving film"]).probabilities   # the model just trained
    load_run(result.output_dir).predict(["a gorgeous, moving film"])       # the same, from the run directory

Names are imported on first use (PEP 562), so ``import nlp_transfer`` and recipe errors do
not pay for torch, datasets or accelerate.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "RecipeConfig": "nlp_transfer.config",
    "ModelConfig": "nlp_transfer.config",
    "DataConfig": "nlp_transfer.config",
    "TransferConfig": "nlp_transfer.config",
    "TrainConfig": "nlp_transfer.config",
    "OutputConfig": "nlp_transfer.config",
    "AdapterConfig": "nlp_transfer.config",
    "SetFitConfig": "nlp_transfer.config",
    "DomainAdversarialConfig": "nlp_transfer.config",
    "AdaptConfig": "nlp_transfer.config",
    "DistillConfig": "nlp_transfer.config",
    "AugmentConfig": "nlp_transfer.config",
    "NLPTransferError": "nlp_transfer.errors",
    "ConfigError": "nlp_transfer.errors",
    "DataError": "nlp_transfer.errors",
    "ModelError": "nlp_transfer.errors",
    "TrainingError": "nlp_transfer.errors",
    "compute_metrics": "nlp_transfer.metrics",
    "get_task": "nlp_transfer.tasks",
    "TextData": "nlp_transfer.data.loading",
    "load_data": "nlp_transfer.data.loading",
    "TextClassifier": "nlp_transfer.models.classifier",
    "build_classifier": "nlp_transfer.recipes",
    "RunManifest": "nlp_transfer.manifest",
    "read_manifest": "nlp_transfer.manifest",
    "train": "nlp_transfer.training",
    "RunResult": "nlp_transfer.training",
    "Trainer": "nlp_transfer.training",
    "Predictor": "nlp_transfer.inference.predictor",
    "Predictions": "nlp_transfer.tasks",
    "MultiLabelPredictions": "nlp_transfer.tasks",
    "RegressionPredictions": "nlp_transfer.tasks",
    "load_run": "nlp_transfer.inference.predictor",
    "merge_run": "nlp_transfer.inference.export",
    "export_onnx": "nlp_transfer.inference.export",
    "predict_stream": "nlp_transfer.inference.streaming",
    "iter_inputs": "nlp_transfer.data.stream",
    "create_app": "nlp_transfer.inference.server",
    "Explanation": "nlp_transfer.inference.explain",
    "find_label_issues": "nlp_transfer.inference.label_issues",
    "rank_checkpoints": "nlp_transfer.experiments.selection",
    "transferability": "nlp_transfer.transfer.estimators",
}
# subpackages reachable as attributes (``nlp_transfer.catalog`` ...)
_MODULES = {"catalog": "nlp_transfer.data.catalog", "gguf": "nlp_transfer.models.gguf", "plots": "nlp_transfer.reporting.plots"}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'nlp_transfer' has no attribute '{name}'")
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_MODULES))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from nlp_transfer.config import (
        AdaptConfig,
        AdapterConfig,
        DataConfig,
        DomainAdversarialConfig,
        ModelConfig,
        OutputConfig,
        RecipeConfig,
        SetFitConfig,
        TrainConfig,
        TransferConfig,
    )
    from nlp_transfer.data.loading import TextData, load_data
    from nlp_transfer.data.stream import iter_inputs
    from nlp_transfer.errors import ConfigError, DataError, ModelError, NLPTransferError, TrainingError
    from nlp_transfer.experiments.selection import rank_checkpoints
    from nlp_transfer.inference.explain import Explanation
    from nlp_transfer.inference.export import export_onnx, merge_run
    from nlp_transfer.inference.label_issues import find_label_issues
    from nlp_transfer.inference.predictor import Predictor, load_run
    from nlp_transfer.inference.server import create_app
    from nlp_transfer.inference.streaming import predict_stream
    from nlp_transfer.manifest import RunManifest, read_manifest
    from nlp_transfer.metrics import compute_metrics
    from nlp_transfer.models.classifier import TextClassifier
    from nlp_transfer.recipes import build_classifier
    from nlp_transfer.tasks import MultiLabelPredictions, Predictions, RegressionPredictions, get_task
    from nlp_transfer.training import RunResult, Trainer, train
    from nlp_transfer.transfer.estimators import transferability
