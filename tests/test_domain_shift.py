"""Cross-domain evaluation: data.label_map, a recipe as the unlabelled target, `scripts/compare.py --target`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, toy_rows, write_csv
from test_compare import recipe

from nlp_transfer import ConfigError, DataError, RecipeConfig
from nlp_transfer.config import DataConfig
from nlp_transfer.data.loading import load_data, unlabelled_texts

# Another "domain": the toy task with other label names and a third class the source never saw.
TARGET_NAMES = {"pos": "positive", "neg": "negative"}


@pytest.fixture(scope="module")
def target_csv(tmp_path_factory) -> Path:
    rows = [(t, TARGET_NAMES[y]) for t, y in toy_rows(260, seed=7)]
    rows += [(f"neutral filler text number {i}", "neutral") for i in range(40)]
    return write_csv(tmp_path_factory.mktemp("target") / "target.csv", rows)


def target_recipe(tmp_path: Path, model_dir: Path, target_csv: Path) -> Path:
    return recipe(tmp_path, "reference", model_dir, target_csv, data={"label_map": {"positive": "pos", "negative": "neg", "neutral": None}})


def test_label_map_renames_and_drops_before_splitting(target_csv):
    cfg = DataConfig(source=str(target_csv), label_map={"positive": "pos", "negative": "neg", "neutral": None})
    data = load_data(cfg)
    assert data.labels == ["neg", "pos"]
    assert sum(data.sizes().values()) == 260  # the 40 neutral rows are gone, before the split
    texts = [t for split in data.splits.values() for t in split["text"]]
    assert not any(t.startswith("neutral filler") for t in texts)
    # Stratified over what is left: both classes in every split, in the source's proportions.
    for split in data.splits.values():
        assert abs(sum(split["label"]) / len(split) - 0.5) < 0.1
    # A map that only renames keeps every row, the unnamed label as it was.
    kept = load_data(DataConfig(source=str(target_csv), label_map={"positive": "pos"}))
    assert kept.labels == ["negative", "neutral", "pos"] and sum(kept.sizes().values()) == 300


def test_label_map_mistakes(target_csv):
    with pytest.raises(DataError, match=r"data.label_map names 'postive', which is not a label of the data \(did you mean 'positive'\?\)"):
        load_data(DataConfig(source=str(target_csv), label_map={"postive": "pos"}))
    with pytest.raises(ConfigError, match="maps every label it names to null"):
        DataConfig(source=str(target_csv), label_map={"neutral": None})
    with pytest.raises(ConfigError, match="multi-label data; remove data.label_map"):
        DataConfig(source=str(target_csv), label_separator="|", label_map={"a": "b"})
    with pytest.raises(ConfigError, match="data.label_map"):
        RecipeConfig.from_dict({"data": {"source": "x.csv", "label_map": ["positive", "pos"]}})


def test_a_recipe_as_unlabelled_source_gives_its_training_texts(tmp_path, tiny_bert_dir, toy_csv, target_csv):
    path = target_recipe(tmp_path, tiny_bert_dir, target_csv)
    data = load_data(RecipeConfig.from_yaml(path).data)
    source_cfg = RecipeConfig.from_yaml(recipe(tmp_path, "source", tiny_bert_dir, toy_csv)).data
    train, held_out, what = unlabelled_texts(source_cfg, str(path), "text", 0.05, 0, "adapt")
    assert train == list(data.splits["train"]["text"]) and held_out == list(data.splits["validation"]["text"])
    assert not set(train) & set(data.splits["test"]["text"])  # the target's test texts stay unseen
    assert what == f"the training texts of recipe '{path}'"
    with pytest.raises(DataError, match="recipe 'missing.yaml' does not exist"):
        unlabelled_texts(source_cfg, "missing.yaml", "text", 0.05, 0, "adapt")


def test_compare_with_a_target_recipe(tmp_path, tiny_bert_dir, toy_csv, target_csv):
    from nlp_transfer import load_run
    from nlp_transfer.experiments.compare import compare

    recipes = [
        recipe(tmp_path, "source-only", tiny_bert_dir, toy_csv, train={"epochs": 1}),
        recipe(tmp_path, "longer", tiny_bert_dir, toy_csv, train={"epochs": 3}),
    ]
    target = target_recipe(tmp_path, tiny_bert_dir, target_csv)
    result = compare(recipes, tmp_path / "runs", ["data.max_samples=100"], progress=False, target=str(target))

    rows = result.rows
    assert [r["recipe"] for r in rows] == [None, "source-only", "longer", "in-domain-reference"]
    assert rows[-1]["reference"] is True and not any(r.get("reference") for r in rows[:-1])
    ref_data = load_data(RecipeConfig.from_yaml(target, ["data.max_samples=100"]).data)
    test = ref_data.splits["test"]
    texts, labels = list(test["text"]), [ref_data.labels[i] for i in test["label"]]
    for r in rows[1:]:  # every run reloaded and scored on the target's test split
        m = load_run(r["run_dir"]).evaluate(texts, labels).metrics
        assert (r["target_accuracy"], r["target_f1_macro"]) == (m["accuracy"], m["f1_macro"])
    ref_metrics = json.loads((Path(rows[-1]["run_dir"]) / "metrics.json").read_text())
    assert ref_metrics["name"] == "reference" and sorted(ref_metrics["data"]["label_counts"]["test"]) == ["neg", "pos"]
    assert rows[-1]["target_accuracy"] == ref_metrics["test"]["accuracy"]  # its own test split is the target
    assert "accuracy" in rows[0] and "target_accuracy" in rows[0]  # TF-IDF scored on the target too
    for key in ("accuracy", "f1_macro"):
        gap = rows[-1][f"target_{key}"] - rows[1][f"target_{key}"]
        expected = (rows[2][f"target_{key}"] - rows[1][f"target_{key}"]) / gap if gap > 0 else None
        assert rows[2][f"gap_recovered_{key}"] == expected
    assert "gap_recovered_accuracy" not in rows[1]

    lines = [line for line in result.table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | trained on | source test accuracy | source test macro F1 | target accuracy |")
    assert len(lines) == 1 + 4 and lines[1].startswith("| TF-IDF + logistic regression | source labels |")
    assert "0% (source-only)" in lines[2] and lines[4].split(" | ")[2:4] == ["-", "-"] and "100% (reference)" in lines[4]
    drop = 100 * (rows[2]["accuracy"] - rows[2]["target_accuracy"])
    assert f" {drop:+.1f} |" in lines[3] and "(`longer`)" in lines[3]
    assert "Target: test split of" in result.table and f"{len(texts):,} examples" in result.table
    assert (tmp_path / "runs" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_target_mistakes_are_one_line(tmp_path, tiny_bert_dir, toy_csv, target_csv):
    source = recipe(tmp_path, "source-only", tiny_bert_dir, toy_csv)
    unmapped = recipe(tmp_path, "unmapped", tiny_bert_dir, target_csv)  # positive/negative/neutral: foreign labels
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = tmp_path / "runs"
    for target, message in [
        (
            unmapped,
            "error: the target has labels the source runs do not know (negative, neutral, positive; theirs: neg, pos); "
            "rename or drop them with data.label_map",
        ),
        (tmp_path / "nothing.csv", "error: --target '"),
    ]:
        proc = subprocess.run(
            [sys.executable, "scripts/compare.py", "-r", str(source), "--target", str(target), "--runs", str(runs), "--no-progress"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not runs.exists()


def test_shipped_domain_recipes_describe_the_public_case():
    """The recipes `make domain` runs: the target is the tweets' positive and negative classes renamed to Rotten
    Tomatoes' labels; adaptation and DANN read that recipe's training texts, never its test split."""
    target = RecipeConfig.from_yaml(REPO / "recipes/tweet_sentiment/minilm-full-posneg.yaml")
    assert target.data.source == "tweet_sentiment"
    assert target.data.label_map == {"positive": "fresh", "negative": "rotten", "neutral": None}
    posneg = "recipes/tweet_sentiment/minilm-full-posneg.yaml"
    assert RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-adapt-tweets.yaml").adapt.source == posneg
    assert RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-dann-tweets.yaml").transfer.domain_adversarial.target == posneg
    source = RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-full.yaml")
    for name in ("minilm-dann-tweets", "minilm-full-tweets-adapted", "minilm-full-tapt"):
        cfg = RecipeConfig.from_yaml(REPO / f"recipes/rotten_tomatoes/{name}.yaml")
        assert cfg.data == source.data and cfg.train == source.train  # only the adaptation differs
    adapted = yaml.safe_load((REPO / "recipes/rotten_tomatoes/minilm-adapt-tweets.yaml").read_text())["output"]["dir"]
    assert RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-full-tweets-adapted.yaml").model.name_or_path == adapted
    tapt = yaml.safe_load((REPO / "recipes/rotten_tomatoes/minilm-adapt-tapt.yaml").read_text())
    assert tapt.get("adapt", {}).get("source") is None
    assert RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-full-tapt.yaml").model.name_or_path == tapt["output"]["dir"]
