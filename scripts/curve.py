#!/usr/bin/env python
"""Label-efficiency curves: test accuracy against labelled examples per class, several seeds.

    python scripts/curve.py --config recipes/rotten_tomatoes/minilm-setfit.yaml --config recipes/rotten_tomatoes/minilm-full.yaml \
        --per-class 8 16 32 64 256 all --seeds 5 --runs runs/curve-rt

See `python scripts/curve.py --help`.
"""

import sys

from nlp_transfer.cli import curve_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(curve_main))
