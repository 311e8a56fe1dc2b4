#!/usr/bin/env python
"""Search a recipe's hyperparameters with Optuna.

    python scripts/tune.py --config recipes/rotten_tomatoes/minilm-full.yaml --trials 20 --out runs/tune-rt [train.epochs=3 ...]

See `python scripts/tune.py --help` for the space file, storages and outputs.
"""

import sys

from nlp_transfer.cli import run_cli, tune_main

if __name__ == "__main__":
    sys.exit(run_cli(tune_main))
