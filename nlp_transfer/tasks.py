"""Task types: what differs between single-label, multi-label and regression, in one place.

=================  ==========================  =============================  ======================
task               labels (the ``label`` col)  loss                           prediction
=================  ==========================  =============================  ======================
``single_label``   class id (int64)            cross-entropy                  argmax -> one label
``multi_label``    0/1 vector (float32, [L])   BCE with logits (sigmoid)      sigmoid >= threshold
                                                                              -> a set of labels
``regression``     number (float32)            MSE or Huber                   the output itself
=================  ==========================  =============================  ======================

``data.task: auto`` infers the task from the training labels (:func:`infer_task`):

* ``data.label_columns`` set (several 0/1 columns), list-valued labels (JSON lists, Parquet
  lists) or ``data.label_separator`` set (``"sport|politics"``) -> ``multi_label``;
* every label a number (not a string), some not whole, and more than
  ``REGRESSION_MIN_DISTINCT`` distinct values -> ``regression``;
* anything else -> ``single_label`` (so a float column with few distinct values, e.g. star
  ratings 1.0..5.0 or 0.5 steps, stays classification: set ``data.task: regression`` for it).

Model selection (``train.metric_for_best: auto``): macro F1 for single-label, micro F1 for
multi-label (the pooled decision quality, not dominated by rare labels with a handful of
validation examples), MSE for regression (what the loss minimises; a correlation can be
perfect while predictions are off in scale, and predictions are returned as numbers).

Multi-label decision thresholds (``train.thresholds``): ``per_label`` (default) picks, for
each label, the threshold on the validation split that maximises that label's F1;
``global`` picks one threshold maximising micro F1; a number or a list (one per label) fixes
them. Candidates are 0.05, 0.10, ..., 0.95; ties go to the one nearest 0.5. Thresholds are
tuned at every validation (so the best epoch is chosen with its own thresholds), saved in
``nlp_transfer.json`` with the model and used by ``load_run``; the test split never tunes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .config import TASK_CHOICES, TASKS, THRESHOLD_MODES
from .errors import ConfigError, DataError
from .imbalance import check_class_weights
from .metrics import (
    MULTI_LABEL_METRICS,
    REGRESSION_METRICS,
    SINGLE_LABEL_METRICS,
    compute_metrics,
    multilabel_metrics,
    regression_metrics,
)

THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
REGRESSION_MIN_DISTINCT = 20


@dataclass(frozen=True)
class Task:
    name: str
    losses: tuple[str, ...]  # the first is the default
    metrics: tuple[str, ...]  # selectable by train.metric_for_best
    default_metric: str

    @property
    def default_loss(self) -> str:
        return self.losses[0]


TASK_TYPES = {
    "single_label": Task("single_label", ("cross_entropy",), SINGLE_LABEL_METRICS, "f1_macro"),
    "multi_label": Task("multi_label", ("bce",), MULTI_LABEL_METRICS, "f1_micro"),
    "regression": Task("regression", ("mse", "huber"), REGRESSION_METRICS, "mse"),
}


def get_task(name: str) -> Task:
    if name not in TASK_TYPES:
        raise ConfigError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASK_TYPES[name]


def selection_metric(task: str, requested: str) -> str:
    """``train.metric_for_best`` resolved for ``task`` (``auto``: the task's default)."""
    t = get_task(task)
    if requested == "auto":
        return t.default_metric
    if requested not in t.metrics:
        raise ConfigError(
            f"train.metric_for_best='{requested}' is not a {task} metric; choose auto or one of {', '.join(t.metrics)}"
        )
    return requested


# ---- loss -------------------------------------------------------------------------------
class TaskLoss(nn.Module):
    """``fn(logits, labels)`` with the shapes and dtypes of ``task`` put right (in float32).

    ``spec`` is what :func:`build_loss` was given (saved in the run's ``nlp_transfer.json``,
    so a reloaded run reports the same loss).
    """

    def __init__(self, task: str, fn: nn.Module, spec: dict | None = None):
        super().__init__()
        self.task, self.fn, self.spec = task, fn, dict(spec or {})

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The mean loss; ``class_weights`` (single-label only: ``train.class_weights``) weigh each class."""
        logits = logits.float()
        if self.task == "single_label":
            if class_weights is not None:
                return nn.functional.cross_entropy(logits, labels.long(), weight=class_weights)
            return self.fn(logits, labels.long())
        if self.task == "regression":
            return self.fn(logits.squeeze(-1), labels.float().view(-1))
        return self.fn(logits, labels.float())


def resolve_loss(task: str, requested: str = "auto") -> str:
    t = get_task(task)
    if requested == "auto":
        return t.default_loss
    if requested not in t.losses:
        raise ConfigError(f"train.loss='{requested}' does not fit a {task} task; use auto or one of {', '.join(t.losses)}")
    return requested


def build_loss(task: str, loss: str = "auto", huber_delta: float = 1.0) -> TaskLoss:
    """The training loss of ``task`` with the recipe's options: the one place losses are built."""
    name = resolve_loss(task, loss)
    fn = {
        "cross_entropy": lambda: nn.CrossEntropyLoss(),
        "bce": lambda: nn.BCEWithLogitsLoss(),
        "mse": lambda: nn.MSELoss(),
        "huber": lambda: nn.HuberLoss(delta=huber_delta),
    }[name]()
    return TaskLoss(task, fn, {"loss": name, **({"huber_delta": huber_delta} if name == "huber" else {})})


# ---- from logits to predictions and metrics ---------------------------------------------------
def probabilities(task: str, logits: np.ndarray) -> np.ndarray | None:
    """Softmax over classes (single-label), sigmoid per label (multi-label), None (regression)."""
    t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if task == "single_label":
        return torch.softmax(t, -1).numpy()
    if task == "multi_label":
        return torch.sigmoid(t).numpy()
    return None


def decide(task: str, logits: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Class ids [N] (single-label), a 0/1 matrix [N, L] (multi-label) or numbers [N] (regression)."""
    logits = np.asarray(logits, dtype=np.float32)
    if task == "single_label":
        return logits.argmax(-1)
    if task == "multi_label":
        thr = np.full(logits.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        return (probabilities(task, logits) >= thr).astype(np.int64)
    return logits[:, 0].astype(np.float64)


def score(task: str, logits: np.ndarray, targets: np.ndarray, labels: Sequence[str],
          thresholds: Sequence[float] | None = None) -> dict:
    """The task's metrics of ``logits`` against ``targets`` (as stored in the ``label`` column)."""
    if task == "single_label":
        return compute_metrics(targets, decide(task, logits), label_names=labels)
    if task == "multi_label":
        thr = [0.5] * len(labels) if thresholds is None else [float(x) for x in thresholds]
        out = multilabel_metrics(targets, decide(task, logits, thr), label_names=labels)
        out["thresholds"] = thr
        return out
    return regression_metrics(targets, decide(task, logits))


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


def threshold_plan(setting, labels: Sequence[str]) -> tuple[str | None, list[float]]:
    """``train.thresholds`` for these labels: (tuning mode or None, starting thresholds)."""
    if isinstance(setting, str):
        if setting not in THRESHOLD_MODES:
            raise ConfigError(f"train.thresholds='{setting}' is not valid; use per_label, global, a number or a list of numbers in [0, 1]")
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


# ---- labels: inference and storage ---------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def infer_task(requested: str, values: Sequence, *, label_columns=None, label_separator=None) -> str:
    """The task of training labels ``values`` (see the module docstring for the rules)."""
    if requested not in TASK_CHOICES:
        raise ConfigError(f"data.task='{requested}' is not valid; choose one of {', '.join(TASK_CHOICES)}")
    multi_hint = bool(label_columns) or label_separator is not None or any(isinstance(v, (list, tuple)) for v in values)
    if requested != "auto":
        if multi_hint and requested != "multi_label":
            what = "data.label_columns" if label_columns else ("data.label_separator" if label_separator is not None else "list-valued labels")
            raise ConfigError(f"data.task={requested} but the data has {what}, which describe multi-label data; set data.task to multi_label or auto")
        return requested
    if multi_hint:
        return "multi_label"
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if present and all(_is_number(v) for v in present):
        fractional = any(not float(v).is_integer() for v in present)
        if fractional and len(set(float(v) for v in present)) > REGRESSION_MIN_DISTINCT:
            return "regression"
    return "single_label"


def label_set(value, separator: str | None, where: str) -> list[str]:
    """The label names of one multi-label row: a list, a ``separator``-joined string or a JSON list string.

    With a separator an empty cell (CSV readers give None) is the empty set; elsewhere a missing
    value is an error (write ``[]`` for "none of the labels").
    """
    from .data import _label_key

    if value is None and separator is not None:
        return []
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"{where} has no labels (a missing value); give [] or all-zero label columns for 'none of the labels'")
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_label_key(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return [_label_key(v) for v in parsed]
        if separator is not None:
            return [p.strip() for p in s.split(separator) if p.strip()]
        return [s] if s else []
    return [_label_key(value)]


def label_names(rows, names: Sequence[str]) -> list[list[str]]:
    """The names switched on in each 0/1 row (the inverse of :func:`multi_hot`)."""
    return [[n for n, on in zip(names, row) if on] for row in rows]


def multi_hot(sets: Sequence[Sequence[str]], names: Sequence[str], where: str) -> list[list[float]]:
    """0/1 rows (one column per name) from label sets; names outside ``names`` are an error."""
    from .data import unknown_labels

    index = {n: i for i, n in enumerate(names)}
    shown = unknown_labels((x for s in sets for x in s), index)
    if shown:
        raise DataError(f"{where} has labels the training split never saw: {shown}; known labels: {', '.join(names)}")
    rows = []
    for s in sets:
        row = [0.0] * len(names)
        for x in s:
            row[index[x]] = 1.0
        rows.append(row)
    return rows


def zero_one(values: Sequence, column: str, where: str) -> list[float]:
    """A 0/1 label column as floats; anything else (missing, 2, 'yes') is an error."""
    out = []
    for i, v in enumerate(values):
        f = float(v) if (_is_number(v) or isinstance(v, (bool, np.bool_))) else None
        if f is None or f not in (0.0, 1.0):
            raise DataError(
                f"{where}: label column '{column}' must hold 0 or 1 in every row, got {v!r} at row {i}; "
                "fix the column or leave it out of data.label_columns"
            )
        out.append(f)
    return out


def numbers(values: Sequence, column: str, where: str) -> list[float]:
    """A regression target as floats; missing or non-numeric values are an error."""
    out = []
    for i, v in enumerate(values):
        f = None
        if _is_number(v):
            f = float(v)
        elif isinstance(v, str):
            try:
                f = float(v)
            except ValueError:
                f = None
        if f is None or not math.isfinite(f):
            shown = "an empty cell" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)
            raise DataError(
                f"{where}: the regression target '{column}' must be a number in every row, got {shown} at row {i}; "
                "fix the column, choose another with data.label_column, or set data.task for classification"
            )
        out.append(f)
    return out


def encode_targets(task: str, values: Sequence, labels: Sequence[str], separator: str | None = None,
                   where: str = "the data") -> np.ndarray:
    """User-given labels (names, label sets or numbers) as the model's targets, for evaluation."""
    if task == "single_label":
        from .evaluation import label_ids

        return label_ids(values, labels)
    if task == "multi_label":
        sets = [label_set(v, separator, f"{where}, row {i},") for i, v in enumerate(values)]
        return np.asarray(multi_hot(sets, labels, where), dtype=np.float32).reshape(len(sets), len(labels))
    return np.asarray(numbers(values, labels[0], where), dtype=np.float32)


# ---- a recipe's task, resolved once per run ----------------------------------------------------
@dataclass
class TaskSetup:
    """What a run needs to know about its task, resolved from the recipe and the data."""

    task: str
    metric: str  # train.metric_for_best, resolved
    loss_fn: TaskLoss
    tune: str | None = None  # multi-label: per_label / global, or None for fixed thresholds
    thresholds: list[float] | None = None  # multi-label: the starting (or fixed) thresholds


def setup_task(cfg, data) -> TaskSetup:
    """Resolve ``cfg`` (a RecipeConfig) for ``data`` (a TextData): metric, loss, thresholds.

    Every mismatch between recipe and task is a one-line :class:`ConfigError`, raised before
    any model is built.
    """
    task = data.task
    metric = selection_metric(task, cfg.train.metric_for_best)
    if cfg.model.head == "logreg" and task != "single_label":
        raise ConfigError(
            f"model.head=logreg fits a single-label logistic regression, but the data is {task}; "
            "use model.head=linear (or mlp) with transfer.mode=feature_extraction"
        )
    tune, thresholds = None, None
    if task == "multi_label":
        tune, thresholds = threshold_plan(cfg.train.thresholds, data.labels)
    elif not isinstance(cfg.train.thresholds, str):
        raise ConfigError(f"train.thresholds={cfg.train.thresholds} applies to multi-label data, but the data is {task}; remove it")
    if task != "single_label" and (cfg.train.class_weights is not None or cfg.train.sampler != "random"):
        raise ConfigError(
            f"train.class_weights and train.sampler=weighted balance single-label classes, but the data is {task}; "
            "remove them (set train.class_weights=null, train.sampler=random)"
        )
    check_class_weights(cfg.train.class_weights, data.labels)  # before the model is built
    loss_fn = build_loss(task, cfg.train.loss, cfg.train.huber_delta)
    return TaskSetup(task, metric, loss_fn, tune, thresholds)
