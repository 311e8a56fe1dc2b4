#!/usr/bin/env python
"""Which checkpoint, which layer, which pooling: transferability scores of frozen features, in seconds.

    python scripts/select_checkpoint.py --data rotten_tomatoes --candidates minilm smollm2 --layers all \
        --pooling mean last --validate --out runs/select-rt

The same as `nlp-transfer select ...`; see `nlp-transfer select --help`.
"""

import sys

from nlp_transfer.cli import run_cli, select_main

if __name__ == "__main__":
    sys.exit(run_cli(select_main))
