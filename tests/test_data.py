"""Data loading: formats, saved datasets, columns, labels, splits, errors, batching."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from nlp_transfer.config import DataConfig
from nlp_transfer.data.batching import LengthGroupedBatchSampler, PadCollator, tokenize
from nlp_transfer.data.loading import load_data
from nlp_transfer.errors import DataError
from nlp_transfer.tasks.labels import build_label_names

WORDS = (
    "the a movie film story plot actor scene music cast is was and but with very quite really "
    "good great fine bad awful dull fun long short slow fast dark bright warm cold new old"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True, scope="module")
def _datasets_cache_in_tmp(tmp_path_factory):
    """Keep the datasets cache (one entry per loaded file) out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    yield
    mp.undo()


def make_frame(n: int = 60, labels=("neg", "neu", "pos"), weights=None, seed: int = 0) -> pd.DataFrame:
    """``n`` distinct texts of varying length; labels in the given proportions (exact counts)."""
    rng = np.random.default_rng(seed)
    weights = weights or [1] * len(labels)
    counts = [n * w // sum(weights) for w in weights]
    counts[0] += n - sum(counts)
    ys = [lab for lab, c in zip(labels, counts) for _ in range(c)]
    rng.shuffle(ys)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 12)))) + f" number{i}" for i in range(n)]
    return pd.DataFrame({"text": texts, "label": ys})


def write_frame(df: pd.DataFrame, path: Path) -> Path:
    name = path.name
    if name.endswith((".csv", ".csv.gz")):
        df.to_csv(path, index=False)
    elif name.endswith(".tsv"):
        df.to_csv(path, sep="\t", index=False)
    elif name.endswith(".jsonl"):
        df.to_json(path, orient="records", lines=True)
    elif name.endswith(".json"):
        df.to_json(path, orient="records")
    elif name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        raise AssertionError(name)
    return path


def split_texts(data, split: str) -> list[str]:
    return list(data.splits[split]["text"])


def assert_partition(data, df: pd.DataFrame, text_col: str = "text", label_col: str = "label") -> None:
    """The three splits hold every source row exactly once, each with its own label."""
    truth = {t: str(y) for t, y in zip(df[text_col], df[label_col])}
    seen = []
    for split in ("train", "validation", "test"):
        ds = data.splits[split]
        for text, label_id in zip(ds["text"], ds["label"]):
            assert data.labels[label_id] == truth[text], (split, text)
            seen.append(text)
    assert Counter(seen) == Counter(truth.keys())
    assert len(truth) == len(df)  # texts are distinct, so the check above is exact


# ---- formats ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.json", "d.jsonl", "d.parquet", "d.csv.gz"])
def test_load_each_file_format(tmp_path, name):
    df = make_frame(60)
    path = write_frame(df, tmp_path / name)
    data = load_data(DataConfig(source=str(path)))
    assert data.labels == ["neg", "neu", "pos"] and data.num_labels == 3
    assert data.sizes() == {"train": 48, "validation": 6, "test": 6}
    for split in ("train", "validation", "test"):
        assert data.splits[split].column_names == ["text", "label"]
        assert data.splits[split].features["label"].dtype == "int64"
    assert_partition(data, df)


def test_tsv_texts_with_commas_stay_whole(tmp_path):
    df = make_frame(60)
    df["text"] = df["text"] + ", with a comma, or two"
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.tsv"))))
    assert all(t.endswith(", with a comma, or two") for t in split_texts(data, "train"))
    assert_partition(data, df)


def test_load_saved_dataset(tmp_path):
    df = make_frame(60)
    datasets.Dataset.from_pandas(df, preserve_index=False).save_to_disk(str(tmp_path / "saved"))
    data = load_data(DataConfig(source=str(tmp_path / "saved")))
    assert data.sizes() == {"train": 48, "validation": 6, "test": 6}
    assert_partition(data, df)


def test_load_saved_dataset_dict_keeps_its_test_split(tmp_path):
    df = make_frame(80)
    train_df, test_df = df.iloc[:60], df.iloc[60:]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_pandas(train_df, preserve_index=False),
            "test": datasets.Dataset.from_pandas(test_df, preserve_index=False),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    data = load_data(DataConfig(source=str(tmp_path / "saved"), validation_fraction=0.2))
    assert split_texts(data, "test") == list(test_df["text"])  # kept as is, in order
    # validation is 20% of the source's train split, the rest trains
    assert data.sizes() == {"train": 48, "validation": 12, "test": 20}
    assert set(split_texts(data, "train")) | set(split_texts(data, "validation")) == set(train_df["text"])
    assert_partition(data, df)


def test_saved_dataset_dict_split_aliases(tmp_path):
    df = make_frame(90)
    parts = {"train": df.iloc[:60], "dev": df.iloc[60:75], "test": df.iloc[75:]}
    datasets.DatasetDict({k: datasets.Dataset.from_pandas(v, preserve_index=False) for k, v in parts.items()}).save_to_disk(
        str(tmp_path / "saved")
    )
    data = load_data(DataConfig(source=str(tmp_path / "saved")))
    assert data.sizes() == {"train": 60, "validation": 15, "test": 15}
    assert split_texts(data, "validation") == list(parts["dev"]["text"])
    assert split_texts(data, "train") == list(parts["train"]["text"])


def test_saved_dataset_dict_without_train_split(tmp_path):
    df = make_frame(20)
    datasets.DatasetDict({"test": datasets.Dataset.from_pandas(df, preserve_index=False)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match="no 'train' split"):
        load_data(DataConfig(source=str(tmp_path / "saved")))


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        load_data(DataConfig(source=str(tmp_path / "plain")))


def test_saved_dataset_with_no_rows_is_a_data_error(tmp_path):
    datasets.Dataset.from_dict({"text": ["x"], "label": ["a"]}).select([]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError):
        load_data(DataConfig(source=str(tmp_path / "saved")))


# ---- explicit files -----------------------------------------------------------------
def test_explicit_train_validation_test_files(tmp_path):
    df = make_frame(90)
    tr = write_frame(df.iloc[:60], tmp_path / "train.csv")
    va = write_frame(df.iloc[60:72], tmp_path / "valid.jsonl")
    te = write_frame(df.iloc[72:], tmp_path / "test.parquet")
    data = load_data(DataConfig(source=None, train_file=str(tr), validation_file=str(va), test_file=str(te)))
    assert data.sizes() == {"train": 60, "validation": 12, "test": 18}
    assert split_texts(data, "train") == list(df["text"][:60])  # nothing split off, order kept
    assert split_texts(data, "validation") == list(df["text"][60:72])
    assert split_texts(data, "test") == list(df["text"][72:])
    assert_partition(data, df)


def test_train_file_wins_over_source(tmp_path):
    df = make_frame(60)
    tr = write_frame(df, tmp_path / "train.csv")
    data = load_data(DataConfig(source="does-not-matter.csv", train_file=str(tr)))
    assert sum(data.sizes().values()) == 60


def test_explicit_test_file_validation_split_from_train(tmp_path):
    df = make_frame(80)
    tr = write_frame(df.iloc[:60], tmp_path / "train.csv")
    te = write_frame(df.iloc[60:], tmp_path / "test.csv")
    data = load_data(DataConfig(source=None, train_file=str(tr), test_file=str(te), validation_fraction=0.1))
    assert data.sizes() == {"train": 54, "validation": 6, "test": 20}
    assert split_texts(data, "test") == list(df["text"][60:])


def test_explicit_validation_file_test_split_from_train(tmp_path):
    df = make_frame(80)
    tr = write_frame(df.iloc[:60], tmp_path / "train.csv")
    va = write_frame(df.iloc[60:], tmp_path / "valid.csv")
    data = load_data(DataConfig(source=None, train_file=str(tr), validation_file=str(va), test_fraction=0.2))
    assert data.sizes() == {"train": 48, "validation": 20, "test": 12}
    assert split_texts(data, "validation") == list(df["text"][60:])


# ---- columns ------------------------------------------------------------------------
def test_configurable_column_names(tmp_path):
    df = make_frame(60).rename(columns={"text": "review", "label": "sentiment"})
    df["extra"] = 1
    path = write_frame(df, tmp_path / "d.csv")
    data = load_data(DataConfig(source=str(path), text_column="review", label_column="sentiment"))
    assert data.splits["train"].column_names == ["text", "label"]
    assert_partition(data, df, "review", "sentiment")


def test_swapped_column_names(tmp_path):
    # a file whose 'label' column holds texts and 'text' column holds labels
    df = make_frame(60).rename(columns={"text": "label", "label": "text"})
    path = write_frame(df, tmp_path / "d.csv")
    data = load_data(DataConfig(source=str(path), text_column="label", label_column="text"))
    assert data.labels == ["neg", "neu", "pos"]
    assert_partition(data, df, "label", "text")


def test_text_pair_column(tmp_path):
    df = make_frame(60)
    df["hypothesis"] = ["pair " + t for t in df["text"]]
    path = write_frame(df, tmp_path / "d.csv")
    data = load_data(DataConfig(source=str(path), text_pair_column="hypothesis"))
    for split in ("train", "validation", "test"):
        ds = data.splits[split]
        assert ds.column_names == ["text", "text_pair", "label"]
        assert all(p == "pair " + t for t, p in zip(ds["text"], ds["text_pair"]))


def test_one_column_in_two_roles(tmp_path):
    path = write_frame(make_frame(60), tmp_path / "d.csv")
    with pytest.raises(DataError, match="different columns"):
        load_data(DataConfig(source=str(path), text_pair_column="label"))


# ---- labels -------------------------------------------------------------------------
def test_integer_labels_sort_numerically(tmp_path):
    df = make_frame(60, labels=(10, 2, 1))
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv"))))
    assert data.labels == ["1", "2", "10"]
    assert_partition(data, df)  # label id 2 means the integer 10, and so on


def test_string_labels_sort_alphabetically(tmp_path):
    df = make_frame(60, labels=("sports", "business", "tech"))
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.jsonl"))))
    assert data.labels == ["business", "sports", "tech"]
    assert_partition(data, df)


def test_build_label_names():
    assert build_label_names([3, 1, 20, 3]) == ["1", "3", "20"]
    assert build_label_names([1.0, 0.0]) == ["0", "1"]
    assert build_label_names(np.array([2, 0, 1])) == ["0", "1", "2"]
    assert build_label_names(["b", "a", "B"]) == ["B", "a", "b"]


def test_label_counts(tmp_path):
    df = make_frame(100, weights=[5, 3, 2])
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv"))))
    total = Counter()
    for split in ("train", "validation", "test"):
        total.update(data.label_counts(split))
    assert dict(total) == {"neg": 50, "neu": 30, "pos": 20}


# ---- splits -------------------------------------------------------------------------
def test_split_sizes_and_stratification(tmp_path):
    df = make_frame(100, weights=[5, 3, 2])  # 50 / 30 / 20
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv"))))
    assert data.sizes() == {"train": 80, "validation": 10, "test": 10}
    expected = {"train": (40, 24, 16), "validation": (5, 3, 2), "test": (5, 3, 2)}
    for split, want in expected.items():
        got = data.label_counts(split)
        for name, w in zip(("neg", "neu", "pos"), want):
            assert abs(got[name] - w) <= 1, (split, got)


@pytest.mark.parametrize(
    "n, val, test, sizes",
    [
        (100, 0.15, 0.15, (70, 15, 15)),  # 0.15 * 100 is 15.000000000000002 in floats
        (100, 0.3, 0.15, (55, 30, 15)),
        (28, 0.25, 0.1, (18, 7, 3)),
        (60, 0.1, 0.1, (48, 6, 6)),
        (61, 0.1, 0.1, (47, 7, 7)),  # partial examples round up
    ],
)
def test_split_fractions_are_of_the_whole_source(tmp_path, n, val, test, sizes):
    df = make_frame(n, labels=("a", "b"))
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv")), validation_fraction=val, test_fraction=test))
    assert data.sizes() == dict(zip(("train", "validation", "test"), sizes))
    assert_partition(data, df)


def test_splits_are_deterministic_per_seed(tmp_path):
    df = make_frame(100, weights=[5, 3, 2])
    path = str(write_frame(df, tmp_path / "d.csv"))
    a = load_data(DataConfig(source=path, split_seed=1))
    b = load_data(DataConfig(source=path, split_seed=1))
    c = load_data(DataConfig(source=path, split_seed=2))
    for split in ("train", "validation", "test"):
        assert split_texts(a, split) == split_texts(b, split)
        assert list(a.splits[split]["label"]) == list(b.splits[split]["label"])
    assert set(split_texts(a, "test")) != set(split_texts(c, "test"))
    assert set(split_texts(a, "validation")) != set(split_texts(c, "validation"))
    assert c.sizes() == a.sizes()


def test_tiny_class_still_splits(tmp_path):
    # a class with a single example cannot be stratified; the split must still work
    df = make_frame(40, labels=("a", "b"))
    df.loc[0, "label"] = "c"
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv"))))
    assert data.labels == ["a", "b", "c"]
    assert sum(data.sizes().values()) == 40
    assert_partition(data, df)


def test_max_samples_caps_every_split(tmp_path):
    df = make_frame(100)
    path = str(write_frame(df, tmp_path / "d.csv"))
    full = load_data(DataConfig(source=path))
    capped = load_data(DataConfig(source=path, max_samples=7))
    assert capped.sizes() == {"train": 7, "validation": 7, "test": 7}
    for split in ("train", "validation", "test"):  # a prefix of the same split, so runs stay comparable
        assert split_texts(capped, split) == split_texts(full, split)[:7]
    assert capped.labels == full.labels
    big = load_data(DataConfig(source=path, max_samples=1000))
    assert big.sizes() == full.sizes()


# ---- errors -------------------------------------------------------------------------
def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def test_missing_text_column_lists_columns(tmp_path):
    df = make_frame(60).rename(columns={"text": "sentence"})
    path = write_frame(df, tmp_path / "d.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(path)))
    msg = one_line(e)
    assert "no column 'text'" in msg and "data.text_column" in msg
    assert "sentence" in msg and "label" in msg  # what exists


def test_missing_label_column(tmp_path):
    df = make_frame(60).rename(columns={"label": "category"})
    path = write_frame(df, tmp_path / "d.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(path), label_column="labels"))
    msg = one_line(e)
    assert "no column 'labels'" in msg and "data.label_column" in msg and "category" in msg


def test_missing_text_pair_column(tmp_path):
    path = write_frame(make_frame(60), tmp_path / "d.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(path), text_pair_column="premise"))
    assert "data.text_pair_column" in one_line(e)


def test_missing_column_in_validation_file(tmp_path):
    df = make_frame(80)
    tr = write_frame(df.iloc[:60], tmp_path / "train.csv")
    va = write_frame(df.iloc[60:].rename(columns={"text": "sentence"}), tmp_path / "valid.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train_file=str(tr), validation_file=str(va)))
    msg = one_line(e)
    assert msg.startswith("validation split") and "sentence" in msg


@pytest.mark.parametrize(
    "name, content",
    [("blank.csv", ""), ("header_only.csv", "text,label\n"), ("blank.jsonl", ""), ("records.json", "[]")],
)
def test_empty_file(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(tmp_path / name)))
    msg = one_line(e)
    assert name in msg
    assert "empty" in msg.replace(str(tmp_path), "")  # the temporary path itself contains 'empty'


def test_empty_test_file(tmp_path):
    tr = write_frame(make_frame(60), tmp_path / "train.csv")
    (tmp_path / "test.csv").write_text("text,label\n")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train_file=str(tr), test_file=str(tmp_path / "test.csv")))
    msg = one_line(e).replace(str(tmp_path), "")
    assert "test split" in msg and "empty" in msg


def test_unseen_label_in_validation(tmp_path):
    df = make_frame(80)
    va_df = df.iloc[60:].copy()
    va_df.iloc[3, 1] = "mixed"
    tr = write_frame(df.iloc[:60], tmp_path / "train.csv")
    va = write_frame(va_df, tmp_path / "valid.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train_file=str(tr), validation_file=str(va)))
    msg = one_line(e)
    assert "validation split" in msg and "never saw" in msg and "mixed" in msg
    assert "neg, neu, pos" in msg


def test_unseen_label_in_test(tmp_path):
    df = make_frame(80)
    te_df = df.iloc[60:].copy()
    te_df["label"] = "other"
    tr = write_frame(df.iloc[:60], tmp_path / "train.csv")
    te = write_frame(te_df, tmp_path / "test.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train_file=str(tr), test_file=str(te)))
    msg = one_line(e)
    assert "test split" in msg and "other" in msg


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_or_missing_texts(tmp_path, bad):
    df = make_frame(60)
    df.loc[7, "text"] = bad
    path = write_frame(df, tmp_path / "d.jsonl")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(path)))
    msg = one_line(e)
    assert "1 empty or missing texts" in msg and "row 7" in msg and "data.text_column" in msg


def test_empty_text_pair(tmp_path):
    df = make_frame(60)
    df["other"] = "x"
    df.loc[3, "other"] = ""
    path = write_frame(df, tmp_path / "d.jsonl")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(path), text_pair_column="other"))
    msg = one_line(e)
    assert "empty or missing texts" in msg and "'text_pair'" in msg and "data.text_pair_column" in msg


def test_missing_labels(tmp_path):
    df = make_frame(60)
    df["label"] = df["label"].astype(object)
    df.loc[4, "label"] = None
    path = write_frame(df, tmp_path / "d.jsonl")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(path)))
    assert "without a label" in one_line(e)


def test_single_label(tmp_path):
    df = make_frame(60, labels=("only",))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv"))))
    msg = one_line(e)
    assert "single label" in msg and "only" in msg


def test_num_labels_must_match_data(tmp_path):
    path = str(write_frame(make_frame(60), tmp_path / "d.csv"))
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=path), num_labels=5)
    msg = one_line(e)
    assert "model.num_labels=5" in msg and "3 labels" in msg and "neg, neu, pos" in msg
    assert load_data(DataConfig(source=path), num_labels=3).num_labels == 3


def test_unknown_catalog_like_name_suggests_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source="rotten_tomatos"))
    msg = one_line(e)
    assert "'rotten_tomatos'" in msg
    assert "did you mean 'rotten_tomatoes'" in msg
    for name in ("bbc_news", "tweet_sentiment"):
        assert name in msg


def test_nonexistent_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(tmp_path / "nope.csv")))
    assert "does not exist" in one_line(e) and "nope.csv" in str(e.value)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source="./missing_dir/data"))
    assert "does not exist" in one_line(e)
    tr = write_frame(make_frame(60), tmp_path / "train.csv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train_file=str(tr), validation_file=str(tmp_path / "valid.csv")))
    msg = one_line(e)
    assert "does not exist" in msg and "data.validation_file" in msg


@pytest.mark.parametrize("name", ["data.txt", "data.xlsx", "data"])
def test_unsupported_extension(tmp_path, name):
    (tmp_path / name).write_text("text,label\nhello,a\n")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(tmp_path / name)))
    msg = one_line(e)
    assert "unsupported extension" in msg and ".csv" in msg and ".parquet" in msg


def test_malformed_json(tmp_path):
    (tmp_path / "bad.json").write_text('{"text": "a", "label": ')
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=str(tmp_path / "bad.json")))
    assert "could not read" in one_line(e) and "bad.json" in str(e.value)


# ---- tokens and batches -------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    d = tmp_path_factory.mktemp("tok")
    (d / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tok = BertTokenizerFast.from_pretrained(str(d))
    assert tok("the movie")["input_ids"] == [2, 5, 7, 3]  # words are in the vocabulary, not [UNK]
    return tok


def test_tokenize_adds_length_and_labels(tmp_path, tokenizer):
    df = make_frame(60)
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv"))))
    tok = tokenize(data.splits, tokenizer, max_length=8)
    for split in ("train", "validation", "test"):
        ds = tok[split]
        assert set(ds.column_names) >= {"input_ids", "attention_mask", "length", "labels"}
        assert "text" not in ds.column_names
        assert list(ds["labels"]) == list(data.splits[split]["label"])
        assert all(n == len(ids) <= 8 for n, ids in zip(ds["length"], ds["input_ids"]))
        assert all(ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id for ids in ds["input_ids"])
    assert max(tok["train"]["length"]) == 8  # long texts were truncated


def test_tokenize_text_pairs(tmp_path, tokenizer):
    df = make_frame(60)
    df["second"] = "good film"
    data = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.csv")), text_pair_column="second"))
    tok = tokenize(data.splits, tokenizer, max_length=64)
    ids = tok["train"][0]["input_ids"]
    assert ids.count(tokenizer.sep_token_id) == 2
    assert ids[-4:] == tokenizer.convert_tokens_to_ids(["[SEP]", "good", "film", "[SEP]"])


def test_pad_collator_pads_to_multiple_of_8(tokenizer):
    texts = ["the movie", "the film was very very good and fun", "a story with a long plot and music and cast"]
    examples = []
    for i, t in enumerate(texts):
        enc = tokenizer(t)
        examples.append({**enc, "labels": i % 2, "length": len(enc["input_ids"])})
    longest = max(e["length"] for e in examples)
    assert longest % 8 != 0
    batch = PadCollator(tokenizer)(examples)
    width = -(-longest // 8) * 8
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].shape == (3, width)
    assert "length" not in batch
    assert batch["labels"].tolist() == [0, 1, 0]
    for row, ex in zip(range(3), examples):
        n = ex["length"]
        assert batch["input_ids"][row, :n].tolist() == ex["input_ids"]
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
    plain = PadCollator(tokenizer, pad_to_multiple_of=None)(examples)
    assert plain["input_ids"].shape == (3, longest)
    assert plain["input_ids"].dtype == torch.long


def _flatten(batches):
    return [i for b in batches for i in b]


def test_sampler_covers_every_index_once_per_epoch():
    lengths = np.random.default_rng(0).integers(1, 100, size=103)
    s = LengthGroupedBatchSampler(lengths, batch_size=8, shuffle=True, seed=3)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == 13
        assert sorted(_flatten(batches)) == list(range(103))
        assert sorted(len(b) for b in batches) == [7] + [8] * 12


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(1, 100, size=200)

    def order(seed, epoch, group=True):
        s = LengthGroupedBatchSampler(lengths, batch_size=8, shuffle=True, seed=seed, group=group)
        s.set_epoch(epoch)
        return list(s)

    assert order(1, 0) == order(1, 0)
    assert order(1, 2) == order(1, 2)
    assert order(1, 0) != order(1, 1)  # a new order every epoch
    assert order(1, 0) != order(2, 0)
    assert order(1, 0, group=False) == order(1, 0, group=False)
    assert order(1, 0, group=False) != order(1, 1, group=False)


def test_sampler_eval_mode_is_longest_first():
    lengths = [5, 9, 1, 9, 3, 7, 2]
    s = LengthGroupedBatchSampler(lengths, batch_size=3, shuffle=False)
    batches = list(s)
    assert batches == [[1, 3, 5], [0, 4, 6], [2]]  # stable: ties keep their order
    flat = _flatten(batches)
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    plain = LengthGroupedBatchSampler(lengths, batch_size=3, shuffle=False, group=False)
    assert list(plain) == [[0, 1, 2], [3, 4, 5], [6]]


def test_sampler_groups_similar_lengths():
    n, bs = 400, 8
    lengths = np.random.default_rng(1).permutation(np.arange(1, n + 1))  # all distinct

    def padding(group):
        s = LengthGroupedBatchSampler(lengths, batch_size=bs, shuffle=True, seed=0, group=group)
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in s), list(s)

    grouped_pad, grouped = padding(True)
    random_pad, _ = padding(False)
    assert grouped_pad < random_pad / 10
    # within a mega-batch (50 * bs = all 400 here) lengths are sorted, so each batch spans 8 consecutive lengths
    assert all(lengths[b].max() - lengths[b].min() == bs - 1 for b in grouped)
    # and the batches come in a shuffled order, not longest first
    maxes = [int(lengths[b].max()) for b in grouped]
    assert maxes != sorted(maxes, reverse=True) and maxes != sorted(maxes)


def test_sampler_in_a_dataloader(tokenizer):
    texts = [" ".join(["good"] * k) for k in range(1, 41)]
    feats = [{**tokenizer(t), "labels": 0} for t in texts]
    for f in feats:
        f["length"] = len(f["input_ids"])
    sampler = LengthGroupedBatchSampler([f["length"] for f in feats], batch_size=4, shuffle=False)
    loader = torch.utils.data.DataLoader(feats, batch_sampler=sampler, collate_fn=PadCollator(tokenizer))
    shapes = [b["input_ids"].shape for b in loader]
    assert len(shapes) == 10
    assert shapes[0] == (4, 48) and shapes[-1] == (4, 8)  # longest first, padded to multiples of 8


def test_json_lines_and_records_agree(tmp_path):
    df = make_frame(60)
    a = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.json"))))
    b = load_data(DataConfig(source=str(write_frame(df, tmp_path / "d.jsonl"))))
    for split in ("train", "validation", "test"):
        assert split_texts(a, split) == split_texts(b, split)
    assert json.loads((tmp_path / "d.json").read_text())[0]["text"] == df["text"][0]


def test_unknown_labels_lists_the_first_five_sorted():
    from nlp_transfer.tasks.labels import unknown_labels

    assert unknown_labels(["b", "a", "z", "b"], {"a"}) == "'b', 'z'"
    assert unknown_labels(["b", "z"], {"a"}, quote=False) == "b, z"
    assert unknown_labels(["a"], {"a": 0}) == ""
    assert unknown_labels([str(i) for i in range(7)], set(), quote=False) == "0, 1, 2, 3, 4 ..."
