"""Batched inference on a saved run: ``load_run(dir).predict(texts)``.

    predictions = load_run("runs/rt-minilm-full").predict(["a gorgeous, moving film", "a tedious mess"])
    predictions                 # ['fresh', 'rotten']: a list of labels ...
    predictions.probabilities   # ... with one row of class probabilities per text (columns: predictions.classes)

Multi-label runs return a list of label lists (``[["sport"], ["sport", "politics"]]``, with
per-label ``probabilities`` and the ``thresholds`` that decided them); regression runs a list
of numbers (:class:`MultiLabelPredictions`, :class:`RegressionPredictions`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml

from .chunking import LongTextSpec, aggregate, encode
from .errors import ModelError
from .modeling import HEAD_FILE, META_FILE, TextClassifier, _quiet

# Files without which a run directory cannot be loaded (weights: any one of WEIGHT_FILES).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


class Predictions(list):
    """Predicted labels (a plain ``list`` of names) that also carry the scores behind them.

    ``probabilities`` [N, C] and ``logits`` [N, C] are numpy arrays whose columns follow
    ``classes``; ``scores`` is the probability of each predicted label.
    """

    def __init__(self, logits: np.ndarray, classes: Sequence[str]):
        self.classes = list(classes)
        self.logits = logits
        self.probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        self.ids = logits.argmax(-1)
        super().__init__(self.classes[i] for i in self.ids)

    @property
    def scores(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self)), self.ids]

    def to_records(self) -> list[dict]:
        """One dict per text: ``label``, ``score`` and ``probabilities`` (class -> probability)."""
        return [
            {"label": label, "score": float(p[i]), "probabilities": {c: float(x) for c, x in zip(self.classes, p)}}
            for label, i, p in zip(self, self.ids, self.probabilities)
        ]


class MultiLabelPredictions(list):
    """Predicted label sets (a ``list`` of lists of names): each label whose sigmoid probability
    reaches its threshold. ``probabilities`` [N, L] and ``logits`` [N, L] follow ``classes``;
    ``ids`` is the 0/1 decision matrix."""

    def __init__(self, logits: np.ndarray, classes: Sequence[str], thresholds: Sequence[float]):
        from .tasks import decide, label_names, probabilities

        self.classes = list(classes)
        self.logits = logits
        self.thresholds = [float(t) for t in thresholds]
        self.probabilities = probabilities("multi_label", logits)
        self.ids = decide("multi_label", logits, self.thresholds)
        super().__init__(label_names(self.ids, self.classes))

    def to_records(self) -> list[dict]:
        """One dict per text: ``labels`` (a list) and ``probabilities`` (label -> probability)."""
        return [{"labels": list(labels), "probabilities": {c: float(x) for c, x in zip(self.classes, p)}}
                for labels, p in zip(self, self.probabilities)]


class RegressionPredictions(list):
    """Predicted numbers (a ``list`` of floats); ``values`` the same as a numpy array, ``logits`` [N, 1]."""

    def __init__(self, logits: np.ndarray, classes: Sequence[str]):
        self.classes = list(classes)  # one name: the target column
        self.logits = logits
        self.values = logits[:, 0].astype(np.float64)
        super().__init__(float(v) for v in self.values)

    def to_records(self) -> list[dict]:
        """One dict per text: ``value``."""
        return [{"value": v} for v in self]


def make_predictions(logits: np.ndarray, model: TextClassifier):
    """The predictions container of ``model``'s task for ``logits``."""
    if model.task == "multi_label":
        return MultiLabelPredictions(logits, model.labels, model.thresholds)
    if model.task == "regression":
        return RegressionPredictions(logits, model.labels)
    return Predictions(logits, model.labels)


class Predictor:
    """A saved model and its tokenizer; predictions in length-sorted batches.

    ``precision`` ("no", "bf16", "fp16") is the autocast used for inference and
    ``batch_size`` the default batch; ``load_run`` picks those the run was evaluated with.
    Batches are formed as in training's evaluation (by token count, longest first, padded to
    a multiple of 8), so a reloaded run reproduces its reported metrics exactly, even in bf16,
    where other batches would round differently.
    """

    def __init__(
        self, model: TextClassifier, tokenizer, max_length: int = 128, device: str | None = None, precision: str = "no",
        batch_size: int = 64, spec: LongTextSpec | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.precision = precision
        self.batch_size = batch_size
        # Truncation or sliding windows, as in training (load_run reads them from the run).
        self.spec = spec or LongTextSpec(max_length)

    @property
    def max_length(self) -> int:
        """The longest tokenized input (a window's length with chunking)."""
        return self.spec.max_length

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def task(self) -> str:
        return self.model.task

    @torch.inference_mode()
    def logits(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Logits [N, C] in input order; batches of similar token counts, longest first.

        With chunking, every window of a text is scored and the text's logits aggregate them.
        """
        from tqdm.auto import tqdm

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
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        windows = np.zeros((len(rows), self.model.num_labels), dtype=np.float32)
        for i in tqdm(range(0, len(rows), bs), desc="predicting", unit="batch", disable=not progress, leave=False):
            idx = order[i : i + bs]
            batch = self.tokenizer.pad([rows[j] for j in idx], pad_to_multiple_of=8, return_tensors="pt").to(self.device)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                windows[idx] = self.model(**batch)["logits"].float().cpu().numpy()
        if not self.spec.chunking:
            return windows
        _, docs = aggregate(torch.from_numpy(windows), torch.tensor(doc_ids), self.spec.chunk_aggregate)
        return docs.numpy()  # every text has a window: one row per text, in input order

    def predict_proba(self, texts: Sequence[str], **kw) -> np.ndarray:
        """Class probabilities [N, C] (multi-label: per-label sigmoid); columns follow :attr:`labels`."""
        if self.task == "regression":
            raise ModelError("a regression run predicts numbers, not probabilities; use predict()")
        return self.predict(texts, **kw).probabilities

    def predict(self, texts: Sequence[str], **kw) -> "Predictions | MultiLabelPredictions | RegressionPredictions":
        """Predictions for ``texts`` (a list), by the run's task: labels with ``.probabilities``, ``.scores``
        and ``.logits`` (single-label); label lists with ``.probabilities`` and ``.thresholds``
        (multi-label); numbers with ``.values`` (regression).

        Keyword arguments: ``text_pairs``, ``batch_size`` (default: :attr:`batch_size`), ``progress`` (a bar).
        """
        return make_predictions(self.logits(texts, **kw), self.model)

    def evaluate(self, texts: Sequence[str], labels: Sequence, **kw):
        """Metrics, confusion matrix and misclassified examples on labelled texts (see :mod:`nlp_transfer.evaluation`)."""
        from .evaluation import evaluate_texts

        return evaluate_texts(self, texts, labels, **kw)


def load_run(run_dir: str | Path, device: str | None = None, precision: str | None = None) -> Predictor:
    """Reload a run directory written by :func:`nlp_transfer.train`.

    ``precision`` defaults to the run's own (from ``metrics.json``), else fp32.
    """
    from transformers import AutoTokenizer

    d = check_run_dir(run_dir)
    meta = json.loads((d / META_FILE).read_text())
    model = TextClassifier.from_pretrained(d)
    tokenizer = _quiet(AutoTokenizer.from_pretrained, str(d))
    if precision is None:
        metrics = d / "metrics.json"
        env = json.loads(metrics.read_text()).get("environment", {}) if metrics.is_file() else {}
        precision = env.get("mixed_precision", "no")
    recipe = yaml.safe_load((d / "recipe.yaml").read_text()) if (d / "recipe.yaml").is_file() else {}
    batch_size = ((recipe or {}).get("train") or {}).get("eval_batch_size") or 64
    return Predictor(model, tokenizer, meta.get("max_length", 128), device, precision, batch_size, LongTextSpec.from_meta(meta))


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a one-line error: missing, not a run, or files missing."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ModelError(f"run directory '{d}' does not exist; pass the output.dir of a finished training run")
    if not (d / META_FILE).is_file():
        raise ModelError(f"'{d}' is not a run directory (no {META_FILE}); pass the output.dir of a finished training run")
    check_run_files(d)
    return d


def check_run_files(d: Path) -> None:
    """A one-line error naming the files a run directory lacks."""
    missing = [f for f in ("config.json", HEAD_FILE) if not (d / f).is_file()]
    if not any((d / f).is_file() for f in WEIGHT_FILES):
        missing.append(f"model weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json)")
    if missing:
        raise ModelError(f"run directory '{d}' is incomplete: missing {', '.join(missing)}; copy the whole directory or train again")
