"""Data: load from files, saved datasets, the hub or the catalog; labels; splits.

Everything downstream sees a :class:`TextData`: a ``DatasetDict`` with ``train``,
``validation`` and ``test`` splits, each with ``text`` (and ``text_pair``) and ``label``
columns, plus the label names and the task (see :mod:`nlp_transfer.tasks`): ``label`` is a
class id (single-label), a 0/1 float vector with one entry per name (multi-label) or a float
(regression, whose one "label name" is the target column). Files are read by
:func:`nlp_transfer.data.reader.read_table`, the reader prediction and evaluation use too.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from nlp_transfer.config import DataConfig
from nlp_transfer.data import catalog
from nlp_transfer.data.reader import NoRowsError, infer_format, read_table
from nlp_transfer.data.sampling import per_class_sample
from nlp_transfer.errors import ConfigError, DataError
from nlp_transfer.tasks import Task, get_task, infer_task
from nlp_transfer.tasks.labels import zero_one

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet")


@dataclass
class TextData:
    splits: datasets.DatasetDict
    labels: list[str]
    task: str = "single_label"

    @property
    def task_type(self) -> Task:
        return get_task(self.task)

    @property
    def num_labels(self) -> int:
        """Outputs of the head: classes, labels (multi-label) or 1 (regression)."""
        return len(self.labels)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def label_counts(self, split: str) -> dict[str, int]:
        """Examples per class; multi-label: examples carrying each label; regression: empty."""
        return self.task_type.label_counts(self.splits[split]["label"], self.labels)

    def summary(self) -> dict:
        """Split sizes and, per split, label counts or target statistics (for ``metrics.json``)."""
        out: dict = {"sizes": self.sizes()}
        for split, ds in self.splits.items():
            for key, value in self.task_type.describe_split(ds["label"], self.labels).items():
                out.setdefault(key, {})[split] = value
        return out


# ---- loading --------------------------------------------------------------------------
def _load_file(path: str, split: str, cfg: DataConfig) -> datasets.Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{path}' does not exist; check data.{split}_file / data.source")
    fmt = infer_format(path)
    if fmt == "lines":  # plain lines have texts only, no labels
        raise DataError(f"data file '{path}' has an unsupported extension; use one of {', '.join(TABLE_SUFFIXES)}")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty, so the {split} split would be empty")
    texts = [c for c in (cfg.text_column, cfg.text_pair_column) if c]
    try:
        frame = read_table(path, fmt, text_columns=texts, where=f"data.{split}_file / data.source")
    except NoRowsError as e:
        raise DataError(f"data file '{path}' has no rows ({e.why}), so the {split} split would be empty") from None
    try:
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    except (ValueError, TypeError) as e:  # pyarrow: a column mixing types it cannot store together
        frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object and not _has_lists(frame[c])})
        try:
            return datasets.Dataset.from_pandas(frame, preserve_index=False)
        except (ValueError, TypeError):
            raise DataError(f"could not read '{path}': {str(e).splitlines()[0]}") from None


def _has_lists(column) -> bool:
    return any(isinstance(v, (list, tuple, np.ndarray)) for v in column)


def _as_splits(obj: datasets.Dataset | datasets.DatasetDict) -> dict[str, datasets.Dataset]:
    if isinstance(obj, datasets.Dataset):
        return {"train": obj}
    out = {SPLIT_ALIASES.get(name, name): ds for name, ds in obj.items()}
    if "train" not in out:
        raise DataError(f"the dataset has splits {sorted(obj)} but no 'train' split")
    return {k: v for k, v in out.items() if k in SPLITS}


def load_raw(cfg: DataConfig) -> dict[str, datasets.Dataset]:
    """The source's own splits (at least ``train``), columns untouched."""
    if cfg.train_file:
        raw = {"train": _load_file(cfg.train_file, "train", cfg)}
        for split in ("validation", "test"):
            f = getattr(cfg, f"{split}_file")
            if f:
                raw[split] = _load_file(f, split, cfg)
        return raw
    src = cfg.source
    assert src is not None
    if src in catalog.DATASETS:
        return {"train": datasets.Dataset.from_pandas(catalog.load_catalog_dataset(src), preserve_index=False)}
    p = Path(src)
    if p.is_file():
        return {"train": _load_file(src, "train", cfg)}
    if p.is_dir():
        return _load_saved(p, src)
    if p.suffix.lower() in TABLE_SUFFIXES or src.startswith((".", "/", "~")):
        raise DataError(f"data file '{src}' does not exist; check data.source")
    return _load_hub(src)


def _load_saved(p: Path, src: str) -> dict[str, datasets.Dataset]:
    if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        try:
            saved = datasets.load_from_disk(str(p))
        except Exception as e:  # e.g. a dataset saved with zero rows cannot be read back
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(f"could not load the saved dataset '{src}': {type(e).__name__}: {reason}") from None
        return _as_splits(saved)
    raise DataError(f"data.source '{src}' is a directory but not one written by datasets' save_to_disk")


def _load_hub(src: str) -> dict[str, datasets.Dataset]:
    """A hub dataset id (online users). Offline, this fails: say what was tried."""
    try:
        return _as_splits(datasets.load_dataset(src))
    except Exception as e:
        near = difflib.get_close_matches(src, list(catalog.DATASETS), n=1, cutoff=0.6)
        hint = f"did you mean '{near[0]}'? " if near else ""
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DataError(
            f"data.source '{src}' is not a catalog name ({', '.join(catalog.DATASETS)}), a file, a saved "
            f"dataset or a reachable hub dataset; {hint}(hub said: {reason})"
        ) from None


# ---- columns --------------------------------------------------------------------------
def _select_columns(ds: datasets.Dataset, split: str, cfg: DataConfig) -> datasets.Dataset:
    if cfg.label_columns:
        return _select_label_columns(ds, split, cfg)
    given = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    if len(set(given)) != len(given):  # one column in two roles would silently drop a role below
        raise DataError(f"data.text_column, data.label_column and data.text_pair_column must name different columns, got {given}")
    wanted = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        wanted[cfg.text_pair_column] = "text_pair"
    _require_columns(ds, split, wanted)
    return _keep_as(ds, wanted)


def _keep_as(ds: datasets.Dataset, roles: dict[str, str]) -> datasets.Dataset:
    """Only the columns of ``roles`` (column -> role), each renamed to its role."""
    ds = ds.select_columns(list(roles))
    rename = {c: r for c, r in roles.items() if c != r}
    # Two-step rename so swapping names (e.g. text<->label) cannot collide.
    if rename:
        ds = ds.rename_columns({c: f"__{r}" for c, r in rename.items()})
        ds = ds.rename_columns({f"__{r}": r for r in rename.values()})
    return ds


def _select_label_columns(ds: datasets.Dataset, split: str, cfg: DataConfig) -> datasets.Dataset:
    """Multi-label data as 0/1 columns: ``text`` (``text_pair``) and one ``label`` vector per row."""
    texts = {cfg.text_column: "text", **({cfg.text_pair_column: "text_pair"} if cfg.text_pair_column else {})}
    clash = sorted(set(texts) & set(cfg.label_columns))
    if clash:
        raise DataError(f"column '{clash[0]}' is both a text column and in data.label_columns; name different columns")
    _require_columns(ds, split, {**texts, **{c: "label_columns" for c in cfg.label_columns}})
    cols = [zero_one(ds[c], c, f"{split} split") for c in cfg.label_columns]
    vectors = [list(row) for row in zip(*cols)]
    return _keep_as(ds, texts).add_column("label", vectors)


def _require_columns(ds: datasets.Dataset, split: str, wanted: dict[str, str]) -> None:
    for col, role in wanted.items():
        if col not in ds.column_names:
            key = {"text": "text_column", "label": "label_column", "text_pair": "text_pair_column"}.get(role, role)
            near = difflib.get_close_matches(col, ds.column_names, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise DataError(f"{split} split has no column '{col}' (data.{key}){hint}; the columns are: {', '.join(ds.column_names)}")


def map_labels(raw: dict[str, datasets.Dataset], label_map: dict[str, str | None]) -> dict[str, datasets.Dataset]:
    """``data.label_map``: each split's labels renamed (compared as strings), rows of labels mapped to null dropped."""
    present = {str(v) for ds in raw.values() for v in ds["label"] if not isinstance(v, (list, tuple))}
    unknown = sorted(set(label_map) - present)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(present), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise DataError(
            f"data.label_map names '{unknown[0]}', which is not a label of the data{hint}; its labels are {', '.join(sorted(present)[:20])}"
        )
    out = {}
    for split, ds in raw.items():
        renamed = [label_map.get(str(v), v) for v in ds["label"]]
        keep = [i for i, v in enumerate(renamed) if v is not None]
        ds = ds.remove_columns("label").add_column("label", [str(v) for v in renamed])
        out[split] = ds.select(keep) if len(keep) < len(ds) else ds
    return out


def _clean_texts(ds: datasets.Dataset, split: str, column: str, cfg_key: str) -> datasets.Dataset:
    """Texts as strings: a column of numbers is its numbers' text; empty or missing texts are an error."""
    feature = ds.features[column]
    if isinstance(feature, datasets.Value) and feature.dtype not in ("string", "large_string"):
        ds = ds.cast_column(column, datasets.Value("string"))
    bad = [i for i, t in enumerate(ds[column]) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(
            f"{split} split has {len(bad)} empty or missing texts in column '{column}' (first at row {bad[0]}); "
            f"remove those rows or point {cfg_key} at the right column"
        )
    return ds


def _set_label(ds: datasets.Dataset, targets: np.ndarray) -> datasets.Dataset:
    """Replace ``label`` with the task's targets: class ids, 0/1 vectors or numbers."""
    if targets.ndim == 2:
        feature = datasets.Sequence(datasets.Value("float32"))
    else:
        feature = datasets.Value("int64" if np.issubdtype(targets.dtype, np.integer) else "float32")
    return ds.remove_columns("label").add_column("label", targets.tolist()).cast_column("label", feature)


# ---- splits ---------------------------------------------------------------------------
def _stratified_split(
    ds: datasets.Dataset, fraction: float, seed: int, stratified: bool = True
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(rest, held_out): a deterministic split, stratified on the ``label`` column (class ids)
    when ``stratified`` (single-label), else a seeded random one (multi-label, regression)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ds))
    n_held = max(1, math.ceil(fraction * len(ds) - 1e-9))  # 0.15 * 100 is 15.000000000000002 in floats
    stratify = None
    if stratified:
        labels = np.asarray(ds["label"])
        counts = np.bincount(labels)
        stratify = labels if (counts[counts > 0].min() >= 2 and n_held >= (counts > 0).sum()) else None
    rest, held = train_test_split(idx, test_size=n_held, random_state=seed, shuffle=True, stratify=stratify)
    return ds.select(rest), ds.select(held)


def stratified_sample(ds: datasets.Dataset, n: int, seed: int, stratified: bool = True) -> datasets.Dataset:
    """At most ``n`` examples of ``ds``, drawn with ``seed`` and stratified on the class ids where ``stratified``
    (single-label data; multi-label and regression draws are seeded random ones); ``ds`` itself if it is no bigger."""
    if n >= len(ds):
        return ds
    return _stratified_split(ds, n / len(ds), seed, stratified)[1]


def _split(enc: dict[str, datasets.Dataset], raw_has_test: bool, cfg: DataConfig, stratify: bool, names: list[str]) -> datasets.DatasetDict:
    """Held-out splits the source lacks; fractions are of the whole source, so 80/10/10 means what it says."""
    train = enc["train"]
    total = len(train)
    if "test" not in enc:
        train, enc["test"] = _stratified_split(train, cfg.test_fraction, cfg.split_seed, stratify)
    if "validation" not in enc:
        frac = cfg.validation_fraction * total / len(train) if not raw_has_test else cfg.validation_fraction
        train, enc["validation"] = _stratified_split(train, min(frac, 0.5), cfg.split_seed + 1, stratify)
    if cfg.samples_per_class is not None:  # few-shot: after the held-out splits, so they stay whole
        train = few_shot(train, cfg.samples_per_class, cfg.sample_seed, names)
    enc["train"] = train
    splits = datasets.DatasetDict({s: enc[s] for s in SPLITS})
    if cfg.max_samples is not None:
        splits = datasets.DatasetDict({s: ds.select(range(min(cfg.max_samples, len(ds)))) for s, ds in splits.items()})
    for s, ds in splits.items():
        if len(ds) == 0:
            raise DataError(f"{s} split is empty after splitting; use more data or other data.*_fraction values")
    return splits


def few_shot(train: datasets.Dataset, per_class: int, seed: int, names: list[str]) -> datasets.Dataset:
    """``per_class`` training examples of each class (``data.samples_per_class``, drawn with ``seed``)."""
    return train.select(per_class_sample(train["label"], per_class, seed, names))


def with_few_shot(data: TextData, per_class: int | None, seed: int) -> TextData:
    """``data`` whose training split is the ``data.samples_per_class`` draw (``None``: all of it), as
    :func:`load_data` would draw it from the same source; validation and test unchanged."""
    if per_class is None:
        return data
    splits = datasets.DatasetDict({**data.splits, "train": few_shot(data.splits["train"], per_class, seed, data.labels)})
    return TextData(splits, data.labels, data.task)


def load_data(cfg: DataConfig, num_labels: int | None = None) -> TextData:
    """Load, clean, label-encode and split; every problem is a one-line :class:`DataError`."""
    raw = load_raw(cfg)
    for split, ds in raw.items():
        if len(ds) == 0:
            raise DataError(f"{split} split is empty; check data.source / data.{split}_file")
    raw = {s: _select_columns(ds, s, cfg) for s, ds in raw.items()}
    if cfg.label_map:
        raw = map_labels(raw, cfg.label_map)
    for s in raw:
        raw[s] = _clean_texts(raw[s], s, "text", f"data.text_column ('{cfg.text_column}')")
        if cfg.text_pair_column:
            raw[s] = _clean_texts(raw[s], s, "text_pair", f"data.text_pair_column ('{cfg.text_pair_column}')")

    name = infer_task(cfg.task, raw["train"]["label"], label_columns=cfg.label_columns, label_separator=cfg.label_separator)
    task = get_task(name)
    names = task.label_names(raw["train"]["label"], cfg)
    if cfg.label_columns:  # already 0/1 vectors (see _select_label_columns)
        enc = {s: ds.cast_column("label", datasets.Sequence(datasets.Value("float32"))) for s, ds in raw.items()}
    else:
        enc = {s: _set_label(ds, task.targets(ds["label"], names, f"{s} split", cfg.label_separator)) for s, ds in raw.items()}
    if num_labels is not None and task.has_classes and num_labels != len(names):
        raise DataError(
            f"model.num_labels={num_labels} but the training data has {len(names)} labels ({', '.join(names[:10])}); "
            "fix model.num_labels or remove it"
        )
    if cfg.samples_per_class is not None and name != "single_label":
        raise ConfigError(
            f"data.samples_per_class draws examples per class and needs single-label data, but this is "
            f"{name} data; use data.max_samples to train on fewer examples"
        )
    return TextData(splits=_split(enc, "test" in raw, cfg, task.stratify, names), labels=names, task=name)


def unlabelled_texts(
    data_cfg: DataConfig, source: str, text_column: str, validation_fraction: float, seed: int, what: str
) -> tuple[list[str], list[str], str]:
    """(training texts, held-out texts, a description) of ``source`` read as unlabelled text (``what`` names the
    setting: adapt, transfer.domain_adversarial). A recipe YAML gives the training texts of its data section (its
    label_map, fractions and seed: the texts a model trained by that recipe learns from). A source with a label column is split as a recipe on it would
    be (``data_cfg``'s fractions and seed) and only its training texts train, so its held-out texts stay
    unseen; an unlabelled one (plain lines, a table without labels) is read whole, ``validation_fraction`` held out."""
    import dataclasses

    from nlp_transfer.config.shipped import find_recipe, nearest_recipes

    recipe = None if Path(source).is_file() and Path(source).suffix.lower() not in (".yaml", ".yml") else find_recipe(source)
    if recipe is not None or Path(source).suffix.lower() in (".yaml", ".yml"):  # a recipe (file or shipped name)
        from nlp_transfer.config import RecipeConfig

        if recipe is None:
            near = nearest_recipes(source)
            raise DataError(
                f"{what}: recipe '{source}' does not exist; name an existing recipe YAML, a shipped recipe"
                + (f" ({', '.join(near)})" if near else "")
                + ", a file or a dataset"
            )
        data = load_data(RecipeConfig.from_yaml(recipe).data)
        return (list(data.splits["train"]["text"]), list(data.splits["validation"]["text"]), f"the training texts of recipe '{source}'")
    cfg = dataclasses.replace(
        data_cfg,
        source=source,
        train_file=None,
        validation_file=None,
        test_file=None,
        text_column=text_column,
        text_pair_column=None,
        label_columns=None,
        samples_per_class=None,
        max_samples=None,
    )
    if Path(source).is_file():  # any format the reader takes, plain lines (column text) included
        df = read_table(source, text_columns=[text_column], where=f"{what}.source")
        columns = [str(c) for c in df.columns]
        rows = df[text_column].tolist() if text_column in df.columns else []
    else:
        raw = load_raw(cfg)["train"]
        columns = raw.column_names
        rows = raw[text_column] if text_column in columns else []
    if text_column not in columns:
        raise DataError(f"{what}: '{source}' has no column '{text_column}' (columns: {', '.join(columns)}); set {what}.text_column")
    if cfg.label_column in columns:  # labelled: only what a recipe on it would train on
        data = load_data(cfg)
        return list(data.splits["train"]["text"]), list(data.splits["validation"]["text"]), f"the training texts of '{source}'"
    texts = [t for t in dict.fromkeys(rows) if isinstance(t, str) and t.strip()]
    order = np.random.default_rng(seed).permutation(len(texts))
    n_val = max(1, math.ceil(validation_fraction * len(texts)))
    return [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]], f"'{source}'"
