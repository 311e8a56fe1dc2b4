"""Classification metrics, computed once, used everywhere (training, evaluation, reports).

scikit-learn does the arithmetic. ``ClassificationMetrics`` wraps the same function as an
``evaluate.Metric`` that works offline (nothing is fetched from the hub), so research code
can use ``add_batch`` / ``compute``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

AVERAGES = ("macro", "micro", "weighted")
# Scalar metrics a run can select its best epoch by (all: higher is better, except loss).
SELECTABLE_METRICS = ("accuracy", "loss") + tuple(
    f"{m}_{a}" for m in ("precision", "recall", "f1") for a in AVERAGES
)


def compute_metrics(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    label_names: Sequence[str] | None = None,
    num_labels: int | None = None,
) -> dict:
    """Accuracy, precision/recall/F1 (macro, micro, weighted), per class, confusion matrix.

    Labels are integer ids ``0..num_labels-1``; classes absent from both ``y_true`` and
    ``y_pred`` still get a row (with zero support) so reports have a fixed shape. Undefined
    ratios (no predicted or no true examples of a class) count as 0, as in scikit-learn's
    ``zero_division=0``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} items but y_pred has {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("cannot compute metrics on zero examples")
    if num_labels is None:
        num_labels = len(label_names) if label_names is not None else int(max(y_true.max(), y_pred.max())) + 1
    if label_names is not None and len(label_names) != num_labels:
        raise ValueError(f"{len(label_names)} label_names given for num_labels={num_labels}")
    lo, hi = int(min(y_true.min(), y_pred.min())), int(max(y_true.max(), y_pred.max()))
    if lo < 0 or hi >= num_labels:  # sklearn would silently leave such ids out of every count
        raise ValueError(f"label ids must be in 0..{num_labels - 1}, got ids from {lo} to {hi}")
    labels = list(range(num_labels))
    names = [str(n) for n in label_names] if label_names is not None else [str(i) for i in labels]

    out: dict = {"accuracy": float((y_true == y_pred).mean()), "num_examples": int(y_true.size)}
    for avg in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0
        )
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(names)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["labels"] = names
    return out


def scalar_metrics(metrics: dict) -> dict:
    """Only the scalar entries (for logging and trackers)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_better(metric: str, new: float, best: float | None, threshold: float = 0.0) -> bool:
    """Whether ``new`` improves on ``best`` by more than ``threshold`` (loss: lower is better)."""
    if best is None:
        return True
    return new < best - threshold if metric == "loss" else new > best + threshold


def format_metrics(metrics: dict, keys: Sequence[str] = ("accuracy", "f1_macro", "precision_macro", "recall_macro")) -> str:
    return " ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def per_class_table(metrics: dict) -> str:
    """A Markdown table of per-class precision, recall, F1 and support."""
    rows = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, m in metrics["per_class"].items():
        rows.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    return "\n".join(rows)


def confusion_table(metrics: dict) -> str:
    """A Markdown confusion matrix: rows are true labels, columns predictions."""
    names = metrics["labels"]
    rows = ["| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, metrics["confusion_matrix"]):
        rows.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(rows)


def _make_evaluate_metric():
    import datasets
    import evaluate

    class ClassificationMetrics(evaluate.Metric):
        """All of :func:`compute_metrics` as an offline ``evaluate.Metric``.

        >>> m = ClassificationMetrics(label_names=["neg", "pos"])
        >>> m.add_batch(predictions=[0, 1], references=[0, 0])
        >>> m.compute()["accuracy"]
        0.5
        """

        def __init__(self, label_names: Sequence[str] | None = None, num_labels: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.label_names = list(label_names) if label_names is not None else None
            self.num_labels = num_labels

        def _info(self):
            return evaluate.MetricInfo(
                description="Accuracy, precision, recall, F1 (macro/micro/weighted), per class, confusion matrix.",
                citation="",
                inputs_description="predictions and references: integer class ids",
                features=datasets.Features(
                    {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
                ),
            )

        def _compute(self, predictions, references):
            return compute_metrics(references, predictions, label_names=self.label_names, num_labels=self.num_labels)

    return ClassificationMetrics


def __getattr__(name: str):
    # Built lazily: importing `evaluate` costs a second, and most users never need the class.
    if name == "ClassificationMetrics":
        cls = _make_evaluate_metric()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
