"""Single-label classification: one class per text, cross-entropy, argmax."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nlp_transfer.errors import DataError
from nlp_transfer.metrics import SINGLE_LABEL_METRICS, compute_metrics
from nlp_transfer.tasks.base import RowPredictions, Task, number_line
from nlp_transfer.tasks.calibration import calibrated_logits
from nlp_transfer.tasks.labels import UNSEEN, build_label_names, class_ids, is_missing


class Predictions(RowPredictions):
    """Predicted labels (a plain ``list`` of names) that also carry the scores behind them.

    ``probabilities`` [N, C] and ``logits`` [N, C] are numpy arrays whose columns follow
    ``classes``; ``ids`` [N] are the predicted class indices and ``scores`` the probability of
    each predicted label. With ``calibration`` (a temperature, :mod:`nlp_transfer.tasks.calibration`)
    the probabilities are ``softmax(logits / T)``; ``logits`` stay the model's own and the labels
    are the same. Slices, index arrays and boolean masks keep every per-row field
    (:class:`~nlp_transfer.tasks.base.RowPredictions`).

    Args:
        logits: The model's logits, one row per text.
        classes: The label names, in the logits' column order.
        calibration: The run's fitted calibration (``{"method": "temperature", "temperature": T}``) or None.

    Examples:
        >>> predictions = load_run("runs/rt-minilm-full").predict(["a gorgeous, moving film", "a tedious mess"])
        >>> list(predictions), predictions.classes
        (['fresh', 'rotten'], ['fresh', 'rotten'])
        >>> predictions[1:].probabilities.shape   # the rows follow the slice
        (1, 2)
    """

    row_fields = ("logits", "probabilities", "ids")

    def __init__(self, logits: np.ndarray, classes: Sequence[str], calibration: dict | None = None):
        self.classes = list(classes)
        self.logits = logits
        self.calibration = calibration
        self.probabilities = torch.softmax(torch.from_numpy(calibrated_logits(logits, calibration)), -1).numpy()
        self.ids = logits.argmax(-1)
        super().__init__(self.classes[i] for i in self.ids)

    @property
    def scores(self) -> np.ndarray:
        """The probability of each predicted label, [N]."""
        return self.probabilities[np.arange(len(self)), self.ids]

    def to_records(self) -> list[dict]:
        """One dict per text: ``label``, ``score`` and ``probabilities`` (class -> probability)."""
        return [
            {"label": label, "score": float(p[i]), "probabilities": {c: float(x) for c, x in zip(self.classes, p)}}
            for label, i, p in zip(self, self.ids, self.probabilities)
        ]


class SingleLabel(Task):
    name = "single_label"
    losses = ("cross_entropy",)
    metrics = SINGLE_LABEL_METRICS
    default_metric = "f1_macro"
    log_keys = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
    epoch_columns = (("accuracy", "val accuracy"), ("f1_macro", "val macro F1"))
    plot_scores = (("accuracy", "accuracy"), ("f1_macro", "macro F1"))
    stratify = True
    balances_classes = True
    mistake_columns = ("score", "true_probability")
    calibration_method = "temperature"
    ranks_label_issues = True
    distill_metric = "accuracy"

    def loss(self, fn: nn.Module, logits, labels, class_weights):
        if class_weights is not None:
            return nn.functional.cross_entropy(logits, labels.long(), weight=class_weights)
        return fn(logits, labels.long())

    def soft_targets(self, teacher_logits, temperature):
        """The teachers' probabilities at ``temperature``, averaged over teachers."""
        t = torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32))
        return torch.softmax(t / temperature, -1).mean(0).numpy()

    def soft_loss(self, student_logits, targets, temperature):
        """KL(teacher_T || student_T) * T^2 per row (Hinton et al. 2015: T^2 keeps the gradients' scale as T changes)."""
        log_q = torch.log_softmax(student_logits.float() / temperature, -1)
        return nn.functional.kl_div(log_q, targets.float(), reduction="none").sum(-1) * temperature**2

    def ensemble_logits(self, teacher_logits):
        """The log of the teachers' averaged probabilities (argmax: the ensemble's class)."""
        return np.log(np.clip(self.soft_targets(teacher_logits, 1.0), 1e-12, None))

    def label_names(self, train_values, data_cfg) -> list[str]:
        if any(is_missing(v) for v in train_values):
            raise DataError(f"train split has rows without a label in column '{data_cfg.label_column}'")
        names = build_label_names(train_values)
        if len(names) < 2:
            raise DataError(f"the training data has a single label ({names[0]}); classification needs at least two")
        return names

    def targets(self, values, names, where, separator=None, unknown=UNSEEN) -> np.ndarray:
        return np.asarray(class_ids(values, names, where, unknown), dtype=np.int64)

    def probabilities(self, logits):
        return torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), -1).numpy()

    def decide(self, logits, thresholds=None):
        return np.asarray(logits, dtype=np.float32).argmax(-1)

    def score(self, logits, targets, labels, thresholds=None) -> dict:
        return compute_metrics(targets, self.decide(logits), label_names=labels)

    def predictions(self, logits, labels, thresholds=None, calibration=None) -> Predictions:
        return Predictions(logits, labels, calibration)

    def as_labels(self, targets, names):
        return [names[int(i)] for i in targets]

    def label_counts(self, targets, names) -> dict[str, int]:
        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(names))
        return {n: int(c) for n, c in zip(names, counts)}

    def short_line(self, m: dict) -> str:
        return f"accuracy {m['accuracy']:.4f}, macro F1 {m['f1_macro']:.4f}"

    def headline(self, m: dict) -> str:
        return (
            f"accuracy **{m['accuracy']:.4f}**, macro F1 **{m['f1_macro']:.4f}**, macro precision {m['precision_macro']:.4f}, "
            f"macro recall {m['recall_macro']:.4f}, weighted F1 {m['f1_weighted']:.4f} {number_line(m)}"
        )

    def mistakes(self, p, y_true, names):
        wrong = np.flatnonzero(p.ids != y_true)
        wrong = wrong[np.argsort(-p.scores[wrong], kind="stable")]  # most confident first

        def cells(i):
            return {
                "true": names[y_true[i]],
                "predicted": p[i],
                "score": float(p.scores[i]),
                "true_probability": float(p.probabilities[i, y_true[i]]),
            }

        return wrong, cells

    def mistake_table(self, rows, cell) -> list[str]:
        out = ["| row | text | true | predicted | score |", "|---:|---|---|---|---:|"]
        return out + [f"| {r['row']} | {cell(r['text'])} | {r['true']} | {r['predicted']} | {r['score']:.3f} |" for r in rows]
