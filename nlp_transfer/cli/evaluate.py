"""``nlp-transfer evaluate``: a saved run scored on labelled texts, with its mistakes."""

from __future__ import annotations

import argparse
import sys

from nlp_transfer.cli.common import add_run_arguments, setup_logging


def evaluate_main(argv: list[str]) -> None:
    from pathlib import Path

    p = argparse.ArgumentParser(
        prog="nlp-transfer evaluate",
        description="Evaluate a saved run on labelled texts: accuracy, precision, recall, F1 (macro, micro, weighted), "
        "per-class table, confusion matrix and the misclassified examples with their scores. Without a data file, "
        "the run's own test split (rebuilt from its recipe) is used.",
        epilog="example:\n  nlp-transfer evaluate runs/rt-minilm-full reviews.csv --label-column stars --out runs/eval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument("data", nargs="?", help="labelled CSV/TSV/JSONL/JSON file (default: the run's test split)")
    p.add_argument(
        "--label-column",
        default=None,
        help="column with the true labels (default: label; multi-label runs trained on 0/1 columns read those columns)",
    )
    p.add_argument("--split", default="test", choices=("train", "validation", "test"), help="the run's own split when no file is given")
    p.add_argument("--out", help="write metrics.json, report.md, misclassified.csv, confusion_matrix.png and explanations.html here")
    p.add_argument(
        "--explain",
        type=int,
        metavar="N",
        help="with --out: explanations.html shows the N most confident mistakes and the N least confident "
        "examples with their words coloured by Integrated Gradients attribution (default: 10 where captum, "
        "pip install 'nlp-transfer[trust]', is installed; 0: no page)",
    )
    p.add_argument(
        "--label-issues",
        action="store_true",
        help="also rank the examples whose given label looks wrong (single-label): the run's pooled features, "
        "a logistic regression probe cross-validated over 5 folds, cleanlab's label quality; prints the most "
        "suspect and, with --out, writes label_issues.csv. For a recipe's training split before training: "
        "nlp-transfer label-issues --config RECIPE",
    )
    p.add_argument("--show", type=int, default=10, help="misclassified examples to print (most confident first; default: 10)")
    args = p.parse_intermixed_args(argv)
    from nlp_transfer.inference.predictor import check_run_dir, load_run
    from nlp_transfer.manifest import read_manifest

    run = check_run_dir(args.run)  # fail fast, before reading the input
    from nlp_transfer.errors import ConfigError

    if args.explain is not None and args.explain < 0:
        raise ConfigError(f"--explain {args.explain}: give how many examples per section to explain (0: none)")
    _check_extras(args)
    if args.label_issues:
        from nlp_transfer.errors import ConfigError
        from nlp_transfer.tasks import get_task

        if not get_task(read_manifest(run).task).ranks_label_issues:
            raise ConfigError(f"--label-issues ranks single-label classes, but '{args.run}' is a {read_manifest(run).task} run; drop it")
    if args.data is not None:
        from nlp_transfer.data.reader import read_inputs

        # A multi-label run trained on 0/1 columns reads the same columns (unless --label-column says otherwise).
        label_columns = None if args.label_column else read_manifest(run).label_columns
        inputs = read_inputs(
            args.data, args.format, args.text_column, args.text_pair_column, args.label_column or "label", label_columns=label_columns
        )
        texts, pairs, labels, source = inputs.texts, inputs.text_pairs, inputs.labels, f"`{args.data}`"
    else:
        texts, pairs, labels, source = _run_split(args.run, args.split)
    setup_logging()

    predictor = load_run(args.run, device=args.device, precision=args.precision)
    ev = predictor.evaluate(texts, labels, text_pairs=pairs, batch_size=args.batch_size, progress=not args.no_progress)
    title = f"Evaluation of {Path(args.run).name}"
    print(ev.report(title, source, show=args.show))
    files = {}
    if args.out:
        files = ev.save(args.out, title, source)
        if args.explain > 0 and pairs is None:  # sentence pairs are not explained
            from nlp_transfer.inference.explain import explain_evaluation

            files["explanations"] = explain_evaluation(
                predictor,
                ev,
                Path(args.out) / "explanations.html",
                args.explain,
                title=f"Explanations: {Path(args.run).name}",
                progress=not args.no_progress,
            )
    if args.label_issues:
        files.update(_label_issues(predictor, ev, pairs, args))
    if args.out:
        print(f"wrote {', '.join(str(f) for f in files.values())}", file=sys.stderr)


def _label_issues(predictor, ev, pairs, args) -> dict:
    """Suspect labels of the evaluated texts: the run's features, cross-validated probes, cleanlab (inference/label_issues.py)."""
    from pathlib import Path

    from nlp_transfer.inference.label_issues import find_label_issues, issues_table, pooled_features, write_label_issues
    from nlp_transfer.reporting.markdown import cell

    features = pooled_features(predictor, ev.texts, pairs, args.batch_size, progress=not args.no_progress)
    issues = find_label_issues(features, ev.y_true, predictor.labels, ev.texts)
    print("\n## Suspect labels\n\n" + issues_table(issues, args.show, cell) + "\n")
    return {"label_issues": write_label_issues(issues, Path(args.out) / "label_issues.csv")} if args.out else {}


def _run_split(run: str, split: str):
    """Texts, pairs and label names of a split of the run's own data (same recipe, same seed)."""
    from pathlib import Path

    from nlp_transfer.config import RecipeConfig
    from nlp_transfer.data.loading import load_data
    from nlp_transfer.errors import ConfigError

    recipe = Path(run) / "recipe.yaml"
    if not recipe.is_file():
        raise ConfigError(f"'{run}' has no recipe.yaml, so its {split} split is unknown; pass a labelled data file")
    cfg = RecipeConfig.from_yaml(recipe)
    data = load_data(cfg.data, cfg.model.num_labels)
    ds = data.splits[split]
    pairs = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
    source = f"the run's {split} split ({cfg.data.source or cfg.data.train_file}, split seed {cfg.data.split_seed})"
    labels = data.task_type.as_labels(ds["label"], data.labels)
    return list(ds["text"]), pairs, labels, source


def _check_extras(args) -> None:
    """--explain N needs captum and --label-issues cleanlab (one line each when missing); without --explain the
    explanations are written where captum is installed and left out, with a note, where it is not."""
    from nlp_transfer.errors import ConfigError
    from nlp_transfer.utils.extras import extra_hint, missing_modules, require_extra

    if args.label_issues:
        require_extra("trust", "nlp-transfer evaluate --label-issues", ConfigError, ("cleanlab",))
    if args.explain is not None:
        if args.explain > 0 and args.out:
            require_extra("trust", "nlp-transfer evaluate --explain", ConfigError, ("captum",))
        return
    args.explain = 0 if missing_modules(["captum"]) else 10
    if args.out and not args.explain:
        print(f"note: no explanations.html: {extra_hint('trust', 'explaining predictions', ['captum'])}", file=sys.stderr)
