"""``nlp-transfer select``: rank checkpoints, layers and poolings by transferability scores of frozen features."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import positive_int, setup_logging
from nlp_transfer.errors import ConfigError


def _layer(text: str) -> str:
    if text in ("all", "last") or text.lstrip("-").isdigit() and int(text) != 0:
        return text
    raise argparse.ArgumentTypeError(f"'{text}' is not a layer: use all, last, or a layer number (from 1; negative: from the top)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nlp-transfer select",
        description="Which pretrained checkpoint, which layer, which pooling? Encodes a stratified sample of the training "
        "split once per candidate (every requested layer in one forward pass, through the feature cache), scores each "
        "(checkpoint, layer, pooling) with transferability estimators (LogME, H-score, kNN: seconds, no training), "
        "writes OUT/ranking.json, OUT/ranking.md, a plot of score by layer per checkpoint and OUT/recipe.yaml (the best "
        "by LogME as a feature-extraction recipe with model.feature_layer), and prints the ranking with the line that "
        "trains the recommendation. --validate also fits the logistic-regression probe on every candidate and reports "
        "how well each estimator's ranking agrees with it (Kendall tau, Spearman rho).",
        epilog="examples:\n"
        "  nlp-transfer select --data rotten_tomatoes --candidates minilm smollm2 --layers all --pooling mean last "
        "--out runs/select-rt\n"
        "  nlp-transfer select --config bbc_news/minilm-logreg --candidates minilm ./my-checkpoint "
        "--validate --out runs/select-bbc\n\n"
        "overrides: data.* and model.* recipe keys as section.key=value (e.g. model.max_length=64 data.split_seed=1); "
        "train.mixed_precision (default auto: bf16 where the CPU or GPU runs it) and train.eval_batch_size set the "
        "encoding; features are kept in the feature cache (transfer.cache_dir; transfer.cache_features=false: "
        "encode every time).\n--traceback shows the full Python traceback of an error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="section.key=value recipe overrides (data.*, model.*, train.*)")
    p.add_argument(
        "--data",
        metavar="SOURCE",
        help="the data: a catalog name (rotten_tomatoes, bbc_news, tweet_sentiment), "
        "a file or a hub id (data.source); or take it from --config",
    )
    p.add_argument(
        "-c",
        "--config",
        metavar="RECIPE",
        help="a recipe (shipped name or YAML) whose data and model settings to use; the recommended "
        "recipe is this one with the chosen checkpoint, layer and pooling",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        required=True,
        metavar="CHECKPOINT",
        help="checkpoints to rank: catalog names (minilm, smollm2), local directories or hub ids",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        type=_layer,
        default=["all"],
        metavar="LAYER",
        help="layers of each candidate to score: all, last, or numbers from 1 (negative: from the top); default all",
    )
    p.add_argument(
        "--pooling",
        nargs="+",
        default=["mean", "last"],
        metavar="POOLING",
        help="poolings to score: mean, last, cls, max, pooler (default: mean last)",
    )
    p.add_argument(
        "--max-samples",
        type=positive_int,
        default=1000,
        metavar="N",
        help="training examples to score on, a stratified sample (default 1000); with --validate also the "
        "size of the validation and test samples",
    )
    p.add_argument(
        "--estimators",
        nargs="+",
        choices=("logme", "hscore", "knn"),
        default=["logme", "hscore", "knn"],
        help="estimators to compute (default: all three; the ranking follows LogME)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="also fit the logistic-regression probe on every candidate and report each estimator's rank correlation with its test score",
    )
    p.add_argument(
        "--reference-run",
        metavar="RUN",
        help="a finished training run (e.g. full fine-tuning) whose total time the selection's time is compared with",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for ranking.json, ranking.md, recipe.yaml, plots")
    p.add_argument(
        "--top",
        type=positive_int,
        metavar="N",
        help="print (and put in --readme) only the best N rows (ranking.md and ranking.json have all)",
    )
    p.add_argument("--readme", help="also replace the <!-- results:SECTION --> block of this file with the ranking and plots")
    p.add_argument("--section", default="select", help="README block name (default: select)")
    p.add_argument("--command", help="the command to print under the table (default: this invocation)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def select_main(argv: list[str]) -> None:
    args = _parser().parse_intermixed_args(argv)
    if "logme" not in args.estimators:
        raise ConfigError("the ranking follows LogME: keep logme in --estimators")
    from nlp_transfer.utils.extras import require_extra

    require_extra("select", "nlp-transfer select", ConfigError)
    cfg = _recipe(args)
    setup_logging()
    from nlp_transfer.experiments.selection import rank_checkpoints

    result = rank_checkpoints(
        cfg,
        args.candidates,
        args.layers,
        args.pooling,
        args.out,
        max_samples=args.max_samples,
        validate=args.validate,
        estimators=args.estimators,
        base_recipe=args.config,
        reference_run=args.reference_run,
        progress=not args.no_progress,
    )
    _publish(result, args, argv)


def _recipe(args):
    from nlp_transfer.config import RecipeConfig, apply_overrides

    if not (args.data or args.config or any(o.startswith(("data.source=", "data.train_file=")) for o in args.overrides)):
        raise ConfigError("say which data to score on: --data SOURCE (e.g. rotten_tomatoes) or --config RECIPE")
    for o in args.overrides:
        key = o.partition("=")[0]
        if key.split(".")[0] not in ("data", "model", "train") and key not in ("transfer.cache_features", "transfer.cache_dir"):
            raise ConfigError(
                f"override '{o}': nlp-transfer select takes data.*, model.* and train.* keys "
                "(and transfer.cache_features, transfer.cache_dir)"
            )
    extra = [f"data.source={args.data}"] + (["data.train_file=null"] if args.config else []) if args.data else []
    if args.config:
        return RecipeConfig.from_yaml(args.config, extra + args.overrides)
    return RecipeConfig.from_dict(apply_overrides({"name": "select"}, extra + args.overrides))


def _publish(result, args, argv) -> None:
    import os
    import shlex
    from pathlib import Path

    rec = result.recommendation
    command = args.command or "nlp-transfer select " + " ".join(shlex.quote(a) for a in argv)
    text = f"{result.table(args.top)}\n\nProduced by: `{command}`\n"
    print("\n" + text)
    print(f"train the recommendation:\n  accelerate launch -m nlp_transfer train --config {rec['recipe']}")
    if args.config:
        print(f"  (the same: accelerate launch -m nlp_transfer train --config {args.config} {' '.join(rec['overrides'])})")
    print(f"\nfiles: {', '.join(str(p) for p in result.files.values())}")
    if args.readme:
        from nlp_transfer.reporting.tables import update_readme

        base = Path(args.readme).resolve().parent
        plots = [(k.split(":", 1)[1], p) for k, p in result.files.items() if k.startswith("plot:")]
        images = "".join(
            f"\n![{name}: transferability by layer]({Path(os.path.relpath(Path(p).resolve(), base)).as_posix()})" for name, p in plots
        )
        update_readme(args.readme, args.section, text + images + ("\n" if images else ""))
