"""Skewed classes: class weights for the loss and per-example weights for a weighted sampler.

``balanced`` is scikit-learn's formula, ``n / (k * count)``: a class with half the average
frequency weighs 2. Both count the training examples the loss sees (windows, with chunking).
A class absent from training gets weight 0 (it cannot be learnt; sklearn would fail).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nlp_transfer.errors import ConfigError


def check_class_weights(setting, labels: Sequence[str]) -> None:
    """A one-line error when an explicit weight list does not match the labels."""
    if isinstance(setting, (list, tuple)) and len(setting) != len(labels):
        raise ConfigError(
            f"train.class_weights has {len(setting)} values but the data has {len(labels)} labels; give {len(labels)} "
            f"weights in this label order: {', '.join(labels)}"
        )


def class_weights(setting, labels: Sequence[str], y: Sequence[int]) -> list[float] | None:
    """The weight of each label (in label order) for ``train.class_weights``, or None."""
    if setting is None:
        return None
    check_class_weights(setting, labels)
    if setting == "balanced":
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(labels)).astype(np.float64)
        w = np.divide(len(y), len(labels) * counts, out=np.zeros_like(counts), where=counts > 0)
        return [float(v) for v in w]
    return [float(v) for v in setting]


def sampling_weights(y: Sequence[int]) -> np.ndarray:
    """Per-example probabilities that make every class present equally likely to be drawn."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y)
    w = 1.0 / counts[y]
    return w / w.sum()
