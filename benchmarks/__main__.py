"""Benchmarks, side by side in one run on the same data and machine; each prints ratios against its reference.

    python -m benchmarks cache      # feature cache and frozen-prefix cache against the uncached paths
    python -m benchmarks adapters   # top-k LoRA with and without the frozen-prefix cache
    python -m benchmarks speed      # against transformers' Trainer and pipeline
    python -m benchmarks ship       # ONNX against PyTorch, streamed prediction memory, the server under load
    python -m benchmarks distill    # distilled students against their teachers: size, accuracy, agreement, speed
    python -m benchmarks NAME --help

Results go to results/bench_NAME.json and the table beside it (.md), both with the command that produced
them; with --readme FILE, also into FILE's <!-- results:bench-NAME --> ... <!-- /results:bench-NAME --> block
(README.md or any Markdown page).
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import adapters, cache, distill, harness, ship, speed

BENCHMARKS = {m.NAME: m for m in (cache, adapters, speed, ship, distill)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(BENCHMARKS) + "}")
    for name, module in BENCHMARKS.items():
        s = sub.add_parser(name, help=module.HELP, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(s)
        harness.add_common_arguments(s, name)
    return p


def main(argv: list[str]) -> None:
    if argv[:1] == ["_child"]:  # one measurement in its own process (harness.run_child)
        harness.child_main(argv[1], argv[2])
        return
    args = parser().parse_args(argv)
    args.argv = argv
    if args.readme:
        from nlp_transfer.reporting.tables import check_readme

        check_readme(args.readme, args.section)
    from nlp_transfer.utils.logs import setup_logging

    setup_logging()
    bench = BENCHMARKS[args.bench]
    res = bench.run(args)
    harness.write(res, bench.table(res), args.out, args.readme, args.section)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from nlp_transfer.cli.common import run_cli

    sys.exit(run_cli(main, sys.argv[1:]))
