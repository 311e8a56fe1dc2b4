#!/usr/bin/env python
"""Active learning: which texts to label next, with a person in the loop (--pool) or simulated (--simulate).

    python scripts/label.py --config recipes/rotten_tomatoes/minilm-logreg.yaml --pool reviews.csv \
        --strategy breaking_ties --batch 32 --rounds 8 --out al/

See `python scripts/label.py --help` (the same as `nlp-transfer label --help`).
"""

import sys

from nlp_transfer.cli import label_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(label_main))
