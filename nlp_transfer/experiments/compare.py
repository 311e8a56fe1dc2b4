"""Run several recipes on one dataset and compare them: the transfer gain, shown plainly.

    from nlp_transfer.experiments.compare import compare
    result = compare(["recipes/rotten_tomatoes/minilm-scratch.yaml", "recipes/rotten_tomatoes/minilm-full.yaml"],
                     "runs/compare", overrides=["data.max_samples=500"])
    print(result.table)     # Markdown; result.rows: one dict per method

Every recipe trains in this process on the same loaded splits, beside a TF-IDF + logistic
regression baseline on those splits. The table gives what trains, test accuracy and macro
F1, wall time, and the accuracy gained over the same architecture trained from random
initialisation (a recipe with ``model.pretrained: false``).
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nlp_transfer.config import ADAPTER_MODES, RecipeConfig
from nlp_transfer.config.shipped import find_recipe
from nlp_transfer.errors import ConfigError
from nlp_transfer.reporting.tables import adapter_note, distilled_cell

logger = logging.getLogger("nlp_transfer")

# The default list: no transfer (TF-IDF baseline, added separately; the architecture from random
# weights), then more and more of the pretrained network adapted.
DEFAULT_RECIPES = tuple(f"rotten_tomatoes/minilm-{m}" for m in ("scratch", "feature_extraction", "partial", "full"))
BASELINE = "TF-IDF + logistic regression"
_MODES = {
    "feature_extraction": "feature extraction (frozen, head only)",
    "partial": "partial fine-tuning (top {k} layers + head)",
    "gradual": "gradual unfreezing",
    "bitfit": "BitFit (biases + head)",
    "full": "full fine-tuning",
    "setfit": "SetFit (contrastive pairs, then logistic regression)",
    "zero_shot": "zero-shot (next-token label words)",
}


@dataclass
class Target:
    """Labelled texts of another domain every run is also scored on (``--target``); a recipe's test split
    (the recipe, trained on its own labels, is the in-domain reference) or a whole labelled file."""

    name: str
    texts: list[str]
    labels: list[str]
    reference: RecipeConfig | None = None
    data: object = None  # the reference recipe's TextData

    def ids(self, names: list[str]) -> list[int]:
        """The labels as class ids in ``names``' order (a source run's label map)."""
        index = {n: i for i, n in enumerate(names)}
        return [index[label] for label in self.labels]


def load_target(target: str, overrides: list[str] = (), text_column: str = "text", label_column: str = "label") -> Target:
    """``target``: a recipe YAML (its test split; the recipe is the in-domain reference, ``overrides`` apply to it as
    to every recipe) or a labelled file (CSV, TSV, JSONL, Parquet; every row)."""
    from nlp_transfer.data.loading import load_data

    p = Path(target)
    if p.suffix.lower() in (".yaml", ".yml") or (not p.is_file() and find_recipe(target)):  # a recipe file or shipped name
        cfg = RecipeConfig.from_yaml(target, list(overrides))
        data = load_data(cfg.data, cfg.model.num_labels)
        if data.task != "single_label":
            raise ConfigError(f"--target recipe '{target}' has {data.task} data; compare scores single-label classifiers")
        test = data.splits["test"]
        return Target(f"test split of `{target}`", list(test["text"]), [data.labels[i] for i in test["label"]], cfg, data)
    if not p.is_file():
        raise ConfigError(f"--target '{target}' does not exist; pass a recipe YAML or a labelled data file")
    from nlp_transfer.data.reader import read_inputs

    inputs = read_inputs(target, None, text_column, None, label_column)
    return Target(f"`{target}`", list(inputs.texts), [str(v) for v in inputs.labels])


def _check_target_labels(target: Target, labels: list[str]) -> None:
    foreign = sorted(set(target.labels) - set(labels))
    if foreign:
        raise ConfigError(
            f"the target has labels the source runs do not know ({', '.join(foreign[:5])}; theirs: {', '.join(labels)}); "
            "rename or drop them with data.label_map in the target recipe, e.g. {positive: fresh, neutral: null}"
        )


@dataclass
class Comparison:
    rows: list[dict]  # method, recipe, mode, pretrained (None: baseline), epochs, accuracy, f1_macro, seconds, run_dir
    table: str  # Markdown
    files: dict[str, Path] = field(default_factory=dict)  # table, json, plot (without matplotlib: no plot)


def describe(cfg: RecipeConfig) -> str:
    """A short name for a recipe's method, e.g. ``minilm: partial fine-tuning (top 2 layers + head)``."""
    if cfg.transfer.mode in ADAPTER_MODES:
        what = adapter_note(cfg.transfer) + " + head"
    else:
        what = _MODES[cfg.transfer.mode].format(k=cfg.transfer.unfreeze_top)
    if cfg.model.head == "logreg" and cfg.transfer.mode == "feature_extraction":
        what = "frozen features + logistic regression"
    if cfg.transfer.domain_adversarial.target:
        what += f", domain-adversarial (weight {cfg.transfer.domain_adversarial.weight:g})"
    if cfg.distill.enabled:
        teachers = ", ".join(Path(t).name for t in cfg.distill.teachers)
        what += f", distilled from {teachers}"
    if not cfg.model.pretrained:
        what = "random init, " + ("full training" if cfg.transfer.mode == "full" else what)
    model = cfg.model.name_or_path
    if Path(model).expanduser().is_dir():
        model = Path(model).name  # a local checkpoint: its folder name
    return f"{model}: {what}"


def load_recipes(recipes, overrides: list[str] = ()) -> list[RecipeConfig]:
    """Recipes (files, shipped names or configs) with ``overrides`` applied to each; they must share one data setting."""
    cfgs = [r.replace(*overrides) if isinstance(r, RecipeConfig) else RecipeConfig.from_yaml(r, list(overrides)) for r in recipes]
    if not cfgs:
        raise ConfigError("no recipes to compare; pass at least one with --recipe")
    first = cfgs[0]
    for cfg in cfgs[1:]:
        if cfg.data != first.data:
            diff = [k for k, v in cfg.data.__dict__.items() if getattr(first.data, k) != v]
            raise ConfigError(
                f"recipes '{first.name}' and '{cfg.name}' use different data (data.{diff[0]}: "
                f"{getattr(first.data, diff[0])!r} vs {getattr(cfg.data, diff[0])!r}); compare recipes of one dataset "
                f"or override data.{diff[0]} for all"
            )
    return cfgs


def _unique_names(cfgs: list[RecipeConfig]) -> list[str]:
    names, seen = [], {}
    for cfg in cfgs:
        n = seen.get(cfg.name, 0)
        seen[cfg.name] = n + 1
        names.append(cfg.name if n == 0 else f"{cfg.name}-{n + 1}")
    return names


def compare(
    recipes,
    runs_dir: str | Path,
    overrides: list[str] = (),
    baseline: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    target: str | Target | None = None,
) -> Comparison:
    """Train each recipe (run directories under ``runs_dir``) and write the comparison there:
    ``comparison.md``, ``comparison.json`` (the rows) and ``comparison.png``.

    With ``target`` (see :func:`load_target`) every run is also scored on the target domain; a recipe target is
    trained last as the in-domain reference, and the first recipe counts as source-only: each other row's share
    of the gap (reference minus source-only on the target) is in the table."""
    from nlp_transfer.data.loading import load_data
    from nlp_transfer.training import train

    cfgs = load_recipes(recipes, list(overrides))
    if isinstance(target, (str, Path)):
        target = load_target(str(target), list(overrides), cfgs[0].data.text_column, cfgs[0].data.label_column)
    out = Path(runs_dir)
    if out.exists() and not overwrite:
        raise ConfigError(f"comparison directory '{out}' already exists; pass --overwrite or choose another --runs")
    data = load_data(cfgs[0].data)
    if "accuracy" not in data.task_type.metrics:
        raise ConfigError(
            f"nlp-transfer compare compares single-label classifiers (accuracy, macro F1, a TF-IDF baseline) but this data is "
            f"{data.task}; train the recipes with nlp-transfer train and read each run's summary.md"
        )
    if target is not None:
        _check_target_labels(target, data.labels)
    rows = []
    if baseline:
        from nlp_transfer.reporting.baselines import tfidf_logreg

        b = tfidf_logreg(data, target=None if target is None else (target.texts, target.ids(data.labels)))
        rows.append(_row(BASELINE, None, None, None, None, b, b["seconds"], None, b.get("target")))
        logger.info(f"{BASELINE}: test accuracy {b['accuracy']:.4f}, macro F1 {b['f1_macro']:.4f} ({b['seconds']:.1f}s)")
    jobs = [(cfg, name, data) for cfg, name in zip(cfgs, _unique_names(cfgs))]
    if target is not None and target.reference is not None:
        jobs.append((target.reference, "in-domain-reference", target.data))
    for i, (cfg, name, job_data) in enumerate(jobs, 1):
        cfg = cfg.replace(f"output.dir={out / name}", "output.overwrite=true")
        # Wall times are of cold runs: a feature cache of its own, not one an earlier run filled.
        cache = out / ".feature-cache" / name
        if cfg.transfer.cache_dir is None:
            cfg = cfg.replace(f"transfer.cache_dir={cache}")
        logger.info(f"[{i}/{len(jobs)}] {describe(cfg)} ({name})")
        t0 = time.perf_counter()
        result = train(cfg, data=job_data, progress=progress)
        seconds = result.timing.get("total_seconds", time.perf_counter() - t0)
        epochs = None if cfg.model.head == "logreg" else cfg.train.epochs  # one scikit-learn fit, no epochs
        on_target = None if target is None else _score_target(result.output_dir, target, progress)
        row = _row(describe(cfg), name, cfg.transfer.mode, cfg.model.pretrained, epochs, result.test, seconds, result.output_dir, on_target)
        row["trained_parameters"] = result.parameters.get("trainable")
        distilled = (result.distillation or {}).get("test") or {}
        if distilled:  # a student against its teachers on the test split
            row["agreement"], row["kept"] = distilled.get("agreement"), distilled.get("kept")
        if job_data is not data:
            row["reference"] = True
        rows.append(row)
        del result
        shutil.rmtree(cache, ignore_errors=True)
        gc.collect()
    shutil.rmtree(out / ".feature-cache", ignore_errors=True)
    if target is not None:
        _gap_shares(rows)
    table = comparison_table(rows, data, cfgs[0], target)
    return Comparison(rows, table, write_comparison(rows, table, out, cfgs[0]))


def _score_target(run_dir, target: Target, progress: bool) -> dict:
    """Accuracy and macro F1 of a saved run on the target texts (reloaded, as a user would)."""
    from nlp_transfer.inference.predictor import load_run

    metrics = load_run(run_dir).evaluate(target.texts, target.labels, progress=progress).metrics
    logger.info(f"  on the target: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f}")
    return metrics


def _row(method, recipe, mode, pretrained, epochs, test: dict, seconds: float, run_dir, on_target: dict | None = None) -> dict:
    row = {
        "method": method,
        "recipe": recipe,
        "mode": mode,
        "pretrained": pretrained,
        "epochs": epochs,
        "accuracy": test["accuracy"],
        "f1_macro": test["f1_macro"],
        "seconds": round(float(seconds), 1),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "trained_parameters": None,
    }
    if on_target is not None:
        row["target_accuracy"], row["target_f1_macro"] = on_target["accuracy"], on_target["f1_macro"]
    return row


def _gap_shares(rows: list[dict]) -> None:
    """Each source-trained run's share of the gap between the first recipe (source-only) and the in-domain
    reference on the target: ``gap_recovered_accuracy`` / ``gap_recovered_f1_macro`` (1.0 closes it)."""
    source_only = _first_run(rows)
    reference = next((r for r in rows if r.get("reference")), None)
    if source_only is None or reference is None:
        return
    for key in ("accuracy", "f1_macro"):
        gap = reference[f"target_{key}"] - source_only[f"target_{key}"]
        for r in rows:
            if r is source_only or r is reference or r["recipe"] is None:
                continue
            r[f"gap_recovered_{key}"] = (r[f"target_{key}"] - source_only[f"target_{key}"]) / gap if gap > 0 else None


def comparison_table(rows: list[dict], data=None, cfg: RecipeConfig | None = None, target: Target | None = None) -> str:
    """Markdown: one row per method; the gain column appears when a random-init run is present; with a
    ``target``, the target-domain table (:func:`target_table`)."""
    if target is not None:
        return target_table(rows, data, cfg, target)
    scratch = next((r for r in rows if r["pretrained"] is False), None)
    head = "| method | trained params | epochs | test accuracy | test macro F1 | wall time (s) |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if scratch:
        head += " gain over random init (accuracy points) |"
        rule += "---:|"
    students = any("agreement" in r for r in rows)
    if students:
        head += " test agreement with teacher | teacher accuracy kept |"
        rule += "---:|---:|"
    lines = []
    if data is not None and cfg is not None:
        sizes = data.sizes()
        lines += [
            f"Data: `{cfg.data.source or cfg.data.train_file}`, train {sizes['train']:,} / validation {sizes['validation']:,} / "
            f"test {sizes['test']:,} (split seed {cfg.data.split_seed}); test-set figures of the best validation epoch.",
            "",
        ]
    lines += [head, rule]
    for r in rows:
        line = f"| {r['method']} | {_count(r['trained_parameters'])} | {r['epochs'] or '-'} | {r['accuracy']:.4f} | {r['f1_macro']:.4f} | {r['seconds']:,.1f} |"
        if scratch:
            line += f" {100 * (r['accuracy'] - scratch['accuracy']):+.1f} |" if r["pretrained"] else " - |"
        if students:
            line += f" {distilled_cell(r, 'agreement')} | {distilled_cell(r, 'kept')} |"
        lines.append(line)
    return "\n".join(lines)


def target_table(rows: list[dict], data, cfg: RecipeConfig, target: Target) -> str:
    """Markdown: in-domain (source test split) and target accuracy and macro F1, the drop between them, and the
    share of the source-only-to-reference gap each run recovers on the target."""
    sizes = data.sizes()
    names = ", ".join(f"{n} {target.labels.count(n):,}" for n in dict.fromkeys(sorted(target.labels)))
    lines = [
        f"Source: `{cfg.data.source or cfg.data.train_file}`, train {sizes['train']:,} / validation {sizes['validation']:,} / "
        f"test {sizes['test']:,} (split seed {cfg.data.split_seed}). Target: {target.name}, {len(target.texts):,} "
        f"examples ({names}). Drop: source test minus target, accuracy points. Gap recovered: the share of the "
        "target gap between source-only (the first recipe) and the in-domain reference (trained on the target's own "
        "labels) that a method closes, for accuracy / macro F1.",
        "",
        "| method | trained on | source test accuracy | source test macro F1 | target accuracy | target macro F1 "
        "| drop (points) | gap recovered (acc. / macro F1) | wall time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    source_only = _first_run(rows)
    for r in rows:
        ref = r.get("reference", False)
        name = r["method"] + (f" (`{r['recipe']}`)" if r["recipe"] and not ref else "")
        source = "- | -" if ref else f"{r['accuracy']:.4f} | {r['f1_macro']:.4f}"
        drop = "-" if ref else f"{100 * (r['accuracy'] - r['target_accuracy']):+.1f}"
        if "gap_recovered_accuracy" in r:
            gap = " / ".join(
                "-" if r[f"gap_recovered_{k}"] is None else f"{100 * r[f'gap_recovered_{k}']:.0f}%" for k in ("accuracy", "f1_macro")
            )
        else:
            gap = "100% (reference)" if ref else "0% (source-only)" if r is source_only else "-"
        lines.append(
            f"| {name} | {'target labels' if ref else 'source labels'} | {source} | {r['target_accuracy']:.4f} | "
            f"{r['target_f1_macro']:.4f} | {drop} | {gap} | {r['seconds']:,.1f} |"
        )
    return "\n".join(lines)


def _first_run(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["recipe"] is not None and not r.get("reference")), None)


def _count(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def write_comparison(rows: list[dict], table: str, out: Path, cfg: RecipeConfig | None = None) -> dict[str, Path]:
    from nlp_transfer.reporting.plots import plot_comparison

    return write_results(
        out,
        "comparison",
        table,
        rows,
        cfg,
        "test accuracy, macro F1, wall time",
        lambda path, title: plot_comparison(rows, path, title),
        alt="comparison",
    )


def write_results(out: Path, stem: str, table: str, payload, cfg: RecipeConfig | None, what: str, plot, alt: str) -> dict[str, Path]:
    """``<stem>.md`` (the table, with the plot linked), ``<stem>.json`` (``payload``) and ``<stem>.png``
    (``plot(path, title)``; none without matplotlib) in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / f"{stem}.md", "json": out / f"{stem}.json"}
    title = f"{cfg.data.source or Path(cfg.data.train_file).name}: {what}" if cfg else ""
    png = plot(out / f"{stem}.png", title)
    if png is not None:
        files["plot"] = png
        table += f"\n\n![{alt}]({png.name})"
    files["table"].write_text(table + "\n")
    files["json"].write_text(json.dumps(payload, indent=2))
    return files
