#!/usr/bin/env python
"""Suspect labels in a recipe's data (default: its training split), before any training.

    python scripts/label_issues.py --config recipes/rotten_tomatoes/minilm-logreg.yaml --out runs/rt-label-issues
    python scripts/label_issues.py --config recipes/rotten_tomatoes/minilm-logreg.yaml --flip 0.05 --out runs/rt-flip5

Writes label_issues.csv (most suspect first) and label_issues.json; for a trained run on
labelled data: scripts/evaluate.py RUN [DATA] --label-issues --out DIR.
"""

import sys

from nlp_transfer.cli import label_issues_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(label_issues_main))
