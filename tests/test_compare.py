"""`scripts/compare.py` end to end on the tiny BERT and a toy slice: runs, table, chart, README block."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from nlp_transfer import ConfigError, RecipeConfig
from nlp_transfer.experiments.compare import DEFAULT_RECIPES, describe, load_recipes


def recipe(tmp_path: Path, name: str, model_dir: Path, data_file: Path, **sections) -> Path:
    raw = {
        "name": name,
        "model": {"name_or_path": str(model_dir), "pooling": "mean", "head_dropout": 0.0, "max_length": 32},
        "data": {"source": None, "train_file": str(data_file), "validation_fraction": 0.15, "test_fraction": 0.2},
        "transfer": {"mode": "full"},
        "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "warmup_ratio": 0.0, "mixed_precision": "no", "num_threads": 1, "seed": 0},
    }
    for section, values in sections.items():
        raw[section].update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_compare_end_to_end(tmp_path, tiny_bert_dir, toy_csv):
    recipes = [
        recipe(tmp_path, "scratch", tiny_bert_dir, toy_csv, model={"pretrained": False}),
        recipe(tmp_path, "fe", tiny_bert_dir, toy_csv, transfer={"mode": "feature_extraction"}, train={"epochs": 5}),
        recipe(tmp_path, "full", tiny_bert_dir, toy_csv),
    ]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:compare -->\nold table\n<!-- /results:compare -->\nafter\n")
    runs, out = tmp_path / "runs", tmp_path / "results" / "compare.md"
    cmd = [
        sys.executable,
        "scripts/compare.py",
        *[a for r in recipes for a in ("-r", str(r))],
        "data.max_samples=120",
        "--runs",
        str(runs),
        "--out",
        str(out),
        "--readme",
        str(readme),
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"

    rows = json.loads((runs / "comparison.json").read_text())
    assert [r["recipe"] for r in rows] == [None, "scratch", "fe", "full"]
    assert [r["pretrained"] for r in rows] == [None, False, True, True]
    for r in rows[1:]:
        m = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert r["accuracy"] == m["test"]["accuracy"] and r["f1_macro"] == m["test"]["f1_macro"]
        assert m["data"]["sizes"] == {"train": 120, "validation": 60, "test": 80}  # max_samples applied to every recipe
        assert r["seconds"] > 0 and r["trained_parameters"] == m["parameters"]["trainable"]
    assert json.loads((Path(rows[1]["run_dir"]) / "metrics.json").read_text())["name"] == "scratch"

    table = (runs / "comparison.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == (
        "| method | trained params | epochs | test accuracy | test macro F1 | wall time (s) | gain over random init (accuracy points) |"
    )
    assert len(lines) == 1 + 4 and lines[1].startswith("| TF-IDF + logistic regression | - | - |")
    assert rows[2]["trained_parameters"] == 66 < rows[3]["trained_parameters"]  # the head alone: 32 * 2 + 2
    gain = 100 * (rows[3]["accuracy"] - rows[1]["accuracy"])
    assert lines[4].endswith(f" {gain:+.1f} |") and "full fine-tuning" in lines[4]
    assert lines[2].endswith(" - |") and "random init" in lines[2]
    assert (runs / "comparison.png").read_bytes()[:4] == b"\x89PNG" and (runs / "comparison.png").stat().st_size > 5000
    assert out.with_suffix(".png").is_file()
    assert sorted(p.name for p in runs.iterdir()) == ["comparison.json", "comparison.md", "comparison.png", "fe", "full", "scratch"]

    block = re.search(r"<!-- results:compare -->\n(.*)<!-- /results:compare -->", readme.read_text(), flags=re.S).group(1)
    assert "old table" not in block and lines[4] in block and "Produced by: `nlp-transfer compare -r " in block
    assert block == out.read_text()
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("after\n")


def test_recipes_on_different_data_are_refused(tmp_path, tiny_bert_dir, toy_csv):
    a = recipe(tmp_path, "a", tiny_bert_dir, toy_csv)
    b = recipe(tmp_path, "b", tiny_bert_dir, toy_csv, data={"split_seed": 7})
    with pytest.raises(ConfigError, match=r"different data \(data.split_seed: 42 vs 7\)"):
        load_recipes([a, b])
    assert len(load_recipes([a, b], ["data.split_seed=1"])) == 2  # an override for all makes them comparable


def test_default_recipes_are_shipped_and_comparable():
    cfgs = load_recipes(DEFAULT_RECIPES)
    assert [describe(c) for c in cfgs] == [
        "minilm: random init, full training",
        "minilm: feature extraction (frozen, head only)",
        "minilm: partial fine-tuning (top 2 layers + head)",
        "minilm: full fine-tuning",
    ]
    scratch, full = cfgs[0], cfgs[-1]
    assert not scratch.model.pretrained and full.model.pretrained
    assert scratch.model == full.model.__class__(**{**full.model.__dict__, "pretrained": False})  # same architecture
    logreg = load_recipes(["recipes/rotten_tomatoes/minilm-logreg.yaml"])[0]
    assert describe(logreg) == "minilm: frozen features + logistic regression"
    lora, smollm2 = (
        load_recipes(["recipes/rotten_tomatoes/minilm-lora.yaml"])[0],
        RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/smollm2-lora.yaml"),
    )
    assert describe(lora) == "minilm: lora r=8 (every layer) + head"
    assert describe(smollm2) == "smollm2: lora r=16 (top 8 layers) + head"
    assert describe(lora.replace("transfer.mode=prompt_tuning")) == "minilm: prompt tuning (20 tokens) + head"
    setfit, zero = (RecipeConfig.from_yaml(REPO / f"recipes/rotten_tomatoes/{r}.yaml") for r in ("minilm-setfit", "smollm2-zero_shot"))
    assert describe(setfit) == "minilm: SetFit (contrastive pairs, then logistic regression)"
    assert describe(zero) == "smollm2: zero-shot (next-token label words)"
    student = RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-distill-ensemble.yaml")
    assert describe(student) == "minilm: full fine-tuning, distilled from rt-smollm2-lora, rt-minilm-full"


def test_the_comparison_table_gains_agreement_columns_when_a_student_is_in_it():
    from nlp_transfer.experiments.compare import _row, comparison_table

    test = {"accuracy": 0.8, "f1_macro": 0.79}
    rows = [_row("teacher", "t", "full", True, 3, test, 10.0, "runs/t"), _row("student", "s", "full", True, 3, test, 5.0, "runs/s")]
    assert "agreement" not in comparison_table(rows)
    rows[1].update(agreement=0.91234, kept=0.987)
    lines = comparison_table(rows).splitlines()
    assert lines[0].endswith("| test agreement with teacher | teacher accuracy kept |") and lines[1].endswith("---:|---:|")
    assert lines[2].endswith("| 10.0 | - | - |") and lines[3].endswith("| 5.0 | 0.9123 | 98.7% |")
