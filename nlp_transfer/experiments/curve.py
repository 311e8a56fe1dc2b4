"""Label-efficiency curves: how test accuracy grows with the labels per class, over several seeds.

    from nlp_transfer.experiments.curve import curve
    result = curve(["recipes/rotten_tomatoes/minilm-setfit.yaml", "recipes/rotten_tomatoes/minilm-full.yaml"],
                   per_class=[8, 16, 32, None], seeds=5, runs_dir="runs/curve-rt")
    print(result.table)

Each recipe trains at each size (``data.samples_per_class``; ``None`` is all the training data)
with several seeds (the draw and the training seed both change), beside TF-IDF + logistic
regression on the same draws and, with ``zero_shot``, a zero-shot recipe as the "0 labels"
point. Every finished point is kept as ``<runs>/<method>/<size>/seed-<k>/point.json`` (with its
run's ``metrics.json``), so an interrupted curve resumes where it stopped. Sizes of 256 per
class and more run at most 3 seeds, the whole training set one (what varies there is only the
initialisation); the table says how many seeds each mean has. SetFit runs up to 256 per class.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.experiments.compare import BASELINE, describe, load_recipes, write_results

logger = logging.getLogger("nlp_transfer")
LARGE = 256  # from this many labels per class, at most MAX_LARGE_SEEDS seeds
MAX_LARGE_SEEDS = 3
TARGET = 0.95  # "good enough": this share of the method's full-data accuracy
SETFIT_MAX = 256  # setfit runs up to this many labels per class (its pairs grow with the square of the examples)


@dataclass
class Curve:
    points: list[dict]  # one per (method, size, seed)
    summary: list[dict]  # one per (method, size): mean and std of accuracy and macro F1, seeds, seconds
    table: str  # Markdown
    files: dict[str, Path] = field(default_factory=dict)


def seeds_for(per_class: int | None, seeds: int) -> list[int]:
    """The seeds a size runs: all of them for small sizes, fewer where the draw hardly varies."""
    if per_class is None:
        return [0]
    return list(range(min(seeds, MAX_LARGE_SEEDS) if per_class >= LARGE else seeds))


def size_name(per_class: int | None) -> str:
    return "all" if per_class is None else str(per_class)


def curve(
    recipes,
    per_class: list[int | None],
    seeds: int,
    runs_dir: str | Path,
    zero_shot=None,
    overrides: list[str] = (),
    keep_models: bool = False,
    progress: bool = False,
) -> Curve:
    """Train every recipe at every size and seed (resuming finished points) and write the curve files."""
    from nlp_transfer.data.loading import load_data

    # The curve sets the draw of every point: a recipe's own data.samples_per_class (a setfit recipe's 8) is replaced.
    every = list(overrides) + ["data.samples_per_class=null", "data.sample_seed=0"]
    cfgs = load_recipes(list(recipes) + ([zero_shot] if zero_shot else []), every)
    if zero_shot and cfgs[-1].transfer.mode != "zero_shot":
        raise ConfigError(
            f"--zero-shot recipe '{cfgs[-1].name}' has transfer.mode={cfgs[-1].transfer.mode}; give one with transfer.mode=zero_shot"
        )
    if seeds < 1 or not per_class:
        raise ConfigError("a curve needs at least one size (--per-class) and one seed (--seeds)")
    out = Path(runs_dir)
    data = load_data(cfgs[0].data)
    if data.task != "single_label":
        raise ConfigError(f"label-efficiency curves count labels per class and need single-label data, not {data.task}")
    points = []
    methods = [(BASELINE, None)] + [(describe(c), c) for c in cfgs]
    for method, cfg in methods:
        sizes = [0] if cfg is not None and cfg.transfer.mode == "zero_shot" else per_class
        if cfg is not None and cfg.transfer.mode == "setfit":  # built for few labels: pairs grow with the square
            skipped = [size_name(n) for n in sizes if n is None or n > SETFIT_MAX]
            if skipped:
                logger.info(f"{method}: not run at {', '.join(skipped)} per class (setfit is for up to {SETFIT_MAX})")
            sizes = [n for n in sizes if n is not None and n <= SETFIT_MAX]
        for size in sizes:
            for seed in [0] if size == 0 else seeds_for(size, seeds):
                points.append(_point(out, method, cfg, data, None if size == 0 else size, seed, keep_models, progress, zero=size == 0))
    summary = summarize(points)
    table = curve_table(summary, data, cfgs[0])
    return Curve(points, summary, table, write_curve(points, summary, table, out, cfgs[0]))


def _slug(method: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in method.lower()).strip("-")[:80]


def _point(
    out: Path, method: str, cfg: RecipeConfig | None, data, per_class, seed: int, keep_models: bool, progress: bool, zero: bool = False
) -> dict:
    """One (method, size, seed): read back if finished, else trained now and saved atomically."""
    from nlp_transfer.data.loading import with_few_shot

    where = out / _slug(method) / ("0" if zero else size_name(per_class)) / f"seed-{seed}"
    done = where / "point.json"
    recipe = _recipe_key(cfg)
    if done.is_file():
        point = json.loads(done.read_text())
        if point.get("recipe_key") == recipe:
            logger.info(f"{method}, {size_name(per_class)} per class, seed {seed}: done before ({done})")
            return point
        logger.info(f"{method}, {size_name(per_class)} per class, seed {seed}: its recipe changed since {done}; training again")
    few = data if zero else with_few_shot(data, per_class, seed)
    tmp = where.parent / f".{where.name}.tmp-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    if cfg is None:
        from nlp_transfer.reporting.baselines import tfidf_logreg

        test = tfidf_logreg(few, seed=seed)
        tmp.mkdir(parents=True)
    else:
        from nlp_transfer.training import train

        shot = [] if zero or per_class is None else [f"data.samples_per_class={per_class}", f"data.sample_seed={seed}"]
        run = cfg.replace(*shot, f"train.seed={cfg.train.seed + seed}", f"output.dir={tmp}", "output.overwrite=true")
        logger.info(f"{method}, {size_name(per_class)} per class, seed {seed}: training ({len(few.splits['train']):,} examples)")
        test = train(run, data=few, progress=progress).test
        if not keep_models:  # the curve needs the metrics; weights of many runs would fill the disk
            for f in tmp.iterdir():
                if f.name not in ("metrics.json", "recipe.yaml", "summary.md", "nlp_transfer.json"):
                    f.unlink() if f.is_file() else shutil.rmtree(f)
        gc.collect()
    point = {
        "method": method,
        "recipe": cfg.name if cfg else None,
        "per_class": 0 if zero else per_class,
        "seed": seed,
        "train_size": 0 if zero else len(few.splits["train"]),
        "accuracy": test["accuracy"],
        "f1_macro": test["f1_macro"],
        "seconds": round(time.perf_counter() - t0, 1),
        "recipe_key": recipe,
    }
    (tmp / "point.json").write_text(json.dumps(point, indent=2))
    if where.exists():
        shutil.rmtree(where)
    tmp.rename(where)
    return point


def _recipe_key(cfg: RecipeConfig | None) -> str:
    """What a point depends on: the recipe without its output settings (TF-IDF: its fixed settings)."""
    import hashlib

    if cfg is None:
        return "tfidf-word-1-2-grams-C4"
    d = cfg.to_dict()
    d.pop("output", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def summarize(points: list[dict]) -> list[dict]:
    """Mean and standard deviation per (method, size), in the order the points came; per method, the
    smallest size reaching :data:`TARGET` of its full-data mean accuracy."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["method"], p["per_class"]), []).append(p)
    rows = []
    for (method, per_class), ps in groups.items():
        acc, acc_sd = _mean_std([p["accuracy"] for p in ps])
        f1, f1_sd = _mean_std([p["f1_macro"] for p in ps])
        rows.append(
            {
                "method": method,
                "per_class": per_class,
                "seeds": len(ps),
                "accuracy": acc,
                "accuracy_std": acc_sd,
                "f1_macro": f1,
                "f1_macro_std": f1_sd,
                "train_size": ps[0]["train_size"],
                "seconds": sum(p["seconds"] for p in ps) / len(ps),
            }
        )
    for method in {r["method"] for r in rows}:
        mine = [r for r in rows if r["method"] == method]
        full = next((r for r in mine if r["per_class"] is None), None)
        reached = None
        if full is not None:
            sized = sorted((r for r in mine if r["per_class"] is not None), key=lambda r: r["per_class"])
            reached = next((r["per_class"] for r in sized if r["accuracy"] >= TARGET * full["accuracy"]), "all")
        for r in mine:
            r["reaches_target_at"] = reached
    return rows


def curve_table(summary: list[dict], data=None, cfg: RecipeConfig | None = None) -> str:
    """Markdown: one row per method, one column per size (mean ± std of test accuracy; seeds in brackets),
    then macro F1 at the same sizes, and where each method reaches 95% of its full-data accuracy."""
    sizes = sorted({r["per_class"] for r in summary}, key=lambda s: (s is None, s or 0))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], r["per_class"]): r for r in summary}
    label = lambda s: "all" if s is None else ("0 (zero-shot)" if s == 0 else str(s))  # noqa: E731
    lines = []
    if data is not None and cfg is not None:
        sizes_ = data.sizes()
        lines += [
            f"Data: `{cfg.data.source or cfg.data.train_file}`, {len(data.labels)} classes; training examples drawn per "
            f"class from train {sizes_['train']:,}, validation {sizes_['validation']:,} and test {sizes_['test']:,} whole "
            f"(split seed {cfg.data.split_seed}). Mean ± standard deviation over seeds (their number in brackets).",
            "",
        ]
    for metric, title in (("accuracy", "test accuracy"), ("f1_macro", "test macro F1")):
        lines += [
            f"| {title}, labels per class | " + " | ".join(label(s) for s in sizes) + " | 95% of full data at | mean time per run (s) |",
            "|---|" + "---:|" * (len(sizes) + 2),
        ]
        for m in methods:
            row = []
            for s in sizes:
                r = cell.get((m, s))
                row.append("" if r is None else f"{r[metric]:.3f} ± {r[metric + '_std']:.3f} ({r['seeds']})")
            mine = [r for r in summary if r["method"] == m]
            reached = mine[0]["reaches_target_at"]
            secs = sum(r["seconds"] for r in mine) / len(mine)
            lines.append(f"| {m} | " + " | ".join(row) + f" | {'-' if reached is None else reached} | {secs:,.1f} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def write_curve(points: list[dict], summary: list[dict], table: str, out: Path, cfg: RecipeConfig | None = None) -> dict[str, Path]:
    from nlp_transfer.reporting.plots import plot_curve

    return write_results(
        out,
        "curve",
        table,
        {"points": points, "summary": summary},
        cfg,
        "test accuracy against labels per class",
        lambda path, title: plot_curve(summary, path, title),
        alt="label-efficiency curve",
    )
