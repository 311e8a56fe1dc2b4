#!/usr/bin/env python
"""Predict labels and class probabilities with a saved run.

    python scripts/predict.py runs/rt-minilm-full reviews.csv -o predictions.csv
    echo "a gorgeous, moving film" | python scripts/predict.py runs/rt-minilm-full --output-format jsonl

Input: CSV/TSV/JSONL/JSON (column --text-column) or plain lines, from a file or standard input.
Output: CSV (label, score, one prob_<label> column per class) or JSONL, in input order.
See `python scripts/predict.py --help`.
"""

import sys

from nlp_transfer.cli import predict_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(predict_main))
