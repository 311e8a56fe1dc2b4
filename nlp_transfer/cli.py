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
    _setup_logging()
    from .metrics import format_metrics
    from .train import train

    result = train(cfg, progress=not args.no_progress)
    from accelerate import PartialState

    if PartialState().is_main_process:
        t = result.test
        scores = (f"test accuracy {t['accuracy']:.4f}, macro F1 {t['f1_macro']:.4f}" if "accuracy" in t
                  else "test " + format_metrics(t))
        print(f"\n{cfg.name}: {scores} (best epoch {result.best_epoch}, {result.timing['total_seconds']:.0f}s) -> {result.output_dir}")


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
    p.add_argument("--metric", action="append", default=[], dest="metrics", metavar="NAME",
                   help="an extra test-metric column (repeatable): recall_macro, precision_macro, f1_weighted, f1_micro")
    args = p.parse_args(argv)
    command = args.command or "python scripts/summarize.py " + " ".join(shlex.quote(a) for a in argv)
    table = summarize_runs(args.runs, baseline=not args.no_baseline, metrics=tuple(args.metrics))
    text = f"{table}\n\nProduced by: `{command}`\n"
    print("\n" + text)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.readme:
        update_readme(args.readme, args.section, text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by scripts/train.py (its output.dir)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl", "json", "lines"),
                   help="input format (default: from the extension; plain lines for .txt, other extensions and standard input)")
    p.add_argument("--text-column", default="text", help="column with the texts (CSV/JSONL input; default: text)")
    p.add_argument("--text-pair-column", help="column with the second texts of sentence pairs")
    p.add_argument("--batch-size", type=_positive_int, help="texts per batch, length-sorted (default: the run's train.eval_batch_size)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="autocast for inference (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def predict_main(argv: list[str]) -> None:
    import time

    p = argparse.ArgumentParser(
        prog="scripts/predict.py",
        description="Predict labels and class probabilities for texts with a saved run. Reads CSV, TSV, JSONL, "
        "JSON or plain lines (one text each) from a file or standard input; writes CSV (one prob_<label> column "
        "per class) or JSONL, in input order.",
        epilog="examples:\n  python scripts/predict.py runs/rt-minilm-full reviews.csv -o predictions.csv\n"
        "  echo 'a gorgeous, moving film' | python scripts/predict.py runs/rt-minilm-full --output-format jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _predict_args(p)
    p.add_argument("input", nargs="?", default="-", help="file with the texts, or - for standard input (default)")
    p.add_argument("-o", "--output", help="output file, .csv or .jsonl (default: standard output)")
    p.add_argument("--output-format", choices=("csv", "jsonl"), help="default: from --output's extension, else csv")
    p.add_argument("--id-column", help="copy this input column to the output (e.g. an id)")
    args = p.parse_intermixed_args(argv)
    from .predict import check_run_dir

    check_run_dir(args.run)  # fail fast, before reading the input
    from .textio import prediction_rows, read_inputs, write_predictions

    inputs = read_inputs(args.input, args.format, args.text_column, args.text_pair_column, id_column=args.id_column)
    _setup_logging()
    from .predict import load_run

    t0 = time.perf_counter()
    predictor = load_run(args.run, device=args.device, precision=args.precision)
    preds = predictor.predict(inputs.texts, text_pairs=inputs.text_pairs, batch_size=args.batch_size, progress=not args.no_progress)
    fmt = write_predictions(prediction_rows(inputs, preds), predictor.labels, args.output, args.output_format)
    where = args.output if args.output not in (None, "-") else "standard output"
    print(f"{len(preds):,} predictions ({fmt}) -> {where} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def evaluate_main(argv: list[str]) -> None:
    from pathlib import Path

    p = argparse.ArgumentParser(
        prog="scripts/evaluate.py",
        description="Evaluate a saved run on labelled texts: accuracy, precision, recall, F1 (macro, micro, weighted), "
        "per-class table, confusion matrix and the misclassified examples with their scores. Without a data file, "
        "the run's own test split (rebuilt from its recipe) is used.",
        epilog="example:\n  python scripts/evaluate.py runs/rt-minilm-full reviews.csv --label-column stars --out runs/eval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _predict_args(p)
    p.add_argument("data", nargs="?", help="labelled CSV/TSV/JSONL/JSON file (default: the run's test split)")
    p.add_argument("--label-column", default=None,
                   help="column with the true labels (default: label; multi-label runs trained on 0/1 columns read those columns)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"), help="the run's own split when no file is given")
    p.add_argument("--out", help="write metrics.json, report.md, misclassified.csv and confusion_matrix.png here")
    p.add_argument("--show", type=int, default=10, help="misclassified examples to print (most confident first; default: 10)")
    args = p.parse_intermixed_args(argv)
    from .predict import check_run_dir

    run = check_run_dir(args.run)  # fail fast, before reading the input
    if args.data is not None:
        import json

        from .modeling import META_FILE
        from .textio import read_inputs

        # A multi-label run trained on 0/1 columns reads the same columns (unless --label-column says otherwise).
        label_columns = None if args.label_column else json.loads((run / META_FILE).read_text()).get("label_columns")
        inputs = read_inputs(args.data, args.format, args.text_column, args.text_pair_column, args.label_column or "label",
                             label_columns=label_columns)
        texts, pairs, labels, source = inputs.texts, inputs.text_pairs, inputs.labels, f"`{args.data}`"
    else:
        texts, pairs, labels, source = _run_split(args.run, args.split)
    _setup_logging()
    from .predict import load_run

    predictor = load_run(args.run, device=args.device, precision=args.precision)
    ev = predictor.evaluate(texts, labels, text_pairs=pairs, batch_size=args.batch_size, progress=not args.no_progress)
    title = f"Evaluation of {Path(args.run).name}"
    print(ev.report(title, source, show=args.show))
    if args.out:
        files = ev.save(args.out, title, source)
        print(f"wrote {', '.join(str(f) for f in files.values())}", file=sys.stderr)


def _run_split(run: str, split: str):
    """Texts, pairs and label names of a split of the run's own data (same recipe, same seed)."""
    from pathlib import Path

    from .config import RecipeConfig
    from .data import load_data

    from .errors import ConfigError

    recipe = Path(run) / "recipe.yaml"
    if not recipe.is_file():
        raise ConfigError(f"'{run}' has no recipe.yaml, so its {split} split is unknown; pass a labelled data file")
    cfg = RecipeConfig.from_yaml(recipe)
    data = load_data(cfg.data, cfg.model.num_labels)
    ds = data.splits[split]
    pairs = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
    source = f"the run's {split} split ({cfg.data.source or cfg.data.train_file}, split seed {cfg.data.split_seed})"
    if data.task == "multi_label":
        from .tasks import label_names

        labels = label_names(ds["label"], data.labels)
    elif data.task == "regression":
        labels = list(ds["label"])
    else:
        labels = [data.labels[i] for i in ds["label"]]
    return list(ds["text"]), pairs, labels, source


def compare_main(argv: list[str]) -> None:
    import shlex
    from pathlib import Path

    from .compare import DEFAULT_RECIPES

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
    from .compare import compare, load_recipes

    recipes = args.recipes or list(DEFAULT_RECIPES)
    load_recipes(recipes, args.overrides)  # every recipe error before any training
    _setup_logging()
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
        from .summary import update_readme

        update_readme(args.readme, args.section, text)
