"""Command-line front ends behind ``scripts/*.py``: thin argparse layers over the library.

Errors a user can fix print one ``error:`` line and exit 2 (:func:`run_cli`). Nothing heavy
is imported before the arguments are parsed, so ``--help`` and recipe errors are instant.
"""

from nlp_transfer.cli.adapt import adapt_main
from nlp_transfer.cli.common import run_cli, setup_logging
from nlp_transfer.cli.compare import compare_main
from nlp_transfer.cli.curve import curve_main
from nlp_transfer.cli.evaluate import evaluate_main
from nlp_transfer.cli.export import export_main
from nlp_transfer.cli.label_issues import label_issues_main
from nlp_transfer.cli.predict import predict_main
from nlp_transfer.cli.select import select_main
from nlp_transfer.cli.serve import serve_main
from nlp_transfer.cli.summarize import summarize_main
from nlp_transfer.cli.train import train_main
from nlp_transfer.cli.tune import tune_main

__all__ = [
    "run_cli",
    "setup_logging",
    "train_main",
    "predict_main",
    "evaluate_main",
    "summarize_main",
    "compare_main",
    "curve_main",
    "export_main",
    "select_main",
    "adapt_main",
    "label_issues_main",
    "serve_main",
    "tune_main",
]
