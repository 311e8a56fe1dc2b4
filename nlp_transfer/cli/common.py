"""What every command-line tool shares: one ``error:`` line and exit code 2 for a user's mistake."""

from __future__ import annotations

import argparse
import os
import sys

from nlp_transfer.errors import NLPTransferError
from nlp_transfer.utils.logs import setup_logging

__all__ = ["run_cli", "setup_logging", "positive_int", "add_run_arguments"]


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; turn :class:`NLPTransferError` into ``error: ...`` and exit code 2.

    ``--traceback`` (or NLP_TRANSFER_TRACEBACK=1) shows the full traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv or os.environ.get("NLP_TRANSFER_TRACEBACK") == "1"
    argv = [a for a in argv if a != "--traceback"]
    try:
        main(argv)
        return 0
    except NLPTransferError as e:
        if show_tb:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by scripts/train.py (its output.dir)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl", "json", "lines"),
                   help="input format (default: from the extension; plain lines for .txt, other extensions and standard input)")
    p.add_argument("--text-column", default="text", help="column with the texts (CSV/JSONL input; default: text)")
    p.add_argument("--text-pair-column", help="column with the second texts of sentence pairs")
    p.add_argument("--batch-size", type=positive_int, help="texts per batch, length-sorted (default: the run's train.eval_batch_size)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="autocast for inference (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


