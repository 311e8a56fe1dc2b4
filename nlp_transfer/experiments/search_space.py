"""The search space of ``tune``: a distribution per recipe key, read from YAML and checked against the schema.

    transfer.mode: {type: categorical, choices: [feature_extraction, partial, lora, full]}
    train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
    transfer.unfreeze_top: {type: int, low: 1, high: 6, when: {transfer.mode: partial}}
    model.head: {type: categorical, choices: [linear, logreg], when: {transfer.mode: feature_extraction}}

Every key is a recipe key (``section.key`` as in an override); ``type`` is ``float`` (``low``, ``high``,
optional ``log`` or ``step``), ``int`` (``low``, ``high``, optional ``step`` or ``log``) or ``categorical``
(``choices``: numbers, strings, booleans or null). ``when: {key: value}`` (or ``{key: [values]}``) samples the
key only where the trial's recipe has that value (a key sampled earlier in the file, or the recipe's own).
A key may map to a list of distributions, each with its own ``when``: one range per transfer mode, say

    train.lr:
      - {type: float, low: 1.0e-5, high: 2.0e-4, log: true, when: {transfer.mode: full}}
      - {type: float, low: 1.0e-4, high: 5.0e-3, log: true, when: {transfer.mode: lora}}

Optuna then sees one parameter per alternative (``train.lr|full``, ``train.lr|lora``), so each mode's values
are modelled apart; the first alternative whose condition holds is sampled.
Without a space file, :data:`DEFAULT_SPACES` gives one per transfer mode.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlp_transfer.config import (
    ACTIVATIONS,
    AGGREGATES,
    HEADS,
    LOSSES,
    POOLINGS,
    PRECISIONS,
    SAMPLERS,
    TRANSFER_MODES,
    TRUNCATIONS,
    RecipeConfig,
)
from nlp_transfer.config.parsing import coerce_value, key_type
from nlp_transfer.errors import ConfigError

TYPES = ("float", "int", "categorical")
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "when"}
# Keys whose values are names from a fixed list: a categorical choice outside it is caught before any trial.
NAMED_CHOICES = {
    "transfer.mode": TRANSFER_MODES,
    "model.head": HEADS,
    "model.pooling": POOLINGS,
    "model.head_activation": ACTIVATIONS,
    "model.truncation": TRUNCATIONS,
    "model.chunk_aggregate": AGGREGATES,
    "train.mixed_precision": PRECISIONS,
    "train.sampler": SAMPLERS,
    "train.loss": LOSSES,
}
# What the search optimises or where it writes: not searchable.
FIXED = ("train.metric_for_best", "output.dir", "output.overwrite", "output.checkpoint_dir", "train.resume", "name")

_LR_FULL = {"type": "float", "low": 1.0e-5, "high": 2.0e-4, "log": True}
_DECAY = {"type": "float", "low": 0.0, "high": 0.1}
DEFAULT_SPACES: dict[str, dict[str, dict]] = {
    # model.head=logreg: the probe's C (the recipe's logreg_c=null would search 0.01..100 itself)
    "feature_extraction/logreg": {"model.logreg_c": {"type": "float", "low": 1.0e-3, "high": 1.0e2, "log": True}},
    "feature_extraction": {
        "train.lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
        "train.weight_decay": _DECAY,
        "model.head_dropout": {"type": "float", "low": 0.0, "high": 0.3},
    },
    "full": {
        "train.lr": _LR_FULL,
        "train.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "train.weight_decay": _DECAY,
        "transfer.layerwise_lr_decay": {"type": "float", "low": 0.7, "high": 1.0},
    },
    "partial": {
        "train.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True},
        "transfer.unfreeze_top": {"type": "int", "low": 1, "high": 4},
        "train.weight_decay": _DECAY,
    },
    "gradual": {
        "train.lr": _LR_FULL,
        "transfer.unfreeze_every": {"type": "int", "low": 1, "high": 2},
        "transfer.layerwise_lr_decay": {"type": "float", "low": 0.7, "high": 1.0},
    },
    "bitfit": {"train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}},
    "lora": {
        "train.lr": {"type": "float", "low": 1.0e-4, "high": 5.0e-3, "log": True},
        "transfer.peft.r": {"type": "categorical", "choices": [4, 8, 16, 32]},
        "transfer.peft.alpha": {"type": "categorical", "choices": [8, 16, 32, 64]},
        "transfer.peft.dropout": {"type": "float", "low": 0.0, "high": 0.2},
    },
    "ia3": {"train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True}},
    "prompt_tuning": {
        "train.lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True},
        "transfer.peft.num_virtual_tokens": {"type": "int", "low": 5, "high": 50},
    },
    "setfit": {
        "train.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-4, "log": True},
        "transfer.setfit.num_iterations": {"type": "int", "low": 5, "high": 40},
    },
}
DEFAULT_SPACES["dora"] = DEFAULT_SPACES["lora"]


@dataclass
class Param:
    """One searched key: its distribution and the condition under which it is sampled."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list | None = None
    when: dict[str, list] = field(default_factory=dict)
    name: str = ""  # Optuna's name: the key, or key|condition for one of several alternatives

    def __post_init__(self) -> None:
        self.name = self.name or self.key

    def applies(self, values: dict[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def sample(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, self.choices)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, **({"log": True} if self.log else {}), **({"step": self.step} if self.step else {}))
        if self.when:
            out["when"] = {k: v[0] if len(v) == 1 else v for k, v in self.when.items()}
        return out


def _error(msg: str) -> ConfigError:
    return ConfigError(f"search space: {msg}")


def recipe_value(cfg_dict: dict, key: str) -> Any:
    node: Any = cfg_dict
    for part in key.split("."):
        node = node[part]
    return node


def set_value(cfg_dict: dict, key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = cfg_dict
    for part in path:
        node = node[part]
    node[last] = value


def _known_key(key: str) -> Any:
    try:
        return key_type(RecipeConfig, key)
    except ConfigError as e:
        raise _error(str(e)) from None


def _bases(t: Any) -> set:
    """The non-null types a field accepts (``float | None`` -> {float})."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return {typing.get_origin(a) or a for a in typing.get_args(t) if a is not type(None)}
    return {typing.get_origin(t) or t}


def _number(spec: dict, name: str, key: str, integer: bool) -> float | int:
    v = spec.get(name)
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, str) and not integer:  # YAML reads 1e-5 (no dot) as a string
        try:
            v, ok = float(v), True
        except ValueError:
            ok = False
    if isinstance(v, bool) or not ok:
        raise _error(f"{key}: '{name}' must be {'an integer' if integer else 'a number'} for type {spec['type']} (got {v!r})")
    return v


def parse_param(key: str, spec: Any, earlier: list[str]) -> Param:
    """One entry of the space file, checked: the key, the fields, the bounds, the type against the key's."""
    t = _known_key(key)
    if key in FIXED:
        raise _error(f"{key} cannot be searched (the search sets or optimises it); remove it from the space")
    if not isinstance(spec, dict):
        raise _error(f"{key} must map to a distribution such as {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        bad = sorted(unknown)[0]
        near = difflib.get_close_matches(bad, sorted(SPEC_KEYS), n=1)
        raise _error(
            f"{key}: unknown field '{bad}'{f' (did you mean {near[0]!r}?)' if near else ''}; fields: {', '.join(sorted(SPEC_KEYS))}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise _error(f"{key}: type {kind!r} is not one of {', '.join(TYPES)}")
    bases = _bases(t)
    p = Param(key, kind, when=_parse_when(key, spec.get("when"), earlier))
    if kind == "categorical":
        p.choices = _parse_choices(key, spec.get("choices"), t)
        return p
    if kind == "float" and float not in bases:
        raise _error(f"{key} holds {_type_words(bases)}, not a float; use type int or categorical")
    if kind == "int" and not bases & {int, float}:
        raise _error(f"{key} holds {_type_words(bases)}, not a number; use type categorical")
    if "choices" in spec:
        raise _error(f"{key}: 'choices' belongs to type categorical; a {kind} range takes low and high")
    p.low, p.high = _number(spec, "low", key, kind == "int"), _number(spec, "high", key, kind == "int")
    p.log, p.step = bool(spec.get("log", False)), spec.get("step")
    if p.low >= p.high:
        raise _error(f"{key}: low ({p.low}) must be below high ({p.high})")
    if p.log and p.low <= 0:
        raise _error(f"{key}: a log range needs low > 0 (got {p.low})")
    if p.step is not None:
        p.step = _number(spec, "step", key, kind == "int")
        if p.step <= 0 or p.log:
            raise _error(f"{key}: step must be positive and cannot be combined with log")
    for bound in (p.low, p.high):
        coerce_value(bound, t, key)
    return p


def _type_words(bases: set) -> str:
    return " or ".join(sorted(getattr(b, "__name__", str(b)) for b in bases))


def _parse_choices(key: str, choices: Any, t: Any) -> list:
    if not isinstance(choices, list) or not choices:
        raise _error(f"{key}: type categorical needs a non-empty list of choices")
    for c in choices:
        if c is not None and not isinstance(c, (bool, int, float, str)):
            raise _error(f"{key}: choice {c!r} must be a number, a string, a boolean or null")
        try:
            coerce_value(c, t, key)
        except ConfigError:
            raise _error(f"{key}: choice {c!r} does not fit the key, which holds {_type_words(_bases(t))}") from None
        named = NAMED_CHOICES.get(key)
        if named is not None and c not in named:
            near = difflib.get_close_matches(str(c), named, n=1)
            raise _error(
                f"{key}: choice {c!r} is not valid{f' (did you mean {near[0]!r}?)' if near else ''}; choose from {', '.join(named)}"
            )
    if len(set(map(repr, choices))) != len(choices):
        raise _error(f"{key}: a choice is listed twice")
    return list(choices)


def _parse_when(key: str, when: Any, earlier: list[str]) -> dict[str, list]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise _error(f"{key}: 'when' must map recipe keys to values, e.g. when: {{transfer.mode: partial}}")
    out = {}
    for k, v in when.items():
        _known_key(k)
        if k == key:
            raise _error(f"{key}: 'when' cannot depend on the key itself")
        out[k] = list(v) if isinstance(v, list) else [v]
    return out


def _alternative_name(key: str, when: dict[str, list]) -> str:
    return key + "|" + ";".join(",".join(map(str, v)) for v in when.values())


def parse_space(raw: Any, source: str = "the space") -> list[Param]:
    """Every entry of a space mapping, in order; a condition on a searched key must come after that key.
    A key that maps to a list gives one :class:`Param` per alternative, each named ``key|condition``."""
    if not isinstance(raw, dict) or not raw:
        raise _error(f"{source} must be a non-empty mapping of recipe keys to distributions")
    params: list[Param] = []
    for key, spec in raw.items():
        key = str(key)
        specs = spec if isinstance(spec, list) else [spec]
        if not specs:
            raise _error(f"{key}: an empty list; give a distribution, or a list of them each with its own 'when'")
        alternatives = [parse_param(key, one, [q.key for q in params]) for one in specs]
        if len(alternatives) > 1:
            for p in alternatives:
                if not p.when:
                    raise _error(f"{key}: each of several distributions needs its own 'when' (which trials it is for)")
                p.name = _alternative_name(key, p.when)
            names = [p.name for p in alternatives]
            if len(set(names)) != len(names):
                raise _error(f"{key}: two distributions have the same 'when'; give each alternative its own condition")
        for p in alternatives:
            later = [k for k in p.when if k in raw and k not in [q.key for q in params]]
            if later:
                raise _error(f"{key}: its condition on {later[0]} must come after {later[0]} in {source}")
        params.extend(alternatives)
    return params


def load_space(path: str | Path) -> list[Param]:
    path = Path(path)
    if not path.is_file():
        raise _error(f"file '{path}' does not exist; pass an existing YAML file to --space")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise _error(f"'{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_space(raw, f"'{path}'")


def resolve_space(text: str | Path) -> Path:
    """``--space``: a YAML file, or the name of a space shipped with the recipes (``spaces/NAME.yaml``)."""
    from nlp_transfer.config.shipped import resolve_space as shipped

    return shipped(text)


def default_space(cfg: RecipeConfig) -> list[Param]:
    """The documented space of the recipe's transfer mode (:data:`DEFAULT_SPACES`)."""
    mode = cfg.transfer.mode
    name = "feature_extraction/logreg" if mode == "feature_extraction" and cfg.model.head == "logreg" else mode
    if name not in DEFAULT_SPACES:
        raise ConfigError(f"transfer.mode={mode} trains nothing to tune; pass a space file with --space")
    return parse_space(DEFAULT_SPACES[name], f"the default space of {name}")


def sample(trial, params: list[Param], base: dict) -> dict[str, Any]:
    """The trial's values: each param whose condition holds, in order; conditions read earlier values, else the recipe."""
    values: dict[str, Any] = {}

    def current(k: str) -> Any:
        return values[k] if k in values else recipe_value(base, k)

    for p in params:
        if p.key not in values and p.applies({k: current(k) for k in p.when}):
            values[p.key] = p.sample(trial)
    return values


def recipe_values(params: list[Param], optuna_params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna parameters as recipe keys (``train.lr|full`` -> ``train.lr``)."""
    key_of = {p.name: p.key for p in params}
    return {key_of.get(name, name): v for name, v in optuna_params.items()}


def space_yaml(params: list[Param]) -> str:
    out: dict[str, Any] = {}
    for p in params:
        if p.name == p.key:
            out[p.key] = p.to_dict()
        else:
            out.setdefault(p.key, []).append(p.to_dict())
    return yaml.safe_dump(out, sort_keys=False)
