#!/usr/bin/env python
"""Evaluate a saved run on a labelled file (or on its own test split).

    python scripts/evaluate.py runs/rt-minilm-full reviews.csv --label-column label --out runs/rt-minilm-full/eval
    python scripts/evaluate.py runs/rt-minilm-full            # the run's test split, rebuilt from its recipe

Prints the metrics report (per-class table, confusion matrix, most confident mistakes); --out
also writes metrics.json, report.md, misclassified.csv and confusion_matrix.png.
"""

import sys

from nlp_transfer.cli import evaluate_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(evaluate_main))
