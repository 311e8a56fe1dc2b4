"""Typed construction of nested dataclasses from YAML data, and ``section.key=value`` overrides.

Generic over the schema: :func:`build` takes the root dataclass, so this module knows nothing
of recipes (the schema imports it, not the other way round).

Hand-written, not a library, because the two candidates lose what recipes promise. Tried in
a scratch environment: OmegaConf 2.4.0 structured configs refuse ``train.class_weights=[1, 2]``
for the field type ``Optional[Union[str, list[float]]]`` ("ListConfig is incompatible with
type hint"), refuse ``train.epochs=3.0`` for an int, and read ``yes`` as true; their errors
span several lines and suggest near keys only within a section. jsonargparse parses
``--train.lr 3e-5`` flags, not the documented positional ``section.key=value``. Here: YAML
scalars typed by the field, whole floats accepted for ints, one-line messages naming the
nearest key across sections (``train.pooling`` -> ``model.pooling``), and the ``--help``
listing, in about 150 lines.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Union

import yaml

from nlp_transfer.errors import ConfigError


# ---- overrides ------------------------------------------------------------------------
def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Merge ``section.key=value`` strings into a nested dict (a copy)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value (e.g. train.lr=3e-5)")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts) or (len(parts) == 1 and parts[0] != "name"):
            raise ConfigError(f"override '{item}' needs a dotted key such as train.lr (or name=...)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def merge_sections(root: type, raw: dict, sections: dict[str, Any]) -> dict:
    """Merge keyword sections (``train={"lr": 3e-5}``, ``transfer={"peft": {"r": 4}}``, ``name="x"``) into a
    nested dict (a copy): a mapping given for a section of ``root`` updates that section key by key, recursively;
    anything else (a scalar, a list, a mapping for a dict-valued field such as ``data.label_map``) replaces the
    value. Nothing is checked here: :func:`build` then validates the result as it validates string overrides."""
    out = copy.deepcopy(raw)
    hints = typing.get_type_hints(root) if dataclasses.is_dataclass(root) else {}
    for key, value in sections.items():
        t = hints.get(key)
        if t is not None and dataclasses.is_dataclass(t) and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(t, out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ---- typed construction ---------------------------------------------------------------
def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += _all_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def build(root: type, raw: Any) -> Any:
    """An instance of dataclass ``root`` from nested mappings; every field typed and validated."""
    return _build(root, raw, "", root)


def _build(cls: type, raw: Any, prefix: str, root: type) -> Any:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            full = prefix + str(key)
            near = _suggest(prefix, str(key), names, root)
            hint = f"; did you mean '{near}'?" if near else f"; valid keys in {where}: {', '.join(sorted(names))}"
            raise ConfigError(f"unknown config key '{full}'{hint}")
        t = hints[key]
        if dataclasses.is_dataclass(t):
            kwargs[key] = _build(t, value or {}, f"{prefix}{key}.", root)
        else:
            kwargs[key] = _coerce(value, t, prefix + key)
    return cls(**kwargs)


def _suggest(prefix: str, key: str, names: set[str], root: type) -> str | None:
    """The valid key nearest to an unknown one: a close name in the same section (train.lrr ->
    train.lr), else the same or a close name in another section (train.pooling -> model.pooling)."""
    near = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    if near:
        return prefix + near[0]
    by_name = {k.rsplit(".", 1)[-1]: k for k in reversed(_all_keys(root))}
    near = difflib.get_close_matches(key, list(by_name), n=1, cutoff=0.8)
    return by_name[near[0]] if near else None


def _type_name(t: Any) -> str:
    args = typing.get_args(t)
    if typing.get_origin(t) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if typing.get_origin(t) is list:
        return f"a list of {_type_name(typing.get_args(t)[0])}"
    if typing.get_origin(t) is dict:
        return "a mapping"
    return getattr(t, "__name__", str(t))


def _coerce(value: Any, t: Any, key: str) -> Any:
    origin = typing.get_origin(t)
    if origin in (Union, types.UnionType):
        args = typing.get_args(t)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(t)}")
    if origin is dict:
        kt, vt = typing.get_args(t)
        if isinstance(value, dict):
            return {_coerce(k, kt, f"{key} key"): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
        raise ConfigError(f"{key}={value!r} has the wrong type; expected a mapping such as {{name: value}}")
    if origin is list:
        (item,) = typing.get_args(t)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        raise ConfigError(f"{key}={value!r} has the wrong type; expected a list of {_type_name(item)}")
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif t is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - every field type is listed above
        return value
    raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(t)}")


def describe_fields(root: type) -> str:
    """Every key of dataclass ``root`` with its default and help text (for ``--help``)."""
    lines = []
    hints = typing.get_type_hints(root)
    for section in dataclasses.fields(root):
        sec_type = hints[section.name]
        if not dataclasses.is_dataclass(sec_type):
            lines.append(f"  {section.name} = {section.default!r}: {section.metadata.get('help', '')}")
            continue
        lines += _describe_section(sec_type, section.name)
    return "\n".join(lines)


def _describe_section(cls: type, prefix: str) -> list[str]:
    lines, nested = [f"  [{prefix}]"], []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):  # a sub-section (transfer.peft): listed after its parent's keys
            nested.append((hints[f.name], f"{prefix}.{f.name}"))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"    {prefix}.{f.name} = {default!r}: {f.metadata.get('help', '')}")
    for sub, name in nested:
        lines += _describe_section(sub, name)
    return lines


# ---- single keys ----------------------------------------------------------------------
def key_type(root: type, key: str) -> Any:
    """The type of dotted ``key`` (``train.lr``) in dataclass ``root``; :class:`ConfigError` naming the nearest
    key when there is none, or when ``key`` names a section rather than a value."""
    parts, cls, prefix = key.split("."), root, ""
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            near = _suggest(prefix, part, names, root) if all(parts) else None
            hint = f"; did you mean '{near}'?" if near else ""
            raise ConfigError(f"'{key}' is not a recipe key{hint}")
        t = typing.get_type_hints(cls)[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(t):
            if last:
                raise ConfigError(
                    f"'{key}' is a section of the recipe, not a key; name one of its keys (e.g. {key}.{dataclasses.fields(t)[0].name})"
                )
            cls, prefix = t, f"{prefix}{part}."
        elif not last:
            raise ConfigError(f"'{key}' is not a recipe key: '{prefix}{part}' is a value, not a section")
        else:
            return t
    raise ConfigError(f"'{key}' is not a recipe key")  # pragma: no cover - the loop returns or raises


def coerce_value(value: Any, t: Any, key: str) -> Any:
    """``value`` as the type ``t`` of recipe key ``key`` (as a YAML recipe or an override would give it)."""
    return _coerce(value, t, key)
