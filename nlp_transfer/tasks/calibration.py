"""Calibration: how far a run's probabilities can be trusted, and one parameter set that makes them honest.

Fine-tuned transformers are over-confident (Guo et al. 2017, "On calibration of modern neural
networks"; Desai and Durrett 2020). After training, the run fits on its validation logits:

* single-label: one **temperature** ``T`` (softmax of ``logits / T``). Dividing every logit by
  the same positive number never changes which one is largest, so the predicted label is the
  same with and without calibration; only the scores change.
* multi-label: **Platt scaling per label**, ``sigmoid(a_l * z_l + b_l)`` with ``a_l > 0``. It is
  monotone in each label's logit, so every decision stays the same: a label's tuned threshold
  ``t`` (chosen on raw sigmoid probabilities) is mapped through the same function, and
  ``calibrated p >= calibrated t`` exactly when ``raw p >= t``. Predictions report the mapped
  thresholds beside the calibrated probabilities. A label with one class only in validation keeps
  ``a = 1, b = 0``.
* regression: nothing (there are no probabilities).

The parameters are saved in the run manifest (``calibration``) and applied by ``load_run``.
The measures, before and after: expected calibration error (ECE, 15 equal-width confidence bins,
top-label confidence for single-label and every label's probability for multi-label), maximum
calibration error (MCE, the worst bin), Brier score (single-label: the sum over classes of the
squared error, averaged over examples; multi-label: averaged over labels) and negative
log-likelihood (mean cross-entropy; multi-label: mean binary cross-entropy per label).
ECE and MCE are binned as torchmetrics bins them (``torch.bucketize`` over ``linspace(0, 1, n + 1)``),
in NumPy: importing torchmetrics costs every training process seconds, and the tests check the two agree.
"""

from __future__ import annotations

import numpy as np
import torch

N_BINS = 15
MEASURES = ("ece", "mce", "brier", "nll")
T_RANGE = (0.05, 20.0)  # a temperature outside this range means the validation split is degenerate


# ---- fitting -----------------------------------------------------------------------------
def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 200) -> float:
    """The temperature that minimises the cross-entropy of ``softmax(logits / T)`` on (``logits``, ``targets``)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) > 0, starting at 1
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, *T_RANGE)) if np.isfinite(t) else 1.0


def fit_platt(logits: np.ndarray, targets: np.ndarray, max_iter: int = 200) -> tuple[list[float], list[float]]:
    """Per-label (scale, bias) of ``sigmoid(scale * z + bias)`` minimising the binary cross-entropy; scale > 0."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    log_a = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z * log_a.exp() + b, y, reduction="none").mean(0).sum()
        loss.backward()
        return loss

    opt.step(closure)
    scale, bias = log_a.detach().exp().numpy(), b.detach().numpy()
    both = (y.sum(0) > 0) & (y.sum(0) < len(y))  # a label with one class only: nothing to fit
    ok = both.numpy() & np.isfinite(scale) & np.isfinite(bias)
    scale, bias = np.where(ok, np.clip(scale, 1 / T_RANGE[1], 1 / T_RANGE[0]), 1.0), np.where(ok, bias, 0.0)
    return [float(a) for a in scale], [float(c) for c in bias]


def fit_calibration(method: str | None, logits: np.ndarray, targets: np.ndarray) -> dict | None:
    """The calibration parameters for the manifest: ``{"method": "temperature", "temperature": T}`` or
    ``{"method": "platt", "scale": [...], "bias": [...]}``; None for ``method`` None (regression) or no data."""
    if method is None or len(targets) == 0:
        return None
    if method == "temperature":
        return {"method": "temperature", "temperature": fit_temperature(logits, targets)}
    scale, bias = fit_platt(logits, targets)
    return {"method": "platt", "scale": scale, "bias": bias}


# ---- applying ----------------------------------------------------------------------------
def calibrated_logits(logits: np.ndarray, calibration: dict | None) -> np.ndarray:
    """``logits`` with ``calibration`` applied (unchanged for None): ``logits / T`` or ``scale * logits + bias``."""
    z = np.asarray(logits, dtype=np.float32)
    if not calibration:
        return z
    if calibration["method"] == "temperature":
        return (z / np.float32(calibration["temperature"])).astype(np.float32)
    return (z * np.asarray(calibration["scale"], dtype=np.float32) + np.asarray(calibration["bias"], dtype=np.float32)).astype(np.float32)


def calibrated_thresholds(thresholds, calibration: dict | None) -> list[float]:
    """Multi-label thresholds on raw sigmoid probabilities mapped through Platt scaling (same decisions)."""
    t = np.asarray(thresholds, dtype=np.float64)
    if not calibration or calibration["method"] != "platt":
        return [float(x) for x in t]
    with np.errstate(divide="ignore"):
        z = np.log(t) - np.log1p(-t)  # logit(t): -inf at 0, +inf at 1 (mapped to 0 and 1)
    out = 1.0 / (1.0 + np.exp(-(np.asarray(calibration["scale"]) * z + np.asarray(calibration["bias"]))))
    return [float(x) for x in out]


# ---- measuring ---------------------------------------------------------------------------
def _confidences(probs: np.ndarray, targets: np.ndarray, multi: bool) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) pairs that ECE, MCE and the reliability diagram bin."""
    if multi:
        return probs.reshape(-1), np.asarray(targets).reshape(-1).astype(np.float64)
    ids = probs.argmax(-1)
    return probs[np.arange(len(probs)), ids], (ids == np.asarray(targets)).astype(np.float64)


def calibration_errors(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> tuple[float, float]:
    """(ECE, MCE) of (confidence, correct) pairs: confidences in ``[b/n, (b+1)/n)`` share bin ``b`` and a
    confidence of exactly 1 has a bin of its own, as torchmetrics' ``calibration_error`` bins them."""
    idx = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1), conf, side="right") - 1
    count = np.bincount(idx, minlength=n_bins + 1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        gap = np.nan_to_num(np.abs(np.bincount(idx, correct, n_bins + 1) - np.bincount(idx, conf, n_bins + 1)) / count)
    return float(np.sum(gap * count / max(len(conf), 1))), float(gap.max(initial=0.0))


def measures(probs: np.ndarray, targets: np.ndarray, multi: bool = False, n_bins: int = N_BINS) -> dict:
    """ECE, MCE (``n_bins`` equal-width bins), Brier score and NLL of probabilities ``probs``."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets)
    eps = 1e-12
    ece, mce = calibration_errors(*_confidences(p, y, multi), n_bins)
    if multi:
        yf = y.astype(np.float64)
        brier = ((p - yf) ** 2).mean()
        nll = -(yf * np.log(p + eps) + (1 - yf) * np.log(1 - p + eps)).mean()
    else:
        yl = y.astype(np.int64)
        onehot = np.eye(p.shape[1])[yl]
        brier = ((p - onehot) ** 2).sum(-1).mean()
        nll = -np.log(p[np.arange(len(yl)), yl] + eps).mean()
    return {"ece": ece, "mce": mce, "brier": float(brier), "nll": float(nll)}


def reliability_bins(probs: np.ndarray, targets: np.ndarray, multi: bool = False, n_bins: int = N_BINS) -> dict:
    """Per equal-width confidence bin: mean confidence, accuracy (multi-label: share of positives) and count."""
    conf, correct = _confidences(np.asarray(probs, dtype=np.float64), targets, multi)
    # Bin b holds confidences in (b/n, (b+1)/n]: the diagram has n bars, 0 and 1 included.
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(idx, conf, n_bins) / count
        acc = np.bincount(idx, correct, n_bins) / count
    tidy = lambda a: [None if not np.isfinite(x) else round(float(x), 6) for x in a]  # noqa: E731
    return {"confidence": tidy(mean_conf), "accuracy": tidy(acc), "count": [int(c) for c in count]}


def probabilities(logits: np.ndarray, multi: bool) -> np.ndarray:
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    return (torch.sigmoid(z) if multi else torch.softmax(z, -1)).numpy()


def calibration_record(calibration: dict, splits: dict[str, tuple[np.ndarray, np.ndarray]], n_bins: int = N_BINS) -> dict:
    """What ``metrics.json`` says of ``calibration``: its parameters, every measure before and after on each
    split of ``splits`` (name -> (logits, targets)), and the reliability bins of the last split, before and after."""
    multi = calibration["method"] == "platt"
    rec: dict = {**calibration, "n_bins": n_bins, "fitted_on": "validation"}
    if not multi:
        rec["temperature"] = calibration["temperature"]
    last = None
    for name, (logits, y) in splits.items():
        before, after = probabilities(logits, multi), probabilities(calibrated_logits(logits, calibration), multi)
        m0, m1 = measures(before, y, multi, n_bins), measures(after, y, multi, n_bins)
        rec[name] = {**{f"{k}_before": m0[k] for k in MEASURES}, **{f"{k}_after": m1[k] for k in MEASURES}, "num_examples": int(len(y))}
        last = name, before, after, y
    if last is not None:
        name, before, after, y = last
        rec["reliability"] = {
            "split": name,
            "before": reliability_bins(before, y, multi, n_bins),
            "after": reliability_bins(after, y, multi, n_bins),
        }
    return rec
