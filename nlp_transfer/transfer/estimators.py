"""Transferability estimators: how well frozen features suit a task's labels, without training.

The estimators are transformer-ranker's (flairNLP; the ``[select]`` extra), run on float64 features:

- ``logme``: the log maximum evidence (iterated to convergence) of a Bayesian linear model from the features to each target
  (You et al. 2021), averaged over targets: one-hot classes, each label of a multi-label task,
  the value of a regression. Higher is better; comparable across layers and checkpoints.
- ``hscore``: the shrinkage-regularised H-score (Ibrahim et al. 2022): between-class variance of the
  features against their total covariance. Classification only (per label, averaged, for multi-label).
- ``knn``: leave-one-out k-nearest-neighbour vote (k=3, Euclidean): micro F1 (accuracy) over several
  classes, the positive class's F1 for two (transformer-ranker's definition), the mean of those
  over the labels of a multi-label task; Pearson correlation of the neighbours' mean for regression.

:func:`transferability` takes the task's own targets: class ids (single-label), 0/1 rows (multi-label) or
values (regression).
"""

from __future__ import annotations

import numpy as np

from nlp_transfer.errors import ConfigError
from nlp_transfer.utils.extras import require_extra

ESTIMATORS = ("logme", "hscore", "knn")
KNN_K = 3
# LogME's fixed-point iteration run to convergence (the library's default stops at 11 steps or a 1e-3 change,
# a few 1e-5 below the maximum): each step is a few vector operations over the singular values.
LOGME_FIT = {"max_iter": 200, "tol": 1e-8}


def _library():
    require_extra("select", "scoring transferability", ConfigError)
    from transformer_ranker.estimators import HScore, LogME, NearestNeighbors

    return LogME, HScore, NearestNeighbors


def applies(estimator: str, task: str) -> bool:
    """Whether ``estimator`` scores ``task`` data (H-score needs classes)."""
    return not (estimator == "hscore" and task == "regression")


def transferability(estimator: str, features, targets, task: str) -> float | None:
    """``estimator``'s score of ``features`` [N, H] for ``targets`` (see the module docstring); None where it
    does not apply (H-score of a regression)."""
    import torch

    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown estimator '{estimator}'; use {', '.join(ESTIMATORS)}")
    if not applies(estimator, task):
        return None
    LogME, HScore, NearestNeighbors = _library()
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets))
    if task == "single_label":
        y = y.long()
        if estimator == "logme":
            return float(LogME(regression=False).fit(embeddings=x, labels=y, **LOGME_FIT))
        if estimator == "hscore":
            return float(HScore().fit(embeddings=x, labels=y))
        return float(NearestNeighbors(k=KNN_K).fit(embeddings=x, labels=y))
    columns = y.reshape(len(y), -1).double()  # one target per column: a label, or a regressed value
    if task == "multi_label":
        columns = columns.long()
        make = {"logme": lambda: LogME(regression=True), "hscore": HScore, "knn": lambda: NearestNeighbors(k=KNN_K)}[estimator]
        scores = []
        for c in columns.T:
            if estimator == "logme":
                scores.append(make().fit(embeddings=x, labels=c.double(), **LOGME_FIT))
            elif len(torch.unique(c)) < 2:  # a label every (or no) example has: nothing to separate
                continue
            else:
                scores.append(make().fit(embeddings=x, labels=c))
        return float(np.mean(scores)) if scores else None
    if estimator == "logme":
        return float(np.mean([LogME(regression=True).fit(embeddings=x, labels=c, **LOGME_FIT) for c in columns.T]))
    return float(np.mean([NearestNeighbors(k=KNN_K, regression=True).fit(embeddings=x, labels=c) for c in columns.T]))
