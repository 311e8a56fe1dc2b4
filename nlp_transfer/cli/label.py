"""``nlp-transfer label``: active learning, which texts to label next (a person in the loop, or simulated)."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import RECIPE_HELP, positive_int, publish, setup_logging
from nlp_transfer.errors import ConfigError

STRATEGY_HELP = (
    "random, least_confidence, entropy, breaking_ties (uncertainty of the model in the loop), kmeans (the text nearest "
    "each k-means centre of the pool's embeddings; a cold start) or coreset (greedy k-center: diversity)"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nlp-transfer label",
        description="Pool-based active learning on the recipe's checkpoint, frozen (features encoded once, through the "
        "feature cache) with a logistic regression refit each round (--model setfit: SetFit refit instead). With --pool: the "
        "recipe's labelled training examples, if its data has any, seed the loop (--no-seed: a cold start); each call reads "
        "the labels given for the waiting round (DIR/round-K/to_label.csv filled in, round-K/labels.csv / labels.jsonl with id,label, or a Label Studio JSON export as round-K/labels.json), refits and "
        "writes the next batch to DIR/round-K+1/to_label.csv; after --rounds rounds, --train trains the recipe on the labels "
        "(DIR/run, an ordinary run directory). With --simulate: the recipe's training split is the pool, its labels revealed "
        "only when queried; curves of test accuracy and macro F1 against labels for each strategy beside random, over "
        "--seeds seeds. State is written whole after every step: an interrupted call is repeated by the same command.",
        epilog="examples:\n"
        "  nlp-transfer label --config rotten_tomatoes/minilm-logreg --pool reviews.csv --strategy breaking_ties "
        "--batch 32 --rounds 8 --out al/\n"
        "  nlp-transfer label --config rotten_tomatoes/minilm-logreg --simulate --strategy entropy breaking_ties kmeans "
        "--batch 32 --rounds 16 --seeds 3 --out runs/active-rt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of the recipe")
    p.add_argument("-c", "--config", required=True, metavar="RECIPE", help=RECIPE_HELP)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pool", metavar="FILE", help="unlabelled texts to choose from: CSV, TSV or JSONL with a text column (and an id)")
    source.add_argument("--simulate", action="store_true", help="simulate on the recipe's data (its training split as the pool)")
    p.add_argument("--strategy", nargs="+", default=["breaking_ties"], metavar="NAME", help=STRATEGY_HELP + " (--simulate: several)")
    p.add_argument("--batch", type=positive_int, default=32, help="texts asked per round (default 32)")
    p.add_argument("--rounds", type=positive_int, default=8, help="rounds (default 8)")
    p.add_argument("--out", required=True, metavar="DIR", help="the loop's directory (its state, rounds and curves)")
    p.add_argument("--labels", help="the label set, comma-separated (default: the labels of the recipe's data)")
    p.add_argument("--seeds", type=positive_int, default=3, help="--simulate: seeds per strategy (default 3)")
    p.add_argument("--seed", type=int, default=0, help="--pool: the seed of every draw (default 0)")
    p.add_argument(
        "--model",
        choices=("logreg", "setfit"),
        default="logreg",
        help="--pool: the model in the loop, refit each round on the labels so far: logreg (frozen features, seconds; default) "
        "or setfit (the encoder tuned on contrastive pairs, then a logistic-regression head; the recipe's transfer.setfit "
        "settings in setfit mode) [fewshot]",
    )
    p.add_argument(
        "--format",
        choices=("csv", "label-studio"),
        default="csv",
        help="--pool: each batch as DIR/round-K/to_label.csv (default) or as Label Studio tasks in DIR/round-K/to_label.json "
        "(the guess as a prediction); a Label Studio JSON export saved as DIR/round-K/labels.json is read in either case",
    )
    p.add_argument(
        "--no-seed",
        action="store_true",
        help="--pool: start from the pool alone; by default the recipe's labelled training examples (if any) seed the loop",
    )
    p.add_argument("--train", action="store_true", help="--pool: once every round is labelled, train the recipe on the labels (DIR/run)")
    p.add_argument("--text-column", default="text", help="--pool: the text column (default: text)")
    p.add_argument("--id-column", default="id", help="--pool: the id column (default: id; without one, the row number)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--table", metavar="FILE", help="--simulate: also write the Markdown table here (the plot beside it, same name .png)")
    p.add_argument("--readme", help="--simulate: also replace the <!-- results:SECTION --> block of this file")
    p.add_argument("--section", default="active", help="README block name (default: active)")
    p.add_argument("--command", help="the command to print under the table (default: this invocation)")
    return p


def label_main(argv: list[str]) -> None:
    args = _parser().parse_intermixed_args(argv)
    from nlp_transfer.experiments.strategies import check_strategy

    for s in args.strategy:
        check_strategy(s)
    if args.simulate or args.strategy != ["coreset"]:  # every other strategy, and random beside a simulation's, is small-text's
        from nlp_transfer.utils.extras import require_extra

        require_extra("active", "nlp-transfer label --strategy " + " ".join(args.strategy), ConfigError)
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    if args.simulate:
        if args.train:
            raise ConfigError("--train trains on a person's labels (--pool); a simulation only measures")
        if args.model != "logreg":
            raise ConfigError("a simulation refits a logistic regression on frozen features; --model setfit is for --pool")
        setup_logging()
        from nlp_transfer.experiments.active import simulate

        result = simulate(
            args.config,
            args.strategy,
            batch=args.batch,
            rounds=args.rounds,
            seeds=args.seeds,
            out=args.out,
            overrides=args.overrides,
            progress=not args.no_progress,
        )
        args.out = args.table  # publish writes the table (and copies the plot) to --table
        publish(result.table, args, "label", argv, result.files.get("plot"))
        return
    if len(args.strategy) != 1:
        raise ConfigError("--pool asks with one strategy; give one --strategy")
    setup_logging()
    from nlp_transfer.experiments.active import label_pool

    r = label_pool(
        args.config,
        args.pool,
        args.out,
        strategy=args.strategy[0],
        batch=args.batch,
        rounds=args.rounds,
        labels=labels,
        seed=args.seed,
        overrides=args.overrides,
        text_column=args.text_column,
        id_column=args.id_column,
        train=args.train,
        use_seed=not args.no_seed,
        model=args.model,
        output_format=args.format,
        progress=not args.no_progress,
    )
    kappa = "" if r.kappa is None else f"; kappa average of the predictions {r.kappa:.3f} (at 0.99 or more, further labels change little)"
    read = f"{r.read} labels read, " if r.read else ""
    if r.finished:
        tail = f"; trained: {r.run}" if r.run else "; --train trains the recipe on them"
        print(f"{read}{r.labelled} labels in all after {r.round} rounds: finished{tail}{kappa}")
    else:
        todo = (
            f"import {r.to_label} into Label Studio, label it, export the project as JSON to {r.to_label.with_name('labels.json')}"
            if r.to_label.suffix == ".json"
            else f"fill in the label column of {r.to_label}"
        )
        print(f"{read}{r.labelled} labels so far; round {r.round}: {todo} and run the same command again{kappa}")
