"""PNG plots for reports: confusion matrix, learning curves, comparison bars.

matplotlib is optional (the ``[plots]`` extra). Figures are drawn on matplotlib's ``Figure``
with the Agg canvas, never through ``pyplot``, so no GUI backend is touched and a notebook's
backend is left alone. Without matplotlib every function logs a note and returns ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nlp_transfer.utils.extras import extra_hint

logger = logging.getLogger("nlp_transfer")
_noted = False


def _figure(*args, **kwargs):
    """A matplotlib Figure drawn by Agg, or None (with a note, once) if matplotlib is missing."""
    global _noted
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not _noted:
            logger.warning("%s; no plots are drawn", extra_hint("plots", "drawing plots"))
            _noted = True
        return None
    fig = Figure(*args, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path | None:
    """Counts, coloured by the share of each true class (row), rows true and columns predicted."""
    cm = np.asarray(cm, dtype=np.int64)
    n = len(labels)
    size = min(3.0 + 0.6 * n, 14.0)
    fig = _figure(figsize=(size + 1.0, size))
    if fig is None:
        return None
    ax = fig.subplots()
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticklabels(labels)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center", fontsize=9, color="white" if share[i, j] > 0.5 else "black")
    return _save(fig, path)


def plot_reliability(reliability: dict, path: str | Path, title: str = "") -> Path | None:
    """Reliability diagram, before and after calibration: accuracy against mean confidence per bin (bars),
    the diagonal for perfect calibration, and how many examples each bin holds (below)."""
    fig = _figure(figsize=(8.5, 4.6))
    if fig is None:
        return None
    axes = fig.subplots(2, 2, sharex=True, height_ratios=(3, 1))
    for col, (key, name) in enumerate((("before", "before calibration"), ("after", "after calibration"))):
        b = reliability[key]
        n = len(b["count"])
        centres = (np.arange(n) + 0.5) / n
        acc = np.array([np.nan if a is None else a for a in b["accuracy"]], dtype=float)
        conf = np.array([np.nan if c is None else c for c in b["confidence"]], dtype=float)
        ax, axn = axes[0, col], axes[1, col]
        ax.bar(centres, np.nan_to_num(acc), width=1 / n, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
        ax.bar(
            centres,
            np.nan_to_num(conf - acc),
            bottom=np.nan_to_num(acc),
            width=1 / n,
            color="tab:red",
            alpha=0.3,
            hatch="//",
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy" if col == 0 else None, title=name)
        axn.bar(centres, b["count"], width=1 / n, color="gray", edgecolor="black")
        axn.set(xlabel="confidence", ylabel="examples" if col == 0 else None)
        if col == 0:
            ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title} ({reliability.get('split', 'test')})" if title else reliability.get("split", ""))
    return _save(fig, path)


def plot_learning_curves(
    epochs: list[dict],
    path: str | Path,
    best_epoch: int | None = None,
    title: str = "",
    scores: Sequence[tuple[str, str]] = (("accuracy", "accuracy"), ("f1_macro", "macro F1")),
) -> Path | None:
    """Train and validation loss (left) and validation ``scores`` ((metric, label) pairs: the task's
    ``plot_scores``) on the right, per epoch."""
    fig = _figure(figsize=(10, 3.8))
    if fig is None:
        return None
    x = [e["epoch"] for e in epochs]
    val = [e["validation"] for e in epochs]
    left, right = fig.subplots(1, 2)
    if all(e["train_loss"] is not None for e in epochs):  # zero-shot runs train nothing
        left.plot(x, [e["train_loss"] for e in epochs], marker="o", label="train")
    left.plot(x, [v["loss"] for v in val], marker="o", label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    for key, name in scores:
        if key in val[0]:
            right.plot(x, [v[key] for v in val], marker="o", label=name)
    right.set(xlabel="epoch", ylabel="validation score", title="validation")
    for ax in (left, right):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend()
        if len(x) <= 20:
            ax.set_xticks(x)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _legend(fig, kinds: dict, used: set) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=label) for k, (c, label) in kinds.items() if k in used]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)


def plot_comparison(rows: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Bars per method: test accuracy, test macro F1 and wall time (``rows``: method, accuracy, f1_macro, seconds);
    rows scored on a target domain (``target_accuracy``, ``target_f1_macro``) show source test accuracy, target
    accuracy, target macro F1 and wall time (the in-domain reference, ``reference``, has no source bar)."""
    target = any("target_accuracy" in r for r in rows)
    panels = (
        (("accuracy", "source test accuracy"), ("target_accuracy", "target accuracy"), ("target_f1_macro", "target macro F1"))
        if target
        else (("accuracy", "test accuracy"), ("f1_macro", "test macro F1"))
    ) + (("seconds", "wall time (s)"),)
    fig = _figure(figsize=(4.4 * len(panels), 0.9 + 0.45 * len(rows)))
    if fig is None:
        return None
    axes = fig.subplots(1, len(panels), sharey=True)
    names = [r["method"] + (" [in-domain reference]" if r.get("reference") else "") for r in rows][::-1]  # first row on top
    kinds = {None: ("#999999", "non-neural baseline"), False: ("#d62728", "random initialisation"), True: ("#1f77b4", "pretrained")}
    colours = [kinds[r.get("pretrained")][0] for r in rows][::-1]
    for ax, (key, label) in zip(axes, panels):
        fmt = "{:,.0f}" if key == "seconds" else "{:.3f}"
        shown = [None if key == "accuracy" and r.get("reference") else r[key] for r in rows][::-1]
        values = [0.0 if v is None else v for v in shown]
        bars = ax.barh(names, values, color=colours)
        ax.bar_label(bars, labels=["-" if v is None else fmt.format(v) for v in shown], padding=2, fontsize=8)
        ax.set_title(label)
        ax.grid(axis="x", alpha=0.3)
        if key != "seconds":
            lo = min(v for v in shown if v is not None)
            ax.set_xlim(max(0.0, lo - 0.1), 1.0)
        else:
            ax.set_xlim(0, max(values) * 1.2 or 1)
    _legend(fig, kinds, {r.get("pretrained") for r in rows})
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_curve(summary: list[dict], path: str | Path, title: str = "", xlabel: str | None = None) -> Path | None:
    """Label-efficiency curves: mean test accuracy and macro F1 against labels per class (log axis), one line
    per method with a band of one standard deviation; the whole training set at its mean count per class,
    a zero-shot point (0 labels) as a dashed horizontal line; ``xlabel`` names another x axis (``per_class``
    then holds what it counts)."""
    fig = _figure(figsize=(12, 4.4))
    if fig is None:
        return None
    axes = fig.subplots(1, 2, sharex=True)
    methods = list(dict.fromkeys(r["method"] for r in summary))
    n_classes = max(1, round(max(r["train_size"] / r["per_class"] for r in summary if r["per_class"])))
    for ax, key, label in zip(axes, ("accuracy", "f1_macro"), ("test accuracy", "test macro F1")):
        for i, m in enumerate(methods):
            colour = f"C{i}"
            rows = [r for r in summary if r["method"] == m]
            zero = [r for r in rows if r["per_class"] == 0]
            if zero:
                ax.axhline(zero[0][key], color=colour, ls="--", lw=1.2, label=f"{m} (0 labels)")
                continue
            x = [r["per_class"] if r["per_class"] is not None else r["train_size"] / n_classes for r in rows]
            order = np.argsort(x)
            xs = np.asarray(x)[order]
            mean = np.asarray([rows[j][key] for j in order])
            sd = np.asarray([rows[j][key + "_std"] for j in order])
            ax.plot(xs, mean, marker="o", color=colour, label=m)
            ax.fill_between(xs, mean - sd, mean + sd, color=colour, alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set(xlabel=xlabel or "labelled examples per class (log; the last point: all)", ylabel=label, title=label)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_layer_scores(rows: list[dict], estimators: Sequence[str], path: str | Path, title: str = "") -> Path | None:
    """One checkpoint's transferability scores against its layers (nlp-transfer select): a panel per estimator
    (and the probe's test score, where validated), a line per pooling."""
    names = {"logme": "LogME", "hscore": "H-score", "knn": "kNN"}
    panels = [(e, names.get(e, e)) for e in estimators if any(r.get(e) is not None for r in rows)]
    if rows and "probe" in rows[0]:
        panels.append(("probe", f"probe test {rows[0]['probe']['metric']}"))
    fig = _figure(figsize=(4.2 * len(panels), 3.8))
    if fig is None or not panels:
        return None
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
    poolings = list(dict.fromkeys(r["pooling"] for r in rows))
    for ax, (key, label) in zip(axes, panels):
        for i, p in enumerate(poolings):
            sub = sorted((r for r in rows if r["pooling"] == p), key=lambda r: r["layer"])
            ys = [r["probe"]["score"] if key == "probe" else r[key] for r in sub]
            ax.plot([r["layer"] for r in sub], ys, marker="o", color=f"C{i}", label=f"{p} pooling")
        ax.set(xlabel="layer", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
