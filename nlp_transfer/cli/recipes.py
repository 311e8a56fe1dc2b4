"""``nlp-transfer recipes``: the shipped recipes, one line each; ``recipes copy NAME DEST`` writes one to edit."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from nlp_transfer.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nlp-transfer recipes",
        description="The recipes shipped with nlp-transfer: name, data, checkpoint, transfer mode and what the recipe "
        "does. Any command that takes a recipe (train --config, adapt, curve, compare -r, select, label-issues) takes "
        "one of these names or a YAML file; `copy` writes a shipped recipe to a file to edit.",
        epilog="examples:\n"
        "  nlp-transfer recipes                                   # every recipe, one line each\n"
        "  nlp-transfer recipes rotten_tomatoes                   # those whose name contains 'rotten_tomatoes'\n"
        "  nlp-transfer recipes copy rotten_tomatoes/minilm-full my-recipe.yaml\n"
        "  nlp-transfer recipes --path rotten_tomatoes/minilm-full\n"
        "  accelerate launch --config_file $(nlp-transfer recipes --accelerate cpu) -m nlp_transfer train "
        "--config rotten_tomatoes/minilm-full\n"
        "  nlp-transfer recipes --accelerate                      # the Accelerate configs: name and path",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("words", nargs="*", metavar="FILTER | copy NAME DEST", help="show only names containing FILTER; or: copy NAME DEST")
    p.add_argument("--force", action="store_true", help="copy: replace DEST if it exists")
    p.add_argument("--path", action="store_true", help="print the file path of each recipe named (for scripts)")
    p.add_argument(
        "--accelerate",
        nargs="?",
        const="",
        metavar="NAME",
        help="the shipped Accelerate configs (name and path); with NAME only its path, for accelerate launch --config_file",
    )
    return p


def recipes_main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    from nlp_transfer.config import shipped

    if args.accelerate is not None:
        if args.accelerate:
            print(shipped.resolve_accelerate_config(args.accelerate))
        else:
            for name, path in shipped.accelerate_configs().items():
                print(f"{name:<16} {path}")
        return
    if args.words[:1] == ["copy"]:
        _copy(args.words[1:], args.force)
        return
    if args.path:
        if not args.words:
            raise ConfigError("--path: name the recipes, e.g. nlp-transfer recipes --path rotten_tomatoes/minilm-full")
        for name in args.words:
            print(shipped.resolve_recipe(name))
        return
    names = [n for n in shipped.recipe_names() if all(w in n for w in args.words)]
    if not names:
        raise ConfigError(f"no shipped recipe name contains {' and '.join(repr(w) for w in args.words)}; `nlp-transfer recipes` lists them")
    rows = [shipped.recipe_summary(n) for n in names]
    widths = {k: max(len(r[k]) for r in rows) for k in ("name", "data", "model", "mode")}
    for r in rows:
        print("  ".join(r[k].ljust(widths[k]) for k in ("name", "data", "model", "mode")) + "  " + r["description"])


def _copy(words: list[str], force: bool) -> None:
    from nlp_transfer.config import shipped

    if len(words) != 2:
        raise ConfigError("usage: nlp-transfer recipes copy NAME DEST (e.g. copy rotten_tomatoes/minilm-full my-recipe.yaml)")
    name, dest = words
    src = shipped.shipped_recipe(name)
    if src is None:
        raise ConfigError(shipped.missing_recipe_message(name, files=False))
    out = Path(dest)
    if out.is_dir() or dest.endswith(("/", "\\")):
        out = out / src.name
    if out.exists() and not force:
        raise ConfigError(f"'{out}' exists; choose another DEST or add --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    print(f"wrote {out}: edit it, then nlp-transfer train --config {out}", file=sys.stderr)
