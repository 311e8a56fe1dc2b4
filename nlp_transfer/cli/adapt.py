"""``nlp-transfer adapt``: continued pretraining of a recipe's checkpoint on unlabelled text."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import add_recipe_arguments, recipe_from_arguments, setup_logging


def adapt_main(argv: list[str]) -> None:
    from nlp_transfer.config import describe_recipe

    p = argparse.ArgumentParser(
        prog="nlp-transfer adapt",
        description="Continued pretraining (ULMFiT's language-model stage; domain- and task-adaptive pretraining): "
        "the recipe's checkpoint goes on learning its own objective on unlabelled text of the domain, masked "
        "language modelling for encoders and next-token prediction for decoders, on the same loop as training "
        "(progress, mixed precision, checkpoints, --resume). Writes a checkpoint directory into output.dir that any "
        "recipe can name as model.name_or_path. Launch with `accelerate launch -m nlp_transfer adapt --config RECIPE "
        "[key=value ...]`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  accelerate launch -m nlp_transfer adapt --config rotten_tomatoes/minilm-full "
        "adapt.source=tweet_sentiment adapt.epochs=1 output.dir=runs/minilm-tweets\n  then: nlp-transfer train --config "
        "... model.name_or_path=runs/minilm-tweets\n\nThe model.* keys say which checkpoint and how long a text may be, "
        "train.* the batch size, warm-up, weight decay, precision, seed and checkpoints; the adapt section:\n"
        + "\n".join(line for line in describe_recipe().splitlines() if line.lstrip().startswith("adapt."))
        + "\n--traceback shows the full Python traceback of an error.",
    )
    add_recipe_arguments(p)
    args = p.parse_intermixed_args(argv)
    cfg = recipe_from_arguments(args)
    if cfg is None:
        return
    setup_logging()
    from accelerate import PartialState

    from nlp_transfer.training.adapt import adapt

    result = adapt(cfg, progress=not args.no_progress)
    if PartialState().is_main_process:
        last = result.history[-1]["validation"] if result.history else {}
        ppl = f", validation perplexity {last['perplexity']:.2f}" if last else ""
        print(
            f"\n{cfg.name}: {result.objective} for {result.steps} steps{ppl} ({result.timing['total_seconds']:.0f}s) "
            f"-> {result.output_dir}\nuse it: model.name_or_path={result.output_dir}"
        )
