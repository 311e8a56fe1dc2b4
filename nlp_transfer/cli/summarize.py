"""``scripts/summarize.py``: a table of finished runs beside the TF-IDF baseline."""

from __future__ import annotations

import argparse



def summarize_main(argv: list[str]) -> None:
    import shlex

    from nlp_transfer.reporting.tables import summarize_runs, update_readme

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
    p.add_argument("--column", action="append", default=[], dest="columns", metavar="NAME",
                   help="an extra run column (repeatable): peak_memory (MB, from metrics.json), run_size (MB on disk)")
    args = p.parse_args(argv)
    command = args.command or "python scripts/summarize.py " + " ".join(shlex.quote(a) for a in argv)
    table = summarize_runs(args.runs, baseline=not args.no_baseline, metrics=tuple(args.metrics), columns=tuple(args.columns))
    text = f"{table}\n\nProduced by: `{command}`\n"
    print("\n" + text)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.readme:
        update_readme(args.readme, args.section, text)


