"""The run report: ``summary.md`` beside ``metrics.json``, with PNG plots.

It says what ran (the recipe), on what (data sizes and label balance), how training went
(metrics per epoch, learning curves), how the best epoch did on test (per-class table,
confusion matrix) and how to load the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import confusion_table, epoch_columns, headline, per_class_table

SUMMARY_FILE = "summary.md"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "learning_curves.png"


def label_balance_table(label_counts: dict[str, dict[str, int]], sizes: dict[str, int] | None = None) -> str:
    """Markdown: one row per split, examples per label with its share of the split's examples
    (``sizes``; without them the counts' sum: right when every example has one label)."""
    labels = list(next(iter(label_counts.values())))
    rows = ["| split | examples | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for split, counts in label_counts.items():
        n = sizes[split] if sizes else sum(counts.values())
        cells = [f"{counts[c]:,} ({counts[c] / max(n, 1):.1%})" for c in labels]
        rows.append(f"| {split} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_plots(run_dir: Path, cfg, metrics: dict) -> list[str]:
    """The confusion matrix on test and the learning curves; names of the PNGs written."""
    from .plots import plot_confusion_matrix, plot_learning_curves

    t = metrics["test"]
    written = [plot_learning_curves(metrics["epochs"], run_dir / CURVES_PNG, metrics["best_epoch"], cfg.name)]
    if "confusion_matrix" in t:  # single-label only: multi-label and regression have none
        written.append(plot_confusion_matrix(t["confusion_matrix"], t["labels"], run_dir / CONFUSION_PNG,
                                             f"{cfg.name}: test (best epoch {metrics['best_epoch']})"))
    return [p.name for p in written if p is not None]


def _setup_lines(cfg, metrics: dict) -> list[str]:
    """Long-text handling and class balancing, where the recipe sets them."""
    from .summary import _imbalance, _long_text

    lines = []
    long_text = _long_text(cfg.model)
    if long_text:
        note = (" (`load_run` does the same; plain transformers loading would truncate instead)" if cfg.model.chunking else "")
        lines.append(f"- long texts: {long_text[0]}{note}")
    weights = (metrics.get("setup") or {}).get("class_weights")
    balance = _imbalance(cfg.train)
    if balance:
        shown = f" ({', '.join(f'{k} {v:.3f}' for k, v in weights.items())})" if weights else ""
        lines.append(f"- class balance: {', '.join(balance)}{shown}")
    return lines


def write_summary(run_dir: Path, cfg, metrics: dict) -> Path:
    from .interop import loading_instructions
    from .modeling import META_FILE

    run_dir = Path(run_dir)
    t, timing, env = metrics["test"], metrics["timing"], metrics["environment"]
    sizes = metrics["data"]["sizes"]
    pngs = write_plots(run_dir, cfg, metrics)
    init = "" if getattr(cfg.model, "pretrained", True) else ", random initialisation (not pretrained)"
    task = metrics.get("task", "single_label")
    lines = [
        f"# {cfg.name}",
        "",
        f"- model: `{cfg.model.name_or_path}` (pooling `{cfg.model.pooling}`, head `{cfg.model.head}`{init}), mode `{cfg.transfer.mode}`",
        f"- data: `{cfg.data.source or cfg.data.train_file}` ({task.replace('_', '-')}); train {sizes['train']:,}, "
        f"validation {sizes['validation']:,}, test {sizes['test']:,}",
        f"- training: {cfg.train.epochs} epochs, batch {cfg.train.batch_size} x {cfg.train.grad_accum_steps} accumulation x "
        f"{env['num_processes']} process(es), lr {cfg.train.lr:g}, precision {env['mixed_precision']}, seed {cfg.train.seed}",
        *_setup_lines(cfg, metrics),
        f"- best epoch by validation {metrics['metric_for_best']}: {metrics['best_epoch']}",
        f"- wall time: {timing['total_seconds']:.1f}s (training {timing['train_seconds']:.1f}s, encoding {timing['encode_seconds']:.1f}s)",
        "",
        "## Test",
        "",
        headline(t),
        "",
    ]
    if "per_class" in t:
        if t.get("thresholds"):
            lines += ["Per label, with the decision thresholds tuned on validation (or fixed by the recipe):", ""]
        lines += [per_class_table(t), ""]
    if "confusion_matrix" in t:
        lines += ["Confusion matrix (rows: true, columns: predicted):", "", confusion_table(t), ""]
    if CONFUSION_PNG in pngs:
        lines += [f"![confusion matrix on test]({CONFUSION_PNG})", ""]
    cols = epoch_columns(t)
    lines += [
        "## Epochs",
        "",
        "| epoch | train loss | val loss | " + " | ".join(title for _, title in cols) + " | seconds |",
        "|---:|---:|---:|" + "---:|" * len(cols) + "---:|",
    ]
    for e in metrics["epochs"]:
        v = e["validation"]
        scores = " | ".join(f"{v[k]:.4f}" for k, _ in cols)
        lines.append(f"| {e['epoch']} | {e['train_loss']:.4f} | {v['loss']:.4f} | {scores} | {e['seconds']:.1f} |")
    if CURVES_PNG in pngs:
        lines += ["", f"![learning curves]({CURVES_PNG})"]
    label_counts = metrics["data"].get("label_counts")
    if label_counts:
        what = "carrying each label" if task == "multi_label" else "per split and label"
        lines += ["", "## Data", "", f"Examples {what} (share of the split):", "", label_balance_table(label_counts, sizes)]
    target = metrics["data"].get("target")
    if target:
        lines += ["", "## Data", "", "Regression target per split:", "", "| split | mean | std | min | max |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {s} | {v['mean']:.4f} | {v['std']:.4f} | {v['min']:.4f} | {v['max']:.4f} |" for s, v in target.items()]
    meta_file = run_dir / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    lines += ["", "## Loading this run", "", loading_instructions(meta)]
    lines += ["", "## Recipe", "", "Resolved (`recipe.yaml`; `scripts/train.py --config recipe.yaml output.dir=NEW_DIR` trains it again):", "", "```yaml", cfg.to_yaml().rstrip(), "```"]
    path = run_dir / SUMMARY_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
