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


# The trials each process trains, recorded from inside scripts/tune.py (the values a process trains are what matters).
TRIAL_LOG = """
import json, os, runpy, sys
from nlp_transfer.experiments import tune as t
real = t.Search.train
def train(self, number, values, trial=None):
    with open(os.environ["TRIAL_LOG"], "a") as f:
        f.write(json.dumps({"rank": int(os.environ["RANK"]), "pid": os.getpid(), "number": number, "values": values}) + "\\n")
    return real(self, number, values, trial)
t.Search.train = train
sys.argv = ["scripts/tune.py", *sys.argv[1:]]
runpy.run_path("scripts/tune.py", run_name="__main__")
"""


@pytest.mark.slow
def test_a_two_process_trial_trains_the_same_parameters_on_both_ranks(make_cfg, tmp_path):
    import optuna
    import yaml

    from nlp_transfer.config import RecipeConfig
    from nlp_transfer.experiments.tune import open_storage

    cfg, out = make_cfg(tmp_path, "transfer.mode=feature_extraction", "train.epochs=1"), tmp_path / "tune"
    recipe, space, script, log = tmp_path / "recipe.yaml", tmp_path / "space.yaml", tmp_path / "tune_logged.py", tmp_path / "trials.jsonl"
    recipe.write_text(cfg.to_yaml())
    space.write_text(yaml.safe_dump({"train.lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}}))
    script.write_text(TRIAL_LOG)
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", free_port(), str(script)]
    cmd += ["--config", str(recipe), "--space", str(space), "--trials", "2", "--out", str(out), "--pruner", "none", "--no-progress"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TRIAL_LOG": str(log)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    trained = [json.loads(line) for line in log.read_text().splitlines()]
    by_rank = {r: [(e["number"], e["values"]) for e in trained if e["rank"] == r] for r in (0, 1)}
    assert len(by_rank[0]) == 2 and by_rank[1] == by_rank[0], by_rank  # the same trial numbers and values on both ranks
    study = optuna.load_study(study_name="toy", storage=open_storage(f"sqlite:///{out / 'study.db'}"))
    main_pid = {e["pid"] for e in trained if e["rank"] == 0}
    assert [(t.number, t.params) for t in study.trials] == by_rank[0]
    assert {t.user_attrs["pid"] for t in study.trials} == main_pid  # only the main process asked the study for trials
    for t in study.trials:
        ran = RecipeConfig.from_yaml(out / "trials" / f"{t.number:04d}" / "recipe.yaml")
        assert ran.train.lr == pytest.approx(t.params["train.lr"])
    assert proc.stderr.count("study 'toy':") == 1 and sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001"]


@pytest.mark.slow
def test_two_nodes_give_the_metrics_of_two_processes_on_one_node(make_cfg, tmp_path):
    """Two torchrun launchers of one process each meet through a c10d rendezvous on 127.0.0.1: the same
    2-process job as one launcher of 2 processes, so the same trained weights and metrics."""
    recipes = {}
    for name in ("one_node", "two_nodes"):
        cfg = make_cfg(tmp_path / name, "train.epochs=1")
        recipes[name] = (cfg, tmp_path / f"{name}.yaml")
        recipes[name][1].write_text(cfg.to_yaml())
    _torchrun(recipes["one_node"][1])
    torchrun, port = str(Path(sys.executable).parent / "torchrun"), free_port()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}"]
            + ["--node_rank", str(rank), "scripts/train.py", "--config", str(recipes["two_nodes"][1]), "--no-progress"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    errs = [n.communicate(timeout=300)[1] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [e[-6000:] for e in errs]
    assert sum(e.count("2 process(es)") for e in errs) >= 1
    one = json.loads((Path(recipes["one_node"][0].output.dir) / "metrics.json").read_text())
    two = json.loads((Path(recipes["two_nodes"][0].output.dir) / "metrics.json").read_text())
    assert two["schedule"]["num_processes"] == 2 and two["test"]["num_examples"] == 80
    assert _without_loss(two["test"]) == _without_loss(one["test"])
    assert two["test"]["loss"] == pytest.approx(one["test"]["loss"], rel=1e-5)
    assert [_without_loss(e["validation"]) for e in two["epochs"]] == [_without_loss(e["validation"]) for e in one["epochs"]]
    assert sorted(p.name for p in (tmp_path / "two_nodes").iterdir()) == ["run"]  # written once


_RANK_SCRIPT = """
import atexit, sys
from nlp_transfer.cli.common import run_cli

out = sys.argv[1]


class Teardown:  # a module global: only the interpreter's teardown destroys it
    def __init__(self, path):
        self.path, self.open = path, open  # builtins may be gone by then

    def __del__(self):
        with self.open(self.path, "w") as f:
            f.write("ran")


kept = Teardown(out + "/teardown")


def main(argv):
    atexit.register(lambda: open(out + "/atexit", "w").write("ran"))
    print("done", end="")  # still in the buffer when main returns


sys.exit(run_cli(main, []))
"""


@pytest.mark.parametrize("world_size", ["2", None])
def test_a_finished_rank_runs_its_exit_handlers_and_leaves_without_the_teardown(tmp_path, world_size):
    """One process of a multi-process launch (WORLD_SIZE > 1) that finished its command: its exit handlers run
    and what it printed arrives, but the interpreter's teardown, where torch's C++ objects can abort a finished
    rank, never runs (a module global's __del__ is not called). A single process exits as Python does."""
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"} | {"PYTHONPATH": str(REPO)}
    if world_size:
        env["WORLD_SIZE"] = world_size
    proc = subprocess.run([sys.executable, "-c", _RANK_SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "done"), proc.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "teardown").exists() == (world_size is None)
