"""Recipes: YAML loading, dotted overrides, validation messages, and every shipped recipe."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from nlp_transfer.config import (
    DataConfig,
    ModelConfig,
    RecipeConfig,
    TrainConfig,
    TransferConfig,
    apply_overrides,
    describe_recipe,
)
from nlp_transfer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ACCELERATE = RECIPES / "accelerate"

FULL_RECIPE = """\
name: tiny-full
model:
  name_or_path: minilm
  pooling: mean
  head: mlp
  head_hidden_size: 64
  head_dropout: 0.2
  max_length: 64
  num_labels: 3
data:
  source: data/train.csv
  text_column: sentence
  label_column: y
  validation_fraction: 0.2
  test_fraction: 0.15
  split_seed: 7
transfer:
  mode: partial
  unfreeze_top: 3
  layerwise_lr_decay: 0.9
  l2sp: 0.01
train:
  epochs: 4
  batch_size: 16
  lr: 2.0e-5
  head_lr: 1.0e-3
  mixed_precision: "no"
  metric_for_best: accuracy
  group_by_length: false
output:
  dir: runs/tiny
  overwrite: true
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def all_recipe_keys(cls=RecipeConfig, prefix: str = "") -> list[str]:
    """Every recipe key as ``section.field`` (``name`` for top-level scalars; sub-sections such as
    ``transfer.peft.r`` in full), from the dataclasses."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        keys += all_recipe_keys(t, f"{prefix}{f.name}.") if dataclasses.is_dataclass(t) else [prefix + f.name]
    return keys


# ---- loading ------------------------------------------------------------------------
def test_from_yaml_reads_every_section(tmp_path):
    cfg = RecipeConfig.from_yaml(write(tmp_path, FULL_RECIPE))
    assert cfg.name == "tiny-full"
    assert cfg.model == ModelConfig(
        name_or_path="minilm", pooling="mean", head="mlp", head_hidden_size=64, head_dropout=0.2, max_length=64, num_labels=3
    )
    assert (cfg.data.source, cfg.data.text_column, cfg.data.label_column) == ("data/train.csv", "sentence", "y")
    assert (cfg.data.validation_fraction, cfg.data.test_fraction, cfg.data.split_seed) == (0.2, 0.15, 7)
    assert cfg.transfer == TransferConfig(mode="partial", unfreeze_top=3, layerwise_lr_decay=0.9, l2sp=0.01)
    assert cfg.train.epochs == 4 and cfg.train.batch_size == 16
    assert cfg.train.lr == pytest.approx(2e-5) and cfg.train.head_lr == pytest.approx(1e-3)
    assert cfg.train.mixed_precision == "no" and cfg.train.metric_for_best == "accuracy"
    assert cfg.train.group_by_length is False
    assert (cfg.output.dir, cfg.output.overwrite) == ("runs/tiny", True)
    # keys the file leaves out keep their defaults
    assert cfg.train.eval_batch_size == TrainConfig().eval_batch_size
    assert cfg.data.max_samples is None


def test_partial_and_empty_yaml_use_defaults(tmp_path):
    assert RecipeConfig.from_yaml(write(tmp_path, "")) == RecipeConfig()
    cfg = RecipeConfig.from_yaml(write(tmp_path, "train:\n  epochs: 9\n", "partial.yaml"))
    assert cfg.train.epochs == 9
    assert cfg.model == ModelConfig() and cfg.data == DataConfig()
    assert dataclasses.replace(cfg.train, epochs=3) == TrainConfig()


def test_empty_section_means_defaults(tmp_path):
    cfg = RecipeConfig.from_yaml(write(tmp_path, "model:\ntrain:\n  lr: 1.0e-4\n"))
    assert cfg.model == ModelConfig()
    assert cfg.train.lr == pytest.approx(1e-4)


def test_yaml_float_without_dot_is_accepted(tmp_path):
    # PyYAML reads `5e-5` (no dot) as a string; the loader must still give a float.
    cfg = RecipeConfig.from_yaml(write(tmp_path, "train:\n  lr: 5e-5\n  head_lr: 1e-3\n"))
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(5e-5)
    assert isinstance(cfg.train.head_lr, float) and cfg.train.head_lr == pytest.approx(1e-3)


def test_whole_number_float_for_int_field_becomes_int(tmp_path):
    cfg = RecipeConfig.from_yaml(write(tmp_path, "train:\n  epochs: 2.0\n"))
    assert cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)


def test_missing_recipe_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as e:
        RecipeConfig.from_yaml(missing)
    assert "nope.yaml" in str(e.value)


def test_directory_is_not_a_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RecipeConfig.from_yaml(tmp_path)


def test_invalid_yaml(tmp_path):
    p = write(tmp_path, "train:\n  lr: [1, 2\n  epochs: 3\n", "broken.yaml")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        RecipeConfig.from_yaml(p)
    assert "broken.yaml" in str(e.value)
    assert "\n" not in str(e.value)  # one line


def test_yaml_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        RecipeConfig.from_yaml(write(tmp_path, "- train\n- model\n"))


def test_section_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="'train' must be a mapping") as e:
        RecipeConfig.from_yaml(write(tmp_path, "train: 3\n"))
    assert "int" in str(e.value)


# ---- overrides ----------------------------------------------------------------------
def test_overrides_parse_yaml_scalars(tmp_path):
    p = write(tmp_path, FULL_RECIPE)
    cfg = RecipeConfig.from_yaml(
        p,
        [
            "train.lr=3e-5",
            "data.max_samples=500",
            "train.head_lr=null",
            "train.group_by_length=true",
            "output.overwrite=false",
            "model.pooling=cls",
            "output.dir=runs/other",
        ],
    )
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(3e-5)
    assert cfg.data.max_samples == 500 and isinstance(cfg.data.max_samples, int)
    assert cfg.train.head_lr is None
    assert cfg.train.group_by_length is True
    assert cfg.output.overwrite is False
    assert cfg.model.pooling == "cls"
    assert cfg.output.dir == "runs/other"
    # untouched keys keep the file's values
    assert cfg.train.epochs == 4 and cfg.model.head == "mlp"


def test_override_later_wins_and_empty_value_is_null():
    cfg = RecipeConfig().replace("train.epochs=2", "train.epochs=5", "data.max_samples=")
    assert cfg.train.epochs == 5
    assert cfg.data.max_samples is None


def test_override_creates_missing_section(tmp_path):
    cfg = RecipeConfig.from_yaml(write(tmp_path, "name: x\n"), ["transfer.mode=bitfit"])
    assert cfg.transfer.mode == "bitfit"


def test_apply_overrides_does_not_mutate_input():
    raw = {"train": {"lr": 1.0}}
    out = apply_overrides(raw, ["train.lr=2.0", "model.head=mlp"])
    assert raw == {"train": {"lr": 1.0}}
    assert out == {"train": {"lr": 2.0}, "model": {"head": "mlp"}}


@pytest.mark.parametrize("bad", ["train.lr", "lr=3", "train..lr=3", ".lr=3"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError, match="train.lr"):
        RecipeConfig().replace(bad)


def test_top_level_name_can_be_overridden():
    assert RecipeConfig().replace("name=my-run").name == "my-run"


def test_override_into_scalar_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_replace_returns_a_new_config():
    base = RecipeConfig()
    new = base.replace("train.lr=1e-4", "transfer.mode=feature_extraction")
    assert new.train.lr == pytest.approx(1e-4) and new.transfer.mode == "feature_extraction"
    assert base.train.lr == pytest.approx(5e-5) and base.transfer.mode == "full"
    assert base.replace() == base and base.replace() is not base


def test_replace_validates():
    with pytest.raises(ConfigError, match="must be positive"):
        RecipeConfig().replace("train.lr=0")


def test_replace_with_keyword_sections_equals_the_string_overrides():
    base = RecipeConfig()
    strings = base.replace("train.lr=3e-5", "train.epochs=2", "transfer.mode=lora", "transfer.peft.r=4", "name=kw")
    keywords = base.replace(train={"lr": 3e-5, "epochs": 2}, transfer={"mode": "lora", "peft": {"r": 4}}, name="kw")
    assert keywords == strings
    assert keywords.transfer.peft.alpha == base.transfer.peft.alpha  # a nested section is merged, not replaced
    assert base.train.lr == pytest.approx(5e-5) and base.transfer.mode == "full"  # the original is untouched
    # Strings first, then keywords; a dict-valued field is replaced whole, not merged.
    mapped = base.replace("data.label_map={a: b, c: d}", data={"label_map": {"x": "y"}}, train={"lr": 1e-4})
    assert mapped.data.label_map == {"x": "y"} and mapped.train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("string", "keywords"),
    [
        ("train.lrr=1", {"train": {"lrr": 1}}),  # nearest key in the section
        ("train.pooling=mean", {"train": {"pooling": "mean"}}),  # the same key in another section
        ("trian.lr=1", {"trian": {"lr": 1}}),  # a misspelt section
        ("train.epochs=many", {"train": {"epochs": "many"}}),  # a wrong type
        ("train.lr=0", {"train": {"lr": 0}}),  # a value the schema refuses
        ("transfer.peft.rr=4", {"transfer": {"peft": {"rr": 4}}}),  # nested
    ],
)
def test_keyword_sections_are_validated_exactly_like_string_overrides(string, keywords):
    with pytest.raises(ConfigError) as by_string:
        RecipeConfig().replace(string)
    with pytest.raises(ConfigError) as by_keyword:
        RecipeConfig().replace(**keywords)
    assert str(by_keyword.value) == str(by_string.value)
    assert "did you mean" in str(by_string.value) or "wrong type" in str(by_string.value) or "positive" in str(by_string.value)


def test_a_keyword_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="'train' must be a mapping"):
        RecipeConfig().replace(train=3)


# ---- round trip ---------------------------------------------------------------------
def test_to_yaml_round_trip(tmp_path):
    for cfg in (RecipeConfig(), RecipeConfig.from_yaml(write(tmp_path, FULL_RECIPE))):
        text = cfg.to_yaml()
        assert RecipeConfig.from_dict(yaml.safe_load(text)) == cfg
        # and via a file, as a run directory would store it
        again = RecipeConfig.from_yaml(write(tmp_path, text, "again.yaml"))
        assert again == cfg


def test_to_dict_has_every_key():
    def flatten(d, prefix=""):
        out = []
        for k, v in d.items():
            # model.label_words is a mapping value (null by default), not a section
            out += flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]
        return out

    assert sorted(flatten(RecipeConfig().to_dict())) == sorted(all_recipe_keys())


# ---- unknown keys -------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, suggestion",
    [
        ("train.lrr=1e-4", "train.lr"),
        ("train.epoch=2", "train.epochs"),
        ("model.poolin=cls", "model.pooling"),
        ("data.text_colum=x", "data.text_column"),
        ("transfer.mod=full", "transfer.mode"),
        ("data.max_sample=5", "data.max_samples"),
        ("model.dropout=0.1", "model.head_dropout"),
        # a key that lives in another section
        ("train.pooling=cls", "model.pooling"),
        ("train.max_length=64", "model.max_length"),
        ("data.mode=full", "transfer.mode"),
    ],
)
def test_unknown_key_suggests_nearest(override, suggestion):
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace(override)
    msg = str(e.value)
    assert "unknown config key" in msg
    assert f"'{override.split('=')[0]}'" in msg
    assert f"did you mean '{suggestion}'" in msg


def test_misspelt_section_suggests_section():
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace("modle.pooling=cls")
    assert "'modle'" in str(e.value)
    assert "did you mean 'model" in str(e.value)


def test_top_level_key_that_belongs_in_a_section():
    with pytest.raises(ConfigError, match=r"unknown config key 'lr'; did you mean 'train\.lr'"):
        RecipeConfig.from_dict({"lr": 1e-4})
    with pytest.raises(ConfigError, match="did you mean 'name'"):
        RecipeConfig.from_dict({"nmae": "x"})


def test_unknown_key_in_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.warmup'.*'train\.warmup_ratio'"):
        RecipeConfig.from_yaml(write(tmp_path, "train:\n  warmup: 0.1\n"))


def test_unrelated_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace("output.qqqqqq=1")
    msg = str(e.value)
    assert "'output.qqqqqq'" in msg
    assert "did you mean" not in msg  # nothing is close: no made-up key such as 'output.output'
    assert "valid keys in output: checkpoint_dir, dir, overwrite" in msg


# ---- types --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.epochs=abc", "expected int"),
        ("train.epochs=1.5", "expected int"),
        ("train.epochs=true", "expected int"),
        ("train.lr=fast", "expected float"),
        ("train.head_lr=fast", "expected float or null"),
        ("train.group_by_length=1", "expected bool"),
        ("train.group_by_length=maybe", "expected bool"),
        ("data.max_samples=[1, 2]", "expected int or null"),
        ("model.pooling=[mean]", "expected str"),
    ],
)
def test_wrong_type_names_expected_type(override, expected):
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace(override)
    msg = str(e.value)
    assert override.split("=")[0] in msg
    assert "wrong type" in msg and expected in msg


def test_number_for_string_field_is_accepted():
    assert RecipeConfig().replace("output.dir=2024").output.dir == "2024"


# ---- choices and ranges -------------------------------------------------------------
@pytest.mark.parametrize(
    "override, hint",
    [
        ("transfer.mode=fulll", "full"),
        ("transfer.mode=feature-extraction", "feature_extraction"),
        ("model.pooling=maen", "mean"),
        ("model.head=mpl", "mlp"),
        ("train.mixed_precision=bf61", "bf16"),
        ("train.metric_for_best=f1_macr", "f1_macro"),
    ],
)
def test_invalid_choice_suggests_nearest(override, hint):
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace(override)
    msg = str(e.value)
    assert "is not valid" in msg
    assert f"did you mean '{hint}'" in msg
    assert "choose one of" in msg


def test_invalid_choice_lists_all_modes():
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace("transfer.mode=zzz")
    for mode in ("feature_extraction", "partial", "gradual", "bitfit", "full"):
        assert mode in str(e.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.head_lr=0", "train.head_lr"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.grad_accum_steps=0", "train.grad_accum_steps"),
        ("train.warmup_ratio=1.0", "train.warmup_ratio"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("model.max_length=4", "model.max_length"),
        ("model.head_dropout=1.0", "model.head_dropout"),
        ("model.num_labels=1", "model.num_labels"),
        ("model.head_hidden_size=0", "model.head_hidden_size"),
        ("data.validation_fraction=0", "data.validation_fraction"),
        ("data.test_fraction=1.0", "data.test_fraction"),
        ("data.max_samples=0", "data.max_samples"),
        ("transfer.unfreeze_top=-1", "transfer.unfreeze_top"),
        ("transfer.layerwise_lr_decay=0", "transfer.layerwise_lr_decay"),
        ("transfer.layerwise_lr_decay=1.5", "transfer.layerwise_lr_decay"),
        ("transfer.l2sp=-1", "transfer.l2sp"),
    ],
)
def test_range_checks(override, words):
    with pytest.raises(ConfigError) as e:
        RecipeConfig().replace(override)
    assert words in str(e.value)


def test_fractions_must_leave_training_data():
    with pytest.raises(ConfigError, match="at least 10% for training"):
        RecipeConfig().replace("data.validation_fraction=0.5", "data.test_fraction=0.45")
    ok = RecipeConfig().replace("data.validation_fraction=0.4", "data.test_fraction=0.4")
    assert ok.data.validation_fraction == pytest.approx(0.4)


def test_data_needs_a_source_or_train_file():
    with pytest.raises(ConfigError, match="data.source"):
        RecipeConfig().replace("data.source=null")
    cfg = RecipeConfig().replace("data.source=null", "data.train_file=train.csv")
    assert cfg.data.source is None and cfg.data.train_file == "train.csv"


def test_boundary_values_are_accepted():
    cfg = RecipeConfig().replace(
        "model.max_length=8",
        "model.head_dropout=0",
        "train.warmup_ratio=0",
        "transfer.layerwise_lr_decay=1",
        "transfer.unfreeze_top=0",
        "model.num_labels=2",
        "train.max_grad_norm=null",
    )
    assert cfg.model.max_length == 8 and cfg.model.num_labels == 2 and cfg.train.max_grad_norm is None


# ---- help ---------------------------------------------------------------------------
def test_describe_fields_lists_every_key_with_default():
    text = describe_recipe()
    for key in all_recipe_keys():
        assert f"{key} = " in text, key
    assert "train.lr = 5e-05" in text
    assert "transfer.mode = 'full'" in text
    for section in ("model", "data", "transfer", "train", "output"):
        assert f"[{section}]" in text


def test_every_field_has_help_text():
    def check(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                if cls is not RecipeConfig:  # a sub-section (transfer.peft): its class docstring says what it is
                    assert hints[f.name].__doc__.strip(), f"{prefix}{f.name} has no docstring"
                check(hints[f.name], f"{prefix}{f.name}.")
            else:
                assert f.metadata.get("help", "").strip(), f"{prefix}{f.name} has no help text"

    check(RecipeConfig)
    text = describe_recipe()
    assert "Peak learning rate of the backbone." in text


# ---- shipped recipes ----------------------------------------------------------------
def _recipe_files() -> list[Path]:
    files = sorted(set(RECIPES.rglob("*.yaml")) | set(RECIPES.rglob("*.yml")))
    return [p for p in files if ACCELERATE not in p.parents and RECIPES / "spaces" not in p.parents]


def _accelerate_files() -> list[Path]:
    return sorted(set(ACCELERATE.glob("*.yaml")) | set(ACCELERATE.glob("*.yml")))


def test_recipes_exist():
    assert _recipe_files(), f"no recipes found under {RECIPES}"
    assert _accelerate_files(), f"no accelerate configs found under {ACCELERATE}"


@pytest.mark.parametrize("path", _recipe_files(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_shipped_recipe_loads(path):
    cfg = RecipeConfig.from_yaml(path)
    raw = yaml.safe_load(path.read_text())

    # every value written in the file is what the config holds
    def same(node, values, where):
        for key, value in values.items():
            got = getattr(node, key)
            if dataclasses.is_dataclass(got):  # a sub-section, e.g. transfer.peft
                same(got, value, f"{where}{key}.")
            else:
                assert got == (pytest.approx(value) if isinstance(value, float) else value), f"{where}{key}"

    for section, values in raw.items():
        if isinstance(values, dict):
            same(getattr(cfg, section), values, f"{section}.")
        else:
            assert getattr(cfg, section) == values
    assert RecipeConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    assert cfg.name != RecipeConfig().name, "give every shipped recipe its own name"


@pytest.mark.parametrize("path", _accelerate_files(), ids=lambda p: p.name)
def test_accelerate_config_parses(path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict) and raw
    assert "distributed_type" in raw
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))  # accelerate's own reader accepts it
    assert cfg.num_processes == raw.get("num_processes", cfg.num_processes)
