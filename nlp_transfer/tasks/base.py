"""What every task type provides, and the loss module a model carries.

A :class:`Task` is stateless: one instance per task type, found with
:func:`nlp_transfer.tasks.get_task`. The training loop, evaluation, prediction and the
reports ask it, and never compare task names themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from nlp_transfer.errors import ConfigError
from nlp_transfer.tasks.labels import UNSEEN


class RowPredictions(list):
    """A ``list`` with one prediction per text, and array fields (``row_fields``) with one row per text.

    Indexing with one integer gives that text's prediction, as a list does. Slices, integer arrays or
    lists and boolean masks give the same class with every row field cut the same way, so
    ``predictions[mask].probabilities`` are the rows of the kept texts; other attributes (``classes``,
    ``calibration``, ``thresholds``) are shared.
    """

    row_fields: ClassVar[tuple[str, ...]] = ("logits",)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return list.__getitem__(self, int(index))
        if isinstance(index, str):
            raise TypeError(f"{type(self).__name__} indices must be integers, slices, integer arrays or boolean masks, not str")
        rows = np.arange(len(self))[index]  # slices, integer lists/arrays (negative too) and boolean masks
        if rows.ndim == 0:
            return list.__getitem__(self, int(rows))
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        for name in self.row_fields:
            out.__dict__[name] = getattr(self, name)[rows]
        list.extend(out, (list.__getitem__(self, int(i)) for i in rows))
        return out


class TaskLoss(nn.Module):
    """``loss(logits, labels, class_weights)`` of ``task`` in float32, shapes and dtypes put right.

    ``spec`` is what built it (saved in the run manifest, so a reloaded run reports the same loss).
    """

    def __init__(self, task: Task, fn: nn.Module, spec: dict | None = None):
        super().__init__()
        self.task, self.fn, self.spec = task, fn, dict(spec or {})

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.task.loss(self.fn, logits.float(), labels, class_weights)


class Task:
    """One task type: single-label, multi-label or regression (the subclasses)."""

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]  # train.loss choices; the first is the default
    metrics: ClassVar[tuple[str, ...]]  # train.metric_for_best choices
    default_metric: ClassVar[str]
    log_keys: ClassVar[tuple[str, ...]]  # metrics in one-line logs
    epoch_columns: ClassVar[tuple[tuple[str, str], ...]]  # (metric, title) of the per-epoch table
    plot_scores: ClassVar[tuple[tuple[str, str], ...]]  # (metric, label) on the learning-curve plot
    stratify: ClassVar[bool] = False  # whether splits are stratified on the label
    problem_type: ClassVar[str | None] = None  # transformers' config.problem_type for this task
    balances_classes: ClassVar[bool] = False  # train.class_weights / train.sampler=weighted apply
    has_classes: ClassVar[bool] = True  # the outputs are labels (model.num_labels applies)
    ranks_label_issues: ClassVar[bool] = False  # suspect labels (inference/label_issues.py): single-label classes
    calibration_method: ClassVar[str | None] = None  # fitted after training (tasks/calibration.py): temperature, platt
    distill_metric: ClassVar[str]  # the test metric whose student / teacher ratio a distilled run records

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # ---- recipe ---------------------------------------------------------------------------
    def selection_metric(self, requested: str) -> str:
        """``train.metric_for_best`` for this task (``auto``: its default)."""
        if requested == "auto":
            return self.default_metric
        if requested not in self.metrics:
            raise ConfigError(
                f"train.metric_for_best='{requested}' is not a {self.name} metric; choose auto or one of {', '.join(self.metrics)}"
            )
        return requested

    def resolve_loss(self, requested: str = "auto") -> str:
        if requested == "auto":
            return self.losses[0]
        if requested not in self.losses:
            raise ConfigError(f"train.loss='{requested}' does not fit a {self.name} task; use auto or one of {', '.join(self.losses)}")
        return requested

    def build_loss(self, loss: str = "auto", huber_delta: float = 1.0) -> TaskLoss:
        """The training loss with the recipe's options: the one place losses are built."""
        name = self.resolve_loss(loss)
        fn = {
            "cross_entropy": nn.CrossEntropyLoss,
            "bce": nn.BCEWithLogitsLoss,
            "mse": nn.MSELoss,
            "huber": lambda: nn.HuberLoss(delta=huber_delta),
        }[name]()
        return TaskLoss(self, fn, {"loss": name, **({"huber_delta": huber_delta} if name == "huber" else {})})

    def check_recipe(self, train_cfg, head: str) -> None:
        """One-line errors for recipe options that do not apply to this task (before any model is built)."""
        if head == "logreg" and self.name != "single_label":
            raise ConfigError(
                f"model.head=logreg fits a single-label logistic regression, but the data is {self.name}; "
                "use model.head=linear (or mlp) with transfer.mode=feature_extraction"
            )
        if not self.balances_classes and (train_cfg.class_weights is not None or train_cfg.sampler != "random"):
            raise ConfigError(
                f"train.class_weights and train.sampler=weighted balance single-label classes, but the data is {self.name}; "
                "remove them (set train.class_weights=null, train.sampler=random)"
            )

    def threshold_plan(self, setting, labels: Sequence[str]) -> tuple[str | None, list[float] | None]:
        """(tuning mode, starting thresholds) for ``train.thresholds``; only multi-label has thresholds."""
        if not isinstance(setting, str):
            raise ConfigError(f"train.thresholds={setting} applies to multi-label data, but the data is {self.name}; remove it")
        return None, None

    # ---- from labels to targets, logits to decisions ----------------------------------------
    def loss(self, fn: nn.Module, logits: torch.Tensor, labels: torch.Tensor, class_weights) -> torch.Tensor:
        raise NotImplementedError

    def label_names(self, train_values: Sequence, data_cfg) -> list[str]:
        """The names of the model's outputs, from the training split's label cells."""
        raise NotImplementedError

    def targets(
        self, values: Sequence, names: Sequence[str], where: str, separator: str | None = None, unknown: tuple[str, str] = UNSEEN
    ) -> np.ndarray:
        """Label cells as the model's targets: ids [N], 0/1 rows [N, L] or numbers [N]; a label outside
        ``names`` is an error worded by ``unknown`` (:data:`~nlp_transfer.tasks.labels.UNSEEN` or ``UNKNOWN_TO_MODEL``)."""
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray | None:
        return None

    def decide(self, logits: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
        raise NotImplementedError

    def score(self, logits: np.ndarray, targets: np.ndarray, labels: Sequence[str], thresholds=None) -> dict:
        """The task's metrics of ``logits`` against ``targets``."""
        raise NotImplementedError

    def tuned_thresholds(self, logits: np.ndarray, targets: np.ndarray, mode: str | None):
        """Decision thresholds tuned on (``logits``, ``targets``), or None where the task has none."""
        return None

    def predictions(self, logits: np.ndarray, labels: Sequence[str], thresholds=None, calibration: dict | None = None):
        """The predictions container (a list of labels, label sets or numbers, with the scores behind them);
        ``calibration`` (the run manifest's) changes the probabilities, never the decisions."""
        raise NotImplementedError

    def as_labels(self, targets, names: Sequence[str]) -> list:
        """Targets back to what a user writes: names, lists of names, numbers."""
        raise NotImplementedError

    # ---- distillation (training/distill.py) ------------------------------------------------
    def soft_targets(self, teacher_logits: np.ndarray, temperature: float) -> np.ndarray:
        """What the student learns from: the teachers' logits [K, N, C] (K teachers) as one target row per text [N, C]."""
        raise NotImplementedError

    def soft_loss(self, student_logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
        """The distillation loss of each row [B] between the student's logits [B, C] and :meth:`soft_targets` rows."""
        raise NotImplementedError

    def ensemble_logits(self, teacher_logits: np.ndarray) -> np.ndarray:
        """Several teachers' logits [K, N, C] as one model's [N, C], for :meth:`score` and :meth:`decide`."""
        raise NotImplementedError

    # ---- counting and reporting -----------------------------------------------------------
    def label_counts(self, targets, names: Sequence[str]) -> dict[str, int]:
        """Examples per label (empty where labels are not classes)."""
        return {}

    def describe_split(self, targets, names: Sequence[str]) -> dict:
        """What the run records of a split's labels (``metrics.json`` ``data``): label counts or target statistics."""
        return {"label_counts": self.label_counts(targets, names)}

    def log_line(self, metrics: dict) -> str:
        """``name value`` pairs of the metrics that matter, for log lines."""
        return " ".join(f"{k} {metrics[k]:.4f}" for k in self.log_keys if k in metrics)

    def short_line(self, metrics: dict) -> str:
        """The one or two figures a person reads first (the command line's last line)."""
        return self.log_line(metrics)

    def headline(self, metrics: dict) -> str:
        """One Markdown line with the metrics that matter (bold: the main ones)."""
        raise NotImplementedError

    def mistakes(self, predictions, y_true: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, callable]:
        """(rows to show, worst first; ``cells(i)`` -> the columns of row ``i``) of the wrong predictions."""
        raise NotImplementedError

    label_count_title: ClassVar[str] = "per split and label"  # the report's label-balance table
    mistake_columns: ClassVar[tuple[str, ...]] = ()
    worst_first: ClassVar[str] = "most confident"  # how :meth:`mistakes` orders them

    def mistakes_heading(self, n_wrong: int, n_total: int, shown: int) -> str:
        """The Markdown heading above :meth:`mistake_table`."""
        note = f" (the {shown} {self.worst_first} below)" if n_wrong else ""
        return f"## Misclassified: {n_wrong:,} of {n_total:,}{note}"

    def mistake_table(self, rows: list[dict], cell) -> list[str]:
        """Markdown rows of :meth:`mistakes` (``cell`` fits a text into a table cell)."""
        raise NotImplementedError


def number_line(m: dict) -> str:
    """``(N examples[, W windows])`` for headlines."""
    return f"({m['num_examples']:,} examples" + (f", {m['num_windows']:,} windows" if "num_windows" in m else "") + ")"
