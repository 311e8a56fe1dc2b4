"""One process versus two (torchrun, CPU, gloo): the same answers, nothing counted twice or lost.

With 2 processes the effective batch doubles, so training trajectories differ; what must be
identical is the evaluation of identical weights. A learning rate of 1e-12 leaves every float32
weight unchanged, so both runs evaluate the same model every epoch: the validation split (60
examples) and the test split (80) do not divide into 2 x eval_batch_size (64), which is where
duplicated or dropped examples would show.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

import nlp_transfer.training.checkpoints as ckpt
from nlp_transfer import train

REPO = Path(__file__).resolve().parent.parent
SAME_WEIGHTS = (
    "train.lr=1e-12",
    "train.head_lr=1e-12",
    "train.epochs=3",
    "train.early_stopping_patience=1",
    "train.eval_batch_size=32",
    "train.save_every_steps=5",
)


def _without_loss(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "loss"}


@pytest.mark.slow
def test_two_processes_give_the_same_metrics_schedule_and_single_writes_as_one(make_cfg, tmp_path):
    one = train(make_cfg(tmp_path / "one", *SAME_WEIGHTS), progress=False)
    cfg = make_cfg(tmp_path / "two", *SAME_WEIGHTS)
    recipe = tmp_path / "two.yaml"
    recipe.write_text(cfg.to_yaml())
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
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
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    two = json.loads((Path(cfg.output.dir) / "metrics.json").read_text())

    # Identical weights, identical metrics: every example counted once (gather_for_metrics).
    count = lambda m: sum(map(sum, m["confusion_matrix"]))  # noqa: E731
    assert count(one.test) == count(two["test"]) == 80
    assert count(one.history[0]["validation"]) == count(two["epochs"][0]["validation"]) == 60
    assert _without_loss(two["test"]) == json.loads(json.dumps(_without_loss(one.test)))
    assert two["test"]["loss"] == pytest.approx(one.test["loss"], rel=1e-5)
    for a, b in zip(two["epochs"], one.history):
        assert _without_loss(a["validation"]) == json.loads(json.dumps(_without_loss(b["validation"])))

    # Early stopping agreed on both processes (a disagreement would hang a collective): after epoch 2.
    assert len(two["epochs"]) == len(one.history) == 2

    # The effective batch doubles, each process runs half the batches, and the LR schedule is
    # sized to the optimiser steps that run (accelerate ticks the scheduler once per process).
    batches = one.schedule["batches_per_epoch_per_process"]  # 33 on one process
    s = two["schedule"]
    assert (s["num_processes"], s["effective_batch_size"]) == (2, 16) and one.schedule["effective_batch_size"] == 8
    assert s["batches_per_epoch_per_process"] == math.ceil(batches / 2)
    assert s["optimizer_steps"] == 3 * s["optimizer_steps_per_epoch"] == 3 * math.ceil(batches / 2)
    assert s["optimizer_steps_done"] == 2 * s["optimizer_steps_per_epoch"]  # stopped early after 2 of 3 epochs
    assert s["scheduler_ticks"] == 2 * s["optimizer_steps"] and s["scheduler_ticks_done"] == 2 * s["optimizer_steps_done"]

    # Written once, by the main process: one run directory, no leftovers, one final log line.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["run"]
    assert not ckpt.checkpoint_root(cfg).exists()  # checkpoints were saved by both processes, then removed
    assert proc.stderr.count("test (best epoch") == 1
    assert proc.stderr.count("early stopping after epoch 2") == 1


@pytest.mark.parametrize("n, batch_size", [(260, 8), (61, 4), (7, 8)])
def test_sharded_training_batches_drop_no_example(n, batch_size):
    """accelerate deals batches round-robin (BatchSamplerShard, even batches) and expects only the
    last one to be short; the length-grouped sampler keeps its short batch last on several
    processes, so every example trains and both processes run the same number of steps."""
    import numpy as np
    from accelerate.data_loader import BatchSamplerShard

    from nlp_transfer.data.batching import LengthGroupedBatchSampler

    lengths = np.random.default_rng(0).integers(3, 40, n)
    for epoch in range(3):
        shards = []
        for rank in range(2):
            sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, seed=1, short_last=True)
            sampler.set_epoch(epoch)
            shard = BatchSamplerShard(sampler, num_processes=2, process_index=rank, even_batches=True)
            shards.append(list(shard))
            assert len(shards[-1]) == len(shard)  # the steps the schedule was sized for
        seen = [i for shard in shards for batch in shard for i in batch]
        assert set(seen) == set(range(n))
    one = LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, seed=1)
    two = LengthGroupedBatchSampler(lengths, batch_size, shuffle=True, seed=1, short_last=True)
    assert sorted(map(tuple, one)) == sorted(map(tuple, two))  # the same batches, only the order differs


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _torchrun(recipe: Path, *extra: str, wait: bool = True):
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port(),
        "scripts/train.py",
        "--config",
        str(recipe),
        "--no-progress",
        *extra,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_processes_killed_mid_epoch_resume_to_the_same_metrics(make_cfg, tmp_path):
    """Per-process RNG states and loop state, and batch skipping on sharded loaders: a 2-process
    run killed with kill -9 mid-epoch and resumed equals an uninterrupted 2-process run."""
    import signal
    import time

    recipes = {}
    for name, extra in (("ref", ()), ("cut", ("train.save_every_steps=2",))):
        cfg = make_cfg(tmp_path / name, "train.epochs=2", *extra)
        recipes[name] = (cfg, tmp_path / f"{name}.yaml")
        recipes[name][1].write_text(cfg.to_yaml())
    _torchrun(recipes["ref"][1])
    cfg, recipe = recipes["cut"]
    root = ckpt.checkpoint_root(cfg)
    proc = _torchrun(recipe, wait=False)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.list_checkpoints(root) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before a checkpoint appeared"
    finally:  # kill -9 the job: both workers (torchrun starts them in sessions of their own) and the launcher
        for pid in [*_children(proc.pid), proc.pid]:
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not Path(cfg.output.dir).exists()
    _torchrun(recipe, "--resume")
    ref = json.loads((Path(recipes["ref"][0].output.dir) / "metrics.json").read_text())
    got = json.loads((Path(cfg.output.dir) / "metrics.json").read_text())
    (resumed_at,) = got["resumed_from"]
    assert resumed_at["epoch"] == 1 and resumed_at["batch"] > 0
    assert [e["validation"] for e in got["epochs"]] == [e["validation"] for e in ref["epochs"]]
    assert [e["train_loss"] for e in got["epochs"]] == [e["train_loss"] for e in ref["epochs"]]
    assert got["test"] == ref["test"]
