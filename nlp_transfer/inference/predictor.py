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
from typing import Any

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
    """A trained model and its tokenizer; predictions in length-sorted batches.

    Get one with :func:`load_run` (a run directory) or from ``train(cfg).predictor`` (the model just
    trained); both read the run's settings from its manifest. Batches are formed as in training's
    evaluation (by token count, longest first, padded to a multiple of 8), so a reloaded run
    reproduces its reported metrics exactly, even in bf16, where other batches would round differently.

    Args:
        model: The classifier (:class:`~nlp_transfer.models.classifier.TextClassifier`), or an ONNX run's
            stand-in when ``runner`` is given.
        tokenizer: Its tokenizer.
        max_length: The longest tokenized input (ignored when ``spec`` is given).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default: CUDA if available.
        precision: Autocast for inference: ``"no"``, ``"bf16"`` or ``"fp16"``.
        batch_size: Texts per batch by default.
        spec: Truncation or sliding windows for long texts, as in training.
        calibration: The run's fitted calibration (changes probabilities, never labels), or None.
        runner: Another backend's "logits of one padded batch" (an ONNX export's), or None for PyTorch.

    Examples:
        >>> predictor = load_run("runs/rt-minilm-full")
        >>> predictor.labels
        ['fresh', 'rotten']
        >>> predictor.predict(["a gorgeous, moving film"]).probabilities.round(2)
        array([[0.97, 0.03]], dtype=float32)
    """

    def __init__(
        self,
        model: TextClassifier,
        tokenizer: Any,
        max_length: int = 128,
        device: str | None = None,
        precision: str = "no",
        batch_size: int = 64,
        spec: LongTextSpec | None = None,
        calibration: dict | None = None,
        runner: Any = None,
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
        """The label names, in the order of the logits' and probabilities' columns."""
        return self.model.labels

    @property
    def task(self) -> str:
        """The run's task name (``single_label``, ``multi_label``, ``regression``)."""
        return self.model.task.name

    @torch.inference_mode()
    def logits(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """The model's raw logits, one row per text, in input order.

        Texts are scored in batches of similar token counts, longest first. With chunking, every
        window of a text is scored and the text's logits aggregate them.

        Args:
            texts: The texts (a list, not one string).
            text_pairs: Second texts of sentence pairs, one per text, or None.
            batch_size: Texts per batch (default: :attr:`batch_size`).
            progress: Show a progress bar.

        Returns:
            A float32 array [N, C] whose columns follow :attr:`labels` (regression: [N, 1]).

        Examples:
            >>> predictor.logits(["a gorgeous, moving film", "a tedious mess"]).shape
            (2, 2)
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

    def predict_proba(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        """Class probabilities, calibrated as the run fitted them (multi-label: per-label sigmoid).

        Args:
            texts: The texts (a list).
            **kw: As for :meth:`predict`.

        Returns:
            A float32 array [N, C] whose columns follow :attr:`labels`.

        Raises:
            ModelError: For a regression run, which predicts numbers.

        Examples:
            >>> predictor.predict_proba(["a gorgeous, moving film"]).sum(axis=1)
            array([1.], dtype=float32)
        """
        predictions = self.predict(texts, **kw)
        if not hasattr(predictions, "probabilities"):
            raise ModelError(f"a {self.task} run predicts numbers, not probabilities; use predict()")
        return predictions.probabilities

    def predict(self, texts: Sequence[str], **kw: Any) -> Predictions | MultiLabelPredictions | RegressionPredictions:
        """Predictions for ``texts``, by the run's task.

        Args:
            texts: The texts (a list, not one string).
            **kw: ``text_pairs`` (second texts of sentence pairs), ``batch_size`` (default:
                :attr:`batch_size`), ``progress`` (a progress bar).

        Returns:
            A list with one prediction per text that also carries the scores: labels with
            ``.probabilities``, ``.scores`` and ``.logits`` (single-label,
            :class:`~nlp_transfer.tasks.Predictions`); label lists with ``.probabilities`` and
            ``.thresholds`` (multi-label, :class:`~nlp_transfer.tasks.MultiLabelPredictions`); numbers with
            ``.values`` (regression, :class:`~nlp_transfer.tasks.RegressionPredictions`). Slices and
            boolean masks keep the per-row fields.

        Examples:
            >>> predictions = predictor.predict(["a gorgeous, moving film", "a tedious mess"])
            >>> list(predictions), predictions.scores.round(2)
            (['fresh', 'rotten'], array([0.97, 0.91], dtype=float32))
            >>> predictions.to_records()[0]["label"]
            'fresh'
        """
        return self.model.task.predictions(self.logits(texts, **kw), self.model.labels, self.model.thresholds, self.calibration)

    def evaluate(self, texts: Sequence[str], labels: Sequence, **kw: Any):
        """Predict labelled texts and score them: metrics, confusion matrix and the misclassified examples.

        Args:
            texts: The texts (a list).
            labels: Their labels: names or class indices (single-label); lists of names, strings joined by
                the run's ``data.label_separator`` or JSON lists (multi-label); numbers (regression).
            **kw: ``text_pairs``, ``batch_size``, ``progress``, as for :meth:`predict`.

        Returns:
            evaluation (Evaluation): ``metrics`` (the same keys as ``metrics.json``'s test entry),
                ``predictions`` and the true labels.

        Examples:
            >>> result = predictor.evaluate(["a gorgeous, moving film", "a tedious mess"], ["fresh", "rotten"])
            >>> result.metrics["accuracy"]
            1.0
        """
        from nlp_transfer.inference.evaluation import evaluate_texts  # evaluation builds on this module

        return evaluate_texts(self, texts, labels, **kw)

    def explain(self, texts: Sequence[str], **kw: Any) -> list:
        """Word attributions (Integrated Gradients) towards each text's predicted label.

        Args:
            texts: The texts (a list; sentence pairs are not explained).
            **kw: ``targets`` (the output index to explain per text; default: the predicted label),
                ``n_steps``, ``internal_batch_size``, ``progress`` (see :mod:`nlp_transfer.inference.explain`).

        Returns:
            One :class:`~nlp_transfer.inference.explain.Explanation` per text, with its words and their
            attributions.

        Raises:
            ModelError: For an ONNX export, which gives no gradients.

        Examples:
            >>> explanation = predictor.explain(["a gorgeous, moving film"])[0]
            >>> explanation.label
            'fresh'
        """
        if self.runner is not None:
            raise ModelError(
                "explanations need gradients, which an ONNX export does not give; explain with the PyTorch run it was exported from"
            )
        from nlp_transfer.inference.explain import explain_texts  # captum is imported only here

        return explain_texts(self, texts, **kw)


def load_run(run_dir: str | Path, device: str | None = None, precision: str | None = None, calibrated: bool = True) -> Predictor:
    """Load a run directory written by :func:`nlp_transfer.train` (or an export of one) as a :class:`Predictor`.

    The run's manifest (``nlp_transfer.json``) says how: labels and task, pooling and head, token budget and
    long-text handling, the precision and batch size the run was evaluated with, the calibration fitted on
    validation. An adapter run loads its base checkpoint; an ONNX export runs on onnxruntime.

    Args:
        run_dir: The run directory (a training run's ``output.dir``).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if available).
        precision: Autocast for inference, ``"no"``, ``"bf16"`` or ``"fp16"`` (default: the run's own).
        calibrated: Apply the run's calibration to the probabilities (False: raw; runs without calibration
            predict raw probabilities either way).

    Returns:
        A :class:`Predictor`; its predictions equal those of ``train(cfg).predictor`` for the same run.

    Raises:
        ModelError: The directory is missing, not a run, incomplete or damaged (one line saying which).

    Examples:
        >>> from nlp_transfer import load_run
        >>> predictor = load_run("runs/rt-minilm-full")
        >>> predictor.predict(["a gorgeous, moving film"])
        ['fresh']
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
