#!/usr/bin/env python
"""Train several recipes on one dataset and compare them with a TF-IDF baseline: the transfer gain.

    python scripts/compare.py --runs runs/compare-rt                       # the default Rotten Tomatoes list
    python scripts/compare.py -r recipes/rotten_tomatoes/minilm-scratch.yaml -r recipes/rotten_tomatoes/minilm-full.yaml \\
        data.max_samples=500 train.epochs=1 --runs runs/try

Writes the run directories, comparison.md, comparison.json and comparison.png under --runs. With
--readme docs/results/transfer-gain.md --section compare-rotten_tomatoes the table replaces that block
of the docs page, so its figures are regenerated, not typed. One process: run it with plain `python`.
"""

import sys

from nlp_transfer.cli import compare_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(compare_main))
