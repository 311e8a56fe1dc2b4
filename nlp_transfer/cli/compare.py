"""``scripts/compare.py``: several recipes trained on one dataset, side by side with a baseline."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import setup_logging


def compare_main(argv: list[str]) -> None:
    import shlex
    from pathlib import Path

    from nlp_transfer.experiments.compare import DEFAULT_RECIPES

    p = argparse.ArgumentParser(
        prog="scripts/compare.py",
        description="Train several recipes on one dataset, beside a TF-IDF + logistic-regression baseline, and write "
        "a comparison table and bar chart (test accuracy, macro F1, wall time): the transfer gain, shown plainly.",
        epilog="default recipes: " + ", ".join(DEFAULT_RECIPES) + "\n"
        "example (a quick look):\n  python scripts/compare.py data.max_samples=300 train.epochs=1 --runs runs/compare-quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every recipe")
    p.add_argument("-r", "--recipe", action="append", dest="recipes", metavar="YAML", help="a recipe YAML (repeat for several; default: the list below)")
    p.add_argument("--runs", default="runs/compare", help="directory for the run directories and comparison files (default: runs/compare)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --runs directory's runs")
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    p.add_argument("--out", help="also write the Markdown table to this file (and the chart beside it, same name .png)")
    p.add_argument("--readme", help="also replace the <!-- results:SECTION --> block of this file")
    p.add_argument("--section", default="compare", help="README block name (default: compare)")
    p.add_argument("--command", help="the command to print under the table (default: this invocation)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    args = p.parse_intermixed_args(argv)
    from nlp_transfer.experiments.compare import compare, load_recipes

    recipes = args.recipes or list(DEFAULT_RECIPES)
    load_recipes(recipes, args.overrides)  # every recipe error before any training
    setup_logging()
    result = compare(recipes, args.runs, args.overrides, baseline=not args.no_baseline, progress=not args.no_progress, overwrite=args.overwrite)
    command = args.command or "python scripts/compare.py " + " ".join(shlex.quote(a) for a in argv)
    text = f"{result.table}\n\nProduced by: `{command}`\n"
    print("\n" + text)
    if args.out:
        import shutil

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if "plot" in result.files:
            shutil.copyfile(result.files["plot"], out.with_suffix(".png"))
        out.write_text(text)
    if args.readme:
        from nlp_transfer.reporting.tables import update_readme

        update_readme(args.readme, args.section, text)
