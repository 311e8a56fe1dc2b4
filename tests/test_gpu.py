"""CUDA: fp16 with loss scaling, bf16, and two DDP processes. Skipped without a GPU; `make gpu-check` runs them.

The hot loop keeps the loss on the device and checks finiteness once per optimiser step, so
these runs also show that nothing in it needs the CPU per micro-batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port

from nlp_transfer import load_run, train

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _gpu_cfg(make_cfg, tmp_path, *overrides):
    return make_cfg(tmp_path, "train.epochs=3", "train.lr=1e-3", "train.num_threads=null", *overrides)


def test_fp16_trains_with_loss_scaling_and_reloads(make_cfg, tmp_path):
    cfg = _gpu_cfg(make_cfg, tmp_path, "train.mixed_precision=fp16")
    result = train(cfg, progress=False)
    m = json.loads((result.output_dir / "metrics.json").read_text())
    assert m["environment"]["mixed_precision"] == "fp16" and m["environment"]["device"].startswith("cuda")
    losses = [e["train_loss"] for e in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.test["accuracy"] > 0.8
    predictor = load_run(result.output_dir)  # the run's own precision (fp16) on the GPU
    assert predictor.precision == "fp16" and predictor.device.type == "cuda"
    ev = predictor.evaluate(*_test_split(cfg))
    assert ev.metrics["accuracy"] == pytest.approx(result.test["accuracy"], abs=0.02)


def test_bf16_trains_on_cuda(make_cfg, tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = train(_gpu_cfg(make_cfg, tmp_path, "train.mixed_precision=bf16"), progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test["accuracy"] > 0.8


@pytest.mark.parametrize("mode", ["lora", "dora", "ia3"])
def test_adapters_train_in_mixed_precision_on_cuda_and_merge(make_cfg, tmp_path, mode):
    from nlp_transfer import merge_run

    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cfg = _gpu_cfg(make_cfg, tmp_path, f"transfer.mode={mode}", f"train.mixed_precision={precision}", "train.lr=1e-2")
    result = train(cfg, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    merged = merge_run(result.output_dir, tmp_path / "merged")
    assert merged.max_logit_difference < 1e-4
    texts, labels = _test_split(cfg)
    a, b = (load_run(d, precision="no").logits(texts) for d in (result.output_dir, merged.output_dir))
    assert abs(a - b).max() < 1e-4


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP on CUDA needs two GPUs (NCCL puts one process on each)")
def test_two_ddp_processes_on_cuda_match_one(make_cfg, tmp_path):
    same = ("train.lr=1e-12", "train.head_lr=1e-12", "train.epochs=2", "train.eval_batch_size=32")
    one = train(make_cfg(tmp_path / "one", *same), progress=False)
    cfg = make_cfg(tmp_path / "two", *same, "train.num_threads=null")
    recipe = tmp_path / "two.yaml"
    recipe.write_text(cfg.to_yaml())
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            free_port(),
            "scripts/train.py",
            "--config",
            str(recipe),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((Path(cfg.output.dir) / "metrics.json").read_text())
    assert two["environment"]["num_processes"] == 2 and two["environment"]["distributed_type"] == "MULTI_GPU"
    assert two["test"]["accuracy"] == pytest.approx(one.test["accuracy"], abs=1e-6)


def _test_split(cfg):
    from nlp_transfer.data.loading import load_data

    data = load_data(cfg.data)
    ds = data.splits["test"]
    return list(ds["text"]), data.task_type.as_labels(ds["label"], data.labels)
