"""Frozen work done once: the feature cache and the frozen-prefix cache against the uncached paths.

    python -m benchmarks cache                      # MiniLM on Rotten Tomatoes, the shipped recipes
    python -m benchmarks cache --max-samples 2000   # a quicker slice
    python -m benchmarks cache --readme README.md   # also replace the README's <!-- results:bench-cache --> block

Measured, side by side in one run on the same data:

* feature extraction, 5 epochs: the head trained on cached features (cold cache: encoded in this run;
  warm cache: a second run that reads them from disk) against the same head trained with the frozen
  backbone run on every batch of every epoch;
* ``partial`` top-2 and top-1 (``--partial-top``): with the frozen-prefix cache against without it.

"fit" is the part the caches change: frozen work + training + validation. "wall" is the whole ``train()``
call (model load, tokenization, test, saving included).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import harness

NAME = "cache"
HELP = "feature cache and frozen-prefix cache against the uncached paths"


def add_arguments(p) -> None:
    p.add_argument("--dataset", default="rotten_tomatoes", help="recipes/<dataset>/minilm-{feature_extraction,partial}.yaml")
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many examples per split")
    p.add_argument("--fe-epochs", type=int, default=5, help="feature-extraction epochs on both sides (default 5)")
    p.add_argument("--partial-epochs", type=int, default=3, help="partial-unfreezing epochs on both sides (default 3)")
    p.add_argument(
        "--partial-top",
        type=harness.int_list,
        default=[2, 1],
        metavar="K[,K...]",
        help="partial runs, each with and without the frozen-prefix cache: top-K layers trained (default 2,1)",
    )


def _partial_keys(k: int) -> tuple[str, str]:
    """Row keys of partial top-k without and with the frozen-prefix cache (top-2 keeps its old names)."""
    return ("partial_uncached", "partial_cached") if k == 2 else (f"partial{k}_uncached", f"partial{k}_cached")


def _row(cfg, data, label: str) -> dict:
    row, r = harness.train_row(cfg, data, label)
    return {**row, "cache": r.timing["cache"]}


def run(args) -> dict:
    from nlp_transfer import RecipeConfig, load_data

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-bench-"))
    common = harness.overrides(args, f"transfer.cache_dir={work / 'cache'}")
    fe = RecipeConfig.from_yaml(harness.recipe(args.dataset, "minilm-feature_extraction"), common + [f"train.epochs={args.fe_epochs}"])
    data = load_data(fe.data)
    out = lambda name: f"output.dir={work / name}"

    rows = {
        "fe_uncached": _row(fe.replace(out("fe-plain"), "transfer.cache_features=false"), data, "feature extraction, backbone every batch"),
        "fe_cold": _row(fe.replace(out("fe-cold")), data, "feature extraction, cache cold (encode once)"),
        "fe_warm": _row(fe.replace(out("fe-warm")), data, "feature extraction, cache warm (read from disk)"),
    }
    assert rows["fe_warm"]["cache"]["features"]["hits"] == ["train", "validation", "test"], "warm run did not hit the cache"
    ratio = lambda new, ref, field="fit_seconds": harness.speedup(rows, new, ref, field)
    ratios = {
        "fe_warm_vs_uncached_fit": ratio("fe_warm", "fe_uncached"),
        "fe_cold_vs_uncached_fit": ratio("fe_cold", "fe_uncached"),
        "fe_warm_vs_uncached_wall": ratio("fe_warm", "fe_uncached", "wall_seconds"),
    }
    for k in args.partial_top:
        partial = RecipeConfig.from_yaml(
            harness.recipe(args.dataset, "minilm-partial"), common + [f"transfer.unfreeze_top={k}", f"train.epochs={args.partial_epochs}"]
        )
        plain, cached = _partial_keys(k)
        rows[plain] = _row(partial.replace(out(f"p{k}-plain"), "transfer.cache_prefix=false"), data, f"partial top-{k}, no prefix cache")
        rows[cached] = _row(partial.replace(out(f"p{k}-cached")), data, f"partial top-{k}, frozen-prefix cache")
        ratios[f"{cached}_vs_uncached_fit"] = ratio(cached, plain)
        ratios[f"{cached}_vs_uncached_wall"] = ratio(cached, plain, "wall_seconds")
    return harness.record(
        args,
        dataset=args.dataset,
        sizes=data.sizes(),
        fe_epochs=args.fe_epochs,
        partial_epochs=args.partial_epochs,
        partial_top=list(args.partial_top),
        rows=rows,
        ratios=ratios,
    )


def table(res: dict) -> str:
    r, q = res["rows"], res["ratios"]
    s = res["sizes"]
    tops = res.get("partial_top", [2])
    lines = [
        f"MiniLM on `{res['dataset']}` (train {s['train']:,} / validation {s['validation']:,} / test {s['test']:,}), "
        f"{res['machine']['cpu_count']} CPU cores, bf16 autocast; measured {res['date']} with `{res['command'].strip()}`.",
        "",
        "| run | fit (s) | wall (s) | test accuracy | test macro F1 | speed-up (fit) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    speed = {"fe_warm": q["fe_warm_vs_uncached_fit"], "fe_cold": q["fe_cold_vs_uncached_fit"]}
    order = ["fe_uncached", "fe_cold", "fe_warm"]
    for k in tops:
        plain, cached = _partial_keys(k)
        speed[cached] = q[f"{cached}_vs_uncached_fit"]
        order += [plain, cached]
    for key in order:
        row = r[key]
        x = f"**{speed[key]:.2f}x**" if key in speed else "1.0x"
        lines.append(
            f"| {row['run']} | {row['fit_seconds']:.1f} | {row['wall_seconds']:.1f} | {row['accuracy']:.4f} | {row['f1_macro']:.4f} | {x} |"
        )
    partial = "; ".join(
        f"top-{k} **{q[f'{_partial_keys(k)[1]}_vs_uncached_fit']:.2f}x** (fit; {q[f'{_partial_keys(k)[1]}_vs_uncached_wall']:.2f}x whole call)"
        for k in tops
    )
    lines += [
        "",
        f"Feature extraction, {res['fe_epochs']} epochs: warm cache **{q['fe_warm_vs_uncached_fit']:.1f}x** faster than running the "
        f"backbone every batch (fit; {q['fe_warm_vs_uncached_wall']:.1f}x on the whole call), cold cache "
        f"{q['fe_cold_vs_uncached_fit']:.1f}x. Partial, {res['partial_epochs']} epochs, frozen-prefix cache against none: {partial}.",
    ]
    return "\n".join(lines)
