#!/usr/bin/env python
"""Train a text classifier from a recipe.

    accelerate launch scripts/train.py --config recipes/rotten_tomatoes/minilm-full.yaml [train.lr=3e-5 ...]

See `python scripts/train.py --help` for every recipe key.
"""

import sys

from nlp_transfer.cli import run_cli, train_main

if __name__ == "__main__":
    sys.exit(run_cli(train_main))
