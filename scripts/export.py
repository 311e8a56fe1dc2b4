#!/usr/bin/env python
"""Export a saved run; --merge folds an adapter run's adapter into the base weights.

    python scripts/export.py runs/rt-minilm-lora runs/rt-minilm-lora-merged --merge

See `python scripts/export.py --help`.
"""

import sys

from nlp_transfer.cli import export_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(export_main))
