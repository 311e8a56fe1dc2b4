#!/usr/bin/env python
"""Upload a run directory (weights, tokenizer, manifest, results and its README.md model card) to the Hugging Face Hub.

    python scripts/push.py runs/rt-minilm-full my-name/rt-minilm-full [--private] [--token TOKEN] [--revision BRANCH]

See `python scripts/push.py --help`.
"""

import sys
from functools import partial

from nlp_transfer.cli import push_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(partial(push_main, prog="scripts/push.py")))
