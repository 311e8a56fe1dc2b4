"""Query strategies of pool-based active learning: which unlabelled texts to ask a person about next.

    picked = query("breaking_ties", n=32, probs=probs, embeddings=feats, labelled=done, unlabelled=pool, seed=3)

``probs`` are the current model's class probabilities for every pool text (rows of the pool),
``embeddings`` the pool's frozen features. Every strategy returns ``n`` pool rows, the most wanted
first:

- ``random``: a uniform draw (the baseline every other strategy is measured against);
- ``least_confidence``: the lowest top-class probability;
- ``entropy``: the highest entropy of the predicted distribution;
- ``breaking_ties``: the smallest margin between the two most probable classes (Scheffer et al. 2001;
  the best of the simple strategies in Schröder et al. 2021);
- ``kmeans``: k-means with ``n`` clusters on the unlabelled texts' (normalised) embeddings, the text
  nearest each centre; needs no model, so it also starts the loop cold;
- ``coreset``: greedy k-center (Sener & Savarese 2018): repeatedly the text farthest from everything
  labelled or picked so far, on normalised embeddings; diversity without a model.

The first five are small-text's (``pip install 'nlp-transfer[active]'``); ``coreset`` keeps each text's
distance to the nearest chosen one and updates it per pick (O(pool x n)), where small-text's recomputes
every distance per pick. All draws come from ``seed``: the same inputs give the same picks.

The stopping criterion, :func:`kappa_average` (Bloodgood & Vijay-Shanker 2009, small-text's
``KappaAverage``): Cohen's kappa between consecutive rounds' predictions on a fixed stop set, averaged
over the last three rounds; above 0.99 the model has stopped changing and more labels help little.
"""

from __future__ import annotations

import warnings

import numpy as np

from nlp_transfer.errors import ConfigError
from nlp_transfer.utils.extras import require_extra

STRATEGIES = ("random", "least_confidence", "entropy", "breaking_ties", "kmeans", "coreset")
NEEDS_MODEL = ("least_confidence", "entropy", "breaking_ties")  # the others pick without a fitted model
KAPPA_WINDOW = 3
KAPPA_STOP = 0.99


class _Table:
    """small-text's classifier interface over precomputed probabilities: row i of the dataset is pool row i."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs

    def predict_proba(self, dataset):
        return self.probs[dataset.x[:, 0].astype(np.int64)]


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return name


def scores(name: str, probs: np.ndarray) -> np.ndarray:
    """How much each row is wanted by an uncertainty strategy (higher: asked first)."""
    p = np.asarray(probs, dtype=np.float64)
    if name == "least_confidence":
        return 1.0 - p.max(1)
    if name == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(1)
    if name == "breaking_ties":
        top2 = np.sort(p, axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])
    raise ConfigError(f"'{name}' is not an uncertainty strategy")


def query(
    name: str,
    n: int,
    *,
    probs: np.ndarray | None,
    embeddings: np.ndarray,
    labelled: np.ndarray,
    unlabelled: np.ndarray,
    seed: int,
) -> np.ndarray:
    """``n`` rows of ``unlabelled`` chosen by strategy ``name`` (most wanted first)."""
    check_strategy(name)
    labelled = np.asarray(labelled, dtype=np.int64)
    unlabelled = np.asarray(unlabelled, dtype=np.int64)
    n = min(n, len(unlabelled))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if name in NEEDS_MODEL and probs is None:
        raise ConfigError(f"strategy {name} needs a model fitted on at least two labels; start with random or kmeans")
    if name == "coreset":
        return greedy_k_center(embeddings, labelled, unlabelled, n, seed)
    require_extra("active", f"strategy {name}", ConfigError)
    from small_text import BreakingTies, EmbeddingKMeans, LeastConfidence, PredictionEntropy, RandomSampling, SklearnDataset

    state = np.random.get_state()  # small-text draws from numpy's global generator: seeded here, restored after
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # small-text calling its own deprecated helpers
        try:
            rows = np.arange(len(embeddings))
            classes = np.arange(2 if probs is None else probs.shape[1])
            dataset = SklearnDataset(rows[:, None].astype(np.float64), np.full(len(rows), -1), target_labels=classes)  # no labels
            if name == "kmeans":
                subset = np.concatenate([unlabelled, labelled])
                picked = EmbeddingKMeans(normalize=True).query(
                    None, dataset, unlabelled, labelled, None, n=n, embeddings=np.asarray(embeddings, dtype=np.float64)[subset]
                )
                return np.asarray(picked, dtype=np.int64)
            strategy = {
                "random": RandomSampling,
                "least_confidence": LeastConfidence,
                "entropy": PredictionEntropy,
                "breaking_ties": BreakingTies,
            }[name]()
            picked = np.asarray(strategy.query(_Table(probs), dataset, unlabelled, labelled, None, n=n), dtype=np.int64)
        finally:
            np.random.set_state(state)
    if name in NEEDS_MODEL:  # small-text's partition is unordered: most uncertain first
        picked = picked[np.argsort(-scores(name, probs[picked]), kind="stable")]
    return picked


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def greedy_k_center(embeddings: np.ndarray, labelled: np.ndarray, unlabelled: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Greedy k-center on normalised embeddings: each pick is the unlabelled row farthest (Euclidean) from
    its nearest labelled-or-picked row; with nothing labelled, the first pick is drawn with ``seed``."""
    x = _normalise(embeddings)
    cand = x[unlabelled]
    picks: list[int] = []
    if len(labelled):
        nearest = np.full(len(unlabelled), np.inf)
        for i in range(0, len(labelled), 1024):
            sims = cand @ x[labelled[i : i + 1024]].T  # unit vectors: |a-b|^2 = 2 - 2 a.b
            d = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
            nearest = np.minimum(nearest, d.min(1))
    else:
        first = int(np.random.default_rng(seed).integers(len(unlabelled)))
        picks.append(first)
        nearest = np.sqrt(np.maximum(2.0 - 2.0 * cand @ cand[first], 0.0))
    while len(picks) < n:
        nearest[picks] = -np.inf
        j = int(np.argmax(nearest))
        picks.append(j)
        nearest = np.minimum(nearest, np.sqrt(np.maximum(2.0 - 2.0 * cand @ cand[j], 0.0)))
    return unlabelled[np.asarray(picks, dtype=np.int64)]


def kappa_average(history: list[list[int]], window: int = KAPPA_WINDOW) -> float | None:
    """Mean Cohen's kappa between consecutive rounds' predictions on the stop set over the last ``window``
    changes; None until there are that many."""
    if len(history) < window + 1:
        return None
    from sklearn.metrics import cohen_kappa_score

    kappas = []
    for a, b in zip(history[-window - 1 : -1], history[-window:]):
        a, b = np.asarray(a), np.asarray(b)
        kappas.append(1.0 if np.array_equal(a, b) else float(cohen_kappa_score(a, b)))
    return float(np.mean(kappas))
