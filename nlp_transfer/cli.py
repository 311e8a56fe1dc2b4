"""Command-line entry points. Errors a user can fix print one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from .errors import NLPTransferError


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    for noisy in ("transformers", "datasets", "accelerate.utils", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; turn :class:`NLPTransferError` into ``error: ...`` and exit code 2.

    ``--traceback`` (or NLP_TRANSFER_TRACEBACK=1) shows the full traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv or os.environ.get("NLP_TRANSFER_TRACEBACK") == "1"
    argv = [a for a in argv if a != "--traceback"]
    try:
        main(argv)
        return 0
    except NLPTransferError as e:
        if show_tb:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def train_main(argv: list[str]) -> None:
    from .config import RecipeConfig, describe_fields

    p = argparse.ArgumentParser(
        prog="scripts/train.py",
        description="Train a text classifier from a recipe: a pretrained checkpoint, a dataset and a transfer mode. "
        "Launch it with `accelerate launch scripts/train.py --config RECIPE.yaml [key=value ...]` "
        "(plain `python scripts/train.py` also works for one process).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides: any recipe key as section.key=value, e.g. train.lr=3e-5 data.max_samples=500 "
        "output.dir=runs/try. Values are YAML (3e-5, true, null, [a, b]).\n"
        "--traceback shows the full Python traceback of an error.\n\nrecipe keys (default: meaning):\n" + describe_fields(),
    )
    p.add_argument("--config", required=True, help="recipe YAML file (see recipes/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    args = p.parse_intermixed_args(argv)  # overrides may come before and after flags
    cfg = RecipeConfig.from_yaml(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return
    _setup_logging()
    from .train import train

    result = train(cfg, progress=not args.no_progress)
    from accelerate import PartialState

    if PartialState().is_main_process:
        t = result.test
        print(
            f"\n{cfg.name}: test accuracy {t['accuracy']:.4f}, macro F1 {t['f1_macro']:.4f} "
            f"(best epoch {result.best_epoch}, {result.timing['total_seconds']:.0f}s) -> {result.output_dir}"
        )


def summarize_main(argv: list[str]) -> None:
    import shlex

    from .summary import summarize_runs, update_readme

    p = argparse.ArgumentParser(
        prog="scripts/summarize.py",
        description="Compare finished runs (same data) with a TF-IDF + logistic-regression baseline on the same splits.",
    )
    p.add_argument("runs", nargs="+", help="run directories written by scripts/train.py")
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    p.add_argument("--out", help="write the Markdown table to this file")
    p.add_argument("--readme", help="also replace the <!-- results:SECTION --> block of this file")
    p.add_argument("--section", default="demo", help="README block name (default: demo)")
    p.add_argument("--command", help="the command to print under the table (default: this invocation)")
    args = p.parse_args(argv)
    command = args.command or "python scripts/summarize.py " + " ".join(shlex.quote(a) for a in argv)
    table = summarize_runs(args.runs, baseline=not args.no_baseline)
    text = f"{table}\n\nProduced by: `{command}`\n"
    print("\n" + text)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.readme:
        update_readme(args.readme, args.section, text)
