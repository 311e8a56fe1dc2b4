"""``scripts/train.py``: train a recipe."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import setup_logging


def train_main(argv: list[str]) -> None:
    from nlp_transfer.config import RecipeConfig, describe_recipe

    p = argparse.ArgumentParser(
        prog="scripts/train.py",
        description="Train a text classifier from a recipe: a pretrained checkpoint, a dataset and a transfer mode. "
        "Launch it with `accelerate launch scripts/train.py --config RECIPE.yaml [key=value ...]` "
        "(plain `python scripts/train.py` also works for one process).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides: any recipe key as section.key=value, e.g. train.lr=3e-5 data.max_samples=500 "
        "output.dir=runs/try. Values are YAML (3e-5, true, null, [a, b]).\n"
        "--traceback shows the full Python traceback of an error.\n\nrecipe keys (default: meaning):\n" + describe_recipe(),
    )
    p.add_argument("--config", required=True, help="recipe YAML file (see recipes/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue an interrupted run from its newest checkpoint (or the step-NNNNNNNN folder given), "
                   "with the same recipe and overrides; same as train.resume=latest. Checkpoints are written with "
                   "train.save_checkpoints=true or train.save_every_steps=N into output.checkpoint_dir "
                   "(default: <output.dir>.checkpoints)")
    args = p.parse_intermixed_args(argv)  # overrides may come before and after flags
    if args.resume and "=" in args.resume:  # `--resume train.lr=...`: an override, not a checkpoint
        args.overrides.append(args.resume)
        args.resume = "latest"
    overrides = args.overrides + ([f"train.resume={args.resume}"] if args.resume else [])
    cfg = RecipeConfig.from_yaml(args.config, overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return
    setup_logging()
    from accelerate import PartialState

    from nlp_transfer.tasks import get_task
    from nlp_transfer.training import train

    result = train(cfg, progress=not args.no_progress)
    if PartialState().is_main_process:
        scores = "test " + get_task(result.task).short_line(result.test)
        print(f"\n{cfg.name}: {scores} (best epoch {result.best_epoch}, {result.timing['total_seconds']:.0f}s) -> {result.output_dir}")


