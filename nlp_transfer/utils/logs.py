"""Logging: one format for the command-line tools, and transformers' loaders without their chatter."""

from __future__ import annotations

import logging
import os
import warnings

logger = logging.getLogger("nlp_transfer")


def setup_logging() -> None:
    """Time-stamped INFO lines from nlp_transfer; third-party libraries at WARNING."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    for noisy in ("transformers", "datasets", "accelerate.utils", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet(fn, *args, **kwargs):
    """Call a transformers loader with its informational warnings and progress bars silenced."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
