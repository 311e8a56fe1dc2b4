"""``nlp-transfer compare``: several recipes trained on one dataset, side by side with a baseline."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import add_output_arguments, publish, setup_logging


def compare_main(argv: list[str]) -> None:
    from nlp_transfer.experiments.compare import DEFAULT_RECIPES

    p = argparse.ArgumentParser(
        prog="nlp-transfer compare",
        description="Train several recipes on one dataset, beside a TF-IDF + logistic-regression baseline, and write "
        "a comparison table and bar chart (test accuracy, macro F1, wall time): the transfer gain, shown plainly.",
        epilog="default recipes: " + ", ".join(DEFAULT_RECIPES) + "\n"
        "example (a quick look):\n  nlp-transfer compare data.max_samples=300 train.epochs=1 --runs runs/compare-quick\n"
        "across domains (trained on Rotten Tomatoes, scored on positive/negative tweets; make domain):\n"
        "  nlp-transfer compare -r rotten_tomatoes/minilm-full -r rotten_tomatoes/minilm-dann-tweets \\\n"
        "      --target tweet_sentiment/minilm-full-posneg --runs runs/domain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every recipe")
    p.add_argument(
        "-r",
        "--recipe",
        action="append",
        dest="recipes",
        metavar="RECIPE",
        help="a shipped recipe's name or a recipe YAML (repeat for several; default: the list below)",
    )
    p.add_argument("--runs", default="runs/compare", help="directory for the run directories and comparison files (default: runs/compare)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --runs directory's runs")
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    p.add_argument(
        "--target",
        metavar="RECIPE_OR_FILE",
        help="also score every run on another domain: a recipe (name or YAML: its test split; the recipe itself is trained too, "
        "as the in-domain reference) or a labelled file (every row; same text and label columns as the recipes). Adds "
        "target accuracy and macro F1, the drop from the source test, and the share of the gap between the first "
        "recipe (source-only) and the reference that each other recipe recovers. Target labels must be the source's: "
        "rename them with data.label_map in the target recipe",
    )
    add_output_arguments(p, "compare", "also write the Markdown table to this file (and the chart beside it, same name .png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    args = p.parse_intermixed_args(argv)
    from nlp_transfer.experiments.compare import compare, load_recipes, load_target

    recipes = args.recipes or list(DEFAULT_RECIPES)
    first = load_recipes(recipes, args.overrides)[0]  # every recipe error before any training
    target = args.target and load_target(args.target, args.overrides, first.data.text_column, first.data.label_column)
    setup_logging()
    result = compare(
        recipes,
        args.runs,
        args.overrides,
        baseline=not args.no_baseline,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        target=target or None,
    )
    publish(result.table, args, "compare", argv, result.files.get("plot"))
