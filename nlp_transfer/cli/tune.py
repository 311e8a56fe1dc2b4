"""``nlp-transfer tune`` (``scripts/tune.py``): hyperparameter search on a recipe with Optuna."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import positive_int, setup_logging

EPILOG = """space file: any recipe key -> a distribution, optionally conditional:
  transfer.mode: {type: categorical, choices: [feature_extraction, partial, lora, full]}
  train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  transfer.unfreeze_top: {type: int, low: 1, high: 6, when: {transfer.mode: partial}}
A key may map to a list of such distributions, each with its own `when` (one learning-rate range per mode).
Keys under adapt.* make each trial continue pretraining first (adapted once per setting, in DIR/adapted).
Shipped spaces, by name: rt-minilm-modes (mode and each mode's parameters), rt-tweets-domain (with
rotten_tomatoes/minilm-tune-tweets: continued pretraining and domain-adversarial settings).
Without --space: the default space of the recipe's transfer mode (--print-space shows it).

storage: default sqlite:///DIR/study.db; journal:PATH (Optuna's journal file: several workers on one machine);
any SQLAlchemy URL such as postgresql://USER:PASS@HOST/DB (workers on many machines). Start the same command
again to resume a killed search or to add workers: --trials is the study's total.

example:
  nlp-transfer tune --config rotten_tomatoes/minilm-full --trials 20 --out runs/tune-rt data.max_samples=2000
"""


def tune_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="nlp-transfer tune",
        description="Search a recipe's hyperparameters with Optuna: each trial trains the recipe with sampled values and "
        "scores train.metric_for_best on validation; a pruner stops poor trials after an epoch. Writes DIR/trials/NNNN (a "
        "run directory per finished trial), trials.csv, best.yaml (the best recipe, ready to train), study.md and plots. "
        "The test split is read only for the chosen trial, after the search.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="recipe: a shipped name (rotten_tomatoes/minilm-full) or a YAML file")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides of the recipe")
    p.add_argument(
        "--space", help="search space: a YAML file or a shipped space's name (default: the recipe's transfer mode's default space)"
    )
    p.add_argument("--trials", type=positive_int, help="the study's total number of trials (finished ones count); required")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="sqlite:///PATH, journal:PATH or an RDB URL (default: sqlite:///DIR/study.db)")
    p.add_argument("--study", help="study name (default: the recipe's name)")
    p.add_argument("--out", metavar="DIR", help="folder of the trials and the search's outputs; required")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median", help="stop poor trials early (default: median)")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="how values are drawn (default: tpe)")
    p.add_argument("--seed", type=int, help="sampler seed (default: the recipe's train.seed)")
    p.add_argument("--keep-best", type=positive_int, metavar="K", help="keep the run directories of the best K trials only")
    p.add_argument(
        "--also", choices=("seconds", "trainable_params"), help="a second objective to minimise: the result is a Pareto front (no pruning)"
    )
    p.add_argument("--readme", help="also replace the <!-- results:SECTION --> block of this file with the search's summary")
    p.add_argument("--section", default="tune", help="README block name (default: tune)")
    p.add_argument("--command", help="the command to print under the summary (default: this invocation)")
    p.add_argument("--print-space", action="store_true", help="print the search space and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_intermixed_args(argv)
    from nlp_transfer.utils.extras import require_extra

    require_extra("tune", "nlp-transfer tune")

    from pathlib import Path

    from nlp_transfer.experiments.compare import load_recipes
    from nlp_transfer.experiments.search_space import default_space, load_space, resolve_space, space_yaml
    from nlp_transfer.experiments.tune import TuneOptions, check_storage, tune

    base = load_recipes([args.config], args.overrides)[0]
    params = load_space(resolve_space(args.space)) if args.space else default_space(base)
    if args.print_space:
        print(space_yaml(params), end="")
        return
    missing = [flag for flag, v in (("--trials", args.trials), ("--out", args.out)) if v is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    opts = TuneOptions(
        trials=args.trials,
        out=Path(args.out),
        timeout=args.timeout,
        storage=args.storage,
        study=args.study,
        pruner=args.pruner,
        sampler=args.sampler,
        seed=args.seed,
        keep_best=args.keep_best,
        also=args.also,
        progress=not args.no_progress,
    )
    check_storage(opts)  # before anything is written in DIR
    if args.readme:
        from nlp_transfer.reporting.tables import check_readme

        check_readme(args.readme, args.section)
    setup_logging()
    result = tune(base, params, opts)
    if result is None:  # not the main process
        return
    from nlp_transfer.errors import TrainingError
    from nlp_transfer.experiments.tune_report import dashboard_command

    print(f"\n{Path(opts.out) / 'study.md'}:\n")
    print(result.files["study"].read_text().split("## Search space")[0].rstrip())
    print(f"\ndashboard: {dashboard_command(result.storage_url)}")
    if args.readme and "best" in result.files:
        import shlex

        from nlp_transfer.experiments.tune_report import results_markdown
        from nlp_transfer.reporting.tables import update_readme

        command = args.command or "nlp-transfer tune " + " ".join(shlex.quote(a) for a in argv)
        text = results_markdown(result, base, params, args.space or f"default space of {base.transfer.mode}")
        update_readme(args.readme, args.section, f"{text}\n\nProduced by: `{command}`\n")
    if "best" not in result.files:
        raise TrainingError(f"no trial of study '{result.study.study_name}' finished; see {result.files['study']} for their errors")
