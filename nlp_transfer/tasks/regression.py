"""Regression: one number per text, MSE or Huber loss, the output itself as the prediction.

Model selection defaults to MSE (what the loss minimises; a correlation can be perfect
while predictions are off in scale, and predictions are returned as numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlp_transfer.metrics import REGRESSION_METRICS, regression_metrics
from nlp_transfer.tasks.base import RowPredictions, Task, number_line
from nlp_transfer.tasks.labels import UNSEEN, numbers


class RegressionPredictions(RowPredictions):
    """Predicted numbers (a ``list`` of floats); ``values`` the same as a numpy array, ``logits`` [N, 1].
    Slices, index arrays and boolean masks keep both (:class:`~nlp_transfer.tasks.base.RowPredictions`)."""

    row_fields = ("logits", "values")

    def __init__(self, logits: np.ndarray, classes: Sequence[str]):
        self.classes = list(classes)  # one name: the target column
        self.logits = logits
        self.values = logits[:, 0].astype(np.float64)
        super().__init__(float(v) for v in self.values)

    def to_records(self) -> list[dict]:
        """One dict per text: ``value``."""
        return [{"value": v} for v in self]


class Regression(Task):
    name = "regression"
    losses = ("mse", "huber")
    metrics = REGRESSION_METRICS
    default_metric = "mse"
    log_keys = ("mse", "mae", "pearson", "spearman")
    epoch_columns = (("mse", "val MSE"), ("pearson", "val Pearson"))
    plot_scores = (("pearson", "Pearson"), ("spearman", "Spearman"))
    problem_type = "regression"
    has_classes = False
    mistake_columns = ("error",)
    distill_metric = "pearson"

    def loss(self, fn, logits, labels, class_weights):
        return fn(logits.squeeze(-1), labels.float().view(-1))

    def soft_targets(self, teacher_logits, temperature):
        """The teachers' predicted values, averaged over teachers (no temperature)."""
        return np.asarray(teacher_logits, dtype=np.float32).mean(0)

    def soft_loss(self, student_logits, targets, temperature):
        """Squared error between the student's value and the teachers', per row."""
        return (student_logits.float()[:, 0] - targets.float()[:, 0]) ** 2

    def ensemble_logits(self, teacher_logits):
        return self.soft_targets(teacher_logits, 1.0)

    def label_names(self, train_values, data_cfg) -> list[str]:
        return [data_cfg.label_column]  # one output, named after the target column

    def targets(self, values, names, where, separator=None, unknown=UNSEEN) -> np.ndarray:
        return np.asarray(numbers(values, names[0], where), dtype=np.float32)

    def decide(self, logits, thresholds=None):
        return np.asarray(logits, dtype=np.float32)[:, 0].astype(np.float64)

    def score(self, logits, targets, labels, thresholds=None) -> dict:
        return regression_metrics(targets, self.decide(logits))

    def predictions(self, logits, labels, thresholds=None, calibration=None) -> RegressionPredictions:
        return RegressionPredictions(logits, labels)

    def as_labels(self, targets, names):
        return [float(v) for v in targets]

    def describe_split(self, targets, names) -> dict:
        y = np.asarray(targets, dtype=np.float64)
        return {"target": {"mean": float(y.mean()), "std": float(y.std()), "min": float(y.min()), "max": float(y.max())}}

    def headline(self, m: dict) -> str:
        return (
            f"MSE **{m['mse']:.4f}**, MAE {m['mae']:.4f}, RMSE {m['rmse']:.4f}, Pearson **{m['pearson']:.4f}**, "
            f"Spearman {m['spearman']:.4f} {number_line(m)}; the target's mean {m['target_mean']:.4f}, "
            f"standard deviation {m['target_std']:.4f}"
        )

    def mistakes_heading(self, n_wrong, n_total, shown) -> str:
        return f"## Largest errors (the {shown} of {n_total:,} furthest off)"

    def mistakes(self, p, y_true, names):
        err = p.values - y_true
        order = np.argsort(-np.abs(err), kind="stable")  # every example, largest absolute error first

        def cells(i):
            return {"true": float(y_true[i]), "predicted": p[i], "error": float(err[i])}

        return order, cells

    def mistake_table(self, rows, cell) -> list[str]:
        out = ["| row | text | true | predicted | error |", "|---:|---|---:|---:|---:|"]
        return out + [f"| {r['row']} | {cell(r['text'])} | {r['true']:.4f} | {r['predicted']:.4f} | {r['error']:+.4f} |" for r in rows]
