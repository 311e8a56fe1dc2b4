#!/usr/bin/env python
"""Benchmarks, side by side in one run on the same data and machine; prints ratios.

    python scripts/bench.py cache                      # frozen work done once (issue: transfer modes)
    python scripts/bench.py cache --max-samples 2000   # a quicker slice
    python scripts/bench.py cache --readme README.md   # also regenerate the README block

``cache`` measures, on MiniLM and Rotten Tomatoes with the shipped recipes:

* feature extraction, 5 epochs: the head trained on cached features (cold cache: encoded
  in this run; warm cache: a second run that reads them from disk) against the same head
  trained with the frozen backbone run on every batch of every epoch;
* ``partial`` top-2: with the frozen-prefix cache against without it.

"fit" is the part the caches change: frozen work + training + validation. "wall" is the
whole ``train()`` call (model load, tokenization, test, saving included). Results go to
a JSON file and, with --readme, into README between ``<!-- results:bench-cache -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(cfg, data, label: str) -> dict:
    from nlp_transfer import train

    print(f"  {label} ...", file=sys.stderr, flush=True)
    r = train(cfg, data=data, progress=False)
    row = {
        "run": label,
        "fit_seconds": r.timing["fit_seconds"],
        "wall_seconds": r.timing["total_seconds"],
        "encode_seconds": r.timing["encode_seconds"],
        "accuracy": r.test["accuracy"],
        "f1_macro": r.test["f1_macro"],
        "cache": r.timing["cache"],
    }
    print(f"    fit {row['fit_seconds']:.1f}s, wall {row['wall_seconds']:.1f}s, test accuracy {row['accuracy']:.4f}", file=sys.stderr)
    return row


def bench_cache(args) -> dict:
    from nlp_transfer import RecipeConfig, load_data

    work = Path(tempfile.mkdtemp(prefix="nlp-transfer-bench-"))
    common = ["output.overwrite=true", f"transfer.cache_dir={work / 'cache'}"]
    if args.threads:
        common.append(f"train.num_threads={args.threads}")
    if args.max_samples:
        common.append(f"data.max_samples={args.max_samples}")
    recipes = REPO / "recipes" / args.dataset
    fe = RecipeConfig.from_yaml(recipes / "minilm-feature_extraction.yaml", common + [f"train.epochs={args.fe_epochs}"])
    partial = RecipeConfig.from_yaml(recipes / "minilm-partial.yaml", common + ["transfer.unfreeze_top=2", f"train.epochs={args.partial_epochs}"])
    data = load_data(fe.data)
    out = lambda name: f"output.dir={work / name}"  # noqa: E731

    rows = {
        "fe_uncached": _run(fe.replace(out("fe-plain"), "transfer.cache_features=false"), data, "feature extraction, backbone every batch"),
        "fe_cold": _run(fe.replace(out("fe-cold")), data, "feature extraction, cache cold (encode once)"),
        "fe_warm": _run(fe.replace(out("fe-warm")), data, "feature extraction, cache warm (read from disk)"),
        "partial_uncached": _run(partial.replace(out("p-plain"), "transfer.cache_prefix=false"), data, "partial top-2, no prefix cache"),
        "partial_cached": _run(partial.replace(out("p-cached")), data, "partial top-2, frozen-prefix cache"),
    }
    assert rows["fe_warm"]["cache"]["features"]["hits"] == ["train", "validation", "test"], "warm run did not hit the cache"
    ratio = lambda a, b, k="fit_seconds": rows[a][k] / rows[b][k]  # noqa: E731
    ratios = {
        "fe_warm_vs_uncached_fit": ratio("fe_uncached", "fe_warm"),
        "fe_cold_vs_uncached_fit": ratio("fe_uncached", "fe_cold"),
        "fe_warm_vs_uncached_wall": ratio("fe_uncached", "fe_warm", "wall_seconds"),
        "partial_cached_vs_uncached_fit": ratio("partial_uncached", "partial_cached"),
        "partial_cached_vs_uncached_wall": ratio("partial_uncached", "partial_cached", "wall_seconds"),
    }
    import torch

    return {
        "benchmark": "cache",
        "command": "python scripts/bench.py cache " + " ".join(args.argv),
        "dataset": args.dataset,
        "sizes": data.sizes(),
        "fe_epochs": args.fe_epochs,
        "partial_epochs": args.partial_epochs,
        "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "rows": rows,
        "ratios": ratios,
        "date": time.strftime("%Y-%m-%d"),
    }


def cache_table(res: dict) -> str:
    r, q = res["rows"], res["ratios"]
    s = res["sizes"]
    lines = [
        f"MiniLM on `{res['dataset']}` (train {s['train']:,} / validation {s['validation']:,} / test {s['test']:,}), "
        f"{res['machine']['cpu_count']} CPU cores, bf16 autocast; measured {res['date']} with `{res['command'].strip()}`.",
        "",
        "| run | fit (s) | wall (s) | test accuracy | test macro F1 | speed-up (fit) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    speed = {"fe_warm": q["fe_warm_vs_uncached_fit"], "fe_cold": q["fe_cold_vs_uncached_fit"],
             "partial_cached": q["partial_cached_vs_uncached_fit"]}
    for key in ("fe_uncached", "fe_cold", "fe_warm", "partial_uncached", "partial_cached"):
        row = r[key]
        x = f"**{speed[key]:.1f}x**" if key in speed else "1.0x"
        lines.append(f"| {row['run']} | {row['fit_seconds']:.1f} | {row['wall_seconds']:.1f} | {row['accuracy']:.4f} | {row['f1_macro']:.4f} | {x} |")
    lines += [
        "",
        f"Feature extraction, {res['fe_epochs']} epochs: warm cache **{q['fe_warm_vs_uncached_fit']:.1f}x** faster than running the "
        f"backbone every batch (fit; {q['fe_warm_vs_uncached_wall']:.1f}x on the whole call), cold cache "
        f"{q['fe_cold_vs_uncached_fit']:.1f}x. Partial top-2, {res['partial_epochs']} epochs: frozen-prefix cache "
        f"**{q['partial_cached_vs_uncached_fit']:.2f}x** (fit; {q['partial_cached_vs_uncached_wall']:.2f}x whole call).",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    c = sub.add_parser("cache", help="feature cache and frozen-prefix cache against the uncached paths")
    c.add_argument("--dataset", default="rotten_tomatoes", help="recipes/<dataset>/minilm-{feature_extraction,partial}.yaml")
    c.add_argument("--max-samples", type=int, default=None, help="use at most this many examples per split")
    c.add_argument("--fe-epochs", type=int, default=5, help="feature-extraction epochs on both sides (default 5)")
    c.add_argument("--partial-epochs", type=int, default=3, help="partial-unfreezing epochs on both sides (default 3)")
    c.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    c.add_argument("--out", default="results/bench_cache.json", help="JSON results file")
    c.add_argument("--readme", default=None, help="README to update between <!-- results:bench-cache --> markers")
    args = p.parse_args(argv)
    args.argv = argv[1:]
    from nlp_transfer.cli import _setup_logging

    _setup_logging()
    res = bench_cache(args)
    table = cache_table(res)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    if args.readme:
        from nlp_transfer.summary import update_readme

        update_readme(args.readme, "bench-cache", table)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from nlp_transfer.cli import run_cli

    sys.exit(run_cli(lambda a: main(a), sys.argv[1:]))
