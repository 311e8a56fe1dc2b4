"""The recipes and Accelerate configs shipped with the package, found by name.

    resolve_recipe("rotten_tomatoes/minilm-full")   # -> .../rotten_tomatoes/minilm-full.yaml
    resolve_recipe("my-recipe.yaml")                # an existing file wins over a shipped name

An installed wheel carries them in ``nlp_transfer/_recipes``; a checkout (and an editable install)
reads the top-level ``recipes/`` folder. A name is ``dataset/recipe``, with or without ``.yaml``,
and with or without a leading ``recipes/`` (so recipes that refer to others by their repository
path, e.g. ``adapt.source: recipes/tweet_sentiment/minilm-full-posneg.yaml``, work from any folder).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from nlp_transfer.errors import ConfigError

__all__ = [
    "shipped_dir",
    "recipe_names",
    "find_recipe",
    "shipped_recipe",
    "missing_recipe_message",
    "resolve_recipe",
    "nearest_recipes",
    "accelerate_configs",
    "resolve_accelerate_config",
    "recipe_summary",
    "space_names",
    "resolve_space",
]

ACCELERATE = "accelerate"  # the folder of Accelerate configs beside the dataset folders
SPACES = "spaces"  # the folder of tune's search spaces
_SUFFIXES = (".yaml", ".yml")


def shipped_dir() -> Path:
    """The folder of shipped recipes: the installed package's ``_recipes``, else the checkout's ``recipes/``."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_recipes"
    return installed if installed.is_dir() else package.parent / "recipes"


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def recipe_names() -> list[str]:
    """Every shipped recipe as ``dataset/recipe``, sorted (the Accelerate configs are not recipes)."""
    root = shipped_dir()
    if not root.is_dir():
        return []
    files = [p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.relative_to(root).parts[0] not in (ACCELERATE, SPACES)]
    return sorted(_name(p, root) for p in files)


def _normalise(text: str) -> str:
    name = str(text).replace("\\", "/").removeprefix("./").removeprefix("recipes/")
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def find_recipe(text: str | Path) -> Path | None:
    """``text`` as a recipe file: an existing file, else the shipped recipe of that name; None when neither."""
    path = Path(text).expanduser()
    return path if path.is_file() else shipped_recipe(str(text))


def shipped_recipe(text: str) -> Path | None:
    """The shipped recipe named ``text`` (``dataset/recipe``, ``.yaml`` and ``recipes/`` optional), or None."""
    name = _normalise(str(text))
    if not name or name.startswith(ACCELERATE + "/") or Path(name).is_absolute():
        return None
    for suffix in _SUFFIXES:
        candidate = shipped_dir() / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def nearest_recipes(text: str, n: int = 3) -> list[str]:
    """Shipped names close to ``text`` (the whole name first, then the part after the dataset)."""
    names, name = recipe_names(), _normalise(str(text))
    near = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if len(near) < n:
        tail = name.rsplit("/", 1)[-1]
        by_tail = difflib.get_close_matches(tail, [x.rsplit("/", 1)[-1] for x in names], n=n, cutoff=0.6)
        near += [x for x in names if x.rsplit("/", 1)[-1] in by_tail and x not in near]
    return near[:n]


def missing_recipe_message(text: str, files: bool = True) -> str:
    """One line: ``text`` is neither a file (``files``) nor a shipped name, with the nearest names."""
    near = nearest_recipes(text)
    hint = f"nearest: {', '.join(near)}" if near else f"{len(recipe_names())} are shipped"
    if not files:
        return f"no shipped recipe is named '{text}' ({hint}); `nlp-transfer recipes` lists them"
    return (
        f"recipe file '{text}' does not exist and is not a shipped recipe name ({hint}); "
        "pass a YAML file or a name that `nlp-transfer recipes` lists"
    )


def resolve_recipe(text: str | Path) -> Path:
    """:func:`find_recipe`, or a :class:`ConfigError` naming the nearest shipped recipes."""
    path = find_recipe(text)
    if path is None:
        raise ConfigError(missing_recipe_message(str(text)))
    return path


def accelerate_configs() -> dict[str, Path]:
    """The shipped Accelerate configs by name (``cpu``, ``multi-gpu``, ...)."""
    folder = shipped_dir() / ACCELERATE
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in _SUFFIXES}


def resolve_accelerate_config(text: str) -> Path:
    """The shipped Accelerate config ``text`` (``cpu``, ``accelerate/cpu.yaml``, ...)."""
    configs = accelerate_configs()
    name = _normalise(text).removeprefix(ACCELERATE + "/")
    if name in configs:
        return configs[name]
    near = difflib.get_close_matches(name, list(configs), n=3, cutoff=0.4)
    raise ConfigError(f"no shipped Accelerate config '{text}'; the shipped ones: {', '.join(near or configs)}")


def _description(lines: list[str]) -> str:
    """The header comment's first sentence (its ``Launch:`` lines left out)."""
    words = []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("Launch:") or (words and text.startswith("--")) or text.startswith("accelerate launch"):
            break
        words.append(text)
    header = re.sub(r"\s*\([^()]*\)", "", " ".join(w for w in words if w))  # asides in parentheses left out
    first = re.split(r"\.\s+(?=[A-Z])", header)[0].rstrip(".")
    return first if len(first) <= 100 else first[:97].rstrip(" ,;:") + "..."


def recipe_summary(name: str) -> dict:
    """name, data (dataset or file, with its task when set), model, mode and description of a shipped recipe."""
    path = resolve_recipe(name)
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    data, model, transfer = raw.get("data") or {}, raw.get("model") or {}, raw.get("transfer") or {}
    source = data.get("source") or data.get("train_file") or "?"
    if data.get("task"):
        source += f" ({data['task']})"
    mode = transfer.get("mode", "full")
    if model.get("head") == "logreg" and mode == "feature_extraction":
        mode = "logreg"
    if raw.get("adapt"):
        mode = "adapt (" + str((raw["adapt"] or {}).get("objective", "mlm")) + ")"
    return {
        "name": _normalise(name),
        "data": source,
        "model": str(model.get("name_or_path", "?")),
        "mode": mode,
        "description": _description(text.splitlines()),
    }


def space_names() -> list[str]:
    """Every shipped search space of ``tune`` (``spaces/NAME.yaml``), by NAME."""
    root = shipped_dir() / SPACES
    return sorted(p.stem for p in root.glob("*") if p.suffix in _SUFFIXES) if root.is_dir() else []


def resolve_space(text: str | Path) -> Path:
    """A search-space file: an existing file, else a shipped space by name (``rt-minilm-modes``, ``spaces/...``)."""
    if Path(text).is_file():
        return Path(text)
    name = _normalise(str(text)).removeprefix(f"{SPACES}/")
    name = name[: -len(Path(name).suffix)] if Path(name).suffix in _SUFFIXES else name
    for suffix in _SUFFIXES:
        path = shipped_dir() / SPACES / f"{name}{suffix}"
        if path.is_file():
            return path
    names = space_names()
    near = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else (f"; shipped spaces: {', '.join(names)}" if names else "")
    raise ConfigError(f"search space: '{text}' is neither a file nor a shipped space{hint}")
