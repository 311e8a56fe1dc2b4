"""What every command-line tool shares: one ``error:`` line and exit code 2 for a user's mistake."""

from __future__ import annotations

import argparse
import os
import sys

from nlp_transfer.errors import NLPTransferError
from nlp_transfer.utils.distributed import close_process_group, exit_rank, launched_rank, watch_rank
from nlp_transfer.utils.environment import apply_env_threads
from nlp_transfer.utils.logs import setup_logging

__all__ = [
    "run_cli",
    "setup_logging",
    "positive_int",
    "add_run_arguments",
    "add_output_arguments",
    "publish",
    "add_recipe_arguments",
    "RECIPE_HELP",
    "recipe_from_arguments",
]


RECIPE_HELP = "a shipped recipe's name (e.g. rotten_tomatoes/minilm-full; `nlp-transfer recipes` lists them) or a recipe YAML file"


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)``; turn :class:`NLPTransferError` into ``error: ...`` and exit code 2.

    ``--traceback`` (or NLP_TRANSFER_TRACEBACK=1) shows the full traceback instead. One process of a
    multi-process launch that finished its work leaves here, with its peers (:func:`exit_rank`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv or os.environ.get("NLP_TRANSFER_TRACEBACK") == "1"
    argv = [a for a in argv if a != "--traceback"]
    watch_rank()
    try:
        apply_env_threads()
        main(argv)
        close_process_group()  # a multi-process command: every rank together, before the exit
        if launched_rank():
            exit_rank(0)
        return 0
    except NLPTransferError as e:
        if show_tb:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`nlp-transfer recipes | head`): stop quietly. Point stdout at devnull so that
        # Python's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return int(text)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by nlp-transfer train (its output.dir)")
    p.add_argument(
        "--format",
        choices=("csv", "tsv", "jsonl", "json", "parquet", "lines"),
        help="input format (default: from the extension; plain lines for .txt, other extensions and standard input)",
    )
    p.add_argument("--text-column", default="text", help="column with the texts (CSV/JSONL input; default: text)")
    p.add_argument("--text-pair-column", help="column with the second texts of sentence pairs")
    p.add_argument("--batch-size", type=positive_int, help="texts per batch, length-sorted (default: the run's train.eval_batch_size)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--precision", choices=("no", "bf16", "fp16"), help="autocast for inference (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """--config RECIPE, section.key=value overrides, --print-config, --no-progress and --resume (train.py, adapt.py)."""
    p.add_argument("--config", required=True, help=RECIPE_HELP)
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue an interrupted run from its newest checkpoint (or the step-NNNNNNNN folder given), "
        "with the same recipe and overrides; same as train.resume=latest. Checkpoints are written with "
        "train.save_checkpoints=true or train.save_every_steps=N into output.checkpoint_dir "
        "(default: <output.dir>.checkpoints)",
    )


def recipe_from_arguments(args):
    """The recipe :func:`add_recipe_arguments` describes; None after printing it (--print-config)."""
    from nlp_transfer.config import RecipeConfig

    if args.resume and "=" in args.resume:  # `--resume train.lr=...`: an override, not a checkpoint
        args.overrides.append(args.resume)
        args.resume = "latest"
    cfg = RecipeConfig.from_yaml(args.config, args.overrides + ([f"train.resume={args.resume}"] if args.resume else []))
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return None
    return cfg


def add_output_arguments(p: argparse.ArgumentParser, section: str, out_help: str = "also write the Markdown table to this file") -> None:
    """--out, --readme, --section and --command: where a results table goes, and the command printed under it."""
    p.add_argument("--out", help=out_help)
    p.add_argument("--readme", help="also replace the <!-- results:SECTION --> block of this file")
    p.add_argument("--section", default=section, help=f"README block name (default: {section})")
    p.add_argument("--command", help="the command to print under the table (default: this invocation)")


def publish(table: str, args, command: str, argv: list[str], plot=None) -> str:
    """The table with the command that produced it: printed, and written to --out (the plot beside it, same
    name .png) and into --readme's block; returns the text."""
    import shlex
    import shutil
    from pathlib import Path

    command = args.command or f"nlp-transfer {command} " + " ".join(shlex.quote(a) for a in argv)
    text = f"{table}\n\nProduced by: `{command}`\n"
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if plot is not None:
            shutil.copyfile(plot, out.with_suffix(".png"))
        out.write_text(text)
    if args.readme:
        from nlp_transfer.reporting.tables import update_readme

        update_readme(args.readme, args.section, text)
    return text
