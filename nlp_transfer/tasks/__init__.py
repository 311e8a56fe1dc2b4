"""Task types: what differs between single-label, multi-label and regression, in one place.

=================  ==========================  =============================  ======================
task               labels (the ``label`` col)  loss                           prediction
=================  ==========================  =============================  ======================
``single_label``   class id (int64)            cross-entropy                  argmax -> one label
``multi_label``    0/1 vector (float32, [L])   BCE with logits (sigmoid)      sigmoid >= threshold
                                                                              -> a set of labels
``regression``     number (float32)            MSE or Huber                   the output itself
=================  ==========================  =============================  ======================

Each is a :class:`Task` subclass that owns its loss, probabilities, decisions, target
encoding, metrics and report rows; ``get_task(name)`` returns the one instance. Code outside
this package asks the task and never compares task names.

``data.task: auto`` infers the task from the training labels (:func:`infer_task`):

* ``data.label_columns`` set (several 0/1 columns), list-valued labels (JSON lists, Parquet
  lists) or ``data.label_separator`` set (``"sport|politics"``) -> ``multi_label``;
* every label a number (not a string), some not whole, and more than
  ``REGRESSION_MIN_DISTINCT`` distinct values -> ``regression``;
* anything else -> ``single_label`` (so a float column with few distinct values, e.g. star
  ratings 1.0..5.0 or 0.5 steps, stays classification: set ``data.task: regression`` for it).

Model selection (``train.metric_for_best: auto``): macro F1 for single-label, micro F1 for
multi-label, MSE for regression.
"""

from nlp_transfer.config import TASKS
from nlp_transfer.errors import ConfigError
from nlp_transfer.tasks.base import Task, TaskLoss
from nlp_transfer.tasks.labels import REGRESSION_MIN_DISTINCT, infer_task, label_key
from nlp_transfer.tasks.multi_label import MULTI_LABEL, THRESHOLD_GRID, MultiLabelPredictions, tune_thresholds
from nlp_transfer.tasks.regression import Regression, RegressionPredictions
from nlp_transfer.tasks.single_label import Predictions, SingleLabel

TASK_TYPES: dict[str, Task] = {"single_label": SingleLabel(), "multi_label": MULTI_LABEL, "regression": Regression()}
assert tuple(TASK_TYPES) == TASKS  # the names the recipe schema validates against


def get_task(task: "str | Task") -> Task:
    """The task instance of ``task`` (a name, or already a task)."""
    if isinstance(task, Task):
        return task
    if task not in TASK_TYPES:
        raise ConfigError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    return TASK_TYPES[task]


__all__ = [
    "Task",
    "TaskLoss",
    "get_task",
    "TASK_TYPES",
    "infer_task",
    "label_key",
    "tune_thresholds",
    "THRESHOLD_GRID",
    "REGRESSION_MIN_DISTINCT",
    "Predictions",
    "MultiLabelPredictions",
    "RegressionPredictions",
]
