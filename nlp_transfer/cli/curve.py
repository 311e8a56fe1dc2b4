"""``nlp-transfer curve``: label-efficiency curves (accuracy against labels per class, several seeds)."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import add_output_arguments, publish, setup_logging
from nlp_transfer.errors import ConfigError


def _size(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of labels per class (a positive integer, or all)")
    return int(text)


def curve_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="nlp-transfer curve",
        description="Label-efficiency curves: train each recipe with N labelled examples per class (data.samples_per_class) "
        "for each N and several seeds, beside TF-IDF + logistic regression on the same draws and an optional zero-shot "
        "recipe (the 0-labels point); write a table (mean and standard deviation of test accuracy and macro F1), "
        "curve.json and curve.png. Finished points are kept and skipped when the command runs again, so an interrupted "
        "curve resumes. Sizes from 256 per class run at most 3 seeds, 'all' one.",
        epilog="example:\n  nlp-transfer curve --config rotten_tomatoes/minilm-setfit "
        "--config rotten_tomatoes/minilm-full --per-class 8 16 32 64 256 all --seeds 5 --runs runs/curve-rt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every recipe")
    p.add_argument(
        "-c",
        "--config",
        action="append",
        dest="recipes",
        metavar="RECIPE",
        help="a shipped recipe's name or a recipe YAML (repeat for several)",
    )
    p.add_argument(
        "--per-class",
        nargs="+",
        type=_size,
        default=[8, 16, 32, 64, 256, None],
        metavar="N",
        help="labelled examples per class, or all (default: 8 16 32 64 256 all)",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per size (default 5; at most 3 from 256 per class, 1 for all)")
    p.add_argument("--zero-shot", metavar="RECIPE", help="a transfer.mode=zero_shot recipe (name or YAML): the 0-labels point")
    p.add_argument("--runs", default="runs/curve", help="directory of the points and the curve files (default: runs/curve)")
    p.add_argument("--keep-models", action="store_true", help="keep every point's model weights (default: metrics only)")
    add_output_arguments(p, "curve", "also write the Markdown table to this file (and the plot beside it, same name .png)")
    args = p.parse_intermixed_args(argv)
    if not args.recipes:
        raise ConfigError("give at least one recipe with --config (e.g. recipes/rotten_tomatoes/minilm-setfit.yaml)")
    from nlp_transfer.experiments.compare import load_recipes
    from nlp_transfer.experiments.curve import curve

    # recipe errors first (the curve sets data.samples_per_class itself)
    load_recipes(args.recipes + ([args.zero_shot] if args.zero_shot else []), args.overrides + ["data.samples_per_class=null"])
    setup_logging()
    result = curve(args.recipes, args.per_class, args.seeds, args.runs, args.zero_shot, args.overrides, args.keep_models)
    publish(result.table, args, "curve", argv, result.files.get("plot"))
