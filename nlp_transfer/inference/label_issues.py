"""Suspect labels: examples whose given label looks wrong, ranked, from out-of-sample probabilities.

    issues = find_label_issues(features, labels, names, texts)    # rows, most suspect first
    write_label_issues(issues, "out/label_issues.csv")

Confident learning (Northcutt et al. 2021) with cleanlab: every example needs a predicted
probability from a model that did not see its label, so a logistic regression probe is fitted
``folds`` times on the other folds' pooled features (frozen encoder features: cheap, and they do
not remember the labels as a fine-tuned model would) and predicts the held-out fold; its
regularisation ``C`` is the one with the lowest out-of-sample log loss. cleanlab's
``get_label_quality_scores`` (self-confidence: the probability of the given label, adjusted for
the class priors) ranks every example, lowest first, and ``find_label_issues`` (prune by noise rate) flags those it estimates
to be wrong. ``label_issues.csv`` has rank, row, text, given label, suggested label (the
most probable one), score (the label quality, lower is more suspect), the suggested label's
probability and whether cleanlab flags it.

Features come from a run's model (``scripts/evaluate.py RUN [DATA] --label-issues``) or from a
recipe's checkpoint, frozen, as its ``feature_extraction`` would pool them
(``scripts/label_issues.py --config RECIPE``: the training split before any training).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.data.chunking import aggregate, encode
from nlp_transfer.errors import DataError
from nlp_transfer.models.fast import speedups
from nlp_transfer.transfer.probe import fit_logreg
from nlp_transfer.utils.extras import require_extra
from nlp_transfer.utils.progress import progress as progress_bar

FOLDS = 5
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)  # searched by out-of-sample log loss when C is not given
COLUMNS = ("rank", "row", "text", "given_label", "suggested_label", "score", "suggested_probability", "flagged")


@torch.inference_mode()
def pooled_features(
    predictor, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int | None = None, progress: bool = False
) -> np.ndarray:
    """The pooled features [N, H] the head of ``predictor``'s model reads (chunked texts: their windows' mean)."""
    model, spec = predictor.model, predictor.spec
    enc = encode(predictor.tokenizer, list(texts), list(text_pairs) if text_pairs is not None else None, spec)
    doc_ids = enc.pop("doc_id")
    rows = [dict(zip(enc.keys(), values)) for values in zip(*enc.values())]
    order = np.argsort([-len(r["input_ids"]) for r in rows], kind="stable")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(predictor.precision)
    bs = batch_size or predictor.batch_size
    out = None
    with speedups(model, dropout=False, attention=False, first_token=True, allocator=False):
        for i in progress_bar(range(0, len(rows), bs), "encoding", enabled=progress):
            idx = order[i : i + bs]
            batch = predictor.tokenizer.pad([rows[j] for j in idx], pad_to_multiple_of=8, return_tensors="pt").to(predictor.device)
            with torch.autocast(predictor.device.type, dtype=dtype, enabled=dtype is not None):
                f = model.encode(**batch).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(rows), f.shape[1]), dtype=np.float32)
            out[idx] = f
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    if spec.chunking:
        out = aggregate(torch.from_numpy(out), torch.tensor(doc_ids), "mean")[1].numpy()
    return out


def out_of_sample_probabilities(
    features: np.ndarray, labels: np.ndarray, num_labels: int, folds: int = FOLDS, C: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Class probabilities [N, C] for every example from a logistic regression fitted on the other ``folds - 1`` folds."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_labels)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < folds:
        raise DataError(
            f"label issues need at least {folds} examples of each label and two labels; the smallest label has "
            f"{int(present.min()) if len(present) else 0}: use more data or fewer folds (--folds)"
        )
    probs = np.zeros((len(labels), num_labels))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        w, b = fit_logreg(features[train], labels[train], num_labels, C, seed)
        probs[held] = torch.softmax(torch.from_numpy(features[held].astype(np.float64) @ w.T + b), -1).numpy()
    return probs


@dataclass
class LabelIssues:
    """Every example ranked by label quality (most suspect first), with what cleanlab flags."""

    rows: list[dict]  # COLUMNS, rank order
    probabilities: np.ndarray  # out-of-sample [N, C], input order
    num_flagged: int
    C: float | None = None  # the probe's C (find_label_issues)
    log_loss: dict | None = None  # out-of-sample log loss per C tried

    def top(self, k: int) -> list[dict]:
        return self.rows[:k]


def rank_label_issues(labels: np.ndarray, probs: np.ndarray, names: Sequence[str], texts: Sequence[str]) -> LabelIssues:
    """cleanlab's label quality scores (self-confidence, with ``adjust_pred_probs``: probabilities adjusted for the
    class priors, so the larger class's examples are not all ranked as safe) and issue flags (prune by noise rate)
    for (``labels``, out-of-sample ``probs``)."""
    require_extra("trust", "ranking label issues", DataError, ("cleanlab",))
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    quality = get_label_quality_scores(labels, probs, method="self_confidence", adjust_pred_probs=True)
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    order = np.argsort(quality, kind="stable")
    suggested = probs.argmax(-1)
    rows = [
        {
            "rank": r + 1,
            "row": int(i),
            "text": texts[i],
            "given_label": names[labels[i]],
            "suggested_label": names[suggested[i]],
            "score": float(quality[i]),
            "suggested_probability": float(probs[i, suggested[i]]),
            "flagged": bool(flagged[i]),
        }
        for r, i in enumerate(order)
    ]
    return LabelIssues(rows, probs, int(flagged.sum()))


def find_label_issues(
    features: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    texts: Sequence[str],
    folds: int = FOLDS,
    C: float | None = None,
    seed: int = 0,
) -> LabelIssues:
    """Out-of-sample probabilities from cross-validated logistic regression probes, then :func:`rank_label_issues`.

    ``C`` None: each of :data:`C_GRID` is tried and the one with the lowest out-of-sample log loss kept (an
    over-confident probe gives every example a quality near 0 or 1, and the ranking loses its order)."""
    x, labels = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    search = {}
    for c in [C] if C is not None else C_GRID:
        probs = out_of_sample_probabilities(x, labels, len(names), folds, c, seed)
        search[c] = (-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean(), probs)
    best = min(search, key=lambda c: search[c][0])
    issues = rank_label_issues(labels, search[best][1], names, texts)
    issues.C, issues.log_loss = best, {c: round(float(v[0]), 5) for c, v in search.items()}
    return issues


def flip_labels(labels: np.ndarray, num_labels: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels with ``fraction`` of them changed to another label, chosen at random; the indices changed): a known-noise check."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64).copy()
    k = int(round(fraction * len(labels)))
    idx = np.sort(rng.choice(len(labels), k, replace=False))
    labels[idx] = (labels[idx] + rng.integers(1, num_labels, size=k)) % num_labels
    return labels, idx


def precision_at(issues: LabelIssues, truly_wrong: np.ndarray, k: int | None = None) -> dict:
    """How many of the ``k`` (default: as many as truly wrong) top-ranked rows are truly wrong, and cleanlab's flags' precision/recall."""
    wrong = set(int(i) for i in truly_wrong)
    k = len(wrong) if k is None else k
    top = [r["row"] for r in issues.rows[:k]]
    flagged = [r["row"] for r in issues.rows if r["flagged"]]
    hit = sum(r in wrong for r in flagged)
    return {
        "k": k,
        "precision_at_k": sum(r in wrong for r in top) / max(k, 1),
        "flipped": len(wrong),
        "flagged": len(flagged),
        "flagged_precision": hit / max(len(flagged), 1),
        "flagged_recall": hit / max(len(wrong), 1),
    }


def write_label_issues(issues: LabelIssues, path: str | Path, extra: dict[int, dict] | None = None) -> Path:
    """``label_issues.csv``: every example, most suspect first (:data:`COLUMNS`, plus ``extra`` columns per row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    fields = list(COLUMNS) + sorted({k for v in extra.values() for k in v})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in issues.rows:
            w.writerow(
                {**r, "score": f"{r['score']:.6f}", "suggested_probability": f"{r['suggested_probability']:.6f}", **extra.get(r["row"], {})}
            )
    return path


def issues_table(issues: LabelIssues, show: int = 10, cell=lambda s: s) -> str:
    """Markdown: the ``show`` most suspect examples."""
    lines = [
        f"{issues.num_flagged:,} of {len(issues.rows):,} labels flagged by cleanlab; the {min(show, len(issues.rows))} "
        "most suspect (lowest label quality) first:",
        "",
        "| rank | row | text | given | suggested | score |",
        "|---:|---:|---|---|---|---:|",
    ]
    lines += [
        f"| {r['rank']} | {r['row']} | {cell(r['text'])} | {r['given_label']} | {r['suggested_label']} | {r['score']:.3f} |"
        for r in issues.top(show)
    ]
    return "\n".join(lines)
