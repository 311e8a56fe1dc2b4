"""``nlp-transfer label-issues``: suspect labels in a recipe's data, before any training."""

from __future__ import annotations

import argparse
import sys

from nlp_transfer.cli.common import positive_int, setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nlp-transfer label-issues",
        description="Rank the examples of a recipe's split (default: train) whose given label looks wrong. The recipe's "
        "checkpoint encodes the texts, frozen, pooled as its feature_extraction would; a logistic regression probe "
        "cross-validated over --folds folds gives every example a probability from a model that did not see its label; "
        "cleanlab ranks them by label quality (self-confidence, lowest first) and flags the likely errors. Writes "
        "label_issues.csv (rank, row, text, given_label, suggested_label, score, suggested_probability, flagged) and "
        "label_issues.json (the settings and counts). For a trained run on labelled data use "
        "nlp-transfer evaluate RUN [DATA] --label-issues --out DIR.",
        epilog="examples:\n  nlp-transfer label-issues --config rotten_tomatoes/minilm-logreg --out runs/rt-label-issues\n"
        "  nlp-transfer label-issues --config rotten_tomatoes/minilm-logreg --flip 0.05 --out runs/rt-flip5\n"
        "    (flips 5% of the labels at random first and reports how many of them the top of the ranking finds)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="a shipped recipe's name or a recipe YAML file (its data and model sections are used)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides (e.g. data.max_samples=2000)")
    p.add_argument("--split", default="train", choices=("train", "validation", "test"), help="the split to check (default: train)")
    p.add_argument("--out", help="write label_issues.csv and label_issues.json into this directory")
    p.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds of the probe (default: 5)")
    p.add_argument(
        "--C",
        type=float,
        help="inverse L2 strength of the probe, on standardised features (default: the one of "
        "0.001 ... 1 with the lowest out-of-sample log loss)",
    )
    p.add_argument(
        "--flip",
        type=float,
        metavar="FRACTION",
        help="a check with known noise: change this fraction of the labels to another label at random (seed "
        "--seed) first; reports the precision of the top of the ranking at the number flipped",
    )
    p.add_argument("--readme", help="also replace the <!-- results:SECTION --> block of this file with the summary table")
    p.add_argument("--section", default="trust-label-issues", help="README block name (default: trust-label-issues)")
    p.add_argument("--command", help="the command to print under the table (default: this invocation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and of --flip (default: 0)")
    p.add_argument("--show", type=int, default=10, help="most suspect examples to print (default: 10)")
    p.add_argument("--batch-size", type=positive_int, help="texts per encoding batch (default: the recipe's train.eval_batch_size)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def label_issues_main(argv: list[str]) -> None:
    args = _parser().parse_intermixed_args(argv)
    from nlp_transfer.errors import ConfigError

    if args.flip is not None and not 0 < args.flip < 1:
        raise ConfigError(f"--flip {args.flip} is not a fraction between 0 and 1 (e.g. --flip 0.05)")
    if args.C is not None and args.C <= 0:
        raise ConfigError(f"--C {args.C} must be positive")
    from nlp_transfer.utils.extras import require_extra

    require_extra("trust", "nlp-transfer label-issues", ConfigError, ("cleanlab",))
    import json
    import time
    from pathlib import Path

    import numpy as np

    from nlp_transfer.config import RecipeConfig
    from nlp_transfer.data.chunking import LongTextSpec
    from nlp_transfer.data.loading import load_data
    from nlp_transfer.inference.label_issues import (
        find_label_issues,
        flip_labels,
        issues_table,
        pooled_features,
        precision_at,
        write_label_issues,
    )
    from nlp_transfer.inference.predictor import Predictor
    from nlp_transfer.recipes import build_classifier
    from nlp_transfer.reporting.markdown import cell
    from nlp_transfer.training.precision import resolve_precision

    cfg = RecipeConfig.from_yaml(args.config, args.overrides)
    setup_logging()
    t0 = time.perf_counter()
    data = load_data(cfg.data, cfg.model.num_labels)
    if not data.task_type.ranks_label_issues:
        raise ConfigError(f"label issues are ranked for single-label classes, but {args.config} has {data.task} data")
    ds = data.splits[args.split]
    texts, labels = list(ds["text"]), np.asarray(ds["label"], dtype=np.int64)
    pairs = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
    model, tokenizer = build_classifier(cfg, data.labels)
    predictor = Predictor(
        model,
        tokenizer,
        cfg.model.max_length,
        args.device,
        resolve_precision(cfg.train.mixed_precision),
        cfg.train.eval_batch_size,
        LongTextSpec.from_config(cfg.model),
    )
    features = pooled_features(predictor, texts, pairs, args.batch_size, progress=not args.no_progress)
    given, flipped = flip_labels(labels, len(data.labels), args.flip, args.seed) if args.flip else (labels, None)
    issues = find_label_issues(features, given, data.labels, texts, args.folds, args.C, args.seed)
    print(issues_table(issues, args.show, cell))
    summary = {
        "recipe": args.config,
        "overrides": args.overrides,
        "split": args.split,
        "examples": len(texts),
        "checkpoint": cfg.model.name_or_path,
        "pooling": model.pooling,
        "folds": args.folds,
        "C": issues.C,
        "log_loss_by_C": issues.log_loss,
        "seed": args.seed,
        "flagged": issues.num_flagged,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    extra = None
    if flipped is not None:
        check = precision_at(issues, flipped)
        summary["flip"] = {"fraction": args.flip, **check}
        print(
            f"\nflipped {check['flipped']:,} of {len(texts):,} labels: precision at {check['k']:,} = {check['precision_at_k']:.3f}; "
            f"cleanlab flagged {check['flagged']:,} (precision {check['flagged_precision']:.3f}, recall {check['flagged_recall']:.3f})"
        )
        names = data.labels
        extra = {int(i): {"flipped": True, "original_label": names[labels[i]]} for i in flipped}
        extra = {r["row"]: extra.get(r["row"], {"flipped": False, "original_label": r["given_label"]}) for r in issues.rows}
    if args.readme:
        import shlex

        from nlp_transfer.reporting.tables import update_readme

        command = args.command or "nlp-transfer label-issues " + " ".join(shlex.quote(a) for a in argv)
        update_readme(args.readme, args.section, summary_table(summary) + f"\n\nProduced by: `{command}`\n")
    if args.out:
        out = Path(args.out)
        csv_path = write_label_issues(issues, out / "label_issues.csv", extra)
        (out / "label_issues.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {csv_path}, {out / 'label_issues.json'}", file=sys.stderr)


def summary_table(summary: dict) -> str:
    """One Markdown row: what was checked and, with --flip, how much of the top of the ranking is truly wrong."""
    head = "| data | checkpoint (pooling) | examples | probe C | cleanlab flagged |"
    data = " ".join([summary["recipe"], *summary["overrides"]])
    row = (
        f"| {data} ({summary['split']}) | {summary['checkpoint']} "
        f"({summary['pooling']}) | {summary['examples']:,} | {summary['C']:g} | {summary['flagged']:,} |"
    )
    flip = summary.get("flip")
    if flip:
        head += " flipped | precision at flipped | flagged precision | flagged recall |"
        row += (
            f" {flip['flipped']:,} ({flip['fraction']:.0%}) | **{flip['precision_at_k']:.3f}** | {flip['flagged_precision']:.3f} | "
            f"{flip['flagged_recall']:.3f} |"
        )
    sep = "|" + "---|" * 2 + "---:|" * (head.count("|") - 3)
    return "\n".join([head, sep, row, "", f"({summary['seconds']:.0f} s, features encoded once, {summary['folds']} folds)"])
