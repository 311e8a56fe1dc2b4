"""Multi-label classification: any set of labels per text, sigmoid per label, tuned thresholds.

Decision thresholds (``train.thresholds``): ``per_label`` (default) picks, for each label,
the threshold on the validation split that maximises that label's F1; ``global`` picks one
threshold maximising micro F1; a number or a list (one per label) fixes them. Candidates
are 0.05, 0.10, ..., 0.95; ties go to the one nearest 0.5. Thresholds are tuned at every
validation (so the best epoch is chosen with its own thresholds), saved in the run manifest
and used by ``load_run``; the test split never tunes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nlp_transfer.config import THRESHOLD_MODES
from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.metrics import MULTI_LABEL_METRICS, multilabel_metrics
from nlp_transfer.tasks.base import RowPredictions, Task, number_line
from nlp_transfer.tasks.calibration import calibrated_logits, calibrated_thresholds
from nlp_transfer.tasks.labels import UNSEEN, build_label_names, label_names, label_set, multi_hot

THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, mode: str = "per_label") -> list[float]:
    """Decision thresholds from :data:`THRESHOLD_GRID` that maximise F1 on (``probs``, ``targets``).

    ``per_label``: each label's own F1; ``global``: one threshold for all, by micro F1. Ties go
    to the candidate nearest 0.5 (a label never positive in ``targets`` keeps 0.5).
    """
    if mode not in THRESHOLD_MODES:
        raise ConfigError(f"unknown threshold tuning '{mode}'; use {', '.join(THRESHOLD_MODES)} or fixed numbers")
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets).astype(bool)
    grid = np.array(sorted(THRESHOLD_GRID, key=lambda t: (abs(t - 0.5), t)))  # nearest 0.5 first wins ties
    pred = probs[None] >= grid[:, None, None]  # [G, N, L]
    tp = (pred & y[None]).sum(1).astype(np.float64)  # [G, L]
    fp = (pred & ~y[None]).sum(1)
    fn = (~pred & y[None]).sum(1)
    if mode == "per_label":
        denom = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return [float(grid[g]) for g in f1.argmax(0)]
    tp, fp, fn = tp.sum(1), fp.sum(1), fn.sum(1)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return [float(grid[f1.argmax()])] * probs.shape[1]


class MultiLabelPredictions(RowPredictions):
    """Predicted label sets (a ``list`` of lists of names): each label whose sigmoid probability
    reaches its threshold. ``probabilities`` [N, L] and ``logits`` [N, L] follow ``classes``;
    ``ids`` is the 0/1 decision matrix. With ``calibration`` (Platt scaling per label,
    :mod:`nlp_transfer.tasks.calibration`) the probabilities are calibrated and ``thresholds`` are
    the run's thresholds mapped the same way (``raw_thresholds``: as tuned), so the decisions are
    the same and ``probabilities >= thresholds`` still reads them off. Slices, index arrays and boolean masks
    keep every per-row field (:class:`~nlp_transfer.tasks.base.RowPredictions`)."""

    row_fields = ("logits", "probabilities", "ids")

    def __init__(self, logits: np.ndarray, classes: Sequence[str], thresholds: Sequence[float], calibration: dict | None = None):
        self.classes = list(classes)
        self.logits = logits
        self.calibration = calibration
        self.raw_thresholds = [float(t) for t in thresholds]
        self.thresholds = calibrated_thresholds(self.raw_thresholds, calibration)
        self.probabilities = MULTI_LABEL.probabilities(calibrated_logits(logits, calibration))
        self.ids = MULTI_LABEL.decide(logits, self.raw_thresholds)
        super().__init__(label_names(self.ids, self.classes))

    def to_records(self) -> list[dict]:
        """One dict per text: ``labels`` (a list) and ``probabilities`` (label -> probability)."""
        return [
            {"labels": list(labels), "probabilities": {c: float(x) for c, x in zip(self.classes, p)}}
            for labels, p in zip(self, self.probabilities)
        ]


class MultiLabel(Task):
    name = "multi_label"
    calibration_method = "platt"
    losses = ("bce",)
    metrics = MULTI_LABEL_METRICS
    # Micro F1: the pooled decision quality, not dominated by rare labels with a handful of validation examples.
    default_metric = "f1_micro"
    log_keys = ("subset_accuracy", "f1_micro", "f1_macro", "precision_macro", "recall_macro", "hamming_loss")
    epoch_columns = (("f1_micro", "val micro F1"), ("f1_macro", "val macro F1"))
    plot_scores = (("subset_accuracy", "subset accuracy"), ("f1_micro", "micro F1"), ("f1_macro", "macro F1"))
    problem_type = "multi_label_classification"
    mistake_columns = ("wrong_labels",)
    label_count_title = "carrying each label"
    worst_first = "most wrong labels"
    distill_metric = "f1_micro"

    def threshold_plan(self, setting, labels):
        if isinstance(setting, str):
            if setting not in THRESHOLD_MODES:
                raise ConfigError(
                    f"train.thresholds='{setting}' is not valid; use per_label, global, a number or a list of numbers in [0, 1]"
                )
            return setting, [0.5] * len(labels)
        if isinstance(setting, (int, float)):
            return None, [float(setting)] * len(labels)
        values = [float(x) for x in setting]
        if len(values) != len(labels):
            raise ConfigError(
                f"train.thresholds has {len(values)} values but there are {len(labels)} labels ({', '.join(labels)}); "
                "give one per label, a single number, per_label or global"
            )
        return None, values

    def loss(self, fn, logits, labels, class_weights):
        return fn(logits, labels.float())

    def soft_targets(self, teacher_logits, temperature):
        """The teachers' sigmoid probabilities, averaged over teachers (no temperature)."""
        return self.probabilities(np.asarray(teacher_logits, dtype=np.float32)).mean(0)

    def soft_loss(self, student_logits, targets, temperature):
        """Binary cross-entropy of the student's logits on the teachers' probabilities, averaged over labels, per row."""
        bce = torch.nn.functional.binary_cross_entropy_with_logits(student_logits.float(), targets.float(), reduction="none")
        return bce.mean(-1)

    def ensemble_logits(self, teacher_logits):
        """The logit of the teachers' averaged probabilities."""
        p = np.clip(self.soft_targets(teacher_logits, 1.0), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    def label_names(self, train_values, data_cfg) -> list[str]:
        if data_cfg.label_columns:
            return list(data_cfg.label_columns)
        sets = [
            label_set(v, data_cfg.label_separator, f"train split, row {i} (column '{data_cfg.label_column}'),")
            for i, v in enumerate(train_values)
        ]
        names = build_label_names([x for row in sets for x in row])
        if not names:
            raise DataError(
                f"no training row has a label in column '{data_cfg.label_column}'; multi-label data needs lists of labels, "
                "data.label_separator for joined strings, or data.label_columns for 0/1 columns"
            )
        return names

    def targets(self, values, names, where, separator=None, unknown=UNSEEN) -> np.ndarray:
        sets = [label_set(v, separator, f"{where}, row {i},") for i, v in enumerate(values)]
        return np.asarray(multi_hot(sets, names, where, unknown), dtype=np.float32).reshape(len(sets), len(names))

    def probabilities(self, logits):
        return torch.sigmoid(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy()

    def decide(self, logits, thresholds=None):
        logits = np.asarray(logits, dtype=np.float32)
        thr = np.full(logits.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        return (self.probabilities(logits) >= thr).astype(np.int64)

    def score(self, logits, targets, labels, thresholds=None) -> dict:
        thr = [0.5] * len(labels) if thresholds is None else [float(x) for x in thresholds]
        out = multilabel_metrics(targets, self.decide(logits, thr), label_names=labels)
        out["thresholds"] = thr
        return out

    def tuned_thresholds(self, logits, targets, mode):
        return tune_thresholds(self.probabilities(logits), targets, mode) if mode else None

    def predictions(self, logits, labels, thresholds=None, calibration=None) -> MultiLabelPredictions:
        return MultiLabelPredictions(logits, labels, thresholds if thresholds is not None else [0.5] * len(labels), calibration)

    def as_labels(self, targets, names):
        return label_names(targets, names)

    def label_counts(self, targets, names) -> dict[str, int]:
        counts = np.asarray(targets).reshape(-1, len(names)).sum(0)
        return {n: int(c) for n, c in zip(names, counts)}

    def headline(self, m: dict) -> str:
        return (
            f"micro F1 **{m['f1_micro']:.4f}**, macro F1 **{m['f1_macro']:.4f}**, micro precision {m['precision_micro']:.4f}, "
            f"micro recall {m['recall_micro']:.4f}, macro precision {m['precision_macro']:.4f}, macro recall "
            f"{m['recall_macro']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, Hamming loss {m['hamming_loss']:.4f} {number_line(m)}"
        )

    def mistakes(self, p, y_true, names):
        n_wrong = (p.ids != y_true.astype(np.int64)).sum(1)
        wrong = np.flatnonzero(n_wrong)
        wrong = wrong[np.argsort(-n_wrong[wrong], kind="stable")]  # most wrong decisions first
        true = label_names(y_true, names)

        def cells(i):
            return {"true": "|".join(true[i]), "predicted": "|".join(p[i]), "wrong_labels": int(n_wrong[i])}

        return wrong, cells

    def mistake_table(self, rows, cell) -> list[str]:
        out = ["| row | text | true | predicted | wrong labels |", "|---:|---|---|---|---:|"]
        return out + [f"| {r['row']} | {cell(r['text'])} | {r['true']} | {r['predicted']} | {r['wrong_labels']} |" for r in rows]


MULTI_LABEL = MultiLabel()
