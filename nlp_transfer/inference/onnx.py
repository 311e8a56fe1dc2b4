"""ONNX runs: a classifier exported whole (backbone + pooling + head, tokens in, logits out) and run on onnxruntime.

    python scripts/export.py runs/rt-minilm-full runs/rt-minilm-onnx --onnx [--quantize int8]
    load_run("runs/rt-minilm-onnx").predict(["a gorgeous, moving film"])   # onnxruntime, same API

The exported directory holds ``model.onnx``, the tokenizer and the run manifest (``backend: onnx``);
:func:`nlp_transfer.inference.predictor.load_run` reads it into the same :class:`Predictor`, which
tokenizes, batches, chunks, aggregates and post-processes exactly as for a PyTorch run: only the
"logits of one padded batch" step is onnxruntime's (:class:`OnnxRunner`). The export itself is
:func:`nlp_transfer.inference.export.export_onnx`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlp_transfer.errors import ModelError
from nlp_transfer.manifest import RunManifest
from nlp_transfer.tasks import get_task
from nlp_transfer.utils.extras import require_extra

ONNX_FILE = "model.onnx"


class OnnxModel:
    """What the predictor and evaluation read off a model, for an ONNX run: labels, task, loss, thresholds, meta.

    Built from the manifest alone (the weights are in the ONNX graph); the same fields as
    :class:`~nlp_transfer.models.classifier.TextClassifier` exposes."""

    def __init__(self, manifest: RunManifest):
        self.labels = list(manifest.labels)
        self.task = get_task(manifest.task)
        self.loss_fn = self.task.build_loss(**(manifest.loss or {}))
        _, default = self.task.threshold_plan("per_label", self.labels)  # as TextClassifier.set_task decides them
        given = manifest.thresholds
        self.thresholds = [float(t) for t in given] if given is not None and default is not None else default
        self.meta = {
            "kind": manifest.kind,
            "label_separator": manifest.label_separator,
            "label_columns": manifest.label_columns,
            "max_length": manifest.max_length,
            "long_text": manifest.long_text,
        }
        self.pooling = manifest.pooling

    @property
    def num_labels(self) -> int:
        return len(self.labels)


class OnnxRunner:
    """Logits [B, C] of one padded batch (a tokenizer's ``BatchEncoding`` of tensors) on onnxruntime."""

    def __init__(self, path: str | Path, device: str | None = None, threads: int | None = None):
        ort = require_onnxruntime()

        import torch

        options = ort.SessionOptions()
        # As many threads as PyTorch would use (OMP_NUM_THREADS, torch.set_num_threads): onnxruntime reads neither.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
        providers = ["CPUExecutionProvider"]
        if device and device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelError(
                    f"device '{device}' asked for, but this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelError(f"the ONNX model '{path}' could not be loaded ({first}); export the run again") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch) -> np.ndarray:
        feed = {}
        for name in self.input_names:
            if name not in batch:
                raise ModelError(f"the ONNX model needs '{name}', which the tokenizer does not give; export the run again")
            value = batch[name]
            feed[name] = (value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)).astype(np.int64, copy=False)
        return self.session.run(None, feed)[0].astype(np.float32, copy=False)


def check_onnx_files(d: Path, manifest: RunManifest) -> list[str]:
    """The files an ONNX run directory lacks (the tokenizer's are checked by the caller)."""
    name = (manifest.onnx or {}).get("file", ONNX_FILE)
    return [] if (d / name).is_file() else [name]


def onnx_path(d: Path, manifest: RunManifest) -> Path:
    return d / (manifest.onnx or {}).get("file", ONNX_FILE)


def require_onnxruntime():
    """onnxruntime, or a one-line error saying how to install it."""
    require_extra("onnx", "running an ONNX export", ModelError, ("onnxruntime",))
    import onnxruntime

    return onnxruntime
