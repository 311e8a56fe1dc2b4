"""MkDocs hooks: the recipe reference rendered from the schema, and the measured plots served from results/.

- ``<!-- recipe-reference -->`` in a page becomes one table per recipe section (key, type, default, meaning),
  read from the dataclasses in ``nlp_transfer/config/schema.py`` at build time, so the page cannot drift from
  the code. Only the config layer is imported (no torch): the build stays fast.
- Links and images that point into the repository's ``results/`` folder (``../../results/x.png`` from
  ``docs/results/``, as the make targets write them and as GitHub shows them) are served from a copy of
  ``results/`` under ``measured/`` in the site.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from pathlib import Path

import yaml
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
SITE_COPY = "measured"  # where results/ appears in the site
SERVED = {".png", ".svg", ".html", ".json"}  # pages stay in docs/: results/*.md are not served
MARKER = "<!-- recipe-reference -->"
LINK = re.compile(r"(\]\()([^)\s]+)(\))")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def on_files(files, config):
    """Add the plots, the explanations page and the JSON files of results/ under measured/."""
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in SERVED:
            uri = f"{SITE_COPY}/{path.relative_to(RESULTS).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, recipe_reference())
    return LINK.sub(lambda m: m.group(1) + _served(m.group(2), page, config) + m.group(3), markdown)


def _served(target: str, page, config) -> str:
    """A relative link into results/ rewritten to the site's copy; every other link unchanged."""
    if "://" in target or target.startswith(("#", "/", "mailto:")):
        return target
    path, _, anchor = target.partition("#")
    here = Path(page.file.abs_src_path).parent
    resolved = Path(os.path.normpath(here / path))
    if RESULTS not in resolved.parents:
        return target
    copy = Path(config["docs_dir"]) / SITE_COPY / resolved.relative_to(RESULTS)
    new = Path(os.path.relpath(copy, here)).as_posix()
    return new + (f"#{anchor}" if anchor else "")


# ---- the recipe reference ------------------------------------------------------------------------------------


def recipe_reference() -> str:
    """One Markdown table per section of RecipeConfig: every key, its type, default and help text."""
    from nlp_transfer.config import RecipeConfig

    hints = typing.get_type_hints(RecipeConfig)
    top, sections = [], []
    for f in dataclasses.fields(RecipeConfig):
        if dataclasses.is_dataclass(hints[f.name]):
            sections += _sections(hints[f.name], f.name)
        else:
            top.append(_row(f.name, f, hints[f.name]))
    out = ["## Top level", "", *_table(top)]
    for name, cls, rows in sections:
        doc = (cls.__doc__ or "").strip()
        out += ["", f"## `{name}`", ""]
        if doc and not doc.startswith(cls.__name__ + "("):  # dataclasses without a docstring get their signature
            out += [doc.splitlines()[0], ""]
        out += _table(rows)
    return "\n".join(out) + "\n"


def _sections(cls: type, prefix: str) -> list:
    """This section's rows, then its sub-sections' (transfer.peft after transfer)."""
    hints = typing.get_type_hints(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            nested += _sections(hints[f.name], f"{prefix}.{f.name}")
        else:
            rows.append(_row(f"{prefix}.{f.name}", f, hints[f.name]))
    return [(prefix, cls, rows)] + nested


def _row(key: str, f: dataclasses.Field, hint) -> tuple[str, str, str, str]:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return key, _type_name(hint), _yaml(default), f.metadata.get("help", "")


def _table(rows) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, help_text in rows:
        lines.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(help_text)} |")
    return lines


def _type_name(hint) -> str:
    if isinstance(hint, type) and not isinstance(hint, types.GenericAlias):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _yaml(value) -> str:
    """A default as it is written in a recipe (null, true, 3e-05, [a, b])."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
