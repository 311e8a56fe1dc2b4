"""``scripts/export.py``: a run in another form; ``--merge`` folds an adapter into the weights."""

from __future__ import annotations

import argparse
import sys

from nlp_transfer.cli.common import setup_logging
from nlp_transfer.errors import ConfigError


def export_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="scripts/export.py",
        description="Export a saved run. --merge: fold the adapter of a lora, dora or ia3 run into the base weights "
        "and write an ordinary run (no base checkpoint needed; loads with load_run, and with plain "
        "AutoModelForSequenceClassification where pooling and head are the architecture's own). The merged "
        "logits are checked against the adapter run's before anything is written.",
        epilog="example:\n  python scripts/export.py runs/rt-minilm-lora runs/rt-minilm-lora-merged --merge",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory written by scripts/train.py (its output.dir)")
    p.add_argument("output", help="directory to write (must not exist, unless --overwrite)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights (adapter runs)")
    p.add_argument("--overwrite", action="store_true", help="replace the output directory if it exists")
    args = p.parse_args(argv)
    if not args.merge:
        raise ConfigError("choose what to export: --merge (fold an adapter run's adapter into the weights)")
    from nlp_transfer.inference.export import merge_run

    setup_logging()
    result = merge_run(args.run, args.output, overwrite=args.overwrite)
    loads = (f"loads with load_run and AutoModelForSequenceClassification ({result.transformers_class})"
             if result.transformers_class else "loads with load_run")
    print(f"merged {args.run} -> {result.output_dir}: {loads}; largest logit difference against the adapter run "
          f"{result.max_logit_difference:.1e}", file=sys.stderr)
