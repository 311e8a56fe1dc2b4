"""``nlp-transfer summarize``: a table of finished runs beside the TF-IDF baseline."""

from __future__ import annotations

import argparse

from nlp_transfer.cli.common import add_output_arguments, publish


def summarize_main(argv: list[str]) -> None:
    from nlp_transfer.reporting.tables import summarize_runs

    p = argparse.ArgumentParser(
        prog="nlp-transfer summarize",
        description="Compare finished runs (same data) with a TF-IDF + logistic-regression baseline on the same splits.",
    )
    p.add_argument("runs", nargs="+", help="run directories written by nlp-transfer train")
    p.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF baseline")
    add_output_arguments(p, "demo", "write the Markdown table to this file")
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        dest="metrics",
        metavar="NAME",
        help="an extra test-metric column (repeatable): recall_macro, precision_macro, f1_weighted, f1_micro",
    )
    p.add_argument(
        "--column",
        action="append",
        default=[],
        dest="columns",
        metavar="NAME",
        help="an extra run column (repeatable): peak_memory (MB, from metrics.json), run_size (MB on disk), parameters, layers, "
        "agreement and kept (a distilled run against its teachers on test: agreement, and the share of their accuracy kept), "
        "seed (train.seed)",
    )
    p.add_argument(
        "--calibration",
        action="store_true",
        help="instead: the calibration table (temperature; ECE, MCE, Brier, NLL before -> after on validation and test)",
    )
    args = p.parse_args(argv)
    if args.calibration:
        from nlp_transfer.reporting.tables import calibration_table

        publish(calibration_table(args.runs), args, "summarize", argv)
        return
    table = summarize_runs(args.runs, baseline=not args.no_baseline, metrics=tuple(args.metrics), columns=tuple(args.columns))
    publish(table, args, "summarize", argv)
