"""Same seed, same metrics; the run directory says what produced it; precision choices."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from nlp_transfer import ConfigError, RecipeConfig, train


def _metrics(result):
    return [e["validation"] for e in result.history], [e["train_loss"] for e in result.history], result.test


def test_two_runs_with_the_same_seed_give_identical_metrics(make_cfg, tmp_path):
    a = train(make_cfg(tmp_path / "a", "train.epochs=1"), progress=False)
    b = train(make_cfg(tmp_path / "b", "train.epochs=1"), progress=False)
    assert _metrics(a) == _metrics(b)
    c = train(make_cfg(tmp_path / "c", "train.epochs=1", "train.seed=1"), progress=False)  # and the seed matters
    assert _metrics(c)[1] != _metrics(a)[1]


def test_run_directory_records_versions_seed_hardware_and_the_resolved_recipe(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "train.epochs=1", "train.seed=7")
    result = train(cfg, progress=False)
    env = json.loads((result.output_dir / "metrics.json").read_text())["environment"]
    assert env["seed"] == 7
    for lib in ("torch", "transformers", "datasets", "accelerate", "tokenizers", "safetensors", "numpy", "scikit-learn"):
        assert env[lib], lib
    assert env["torch"] == torch.__version__
    assert env["processor"] and env["cpu_count"] >= 1 and env["memory_gb"] > 0 and env["threads"] == 1
    assert (env["device"], env["num_processes"], env["mixed_precision"], env["distributed_type"]) == ("cpu", 1, "no", "NO")
    saved = RecipeConfig.from_dict(yaml.safe_load((result.output_dir / "recipe.yaml").read_text()))
    assert saved == cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed where CUDA is")
def test_fp16_on_cpu_is_a_one_line_error(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"fp16 needs a GPU \(loss scaling is CUDA-only\); use bf16 on CPU") as e:
        train(make_cfg(tmp_path, "train.mixed_precision=fp16"), progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_bf16_trains_on_cpu_and_resumes(make_cfg, tmp_path, monkeypatch):
    """bf16 autocast on CPU; a checkpoint records the precision and resumes bit-identically."""
    from test_resume import Crash, _crash_after_step, _same_metrics

    base = ("train.epochs=2", "train.mixed_precision=bf16")
    reference = train(make_cfg(tmp_path / "ref", *base), progress=False)
    assert json.loads((reference.output_dir / "metrics.json").read_text())["environment"]["mixed_precision"] == "bf16"
    cfg = make_cfg(tmp_path / "cut", *base, "train.save_every_steps=10")
    _crash_after_step(monkeypatch, 10)
    with pytest.raises(Crash):
        train(cfg, progress=False)
    monkeypatch.undo()
    _same_metrics(train(cfg.replace("train.resume=latest"), progress=False), reference)
