"""Labels as users write them, normalised once for training, prediction and evaluation alike.

One normaliser (:func:`label_key`) turns every label cell into the name the model knows, so a
column of star ratings read as floats (``1.0``), as integers (``1``) or as strings
(``"1.0"``, ``"1"``) gives the same classes wherever it is read. Also here: label sets of
multi-label rows, 0/1 columns, numeric regression targets, and the task inference rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from nlp_transfer.config import TASK_CHOICES
from nlp_transfer.errors import ConfigError, DataError

REGRESSION_MIN_DISTINCT = 20
_ZERO_FRACTION = re.compile(r"^[+-]?\d+\.0+$")  # "1.0", "5.00": a whole number written with a fraction


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def is_missing(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def label_key(value) -> str:
    """The class name of one label cell: whole numbers (``1``, ``1.0``, ``"1.0"``) -> ``"1"``; other
    numbers their shortest form (``"2.5"``); strings stripped, otherwise as written (``"007"`` stays)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if is_number(value):
        f = float(value)
        if f.is_integer():
            return str(int(f))
        return str(value) if isinstance(value, np.floating) else repr(f)  # float32 0.1 -> "0.1", not its float64 digits
    s = str(value).strip()
    if _ZERO_FRACTION.match(s):
        return str(int(float(s)))
    return s


def build_label_names(values: Iterable) -> list[str]:
    """Sorted distinct class names: numerically where every name is an integer, else alphabetically."""
    keys = {label_key(v) for v in values}
    if keys and all(re.fullmatch(r"[+-]?\d+", k) for k in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def unknown_labels(keys: Iterable[str], known, quote: bool = True) -> str:
    """The labels among ``keys`` that are not in ``known``, sorted, the first five shown for an
    error message ("" when there are none)."""
    unknown = sorted(set(keys) - set(known))
    shown = ", ".join(repr(u) if quote else u for u in unknown[:5])
    return shown + (" ..." if len(unknown) > 5 else "")


# How an unknown label is reported: (what it is, what the known ones are).
UNSEEN = ("the training split never saw", "known labels: {names}")
UNKNOWN_TO_MODEL = (
    "the model does not know",
    "the model's labels are: {names} (fix the label column or evaluate a run trained on these labels)",
)


def _unknown_error(where: str, shown: str, names: Sequence[str], unknown: tuple[str, str]) -> DataError:
    what, known = unknown
    return DataError(f"{where} has labels {what}: {shown}; {known.format(names=', '.join(names))}")


def class_ids(values: Sequence, names: Sequence[str], where: str, unknown: tuple[str, str] = UNSEEN) -> list[int]:
    """Class ids of label cells; a missing or unknown label is a one-line error."""
    missing = [i for i, v in enumerate(values) if is_missing(v) or (isinstance(v, str) and not v.strip())]
    if missing:
        raise DataError(f"{where} has {len(missing)} rows without a label (first at row {missing[0]})")
    index = {n: i for i, n in enumerate(names)}
    keys = [label_key(v) for v in values]
    shown = unknown_labels(keys, index)
    if shown:
        raise _unknown_error(where, shown, names, unknown)
    return [index[k] for k in keys]


def label_set(value, separator: str | None, where: str) -> list[str]:
    """The label names of one multi-label row: a list, a ``separator``-joined string or a JSON list string.

    With a separator an empty cell is the empty set; elsewhere a missing value is an error
    (write ``[]`` for "none of the labels").
    """
    if (is_missing(value) or value == "") and separator is not None:
        return []
    if is_missing(value):
        raise DataError(f"{where} has no labels (a missing value); give [] or all-zero label columns for 'none of the labels'")
    if isinstance(value, (list, tuple, np.ndarray)):
        return [label_key(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return [label_key(v) for v in parsed]
        if separator is not None:
            return [p.strip() for p in s.split(separator) if p.strip()]
        return [s] if s else []
    return [label_key(value)]


def label_names(rows, names: Sequence[str]) -> list[list[str]]:
    """The names switched on in each 0/1 row (the inverse of :func:`multi_hot`)."""
    return [[n for n, on in zip(names, row) if on] for row in rows]


def multi_hot(sets: Sequence[Sequence[str]], names: Sequence[str], where: str, unknown: tuple[str, str] = UNSEEN) -> list[list[float]]:
    """0/1 rows (one column per name) from label sets; names outside ``names`` are an error."""
    index = {n: i for i, n in enumerate(names)}
    shown = unknown_labels((x for s in sets for x in s), index)
    if shown:
        raise _unknown_error(where, shown, names, unknown)
    rows = []
    for s in sets:
        row = [0.0] * len(names)
        for x in s:
            row[index[x]] = 1.0
        rows.append(row)
    return rows


def _as_number(v) -> float | None:
    if is_number(v):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def zero_one(values: Sequence, column: str, where: str) -> list[float]:
    """A 0/1 label column as floats (numbers, booleans or their strings); anything else is an error."""
    out = []
    for i, v in enumerate(values):
        f = float(v) if isinstance(v, (bool, np.bool_)) else _as_number(v)
        if f is None or f not in (0.0, 1.0):
            shown = "an empty cell" if is_missing(v) or v == "" else repr(v)
            raise DataError(
                f"{where}: label column '{column}' must hold 0 or 1 in every row, got {shown} at row {i}; "
                "fix the column or leave it out of data.label_columns"
            )
        out.append(f)
    return out


def numbers(values: Sequence, column: str, where: str) -> list[float]:
    """A regression target as floats; missing or non-numeric values are an error."""
    out = []
    for i, v in enumerate(values):
        f = _as_number(v)
        if f is None or not math.isfinite(f):
            shown = "an empty cell" if is_missing(v) or v == "" else repr(v)
            raise DataError(
                f"{where}: the regression target '{column}' must be a number in every row, got {shown} at row {i}; "
                "fix the column, choose another with data.label_column, or set data.task for classification"
            )
        out.append(f)
    return out


def infer_task(requested: str, values: Sequence, *, label_columns=None, label_separator=None) -> str:
    """The task of training labels ``values``: see :mod:`nlp_transfer.tasks` for the rules."""
    if requested not in TASK_CHOICES:
        raise ConfigError(f"data.task='{requested}' is not valid; choose one of {', '.join(TASK_CHOICES)}")
    multi_hint = bool(label_columns) or label_separator is not None or any(isinstance(v, (list, tuple, np.ndarray)) for v in values)
    if requested != "auto":
        if multi_hint and requested != "multi_label":
            what = (
                "data.label_columns" if label_columns else ("data.label_separator" if label_separator is not None else "list-valued labels")
            )
            raise ConfigError(
                f"data.task={requested} but the data has {what}, which describe multi-label data; set data.task to multi_label or auto"
            )
        return requested
    if multi_hint:
        return "multi_label"
    present = [v for v in values if not is_missing(v)]
    if present and all(is_number(v) for v in present):
        fractional = any(not float(v).is_integer() for v in present)
        if fractional and len(set(float(v) for v in present)) > REGRESSION_MIN_DISTINCT:
            return "regression"
    return "single_label"
