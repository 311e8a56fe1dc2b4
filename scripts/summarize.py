#!/usr/bin/env python
"""Compare finished runs on the same data with a TF-IDF + logistic-regression baseline.

    python scripts/summarize.py runs/rt-minilm-feature_extraction runs/rt-minilm-full --out results/demo.md

The baseline is trained on exactly the splits of the first run's recipe. With
--readme docs/results/PAGE.md the table replaces the block between `<!-- results:NAME -->` and
`<!-- /results:NAME -->` (NAME from --section) of that docs page, so its figures are regenerated, not typed.
"""

import sys

from nlp_transfer.cli import run_cli, summarize_main

if __name__ == "__main__":
    sys.exit(run_cli(summarize_main))
