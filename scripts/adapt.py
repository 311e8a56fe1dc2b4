#!/usr/bin/env python
"""Continued pretraining on unlabelled text: masked (encoders) or causal (decoders) language modelling.

    accelerate launch -q --config_file recipes/accelerate/cpu.yaml scripts/adapt.py \
        --config recipes/rotten_tomatoes/minilm-full.yaml adapt.epochs=1 output.dir=runs/minilm-rt-tapt

See `python scripts/adapt.py --help`.
"""

import sys

from nlp_transfer.cli import adapt_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(adapt_main))
