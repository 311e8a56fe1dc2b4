"""Checkpoints and resume: a run interrupted mid-epoch and resumed ends exactly like an
uninterrupted one; checkpoints are atomic, pruned to the newest K, and checked when loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_at_first_checkpoint

import nlp_transfer.training.checkpoints as ckpt
from nlp_transfer import ConfigError, train
from nlp_transfer.errors import TrainingError

REPO = Path(__file__).resolve().parent.parent


class Crash(Exception):
    pass


def _crash_after_step(monkeypatch, crash_step: int) -> list[int]:
    """Make training die right after the checkpoint of ``crash_step`` is on disk (like kill -9 there)."""
    saved = []
    original = ckpt.save_checkpoint

    def save_then_maybe_die(accelerator, root, state, *args, **kw):
        out = original(accelerator, root, state, *args, **kw)
        saved.append(state.step)
        if state.step == crash_step:
            raise Crash(f"killed after step {crash_step}")
        return out

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_maybe_die)
    return saved


def _same_metrics(a, b) -> None:
    assert [e["validation"] for e in a.history] == [e["validation"] for e in b.history]
    assert [e["train_loss"] for e in a.history] == [e["train_loss"] for e in b.history]
    assert a.best_epoch == b.best_epoch
    assert a.test == b.test


MODES = {
    "full": ("transfer.mode=full",),  # dropout in the backbone: the RNG must continue exactly
    "feature_extraction": ("transfer.mode=feature_extraction", "train.lr=1e-2"),  # head on cached features
    "partial": ("transfer.mode=partial", "transfer.unfreeze_top=1"),  # frozen-prefix cache installed
    "gradual": ("transfer.mode=gradual",),
    # an adapter on the top layer: peft's modules in the checkpoint, the frozen-prefix cache installed
    "lora": ("transfer.mode=lora", "transfer.peft.layers_to_transform=[-1]", "train.lr=1e-2"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_run_interrupted_mid_epoch_resumes_to_the_same_metrics(make_cfg, tmp_path, monkeypatch, mode):
    base = ("train.epochs=3", *MODES[mode])
    reference = train(make_cfg(tmp_path / "ref", *base), progress=False)  # no checkpoints at all
    cfg = make_cfg(tmp_path / "cut", *base, "train.save_every_steps=4", "train.keep_checkpoints=2")
    per_epoch = reference.schedule["optimizer_steps_per_epoch"]
    crash = (per_epoch // 4 + 2) * 4  # a step checkpoint in the middle of epoch 2
    assert per_epoch < crash < 2 * per_epoch - 1
    saved = _crash_after_step(monkeypatch, crash)
    with pytest.raises(Crash):
        train(cfg, progress=False)
    assert not Path(cfg.output.dir).exists()  # the run directory is complete or absent
    root = ckpt.checkpoint_root(cfg)
    kept = [p.name for p in ckpt.list_checkpoints(root)]
    assert kept == [f"step-{crash - 4:08d}", f"step-{crash:08d}"]  # the newest two
    assert per_epoch in saved  # the epoch end was saved too
    monkeypatch.undo()
    resumed = train(cfg.replace("train.resume=latest"), progress=False)
    _same_metrics(resumed, reference)
    assert resumed.resumes == [{"checkpoint": str(root / f"step-{crash:08d}"), "epoch": 2, "batch": crash - per_epoch, "step": crash}]
    assert not root.exists()  # the finished run directory replaces its checkpoints
    run = Path(cfg.output.dir)
    assert "resume: null" in (run / "recipe.yaml").read_text()
    assert json.loads((run / "metrics.json").read_text())["resumed_from"][0]["step"] == crash


# ---- one crashed run, reused by the checks below ---------------------------------------------
@pytest.fixture(scope="module")
def crashed(tiny_bert_dir, toy_csv, tmp_path_factory):
    """A run that died after its checkpoint at step 10 (epoch 1): its recipe and checkpoint folder."""
    from conftest import build_cfg

    cfg = build_cfg(tmp_path_factory.mktemp("crashed"), tiny_bert_dir, toy_csv, "train.epochs=1", "train.save_every_steps=5")
    mp = pytest.MonkeyPatch()
    _crash_after_step(mp, 10)
    try:
        with pytest.raises(Crash):
            train(cfg, progress=False)
    finally:
        mp.undo()
    return cfg


def _copy_run(cfg, tmp_path):
    """The crashed run's checkpoints under a fresh output dir (so a test may damage them)."""
    import shutil

    new = cfg.replace(f"output.dir={tmp_path / 'run'}")
    shutil.copytree(ckpt.checkpoint_root(cfg), ckpt.checkpoint_root(new))
    return new


def test_checkpoints_hold_the_state_to_continue(crashed):
    root = ckpt.checkpoint_root(crashed)
    assert root == Path(crashed.output.dir).parent / "run.checkpoints"
    (last,) = [p for p in ckpt.list_checkpoints(root) if p.name == "step-00000010"]
    names = {p.name for p in last.iterdir()}
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "loop_0.json", ckpt.MANIFEST} <= names
    loop = json.loads((last / "loop_0.json").read_text())
    assert (loop["epoch"], loop["batches_done"], loop["step"]) == (0, 10, 10)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_prune_keeps_the_newest_k_and_removes_temporary_folders(tmp_path):
    for step in (3, 12, 7, 20):
        (tmp_path / f"step-{step:08d}").mkdir()
        (tmp_path / f"step-{step:08d}" / ckpt.MANIFEST).write_text("{}")
    (tmp_path / ".tmp-step-00000025").mkdir()
    gone = ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000012", "step-00000020"]
    assert len(gone) == 3


def test_a_half_written_checkpoint_is_ignored_on_resume(crashed, tmp_path):
    cfg = _copy_run(crashed, tmp_path)
    root = ckpt.checkpoint_root(cfg)
    half = root / ".tmp-step-00000015"  # a crash while writing step 15
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 100)
    no_manifest = root / "step-00000020"  # renamed but without its manifest: never written by save_checkpoint
    no_manifest.mkdir()
    assert ckpt.resolve_resume(cfg.replace("train.resume=latest")) == root / "step-00000010"
    result = train(cfg.replace("train.resume=latest"), progress=False)
    assert result.resumes[0]["step"] == 10


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:50]),
            r"damaged \(model.safetensors is missing or truncated\)",
        ),
        (lambda d: (d / ckpt.MANIFEST).write_text("{not json"), "incomplete or damaged"),
        (lambda d: (d / "optimizer.bin").write_bytes(b"\0" * (d / "optimizer.bin").stat().st_size), "could not be loaded"),
    ],
)
def test_a_damaged_checkpoint_is_a_one_line_error(crashed, tmp_path, damage, match):
    cfg = _copy_run(crashed, tmp_path)
    damage(ckpt.checkpoint_root(cfg) / "step-00000010")
    with pytest.raises(TrainingError, match=match) as e:
        train(cfg.replace("train.resume=latest"), progress=False)
    assert "\n" not in str(e.value)
    assert not Path(cfg.output.dir).exists()


def test_resume_without_a_checkpoint_is_a_one_line_error(make_cfg, tmp_path, capsys):
    from nlp_transfer.cli import run_cli, train_main

    cfg = make_cfg(tmp_path)
    with pytest.raises(ConfigError, match="holds no complete checkpoint"):
        train(cfg.replace("train.resume=latest"), progress=False)
    with pytest.raises(ConfigError, match="is not a checkpoint folder"):
        train(cfg.replace(f"train.resume={tmp_path / 'nowhere'}"), progress=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(cfg.to_yaml())
    assert run_cli(train_main, ["--config", str(recipe), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train.resume=latest but") and "\n" not in err


@pytest.mark.parametrize(
    "change, match",
    [
        ("train.lr=0.01", "different recipe: train.lr was 0.003, now 0.01"),
        ("train.mixed_precision=bf16", "trained with precision no"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_recipe(crashed, tmp_path, change, match):
    cfg = _copy_run(crashed, tmp_path)
    with pytest.raises(ConfigError, match=match):
        train(cfg.replace("train.resume=latest", change), progress=False)


def test_resume_refuses_the_logreg_head(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="logreg is one scikit-learn fit"):  # when the recipe is read, before any work
        make_cfg(tmp_path, "transfer.mode=feature_extraction", "model.head=logreg", "train.resume=latest")


def test_cli_resume_flag_sets_train_resume(tmp_path, make_cfg, capsys):
    from nlp_transfer.cli import run_cli, train_main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(make_cfg(tmp_path).to_yaml())
    for argv, want in (
        (["--resume"], "latest"),
        (["--resume", "ckpts/step-00000004"], "ckpts/step-00000004"),
        (["--resume", "train.lr=0.1"], "latest"),
    ):
        assert run_cli(train_main, ["--config", str(recipe), "--print-config", *argv]) == 0
        out = capsys.readouterr().out
        assert f"resume: {want}" in out
    assert "lr: 0.1" in out


# ---- the real thing: kill -9 a training process mid-epoch, resume it ---------------------------
@pytest.mark.slow
def test_a_run_killed_with_sigkill_mid_epoch_resumes_to_the_same_metrics(make_cfg, tmp_path):
    base = ("train.epochs=2", "train.num_threads=1")
    reference = train(make_cfg(tmp_path / "ref", *base), progress=False)
    cfg = make_cfg(tmp_path / "cut", *base, "train.save_every_steps=2", "train.keep_checkpoints=2")
    recipe = tmp_path / "cut.yaml"
    recipe.write_text(cfg.to_yaml())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "scripts/train.py", "--config", str(recipe), "--no-progress"]
    root = ckpt.checkpoint_root(cfg)
    kill_at_first_checkpoint(cmd, root, env)
    assert not Path(cfg.output.dir).exists()
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((Path(cfg.output.dir) / "metrics.json").read_text())
    (resumed_at,) = metrics["resumed_from"]
    assert resumed_at["epoch"] == 1 and resumed_at["batch"] > 0  # it really continued mid-epoch
    assert metrics["test"] == json.loads(json.dumps(reference.test))
    assert [e["validation"] for e in metrics["epochs"]] == json.loads(json.dumps([e["validation"] for e in reference.history]))
    assert [e["train_loss"] for e in metrics["epochs"]] == [e["train_loss"] for e in reference.history]


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_multi_label_and_regression_runs_resume_to_the_same_metrics(tmp_path, tiny_bert_dir, monkeypatch, task):
    """The loop state carries the multi-label thresholds tuned with the best epoch."""
    from conftest import build_cfg
    from test_tasks import task_rows

    data = tmp_path / "tasks.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in task_rows(300)) + "\n")
    label = "data.label_column=labels" if task == "multi_label" else "data.label_column=score"
    make = lambda name, *extra: build_cfg(tmp_path / name, tiny_bert_dir, data, label, "train.epochs=3", *extra)  # noqa: E731
    reference = train(make("ref"), progress=False)
    per_epoch = reference.schedule["optimizer_steps_per_epoch"]
    crash = 2 * per_epoch + 4  # mid-epoch 3, after the best thresholds were tuned
    cfg = make("cut", f"train.save_every_steps={crash}")
    _crash_after_step(monkeypatch, crash)
    with pytest.raises(Crash):
        train(cfg, progress=False)
    monkeypatch.undo()
    resumed = train(cfg.replace("train.resume=latest"), progress=False)
    _same_metrics(resumed, reference)
    assert resumed.resumes[0]["batch"] == 4
