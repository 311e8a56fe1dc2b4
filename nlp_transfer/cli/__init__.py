"""Command-line front ends of ``nlp-transfer`` (and ``scripts/*.py``): thin argparse layers over the library.

Errors a user can fix print one ``error:`` line and exit 2 (:func:`run_cli`). Nothing heavy is imported
before the arguments are parsed, so ``--help`` and recipe errors are instant; the subcommands' modules are
imported on first use (PEP 562), so ``nlp-transfer --help`` imports none of them.
"""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS = {
    "run_cli": "nlp_transfer.cli.common",
    "setup_logging": "nlp_transfer.cli.common",
    "main": "nlp_transfer.cli.main",
    "train_main": "nlp_transfer.cli.train",
    "predict_main": "nlp_transfer.cli.predict",
    "evaluate_main": "nlp_transfer.cli.evaluate",
    "summarize_main": "nlp_transfer.cli.summarize",
    "compare_main": "nlp_transfer.cli.compare",
    "curve_main": "nlp_transfer.cli.curve",
    "export_main": "nlp_transfer.cli.export",
    "select_main": "nlp_transfer.cli.select",
    "adapt_main": "nlp_transfer.cli.adapt",
    "label_issues_main": "nlp_transfer.cli.label_issues",
    "serve_main": "nlp_transfer.cli.serve",
    "recipes_main": "nlp_transfer.cli.recipes",
    "push_main": "nlp_transfer.cli.push",
    "tune_main": "nlp_transfer.cli.tune",
    "label_main": "nlp_transfer.cli.label",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nlp_transfer.cli' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
