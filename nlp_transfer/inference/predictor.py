"""Batched inference on a saved run: ``load_run(dir).predict(texts)``.

    predictions = load_run("runs/rt-minilm-full").predict(["a gorgeous, moving film", "a tedious mess"])
    predictions                 # ['fresh', 'rotten']: a list of labels ...
    predictions.probabilities   # ... with one row of class probabilities per text (columns: predictions.classes)

Multi-label runs return a list of label lists (``[["sport"], ["sport", "politics"]]``, with
per-label ``probabilities`` and the ``thresholds`` that decided them); regression runs a list
of numbers (:class:`MultiLabelPredictions`, :class:`RegressionPredictions`).

An ONNX export (``scripts/export.py RUN OUT --onnx``) loads into the same :class:`Predictor`: only
the logits of one padded batch come from onnxruntime (:mod:`nlp_transfer.inference.onnx`);
tokenization, batching, long-text windows and their aggregation, and post-processing are shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.data.chunking import LongTextSpec, aggregate, encode
from nlp_transfer.errors import ModelError
from nlp_transfer.inference.onnx import OnnxModel, OnnxRunner, check_onnx_files, onnx_path
from nlp_transfer.manifest import MANIFEST_FILE, RunManifest, read_manifest
from nlp_transfer.models.adapters import ADAPTER_FILES
from nlp_transfer.models.classifier import HEAD_FILE, TextClassifier
from nlp_transfer.models.fast import speedups
from nlp_transfer.tasks import MultiLabelPredictions, Predictions, RegressionPredictions
from nlp_transfer.utils.logs import quiet
from nlp_transfer.utils.progress import progress as progress_bar

# Files without which a run directory cannot be loaded (weights: any one of WEIGHT_FILES).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


class Predictor:
    """A saved model and its tokenizer; predictions in length-sorted batches.

    ``precision`` ("no", "bf16", "fp16") is the autocast used for inference and
    ``batch_size`` the default batch; ``load_run`` picks those the run was evaluated with.
    Batches are formed as in training's evaluation (by token count, longest first, padded to
    a multiple of 8), so a reloaded run reproduces its reported metrics exactly, even in bf16,
    where other batches would round differently.
    """

    def __init__(
        self,
        model: TextClassifier,
        tokenizer,
        max_length: int = 128,
        device: str | None = None,
        precision: str = "no",
        batch_size: int = 64,
        spec: LongTextSpec | None = None,
        calibration: dict | None = None,
        runner=None,
    ):
        # ``runner``: another backend's "logits of one padded batch" (an ONNX run's OnnxRunner); ``model`` is
        # then the manifest's stand-in (labels, task, loss, thresholds) and everything else is shared.
        self.runner = runner
        if runner is None:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model = model.to(self.device).eval()
        else:
            self.device, self.model = torch.device("cpu"), model  # post-processing (losses in evaluation) on the CPU
        self.tokenizer = tokenizer
        self.precision = precision
        self.batch_size = batch_size
        # Truncation or sliding windows, as in training (load_run reads them from the run).
        self.spec = spec or LongTextSpec(max_length)
        # The run's calibration (temperature or per-label Platt scaling): changes probabilities, never labels.
        self.calibration = calibration

    @property
    def max_length(self) -> int:
        """The longest tokenized input (a window's length with chunking)."""
        return self.spec.max_length

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def task(self) -> str:
        """The run's task name (``single_label``, ``multi_label``, ``regression``)."""
        return self.model.task.name

    @torch.inference_mode()
    def logits(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Logits [N, C] in input order; batches of similar token counts, longest first.

        With chunking, every window of a text is scored and the text's logits aggregate them.
        """
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string (wrap it: [text])")
        texts = list(texts)
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        if not texts:
            return np.zeros((0, self.model.num_labels), dtype=np.float32)
        bs = batch_size or self.batch_size
        enc = encode(self.tokenizer, texts, list(text_pairs) if text_pairs is not None else None, self.spec)
        doc_ids = enc.pop("doc_id")
        rows = [dict(zip(enc.keys(), values)) for values in zip(*enc.values())]
        order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")  # as data.LengthGroupedBatchSampler
        windows = np.zeros((len(rows), self.model.num_labels), dtype=np.float32)
        with self._inference():
            for i in progress_bar(range(0, len(rows), bs), "predicting", enabled=progress):
                idx = order[i : i + bs]
                windows[idx] = self._batch_logits(self.tokenizer.pad([rows[j] for j in idx], pad_to_multiple_of=8, return_tensors="pt"))
        if not self.spec.chunking:
            return windows
        _, docs = aggregate(torch.from_numpy(windows), torch.tensor(doc_ids), self.spec.chunk_aggregate)
        return docs.numpy()  # every text has a window: one row per text, in input order

    @contextlib.contextmanager
    def _inference(self):
        """The context every batch runs in: for PyTorch, only position 0 of the last layer is read under
        cls/pooler pooling, so nothing else is computed, and every parameter is frozen (some kernels, peft's
        adapter layers among them, take another path for trainable weights, which changes the last bit):
        a freshly trained model and its reload predict the same. Both undone after; other backends need none."""
        if self.runner is not None:
            yield
            return
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        try:
            for p in trainable:
                p.requires_grad_(False)
            with speedups(self.model, dropout=False, attention=False, first_token=True, allocator=False):
                yield
        finally:
            for p in trainable:
                p.requires_grad_(True)

    def _batch_logits(self, batch) -> np.ndarray:
        """Logits [B, C] (float32) of one padded batch: the one step a backend provides."""
        if self.runner is not None:
            return self.runner(batch)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.model(**batch.to(self.device))["logits"].float().cpu().numpy()

    def predict_proba(self, texts: Sequence[str], **kw) -> np.ndarray:
        """Class probabilities [N, C] (multi-label: per-label sigmoid); columns follow :attr:`labels`."""
        predictions = self.predict(texts, **kw)
        if not hasattr(predictions, "probabilities"):
            raise ModelError(f"a {self.task} run predicts numbers, not probabilities; use predict()")
        return predictions.probabilities

    def predict(self, texts: Sequence[str], **kw) -> Predictions | MultiLabelPredictions | RegressionPredictions:
        """Predictions for ``texts`` (a list), by the run's task: labels with ``.probabilities``, ``.scores``
        and ``.logits`` (single-label); label lists with ``.probabilities`` and ``.thresholds``
        (multi-label); numbers with ``.values`` (regression).

        Keyword arguments: ``text_pairs``, ``batch_size`` (default: :attr:`batch_size`), ``progress`` (a bar).
        """
        return self.model.task.predictions(self.logits(texts, **kw), self.model.labels, self.model.thresholds, self.calibration)

    def evaluate(self, texts: Sequence[str], labels: Sequence, **kw):
        """Metrics, confusion matrix and misclassified examples on labelled texts (see :mod:`nlp_transfer.evaluation`)."""
        from nlp_transfer.inference.evaluation import evaluate_texts  # evaluation builds on this module

        return evaluate_texts(self, texts, labels, **kw)

    def explain(self, texts: Sequence[str], **kw):
        """Word attributions (Integrated Gradients) towards each text's predicted label (see :mod:`nlp_transfer.inference.explain`)."""
        if self.runner is not None:
            raise ModelError(
                "explanations need gradients, which an ONNX export does not give; explain with the PyTorch run it was exported from"
            )
        from nlp_transfer.inference.explain import explain_texts  # captum is imported only here

        return explain_texts(self, texts, **kw)


def load_run(run_dir: str | Path, device: str | None = None, precision: str | None = None, calibrated: bool = True) -> Predictor:
    """Reload a run directory written by :func:`nlp_transfer.train`.

    ``precision`` defaults to the run's own (from its manifest), as does the batch size. The
    probabilities are calibrated as the run fitted them on validation (``calibrated=False``: raw;
    runs without calibration predict raw probabilities either way).
    """
    from transformers import AutoTokenizer

    d = check_run_dir(run_dir)
    manifest = read_manifest(d)
    if manifest.backend == "onnx":
        if precision not in (None, "no"):
            raise ModelError(
                f"'{d}' is an ONNX export, which runs in its own precision (fp32 or int8); "
                "drop --precision, or predict with the PyTorch run it was exported from"
            )
        model, runner = OnnxModel(manifest), OnnxRunner(onnx_path(d, manifest), device)
    else:
        model, runner = TextClassifier.from_pretrained(d), None
    try:
        tokenizer = quiet(AutoTokenizer.from_pretrained, str(d))
    except (OSError, ValueError) as e:
        raise ModelError(f"the tokenizer in '{d}' could not be loaded ({str(e).splitlines()[0][:200]}); copy the run again") from None
    return build_predictor(model, tokenizer, manifest, device, precision, calibrated, runner)


def build_predictor(
    model: TextClassifier,
    tokenizer,
    manifest: RunManifest,
    device: str | None = None,
    precision: str | None = None,
    calibrated: bool = True,
    runner=None,
) -> Predictor:
    """The :class:`Predictor` of a model and tokenizer with the settings its run ``manifest`` records: token budget
    and long-text handling, precision, batch size and calibration. :func:`load_run` builds it from the files of a
    run directory; :func:`nlp_transfer.train` from the model it has just trained (``RunResult.predictor``), so the
    two predict the same."""
    spec = LongTextSpec(max_length=manifest.max_length, **manifest.long_text)
    return Predictor(
        model,
        tokenizer,
        manifest.max_length,
        device,
        precision or manifest.precision,
        manifest.eval_batch_size,
        spec,
        manifest.calibration if calibrated else None,
        runner=runner,
    )


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a one-line error: missing, not a run, or files missing."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ModelError(f"run directory '{d}' does not exist; pass the output.dir of a finished training run")
    if not (d / MANIFEST_FILE).is_file():
        raise ModelError(f"'{d}' is not a run directory (no {MANIFEST_FILE}); pass the output.dir of a finished training run")
    manifest = read_manifest(d)  # an unreadable or newer manifest fails here, before any input is read
    check_run_files(d, adapter=manifest.adapter is not None, manifest=manifest)
    return d


def check_run_files(d: Path, adapter: bool = False, manifest=None) -> None:
    """A one-line error naming the files a run directory lacks (an adapter run: the adapter's, not the model's;
    an ONNX export: its ONNX file)."""
    if manifest is not None and manifest.backend == "onnx":
        missing = check_onnx_files(d, manifest)
    elif adapter:
        missing = [f for f in (*ADAPTER_FILES, HEAD_FILE) if not (d / f).is_file()]
    else:
        missing = [f for f in ("config.json", HEAD_FILE) if not (d / f).is_file()]
        if not any((d / f).is_file() for f in WEIGHT_FILES):
            missing.append(f"model weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json)")
    if missing:
        raise ModelError(f"run directory '{d}' is incomplete: missing {', '.join(missing)}; copy the whole directory or train again")
