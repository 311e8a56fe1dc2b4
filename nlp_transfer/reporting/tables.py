"""Tables that compare finished runs (and a TF-IDF baseline on the same splits)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nlp_transfer.config import ADAPTER_MODES, RecipeConfig
from nlp_transfer.errors import ConfigError, ModelError
from nlp_transfer.tasks import get_task


def _read_run(d: str | Path) -> tuple[dict, RecipeConfig]:
    d = Path(d)
    if not (d / "metrics.json").is_file() or not (d / "recipe.yaml").is_file():
        raise ModelError(f"'{d}' is not a finished run directory (needs metrics.json and recipe.yaml)")
    return json.loads((d / "metrics.json").read_text()), RecipeConfig.from_yaml(d / "recipe.yaml")


# Extra test-metric columns a table can show (--metric), with their headers.
METRIC_COLUMNS = {
    "recall_macro": "test macro recall",
    "precision_macro": "test macro precision",
    "f1_weighted": "test weighted F1",
    "f1_micro": "test micro F1",
}


# Extra run columns (--column): what a run costs besides time.
RUN_COLUMNS = {
    "peak_memory": "peak memory (MB)",
    "run_size": "run directory (MB)",
    "parameters": "parameters",
    "layers": "layers",
    "agreement": "test agreement with teacher",
    "kept": "teacher accuracy kept",
    "seed": "seed",
}


def summarize_runs(run_dirs: list[str], baseline: bool = True, metrics: tuple[str, ...] = (), columns: tuple[str, ...] = ()) -> str:
    """A Markdown table: one row per run (test accuracy, macro F1, ``metrics``, wall time, ``columns``), baseline first."""
    unknown = [m for m in metrics if m not in METRIC_COLUMNS]
    if unknown:
        raise ConfigError(f"unknown table metric '{unknown[0]}'; choose from {', '.join(METRIC_COLUMNS)}")
    unknown = [c for c in columns if c not in RUN_COLUMNS]
    if unknown:
        raise ConfigError(f"unknown table column '{unknown[0]}'; choose from {', '.join(RUN_COLUMNS)}")
    runs = [_read_run(d) for d in run_dirs]
    other = next((m.get("task") for m, _ in runs if "accuracy" not in get_task(m.get("task", "single_label")).metrics), None)
    if other:
        raise ConfigError(
            f"the summary table compares single-label runs (accuracy, macro F1, a TF-IDF baseline) but a run is {other}; "
            "read that run's summary.md"
        )
    data_cfgs = {json.dumps(cfg.to_dict()["data"], sort_keys=True) for _, cfg in runs}
    if len(data_cfgs) > 1:
        raise ConfigError("the runs use different data settings; compare runs of one dataset and split")
    first_cfg = runs[0][1]
    rows = []
    if baseline:
        from nlp_transfer.data.loading import load_data
        from nlp_transfer.reporting.baselines import tfidf_logreg

        b = tfidf_logreg(load_data(first_cfg.data))
        rows.append(("TF-IDF + logistic regression", "word 1-2 grams, C=4", b, b["seconds"], "-", "-", ["-"] * len(columns)))
    for d, (m, cfg) in zip(run_dirs, runs):
        rows.append(_row(m, cfg) + ([_run_column(c, Path(d), m) for c in columns],))
    sizes = runs[0][0]["data"]["sizes"]
    lines = [
        f"Data: `{first_cfg.data.source or first_cfg.data.train_file}`, train {sizes['train']:,} / validation "
        f"{sizes['validation']:,} / test {sizes['test']:,} (split seed {first_cfg.data.split_seed}); test-set figures.",
        "",
        "| method | settings | trained params | test accuracy | test macro F1 | "
        + "".join(f"{METRIC_COLUMNS[m]} | " for m in metrics)
        + "wall time (s) | train tokens/s |"
        + "".join(f" {RUN_COLUMNS[c]} |" for c in columns),
        "|---|---|---:|---:|---:|" + "---:|" * len(metrics) + "---:|---:|" + "---:|" * len(columns),
    ]
    for name, how, t, secs, tps, params, more in rows:
        extra = "".join(f"{t[m]:.4f} | " for m in metrics)
        lines.append(
            f"| {name} | {how} | {params} | {t['accuracy']:.4f} | {t['f1_macro']:.4f} | {extra}{secs:.1f} | {tps} |"
            + "".join(f" {v} |" for v in more)
        )
    return "\n".join(lines)


def calibration_table(run_dirs: list[str]) -> str:
    """A Markdown table: per run and split, the fitted temperature and ECE, MCE, Brier and NLL before -> after."""
    lines = ["| run | temperature | split | test accuracy | ECE (15 bins) | MCE | Brier | NLL |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for d in run_dirs:
        m, cfg = _read_run(d)
        cal = m.get("calibration")
        if not cal:
            raise ModelError(
                f"'{d}' has no calibration in its metrics.json (a regression run, or trained before calibration existed); train it again"
            )
        name = _row(m, cfg)[0]
        t = f"{cal['temperature']:.3f}" if "temperature" in cal else "Platt per label"
        for split in ("validation", "test"):
            r = cal[split]
            figs = " | ".join(f"{r[k + '_before']:.4f} -> {r[k + '_after']:.4f}" for k in ("ece", "mce", "brier", "nll"))
            acc = f"{m['test']['accuracy']:.4f}" if split == "test" else ""
            lines.append(f"| {name} | {t} | {split} ({r['num_examples']:,}) | {acc} | {figs} |")
    return "\n".join(lines)


def run_layers(d: Path) -> int | None:
    """The transformer layers a run predicts with: its saved config's, or for an adapter run (the base checkpoint is
    not saved) the base checkpoint's, as its manifest names it."""
    config = Path(d) / "config.json"
    if not config.is_file():
        manifest = Path(d) / "nlp_transfer.json"
        adapter = json.loads(manifest.read_text()).get("adapter") if manifest.is_file() else None
        config = Path((adapter or {}).get("base_path") or d) / "config.json"
    if not config.is_file():
        return None
    c = json.loads(config.read_text())
    return c.get("num_hidden_layers") or c.get("n_layer")


def run_size_mb(d: Path) -> float:
    """What a run directory costs to keep (MB): weights (or the adapter), tokenizer, reports."""
    return sum(f.stat().st_size for f in Path(d).rglob("*") if f.is_file()) / 2**20


def parameters_cell(total: int | None) -> str:
    """A model's size: ``22.6M``, or the exact count below 100k; "-" where unknown."""
    return "-" if not total else (f"{total / 1e6:.1f}M" if total >= 1e5 else f"{total:,}")


def distilled_cell(student: dict, key: str) -> str:
    """A student's ``agreement`` with its teachers (4 decimals) or the share of their accuracy ``kept`` (a
    percentage), from a record holding them; "-" where it has none (a run that is no student)."""
    value = student.get(key)
    return "-" if value is None else (f"{value:.4f}" if key == "agreement" else f"{value:.1%}")


def _run_column(column: str, d: Path, m: dict) -> str:
    if column == "run_size":
        return f"{run_size_mb(d):,.1f}"
    if column == "parameters":
        return parameters_cell((m.get("parameters") or {}).get("total"))
    if column == "layers":
        return str(run_layers(d) or "-")
    if column in ("agreement", "kept"):  # a distilled run against its teachers on test
        return distilled_cell((m.get("distillation") or {}).get("test") or {}, column)
    if column == "seed":  # train.seed, as the run recorded it
        seed = m["environment"].get("seed")
        return "-" if seed is None else str(seed)
    peak = m["timing"].get("peak_memory_mb")
    return f"{peak:,.0f}" if peak else "-"


def _row(m: dict, cfg: RecipeConfig) -> tuple:
    """One run: what it is, how it ran, its test metrics, wall time, throughput, trained parameters."""
    env, t = m["environment"], cfg.transfer
    mode = {"partial": f"partial (top {t.unfreeze_top})", "feature_extraction": "feature extraction"}.get(t.mode, t.mode)
    if t.mode in ADAPTER_MODES:
        mode = adapter_note(t)
    head = "logistic regression" if cfg.model.head == "logreg" else f"{cfg.model.head} head"
    epochs = "1 fit" if cfg.model.head == "logreg" else f"{cfg.train.epochs} ep"
    layer = f"layer {cfg.model.feature_layer}, " if cfg.model.feature_layer is not None else ""
    how = f"{layer}{cfg.model.pooling} pooling, {head}, {epochs}, {env['mixed_precision']}, {env['num_processes']}x {env['device']}"
    extras = [f"LLRD {t.layerwise_lr_decay}"] if t.layerwise_lr_decay < 1 else []
    extras += [f"L2-SP {t.l2sp}"] if t.l2sp > 0 else []
    extras += [f"{cfg.data.samples_per_class} per class (seed {cfg.data.sample_seed})"] if cfg.data.samples_per_class else []
    extras += long_text_notes(cfg.model) + imbalance_notes(cfg.train) + distill_notes(m.get("distillation"))
    if extras:
        how += ", " + ", ".join(extras)
    tps = m["timing"].get("train_tokens_per_second")
    trainable = m.get("parameters", {}).get("trainable")
    params = f"{trainable / 1e6:.2f}M" if trainable and trainable >= 1e5 else (f"{trainable:,}" if trainable else "-")
    return (f"{cfg.model.name_or_path} {mode}", how, m["test"], m["timing"]["total_seconds"], f"{tps:,.0f}" if tps else "-", params)


def distill_notes(record: dict | None) -> list[str]:
    """``distilled from rt-smollm2-lora (T=2, alpha 0.5; +19,401 augmented, +10,000 unlabelled)`` for a student, from
    the ``distillation`` record of its metrics.json."""
    if not record:
        return []
    names = " + ".join(t.get("name") or Path(t["path"]).name for t in record["teachers"])
    rows = record["rows"]
    more = [f"+{rows[k]:,} {k}" for k in ("augmented", "unlabelled") if rows.get(k)]
    settings = f"T={record['temperature']:g}, alpha {record['alpha']:g}"
    return [f"distilled from {names} ({'; '.join([settings, *([', '.join(more)] if more else [])])})"]


def adapter_note(t) -> str:
    """``lora r=8 (top 8 layers)``, ``ia3 (every layer)``, ``prompt tuning (20 tokens)``."""
    a = t.peft
    if t.mode == "prompt_tuning":
        return f"prompt tuning ({a.num_virtual_tokens} tokens)"
    rank = f" r={a.r}" if t.mode in ("lora", "dora") else ""
    layers = a.layers_to_transform
    top = layers is not None and sorted(layers) == list(range(-len(layers), 0))
    where = f"top {len(layers)} layers" if top else (f"layers {', '.join(map(str, layers))}" if layers else "every layer")
    return f"{t.mode}{rank} ({where})"


def long_text_notes(m) -> list[str]:
    """How texts longer than max_length were handled; nothing for the default (head truncation)."""
    if m.chunking:
        cap = f", at most {m.max_chunks}" if m.max_chunks else ""
        return [f"windows of {m.max_length} tokens, {m.chunk_stride} shared{cap}, {m.chunk_aggregate} of logits"]
    if m.truncation == "head+tail":
        return [f"head+tail truncation ({m.head_fraction:g} head) at {m.max_length}"]
    return [f"{m.truncation} truncation at {m.max_length}"] if m.truncation != "head" else []


def imbalance_notes(t) -> list[str]:
    out = []
    if t.class_weights is not None:
        out.append("balanced class weights" if t.class_weights == "balanced" else f"class weights {t.class_weights}")
    if t.sampler != "random":
        out.append(f"{t.sampler} sampler")
    return out


def check_readme(path: str | Path, section: str) -> None:
    """Fail before any work when ``path`` has no ``<!-- results:section -->`` block to update."""
    p = Path(path)
    start, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    if not p.is_file():
        raise ConfigError(f"--readme {p}: no such file; pass a Markdown file with a '{start}' ... '{end}' block")
    src = p.read_text()
    if start not in src or end not in src[src.find(start) :]:
        raise ConfigError(f"{p} has no '{start}' ... '{end}' block to update; add one or pass another --readme/--section")


def update_readme(path: str | Path, section: str, text: str) -> None:
    """Replace the block between ``<!-- results:section -->`` and ``<!-- /results:section -->``."""
    p = Path(path)
    src = p.read_text()
    start, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(src):
        raise ConfigError(f"{p} has no '{start}' ... '{end}' block to update")
    p.write_text(pattern.sub(lambda _: f"{start}\n{text.strip()}\n{end}", src))
