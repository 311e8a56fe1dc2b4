"""Metrics, computed once, used everywhere (training, evaluation, reports).

Single-label classification (:func:`compute_metrics`), multi-label classification
(:func:`multilabel_metrics`) and regression (:func:`regression_metrics`); scikit-learn and
scipy do the arithmetic. ``ClassificationMetrics`` wraps the same function as an
``evaluate.Metric`` that works offline (nothing is fetched from the hub), so research code
can use ``add_batch`` / ``compute``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AVERAGES = ("macro", "micro", "weighted")
_PRF = tuple(f"{m}_{a}" for m in ("precision", "recall", "f1") for a in AVERAGES)
# Scalar metrics a run can select its best epoch by, per task (see nlp_transfer.tasks).
SINGLE_LABEL_METRICS = ("accuracy", "loss") + _PRF
MULTI_LABEL_METRICS = ("subset_accuracy", "hamming_loss", "loss") + _PRF
REGRESSION_METRICS = ("mse", "mae", "rmse", "pearson", "spearman", "loss")
# "auto": the task's default (tasks.Task.default_metric).
SELECTABLE_METRICS = ("auto",) + tuple(dict.fromkeys(SINGLE_LABEL_METRICS + MULTI_LABEL_METRICS + REGRESSION_METRICS))
LOWER_IS_BETTER = frozenset({"loss", "hamming_loss", "mse", "mae", "rmse"})


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
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i, name in enumerate(names)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["labels"] = names
    return out


def multilabel_metrics(y_true, y_pred, label_names: Sequence[str] | None = None) -> dict:
    """Multi-label metrics from 0/1 matrices ``y_true`` and ``y_pred`` [N, L].

    Precision/recall/F1 micro (pooled over every (example, label) decision), macro (mean over
    labels) and weighted (by label support); ``subset_accuracy`` (the whole label set right);
    ``hamming_loss`` (share of wrong (example, label) decisions); per label. Undefined ratios
    count as 0 (``zero_division=0``).
    """
    from sklearn.metrics import hamming_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be matrices of one shape [N, labels]")
    if y_true.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero examples")
    names = [str(n) for n in label_names] if label_names is not None else [str(i) for i in range(y_true.shape[1])]
    if len(names) != y_true.shape[1]:
        raise ValueError(f"{len(names)} label_names given for {y_true.shape[1]} label columns")
    out: dict = {
        "subset_accuracy": float((y_true == y_pred).all(1).mean()),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "num_examples": int(y_true.shape[0]),
    }
    for avg in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    out["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
            "predicted": int(y_pred[:, i].sum()),
        }
        for i, name in enumerate(names)
    }
    out["labels"] = names
    return out


def regression_metrics(y_true, y_pred) -> dict:
    """MSE, RMSE, MAE, Pearson and Spearman correlation of numbers ``y_pred`` against ``y_true``.

    A correlation is undefined when either side is constant; it is then reported as 0.0
    (so model selection and tables keep working).
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} items but y_pred has {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("cannot compute metrics on zero examples")
    mse = float(mean_squared_error(y_true, y_pred))
    constant = y_true.size < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "pearson": 0.0 if constant else float(pearsonr(y_true, y_pred)[0]),
        "spearman": 0.0 if constant else float(spearmanr(y_true, y_pred)[0]),
        "num_examples": int(y_true.size),
        "target_mean": float(y_true.mean()),
        "target_std": float(y_true.std()),
    }


def scalar_metrics(metrics: dict) -> dict:
    """Only the scalar entries (for logging and trackers)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_better(metric: str, new: float, best: float | None, threshold: float = 0.0) -> bool:
    """Whether ``new`` improves on ``best`` by more than ``threshold`` (loss, MSE, MAE, Hamming loss: lower is better)."""
    if best is None:
        return True
    return new < best - threshold if metric in LOWER_IS_BETTER else new > best + threshold


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
                features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
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
