"""Skewed classes: class weights for the loss and per-example weights for a weighted sampler.

``balanced`` is scikit-learn's formula, ``n / (k * count)``: a class with half the average
frequency weighs 2. Both count the training examples the loss sees (windows, with chunking).
A class absent from training gets weight 0 (it cannot be learnt; sklearn would fail).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def per_class_sample(y: Sequence[int], n: int, seed: int, names: Sequence[str]) -> np.ndarray:
    """Indices of ``n`` examples of every class (few-shot training), in their original order.

    Each class's examples are permuted once by ``seed`` and the first ``n`` kept, so for one
    seed the draw of 8 is part of the draw of 16: points of a label-efficiency curve differ
    only in the examples added. A class with fewer than ``n`` examples is a one-line error.
    """
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = []
    for c, name in enumerate(names):
        idx = np.flatnonzero(y == c)
        if len(idx) < n:
            raise ConfigError(
                f"data.samples_per_class={n} but class '{name}' has only {len(idx)} training examples; "
                f"use at most {len(idx)} (or null for every example)"
            )
        picked.append(idx[rng.permutation(len(idx))[:n]])
    return np.sort(np.concatenate(picked))
