"""Human-readable run summaries (Markdown), written beside ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

from .metrics import confusion_table, per_class_table

SUMMARY_FILE = "summary.md"


def write_summary(run_dir: Path, cfg, metrics: dict) -> Path:
    t, timing, env = metrics["test"], metrics["timing"], metrics["environment"]
    sizes = metrics["data"]["sizes"]
    lines = [
        f"# {cfg.name}",
        "",
        f"- model: `{cfg.model.name_or_path}` (pooling `{cfg.model.pooling}`, head `{cfg.model.head}`), mode `{cfg.transfer.mode}`",
        f"- data: `{cfg.data.source or cfg.data.train_file}`; train {sizes['train']:,}, validation {sizes['validation']:,}, test {sizes['test']:,}",
        f"- training: {cfg.train.epochs} epochs, batch {cfg.train.batch_size} x {cfg.train.grad_accum_steps} accumulation x "
        f"{env['num_processes']} process(es), lr {cfg.train.lr:g}, precision {env['mixed_precision']}, seed {cfg.train.seed}",
        f"- best epoch by validation {metrics['metric_for_best']}: {metrics['best_epoch']}",
        f"- wall time: {timing['total_seconds']:.1f}s (training {timing['train_seconds']:.1f}s, encoding {timing['encode_seconds']:.1f}s)",
        "",
        "## Test",
        "",
        f"accuracy **{t['accuracy']:.4f}**, macro F1 **{t['f1_macro']:.4f}**, macro precision {t['precision_macro']:.4f}, "
        f"macro recall {t['recall_macro']:.4f}, weighted F1 {t['f1_weighted']:.4f} ({t['num_examples']:,} examples)",
        "",
        per_class_table(t),
        "",
        "Confusion matrix (rows: true, columns: predicted):",
        "",
        confusion_table(t),
        "",
        "## Epochs",
        "",
        "| epoch | train loss | val loss | val accuracy | val macro F1 | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for e in metrics["epochs"]:
        v = e["validation"]
        lines.append(f"| {e['epoch']} | {e['train_loss']:.4f} | {v['loss']:.4f} | {v['accuracy']:.4f} | {v['f1_macro']:.4f} | {e['seconds']:.1f} |")
    lines += ["", "Reload: `nlp_transfer.load_run(\"<this directory>\")` (see README)."]
    path = Path(run_dir) / SUMMARY_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
