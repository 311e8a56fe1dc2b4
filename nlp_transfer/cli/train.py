"""``nlp-transfer train``: train a recipe."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import add_recipe_arguments, recipe_from_arguments, setup_logging


def train_main(argv: list[str]) -> None:
    from nlp_transfer.config import describe_recipe

    p = argparse.ArgumentParser(
        prog="nlp-transfer train",
        description="Train a text classifier from a recipe: a pretrained checkpoint, a dataset and a transfer mode. "
        "Launch it with `accelerate launch -m nlp_transfer train --config RECIPE [key=value ...]` "
        "(plain `nlp-transfer train` also works for one process).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides: any recipe key as section.key=value, e.g. train.lr=3e-5 data.max_samples=500 "
        "output.dir=runs/try. Values are YAML (3e-5, true, null, [a, b]).\n"
        "--traceback shows the full Python traceback of an error.\n\nrecipe keys (default: meaning):\n" + describe_recipe(),
    )
    add_recipe_arguments(p)
    args = p.parse_intermixed_args(argv)  # overrides may come before and after flags
    cfg = recipe_from_arguments(args)
    if cfg is None:
        return
    if cfg.transfer.mode == "setfit":
        from nlp_transfer.errors import ConfigError
        from nlp_transfer.utils.extras import require_extra

        require_extra("fewshot", "transfer.mode=setfit", ConfigError)
    setup_logging()
    from accelerate import PartialState

    from nlp_transfer.tasks import get_task
    from nlp_transfer.training import train

    result = train(cfg, progress=not args.no_progress)
    if PartialState().is_main_process:
        scores = "test " + get_task(result.task).short_line(result.test)
        print(f"\n{cfg.name}: {scores} (best epoch {result.best_epoch}, {result.timing['total_seconds']:.0f}s) -> {result.output_dir}")
