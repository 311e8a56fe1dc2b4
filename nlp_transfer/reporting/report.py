"""The run report: ``summary.md`` beside ``metrics.json``, with PNG plots.

It says what ran (the recipe), on what (data sizes and label balance), how training went
(metrics per epoch, learning curves), how the best epoch did on test (per-class table,
confusion matrix) and how to load the run.
"""

from __future__ import annotations

from pathlib import Path

from nlp_transfer.config import ADAPTER_MODES
from nlp_transfer.manifest import read_manifest
from nlp_transfer.reporting.markdown import confusion_table, label_balance_table, loading_instructions, per_class_table
from nlp_transfer.reporting.plots import plot_confusion_matrix, plot_learning_curves, plot_reliability
from nlp_transfer.reporting.tables import adapter_note, imbalance_notes, long_text_notes
from nlp_transfer.tasks import get_task

SUMMARY_FILE = "summary.md"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "learning_curves.png"
RELIABILITY_PNG = "reliability_diagram.png"
CALIBRATION_MEASURES = (("ece", "ECE (15 bins)"), ("mce", "MCE"), ("brier", "Brier"), ("nll", "NLL"))


def write_plots(run_dir: Path, cfg, metrics: dict) -> list[str]:
    """The confusion matrix on test and the learning curves; names of the PNGs written."""
    t = metrics["test"]
    task = get_task(metrics.get("task", "single_label"))
    written = [plot_learning_curves(metrics["epochs"], run_dir / CURVES_PNG, metrics["best_epoch"], cfg.name, task.plot_scores)]
    if "confusion_matrix" in t:  # classes only: multi-label and regression have none
        written.append(
            plot_confusion_matrix(
                t["confusion_matrix"], t["labels"], run_dir / CONFUSION_PNG, f"{cfg.name}: test (best epoch {metrics['best_epoch']})"
            )
        )
    reliability = (metrics.get("calibration") or {}).get("reliability")
    if reliability:
        written.append(plot_reliability(reliability, run_dir / RELIABILITY_PNG, f"{cfg.name}: reliability"))
    return [p.name for p in written if p is not None]


def _setup_lines(cfg, metrics: dict) -> list[str]:
    """Few-shot sampling, long-text handling and class balancing, where the recipe sets them."""
    lines = []
    if getattr(cfg.data, "samples_per_class", None):
        lines.append(
            f"- few-shot: {cfg.data.samples_per_class} training examples per class (drawn with seed "
            f"{cfg.data.sample_seed}); validation and test whole"
        )
    long_text = long_text_notes(cfg.model)
    if long_text:
        note = " (`load_run` does the same; plain transformers loading would truncate instead)" if cfg.model.chunking else ""
        lines.append(f"- long texts: {long_text[0]}{note}")
    weights = (metrics.get("setup") or {}).get("class_weights")
    balance = imbalance_notes(cfg.train)
    if balance:
        shown = f" ({', '.join(f'{k} {v:.3f}' for k, v in weights.items())})" if weights else ""
        lines.append(f"- class balance: {', '.join(balance)}{shown}")
    return lines


def _head_lines(cfg, metrics: dict) -> list[str]:
    timing, env, sizes = metrics["timing"], metrics["environment"], metrics["data"]["sizes"]
    init = "" if getattr(cfg.model, "pretrained", True) else ", random initialisation (not pretrained)"
    mode = f"`{cfg.transfer.mode}`" + (f": {adapter_note(cfg.transfer)}" if cfg.transfer.mode in ADAPTER_MODES else "")
    task = metrics.get("task", "single_label")
    return [
        f"# {cfg.name}",
        "",
        f"- model: `{cfg.model.name_or_path}` (pooling `{cfg.model.pooling}`, head `{cfg.model.head}`{init}), mode {mode}",
        f"- data: `{cfg.data.source or cfg.data.train_file}` ({task.replace('_', '-')}); train {sizes['train']:,}, "
        f"validation {sizes['validation']:,}, test {sizes['test']:,}",
        f"- training: {cfg.train.epochs} epochs, batch {cfg.train.batch_size} x {cfg.train.grad_accum_steps} accumulation x "
        f"{env['num_processes']} process(es), lr {cfg.train.lr:g}, precision {env['mixed_precision']}, seed {cfg.train.seed}",
        *_setup_lines(cfg, metrics),
        f"- best epoch by validation {metrics['metric_for_best']}: {metrics['best_epoch']}",
        f"- wall time: {timing['total_seconds']:.1f}s (training {timing['train_seconds']:.1f}s, encoding {timing['encode_seconds']:.1f}s)",
        "",
    ]


def _test_lines(metrics: dict, pngs: list[str]) -> list[str]:
    t = metrics["test"]
    if not t:  # a search trial: only the trial the search chooses is scored on test, after the search
        return [
            "## Test",
            "",
            "Not scored on test: a trial of a hyperparameter search (the test split is read only for the chosen trial).",
            "",
        ]
    lines = ["## Test", "", get_task(metrics.get("task", "single_label")).headline(t), ""]
    if "per_class" in t:
        if t.get("thresholds"):
            lines += ["Per label, with the decision thresholds tuned on validation (or fixed by the recipe):", ""]
        lines += [per_class_table(t), ""]
    if "confusion_matrix" in t:
        lines += ["Confusion matrix (rows: true, columns: predicted):", "", confusion_table(t), ""]
    if CONFUSION_PNG in pngs:
        lines += [f"![confusion matrix on test]({CONFUSION_PNG})", ""]
    return lines


def calibration_lines(cal: dict, png: str | None = None) -> list[str]:
    """The ``## Calibration`` section: what was fitted and every measure before and after, per split."""
    if not cal:
        return []
    if cal["method"] == "temperature":
        fitted = f"temperature **{cal['temperature']:.3f}** (probabilities are softmax(logits / T); labels unchanged)"
    else:
        fitted = "Platt scaling per label (sigmoid(a * logit + b), a > 0; thresholds mapped the same way, decisions unchanged)"
    lines = [
        "## Calibration",
        "",
        f"Fitted on validation: {fitted}. Lower is better for every measure; "
        f"`load_run(...).predict` and `scripts/predict.py` apply it (`--no-calibration`: raw scores).",
        "",
        "| split | " + " | ".join(f"{t} before | {t} after" for _, t in CALIBRATION_MEASURES) + " |",
        "|---|" + "---:|---:|" * len(CALIBRATION_MEASURES),
    ]
    for split in ("validation", "test"):
        if split in cal:
            r = cal[split]
            lines.append(
                f"| {split} | " + " | ".join(f"{r[k + '_before']:.4f} | {r[k + '_after']:.4f}" for k, _ in CALIBRATION_MEASURES) + " |"
            )
    if png:
        lines += ["", f"![reliability diagram]({png})"]
    return lines + [""]


def _epoch_lines(metrics: dict, pngs: list[str]) -> list[str]:
    # The task's columns, where every epoch has them (another objective may validate with its loss alone).
    cols = [
        (k, t)
        for k, t in get_task(metrics.get("task", "single_label")).epoch_columns
        if all(k in e["validation"] for e in metrics["epochs"])
    ]
    lines = [
        "## Epochs",
        "",
        "| epoch | train loss | val loss | " + " | ".join(title for _, title in cols) + " | seconds |",
        "|---:|---:|---:|" + "---:|" * len(cols) + "---:|",
    ]
    for e in metrics["epochs"]:
        v = e["validation"]
        scores = " | ".join(f"{v[k]:.4f}" for k, _ in cols)
        train = "-" if e["train_loss"] is None else f"{e['train_loss']:.4f}"  # zero-shot: nothing trained
        lines.append(f"| {e['epoch']} | {train} | {v['loss']:.4f} | {scores} | {e['seconds']:.1f} |")
    if CURVES_PNG in pngs:
        lines += ["", f"![learning curves]({CURVES_PNG})"]
    return lines


def distillation_lines(d: dict) -> list[str]:
    """The ``## Distillation`` section: the teachers, the transfer set's rows and the student against the teachers on test."""
    if not d:
        return []
    rows = d["rows"]
    teachers = ", ".join(f"`{t['path']}`" for t in d["teachers"])
    lines = [
        "",
        "## Distillation",
        "",
        f"Teachers: {teachers}{' (probabilities averaged)' if len(d['teachers']) > 1 else ''}; temperature {d['temperature']:g}, "
        f"alpha {d['alpha']:g}. Transfer set: {rows['labelled']:,} labelled, {rows['augmented']:,} augmented and "
        f"{rows['unlabelled']:,} unlabelled rows.",
    ]
    test = d.get("test")
    if test:
        agreement = "n/a" if test["agreement"] is None else f"{test['agreement']:.4f}"
        kept = "n/a" if test["kept"] is None else f"{test['kept']:.1%}"
        lines += [
            "",
            f"| test | agreement with the teachers | student {test['metric']} | teachers' {test['metric']} | kept |",
            "|---|---:|---:|---:|---:|",
            f"| | {agreement} | {test['student']:.4f} | {test['teacher']:.4f} | {kept} |",
        ]
    return lines


def _data_lines(metrics: dict) -> list[str]:
    data, task = metrics["data"], get_task(metrics.get("task", "single_label"))
    if data.get("label_counts"):
        what = task.label_count_title
        return ["", "## Data", "", f"Examples {what} (share of the split):", "", label_balance_table(data["label_counts"], data["sizes"])]
    target = data.get("target")
    if not target:
        return []
    lines = ["", "## Data", "", "Regression target per split:", "", "| split | mean | std | min | max |", "|---|---:|---:|---:|---:|"]
    return lines + [f"| {s} | {v['mean']:.4f} | {v['std']:.4f} | {v['min']:.4f} | {v['max']:.4f} |" for s, v in target.items()]


def write_summary(run_dir: Path, cfg, metrics: dict, plots: bool = True) -> Path:
    """``summary.md`` (and, unless ``plots=False``, its plots) of a run directory holding its model and manifest."""
    run_dir = Path(run_dir)
    pngs = write_plots(run_dir, cfg, metrics) if plots else []
    lines = _head_lines(cfg, metrics) + _test_lines(metrics, pngs)
    lines += calibration_lines(metrics.get("calibration") or {}, RELIABILITY_PNG if RELIABILITY_PNG in pngs else None)
    lines += distillation_lines(metrics.get("distillation") or {})
    lines += _epoch_lines(metrics, pngs) + _data_lines(metrics)
    lines += ["", "## Loading this run", "", loading_instructions(read_manifest(run_dir))]
    lines += [
        "",
        "## Recipe",
        "",
        "Resolved (`recipe.yaml`; `scripts/train.py --config recipe.yaml output.dir=NEW_DIR` trains it again):",
        "",
        "```yaml",
        cfg.to_yaml().rstrip(),
        "```",
    ]
    path = run_dir / SUMMARY_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
