"""``nlp-transfer``: one command, its subcommands imported only when run.

    nlp-transfer train --config rotten_tomatoes/minilm-full train.epochs=1
    nlp-transfer predict runs/rt-minilm-full reviews.csv -o predictions.csv
    accelerate launch -m nlp_transfer train --config rotten_tomatoes/minilm-full   # several processes

``nlp-transfer --help`` lists the subcommands without importing any of them (no torch); ``nlp-transfer SUB
--help`` is the subcommand's own help. Every subcommand runs through :func:`run_cli`: a mistake a user can
fix prints one ``error:`` line and exits 2 (``--traceback`` shows the traceback).
"""

from __future__ import annotations

import difflib
import importlib
import sys

__all__ = ["COMMANDS", "main", "usage"]

# subcommand -> ("module:function", one-line description); modules are imported only to run them
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("nlp_transfer.cli.train:train_main", "train a classifier from a recipe (a shipped name or a YAML file)"),
    "predict": ("nlp_transfer.cli.predict:predict_main", "predictions of a saved run for texts in a file or on standard input"),
    "evaluate": ("nlp_transfer.cli.evaluate:evaluate_main", "score a saved run on labelled texts, with its mistakes"),
    "compare": ("nlp_transfer.cli.compare:compare_main", "several recipes on one dataset beside a TF-IDF baseline"),
    "curve": ("nlp_transfer.cli.curve:curve_main", "label-efficiency curves: accuracy against labels per class"),
    "select": ("nlp_transfer.cli.select:select_main", "rank checkpoints, layers and poolings by transferability [select]"),
    "adapt": ("nlp_transfer.cli.adapt:adapt_main", "continued pretraining of a recipe's checkpoint on unlabelled text"),
    "export": ("nlp_transfer.cli.export:export_main", "merge an adapter into the weights, or write ONNX [onnx]"),
    "serve": ("nlp_transfer.cli.serve:serve_main", "an HTTP server for a saved run, with dynamic batching [serve]"),
    "label-issues": ("nlp_transfer.cli.label_issues:label_issues_main", "suspect labels in a recipe's data [trust]"),
    "label": ("nlp_transfer.cli.label:label_main", "active learning: which texts to label next, with a person or simulated [active]"),
    "tune": ("nlp_transfer.cli.tune:tune_main", "hyperparameter search on Optuna: pruned, resumable, shared by workers [tune]"),
    "summarize": ("nlp_transfer.cli.summarize:summarize_main", "a table of finished runs beside the TF-IDF baseline"),
    "push": ("nlp_transfer.cli.push:push_main", "upload a saved run to the Hugging Face Hub"),
    "recipes": ("nlp_transfer.cli.recipes:recipes_main", "the shipped recipes and Accelerate configs; recipes copy NAME DEST"),
}


def _version() -> str:
    from nlp_transfer import __version__

    return __version__


def usage() -> str:
    """The top-level help: every subcommand with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: nlp-transfer [--version] COMMAND [ARGS ...] [--traceback]",
        "",
        "Transfer learning for text classification on Hugging Face checkpoints, trained with Accelerate.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()),
        "",
        "`nlp-transfer COMMAND --help` shows a command's options; [extra]: needs pip install 'nlp-transfer[extra]'.",
        "Several processes: accelerate launch [--config_file $(nlp-transfer recipes --accelerate NAME)] -m nlp_transfer train ...",
        "--traceback after any command shows the full Python traceback of an error.",
    ]
    return "\n".join(lines)


def _load(name: str):
    """The subcommand's main function, imported now."""
    module, _, function = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to a subcommand; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words = [a for a in argv if a != "--traceback"]
    if not words or words[0] in ("-h", "--help", "help"):
        if words[1:2] and words[0] == "help" and words[1] in COMMANDS:  # `nlp-transfer help train`
            return main([words[1], "--help"])
        print(usage())
        return 0 if words else 2
    if words[0] in ("-V", "--version"):
        print(f"nlp-transfer {_version()}")
        return 0
    name = words[0]
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'? " if near else ""
        print(f"error: '{name}' is not an nlp-transfer command; {hint}`nlp-transfer --help` lists them", file=sys.stderr)
        return 2
    fn = _load(name)
    from nlp_transfer.cli.common import run_cli

    rest = argv[argv.index(name) + 1 :]
    if "--traceback" in argv[: argv.index(name)]:
        rest.append("--traceback")
    return run_cli(fn, rest)
