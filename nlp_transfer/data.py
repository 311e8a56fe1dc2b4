"""Data: load from files, saved datasets, the hub or the catalog; labels; splits; tokens.

Everything downstream sees a :class:`TextData`: a ``DatasetDict`` with ``train``,
``validation`` and ``test`` splits, each with ``text`` (and ``text_pair``) and ``label``
columns, plus the label names and the task (see :mod:`nlp_transfer.tasks`): ``label`` is a
class id (single-label), a 0/1 float vector with one entry per name (multi-label) or a float
(regression, whose one "label name" is the target column).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import datasets
import numpy as np
import torch

from . import catalog, tasks
from .config import DataConfig
from .errors import DataError

SPLITS = ("train", "validation", "test")
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}


@dataclass
class TextData:
    splits: datasets.DatasetDict
    labels: list[str]
    task: str = "single_label"

    @property
    def num_labels(self) -> int:
        """Outputs of the head: classes, labels (multi-label) or 1 (regression)."""
        return len(self.labels)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def label_counts(self, split: str) -> dict[str, int]:
        """Examples per class; multi-label: examples carrying each label; regression: empty."""
        y = np.asarray(self.splits[split]["label"])
        if self.task == "regression":
            return {}
        counts = y.sum(0) if self.task == "multi_label" else np.bincount(y, minlength=self.num_labels)
        return {name: int(c) for name, c in zip(self.labels, counts)}

    def target_stats(self, split: str) -> dict[str, float]:
        """Regression: mean, std, min and max of the target in ``split``."""
        y = np.asarray(self.splits[split]["label"], dtype=np.float64)
        return {"mean": float(y.mean()), "std": float(y.std()), "min": float(y.min()), "max": float(y.max())}


# ---- loading --------------------------------------------------------------------------
def _load_file(path: str, split: str) -> datasets.Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{path}' does not exist; check data.{split}_file / data.source")
    suffixes = [x.lower() for x in p.suffixes]
    if suffixes and suffixes[-1] in (".bz2", ".gz", ".xz", ".zst"):  # compressed files keep their format
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    builder = FILE_BUILDERS.get(ext)
    if builder is None:
        raise DataError(
            f"data file '{path}' has an unsupported extension; use one of {', '.join(FILE_BUILDERS)}"
        )
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty, so the {split} split would be empty")
    kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
    try:
        ds = datasets.load_dataset(builder, data_files={"train": str(p)}, split="train", **kwargs)
    except Exception as e:  # malformed files surface as various pyarrow/pandas errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__  # StopIteration has no text
        if "corresponds to no data" in reason:  # e.g. a CSV with only a header, a JSON []
            raise DataError(f"data file '{path}' has no rows, so the {split} split would be empty") from None
        raise DataError(f"could not read '{path}' as {builder}: {reason}") from None
    return ds


def _as_splits(obj: datasets.Dataset | datasets.DatasetDict) -> dict[str, datasets.Dataset]:
    if isinstance(obj, datasets.Dataset):
        return {"train": obj}
    out = {}
    for name, ds in obj.items():
        out[SPLIT_ALIASES.get(name, name)] = ds
    if "train" not in out:
        raise DataError(f"the dataset has splits {sorted(obj)} but no 'train' split")
    return {k: v for k, v in out.items() if k in SPLITS}


def load_raw(cfg: DataConfig) -> dict[str, datasets.Dataset]:
    """The source's own splits (at least ``train``), columns untouched."""
    if cfg.train_file:
        raw = {"train": _load_file(cfg.train_file, "train")}
        for split in ("validation", "test"):
            f = getattr(cfg, f"{split}_file")
            if f:
                raw[split] = _load_file(f, split)
        return raw
    src = cfg.source
    assert src is not None
    if src in catalog.DATASETS:
        return {"train": datasets.Dataset.from_pandas(catalog.load_catalog_dataset(src), preserve_index=False)}
    p = Path(src)
    if p.is_file():
        return {"train": _load_file(src, "train")}
    if p.is_dir():
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            try:
                saved = datasets.load_from_disk(str(p))
            except Exception as e:  # e.g. a dataset saved with zero rows cannot be read back
                reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise DataError(f"could not load the saved dataset '{src}': {type(e).__name__}: {reason}") from None
            return _as_splits(saved)
        raise DataError(f"data.source '{src}' is a directory but not one written by datasets' save_to_disk")
    if p.suffix.lower() in FILE_BUILDERS or src.startswith((".", "/", "~")):
        raise DataError(f"data file '{src}' does not exist; check data.source")
    # A hub dataset id (online users). Offline, this fails: say what was tried.
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


# ---- cleaning and labels --------------------------------------------------------------
def _select_columns(ds: datasets.Dataset, split: str, cfg: DataConfig) -> datasets.Dataset:
    if cfg.label_columns:
        return _select_label_columns(ds, split, cfg)
    given = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    if len(set(given)) != len(given):  # one column in two roles would silently drop a role below
        raise DataError(
            f"data.text_column, data.label_column and data.text_pair_column must name different columns, got {given}"
        )
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
    where = f"{split} split"
    cols = [tasks.zero_one(ds[c], c, where) for c in cfg.label_columns]
    vectors = [list(row) for row in zip(*cols)]
    return _keep_as(ds, texts).add_column("label", vectors)


def _require_columns(ds: datasets.Dataset, split: str, wanted: dict[str, str]) -> None:
    for col, role in wanted.items():
        if col not in ds.column_names:
            key = {"text": "text_column", "label": "label_column", "text_pair": "text_pair_column"}.get(role, role)
            near = difflib.get_close_matches(col, ds.column_names, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise DataError(
                f"{split} split has no column '{col}' (data.{key}){hint}; the columns are: {', '.join(ds.column_names)}"
            )


def _check_texts(ds: datasets.Dataset, split: str, column: str, cfg_key: str) -> None:
    bad = [i for i, t in enumerate(ds[column]) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(
            f"{split} split has {len(bad)} empty or missing texts in column '{column}' (first at row {bad[0]}); "
            f"remove those rows or point {cfg_key} at the right column"
        )


def _label_key(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def unknown_labels(keys, known, quote: bool = True) -> str:
    """The labels among ``keys`` that are not in ``known``, sorted, the first five shown for an
    error message ("" when there are none)."""
    unknown = sorted(set(keys) - set(known))
    shown = ", ".join(repr(u) if quote else u for u in unknown[:5])
    return shown + (" ..." if len(unknown) > 5 else "")


def build_label_names(values: Sequence) -> list[str]:
    """Sorted distinct labels as names: integers sort numerically, strings alphabetically."""
    uniq = set(values)
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in uniq):
        return [str(v) for v in sorted(int(v) for v in uniq)]
    return sorted(_label_key(v) for v in uniq)


def _encode_labels(ds: datasets.Dataset, split: str, names: list[str], cfg: DataConfig) -> datasets.Dataset:
    values = ds["label"]
    missing = sum(v is None for v in values)
    if missing:
        raise DataError(f"{split} split has {missing} rows without a label in column '{cfg.label_column}'")
    index = {n: i for i, n in enumerate(names)}
    keys = [_label_key(v) for v in values]
    shown = unknown_labels(keys, index, quote=False)
    if shown:
        raise DataError(
            f"{split} split has labels the training split never saw: {shown}; known labels: {', '.join(names)}"
        )
    ids = [index[k] for k in keys]
    ds = ds.remove_columns("label").add_column("label", ids)
    return ds.cast_column("label", datasets.Value("int64"))


# ---- splits ---------------------------------------------------------------------------
def _stratified_split(ds: datasets.Dataset, fraction: float, seed: int, stratified: bool = True) -> tuple[datasets.Dataset, datasets.Dataset]:
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


def load_data(cfg: DataConfig, num_labels: int | None = None) -> TextData:
    """Load, clean, label-encode and split; every problem is a one-line :class:`DataError`."""
    raw = load_raw(cfg)
    for split, ds in raw.items():
        if len(ds) == 0:
            raise DataError(f"{split} split is empty; check data.source / data.{split}_file")
    raw = {s: _select_columns(ds, s, cfg) for s, ds in raw.items()}
    for s, ds in raw.items():
        _check_texts(ds, s, "text", f"data.text_column ('{cfg.text_column}')")
        if cfg.text_pair_column:
            _check_texts(ds, s, "text_pair", f"data.text_pair_column ('{cfg.text_pair_column}')")

    train_labels = raw["train"]["label"]
    task = tasks.infer_task(cfg.task, train_labels, label_columns=cfg.label_columns, label_separator=cfg.label_separator)
    if task == "single_label":
        if any(v is None for v in train_labels):
            raise DataError(f"train split has rows without a label in column '{cfg.label_column}'")
        names = build_label_names(train_labels)
        if len(names) < 2:
            raise DataError(f"the training data has a single label ({names[0]}); classification needs at least two")
        enc = {s: _encode_labels(ds, s, names, cfg) for s, ds in raw.items()}
    elif task == "multi_label":
        names, enc = _encode_multi_label(raw, cfg)
    else:
        names = [cfg.label_column]
        enc = {s: _set_label(ds, tasks.numbers(ds["label"], cfg.label_column, f"{s} split"), datasets.Value("float32"))
               for s, ds in raw.items()}
    if num_labels is not None and task != "regression" and num_labels != len(names):
        raise DataError(
            f"model.num_labels={num_labels} but the training data has {len(names)} labels ({', '.join(names[:10])}); "
            "fix model.num_labels or remove it"
        )

    # Held-out fractions are of the whole source, so 80/10/10 means what it says.
    train = enc["train"]
    total = len(train)
    strat = task == "single_label"
    if "test" not in enc:
        train, enc["test"] = _stratified_split(train, cfg.test_fraction, cfg.split_seed, strat)
    if "validation" not in enc:
        frac = cfg.validation_fraction * total / len(train) if "test" not in raw else cfg.validation_fraction
        train, enc["validation"] = _stratified_split(train, min(frac, 0.5), cfg.split_seed + 1, strat)
    enc["train"] = train

    splits = datasets.DatasetDict({s: enc[s] for s in SPLITS})
    if cfg.max_samples is not None:
        splits = datasets.DatasetDict(
            {s: ds.select(range(min(cfg.max_samples, len(ds)))) for s, ds in splits.items()}
        )
    for s, ds in splits.items():
        if len(ds) == 0:
            raise DataError(f"{s} split is empty after splitting; use more data or other data.*_fraction values")
    return TextData(splits=splits, labels=names, task=task)


def _set_label(ds: datasets.Dataset, values: list, feature) -> datasets.Dataset:
    return ds.remove_columns("label").add_column("label", values).cast_column("label", feature)


def _encode_multi_label(raw: dict[str, datasets.Dataset], cfg: DataConfig) -> tuple[list[str], dict[str, datasets.Dataset]]:
    """Label names and 0/1 float vectors from 0/1 columns, label lists or separated strings."""
    vector = datasets.Sequence(datasets.Value("float32"))
    if cfg.label_columns:  # already vectors (see _select_label_columns)
        return list(cfg.label_columns), {s: ds.cast_column("label", vector) for s, ds in raw.items()}
    sets = {s: [tasks.label_set(v, cfg.label_separator, f"{s} split, row {i} (column '{cfg.label_column}'),")
                for i, v in enumerate(ds["label"])] for s, ds in raw.items()}
    names = build_label_names([x for row in sets["train"] for x in row])
    if not names:
        raise DataError(
            f"no training row has a label in column '{cfg.label_column}'; multi-label data needs lists of labels, "
            "data.label_separator for joined strings, or data.label_columns for 0/1 columns"
        )
    return names, {s: _set_label(ds, tasks.multi_hot(sets[s], names, f"{s} split"), vector) for s, ds in raw.items()}


# ---- tokens ---------------------------------------------------------------------------
def tokenize(data: datasets.DatasetDict, tokenizer, max_length: int, spec=None) -> datasets.DatasetDict:
    """Token ids per example (no padding: batches are padded dynamically), plus ``length``.

    ``spec`` (a :class:`nlp_transfer.chunking.LongTextSpec`) chooses the truncation or the
    sliding windows; with chunking a text becomes several rows, each with the text's label
    and its index in the split as ``doc_id``.
    """
    from .chunking import LongTextSpec, encode

    spec = spec or LongTextSpec(max_length)
    has_pair = "text_pair" in data["train"].column_names

    def fn(batch, indices):
        enc = encode(tokenizer, batch["text"], batch["text_pair"] if has_pair else None, spec)
        doc = enc.pop("doc_id")  # position within this batch
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["labels"] = [batch["label"][d] for d in doc]
        if spec.chunking:
            enc["doc_id"] = [indices[d] for d in doc]
        return enc

    cols = data["train"].column_names
    return data.map(fn, batched=True, with_indices=True, remove_columns=cols, desc="tokenizing")


class PadCollator:
    """Pads a list of tokenized examples to the longest (rounded up to a multiple of 8)."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = 8):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        feats = [{k: v for k, v in ex.items() if k != "length"} for ex in examples]
        return dict(self.tokenizer.pad(feats, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"))


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar-length examples, in random order (train) or longest-first (eval).

    Training: shuffle, cut into mega-batches of ``50 * batch_size``, sort each by length,
    cut into batches, shuffle the batches. Deterministic given ``seed`` and the epoch set
    with :meth:`set_epoch`, so every process (and a resumed run) sees the same order.

    With ``weights`` (per-example probabilities, ``train.sampler: weighted``) an epoch is
    ``len(lengths)`` examples drawn with replacement instead of a permutation; the drawn
    examples are then grouped by length exactly as above, so length grouping still saves
    padding and does not change which examples are drawn.

    ``short_last`` keeps the one short batch at the end. Multi-process runs need it:
    accelerate's ``BatchSamplerShard`` deals batches round-robin and expects only the last one
    to be short; a short batch in the middle makes it drop a pair of batches.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0, group: bool = True,
                 weights: np.ndarray | None = None, short_last: bool = False):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.group = group
        self.weights = weights
        self.short_last = short_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable") if self.group else np.arange(n)
            yield from (order[i : i + bs].tolist() for i in range(0, n, bs))
            return
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(n) if self.weights is None else rng.choice(n, size=n, replace=True, p=self.weights)
        if self.group:
            mega = bs * 50
            perm = np.concatenate(
                [c[np.argsort(-self.lengths[c], kind="stable")] for c in np.array_split(perm, max(1, math.ceil(n / mega)))]
            )
        batches = [perm[i : i + bs].tolist() for i in range(0, n, bs)]
        if self.group:
            batches = [batches[i] for i in rng.permutation(len(batches))]
            if self.short_last:
                batches.sort(key=lambda b: len(b) < bs)  # stable: only the short batch moves
        yield from batches
