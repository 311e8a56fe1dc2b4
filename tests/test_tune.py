"""Hyperparameter search (nlp-transfer tune): the space file, bad input, and short searches on the tiny model.

The searches train the 2-layer, 32-wide BERT of conftest on the 400-row toy CSV (validation 60, test 80
examples), mostly with frozen features, so a trial takes about a second.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nlp_transfer.cli import run_cli, tune_main
from nlp_transfer.config import RecipeConfig
from nlp_transfer.errors import ConfigError
from nlp_transfer.experiments.search_space import DEFAULT_SPACES, default_space, parse_space, recipe_values, sample, space_yaml
from nlp_transfer.experiments.tune import TuneOptions, open_storage, tune

REPO = Path(__file__).resolve().parent.parent
FAST = ("transfer.mode=feature_extraction", "train.epochs=2", "train.lr=1e-2")
LR = {"train.lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}}


def _trials(out: Path, name: str = "toy", storage: str | None = None):
    study = optuna.load_study(study_name=name, storage=open_storage(storage or f"sqlite:///{out / 'study.db'}"))
    return study.get_trials(deepcopy=False)


# ---- the space file ------------------------------------------------------------------------
def test_space_parses_types_bounds_and_conditions():
    params = parse_space(
        {
            "transfer.mode": {"type": "categorical", "choices": ["feature_extraction", "partial", "lora", "full"]},
            "train.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True},
            "transfer.unfreeze_top": {"type": "int", "low": 1, "high": 6, "when": {"transfer.mode": "partial"}},
            "model.head": {"type": "categorical", "choices": ["linear", "logreg"], "when": {"transfer.mode": "feature_extraction"}},
            "train.epochs": {"type": "int", "low": 1, "high": 4},
        }
    )
    assert [p.type for p in params] == ["categorical", "float", "int", "categorical", "int"]
    assert params[1].log and params[1].low == 1.0e-5
    base = RecipeConfig().to_dict()
    partial = sample(
        optuna.trial.FixedTrial({"transfer.mode": "partial", "train.lr": 1e-4, "transfer.unfreeze_top": 3, "train.epochs": 2}), params, base
    )
    assert partial == {"transfer.mode": "partial", "train.lr": 1e-4, "transfer.unfreeze_top": 3, "train.epochs": 2}
    lora = sample(optuna.trial.FixedTrial({"transfer.mode": "lora", "train.lr": 1e-4, "train.epochs": 1}), params, base)
    assert "transfer.unfreeze_top" not in lora and "model.head" not in lora  # their conditions do not hold


def test_a_key_with_several_distributions_is_one_parameter_per_condition():
    raw = {
        "transfer.mode": {"type": "categorical", "choices": ["partial", "full"]},
        "train.lr": [
            {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True, "when": {"transfer.mode": "partial"}},
            {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True, "when": {"transfer.mode": "full"}},
        ],
    }
    params = parse_space(raw)
    assert [p.name for p in params] == ["transfer.mode", "train.lr|partial", "train.lr|full"]
    assert [p.key for p in params] == ["transfer.mode", "train.lr", "train.lr"]
    chosen = {"transfer.mode": "full", "train.lr|full": 5e-3}
    values = sample(optuna.trial.FixedTrial(chosen), params, RecipeConfig().to_dict())
    assert values == {"transfer.mode": "full", "train.lr": 5e-3} == recipe_values(params, chosen)
    again = parse_space(yaml.safe_load(space_yaml(params)))  # what a resumed study compares: the same space
    assert [(p.name, p.low, p.high) for p in again] == [(p.name, p.low, p.high) for p in params]
    with pytest.raises(ConfigError, match="needs its own 'when'"):
        parse_space({"train.lr": [LR["train.lr"], LR["train.lr"]]})
    with pytest.raises(ConfigError, match="the same 'when'"):
        parse_space({"train.lr": [raw["train.lr"][0], raw["train.lr"][0]]})


def test_shipped_spaces_parse_and_print_by_name(capsys):
    for name in ("rt-minilm-modes", "rt-tweets-domain"):
        recipe = "rotten_tomatoes/minilm-full" if name == "rt-minilm-modes" else "rotten_tomatoes/minilm-tune-tweets"
        assert run_cli(tune_main, ["--config", recipe, "--space", name, "--print-space"]) == 0  # no --trials, no --out
        shown = yaml.safe_load(capsys.readouterr().out)
        assert shown == yaml.safe_load((REPO / "recipes" / "spaces" / f"{name}.yaml").read_text())
    assert run_cli(tune_main, ["--config", "rotten_tomatoes/minilm-full", "--space", "rt-minilm-mode", "--print-space"]) == 2
    assert "did you mean 'rt-minilm-modes'" in capsys.readouterr().err


def test_every_default_space_parses_and_zero_shot_has_none():
    for name, raw in DEFAULT_SPACES.items():
        assert parse_space(raw, name), name
    logreg = RecipeConfig.from_dict({"transfer": {"mode": "feature_extraction"}, "model": {"head": "logreg"}})
    assert [p.key for p in default_space(logreg)] == ["model.logreg_c"]
    zero = RecipeConfig.from_dict(
        {"transfer": {"mode": "zero_shot"}, "model": {"prompt": "Review: {text}\nSentiment:", "name_or_path": "smollm2"}}
    )
    with pytest.raises(ConfigError, match="trains nothing to tune"):
        default_space(zero)


@pytest.mark.parametrize(
    "space, words",
    [
        ({"train.lrr": {"type": "float", "low": 1e-5, "high": 1e-3}}, ["'train.lrr' is not a recipe key", "did you mean 'train.lr'"]),
        ({"train.lr": {"type": "float", "low": 1e-2, "high": 1e-5, "log": True}}, ["train.lr", "low (0.01) must be below high (1e-05)"]),
        ({"train.epochs": {"type": "float", "low": 1.0, "high": 4.0}}, ["train.epochs holds int, not a float"]),
        ({"model.head": {"type": "int", "low": 1, "high": 3}}, ["model.head holds str, not a number"]),
        ({"train.lr": {"type": "categorical", "choices": [1e-4, "fast"]}}, ["train.lr: choice 'fast' does not fit the key"]),
        ({"transfer.mode": {"type": "categorical", "choices": ["full", "logreg"]}}, ["choice 'logreg' is not valid", "feature_extraction"]),
        ({"train.lr": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}, ["a log range needs low > 0"]),
        ({"train.lr": {"type": "uniform", "low": 0.0, "high": 1e-3}}, ["type 'uniform' is not one of float, int, categorical"]),
        ({"train.lr": {"type": "float", "lo": 0.0, "high": 1e-3}}, ["unknown field 'lo'", "did you mean 'low'"]),
        (
            {"transfer.unfreeze_top": {"type": "int", "low": 1, "high": 4, "when": {"transfer.mdoe": "partial"}}},
            ["'transfer.mdoe'", "'transfer.mode'"],
        ),
        ({"train.metric_for_best": {"type": "categorical", "choices": ["accuracy"]}}, ["cannot be searched"]),
    ],
)
def test_bad_space_is_one_error_line_and_nothing_written(space, words, make_cfg, tmp_path, capsys):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "tune"
    recipe.write_text(make_cfg(tmp_path).to_yaml())
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    rc = run_cli(tune_main, ["--config", str(recipe), "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and err.startswith("error: search space:"), err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_print_space_shows_the_default_space_of_the_mode(make_cfg, tmp_path, capsys):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "tune"
    recipe.write_text(make_cfg(tmp_path, "transfer.mode=lora").to_yaml())
    assert run_cli(tune_main, ["--config", str(recipe), "--trials", "2", "--out", str(out), "--print-space"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == DEFAULT_SPACES["lora"] and not out.exists()


@pytest.mark.parametrize("storage", ["sqlite:////no/such/folder/study.db", "nosuchdb://user@localhost/x", "journal:/no/such/folder/j.log"])
def test_storage_that_cannot_be_opened_is_one_error_line(storage, make_cfg, tmp_path, capsys):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "tune"
    recipe.write_text(make_cfg(tmp_path).to_yaml())
    rc = run_cli(tune_main, ["--config", str(recipe), "--trials", "2", "--out", str(out), "--storage", storage])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and err.startswith(f"error: --storage {storage}"), err
    assert not out.exists()


def test_readme_without_its_block_is_one_error_line_before_any_trial(make_cfg, tmp_path, capsys):
    recipe, out, page = tmp_path / "recipe.yaml", tmp_path / "tune", tmp_path / "page.md"
    recipe.write_text(make_cfg(tmp_path).to_yaml())
    page.write_text("# Results\n")
    rc = run_cli(tune_main, ["--config", str(recipe), "--trials", "2", "--out", str(out), "--readme", str(page), "--section", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "<!-- results:x -->" in err, err
    assert not out.exists()


# ---- searches --------------------------------------------------------------------------------
def test_search_writes_outputs_never_reads_test_and_best_yaml_trains(make_cfg, tmp_path, monkeypatch):
    import nlp_transfer.training.trainer as trainer_module
    from nlp_transfer.training import train

    cfg = make_cfg(tmp_path, *FAST)
    seen = []  # sizes of every split the trials evaluate (validation 60, test 80)
    real = trainer_module.evaluate_model
    monkeypatch.setattr(
        trainer_module, "evaluate_model", lambda model, loader, *a, **k: seen.append(len(loader.dataset)) or real(model, loader, *a, **k)
    )
    out = tmp_path / "tune"
    result = tune(cfg, parse_space(LR), TuneOptions(trials=3, out=out, pruner="none"))
    monkeypatch.undo()

    assert seen and set(seen) == {60}, f"the trials evaluated splits of sizes {set(seen)}; the test split has 80"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 and all(float(r["f1_macro"]) > 0 for r in rows)
    best = result.study.best_trial
    runs = {t.number: json.loads((out / "trials" / f"{t.number:04d}" / "metrics.json").read_text()) for t in result.study.trials}
    assert runs[best.number]["test"]["num_examples"] == 80  # the chosen trial, scored after the search
    assert all(m["test"] == {} for n, m in runs.items() if n != best.number)  # no other trial was ever scored on test
    assert "## Test\n\naccuracy **" in (out / "trials" / f"{best.number:04d}" / "summary.md").read_text()
    assert (out / "trials" / f"{best.number:04d}" / "learning_curves.png").is_file()
    assert any(m["timing"]["cache"]["features"]["hits"] for m in runs.values()), "later trials reuse the feature cache"
    for name in ("study.md", "history.png", "parallel_coordinate.png", "importance.png", "best.yaml"):
        assert (out / name).is_file(), name
    md = (out / "study.md").read_text()
    assert "## Best trials" in md and f"| {best.number} | {best.value:.4f} |" in md and "optuna-dashboard sqlite:///" in md

    tuned = RecipeConfig.from_yaml(out / "best.yaml", [f"output.dir={tmp_path / 'retrained'}"])
    assert tuned.train.lr == pytest.approx(best.params["train.lr"]) and tuned.transfer.mode == "feature_extraction"
    again = train(tuned, progress=False)
    assert again.validation["f1_macro"] == pytest.approx(best.value, abs=1e-6)  # same recipe, same seed: same run


def test_resume_runs_only_the_missing_trials(make_cfg, tmp_path):
    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    tune(cfg, parse_space(LR), TuneOptions(trials=2, out=out, pruner="none"))
    first = {t.number: (t.datetime_start, t.params) for t in _trials(out)}
    tune(cfg, parse_space(LR), TuneOptions(trials=3, out=out, pruner="none"))
    after = _trials(out)
    assert len(after) == 3 and all(first[t.number] == (t.datetime_start, t.params) for t in after[:2])
    result = tune(cfg, parse_space(LR), TuneOptions(trials=3, out=out, pruner="none", keep_best=1))  # finished: adds nothing
    assert len(_trials(out)) == 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{result.study.best_trial.number:04d}"]  # --keep-best 1
    with pytest.raises(ConfigError, match="another space"):  # a resumed study keeps its space
        tune(cfg, parse_space({"train.lr": {**LR["train.lr"], "high": 0.1}}), TuneOptions(trials=4, out=out))


def test_a_killed_workers_trial_is_failed_and_retried_with_its_values(make_cfg, tmp_path):
    import socket

    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study(study_name="toy", storage=open_storage(f"sqlite:///{out / 'study.db'}"), direction="maximize")
    with pytest.warns(UserWarning):  # optuna: heartbeats are meant for optimize
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)})
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", dead.pid)  # its worker was killed: RUNNING forever without the reaper
    lr = trial.params["train.lr"]
    tune(cfg, parse_space(LR), TuneOptions(trials=1, out=out, pruner="none"))
    trials = _trials(out)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params["train.lr"] == lr and trials[1].user_attrs["retry_of"] == 0
    assert not (out / "trials" / "0000").exists() and (out / "trials" / "0001" / "metrics.json").is_file()


def test_a_trial_whose_heartbeat_stopped_is_retried(make_cfg, tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("NLP_TRANSFER_TUNE_HEARTBEAT", "1")  # stale after 2 s without a beat
    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    out.mkdir()
    storage = open_storage(f"sqlite:///{out / 'study.db'}")
    study = optuna.create_study(study_name="toy", storage=storage, direction="maximize")
    with pytest.warns(UserWarning):  # optuna: heartbeats are meant for optimize
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)})
    trial.set_user_attr("host", "another-machine")  # not this machine's: only its heartbeat tells it is gone
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)  # SQLite keeps heartbeats to the second
    tune(cfg, parse_space(LR), TuneOptions(trials=1, out=out, pruner="none"))
    trials = _trials(out)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == trials[0].number


def test_pruned_trials_leave_no_run_directory(make_cfg, tmp_path):
    cfg, out = make_cfg(tmp_path, *FAST), tmp_path / "tune"
    never = optuna.pruners.ThresholdPruner(lower=1.01)  # no macro F1 reaches it: every trial stops after epoch 1
    result = tune(cfg, parse_space(LR), TuneOptions(trials=2, out=out, pruner=never))
    assert [t.state for t in result.study.trials] == [TrialState.PRUNED] * 2
    assert all(len(t.intermediate_values) == 1 for t in result.study.trials)
    assert not (out / "trials").exists() or not any((out / "trials").iterdir())
    report = (out / "study.md").read_text()
    assert "epochs saved by pruning: 2 (50% of the epochs the finished and pruned trials planned)" in report
    assert not (out / "best.yaml").exists()


def test_a_failing_trial_is_recorded_fail_and_the_search_goes_on(make_cfg, tmp_path):
    cfg, out = make_cfg(tmp_path, "train.epochs=1"), tmp_path / "tune"  # transfer.mode=full: model.head=logreg is refused
    space = parse_space({"model.head": {"type": "categorical", "choices": ["linear", "logreg"]}})
    result = tune(cfg, space, TuneOptions(trials=4, out=out, pruner="none", sampler="random", seed=0))
    states = {t.number: t.state for t in result.study.trials}
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert len(states) == 4 and failed and TrialState.COMPLETE in states.values(), states
    assert all(t.params["model.head"] == "logreg" and "needs transfer.mode=feature_extraction" in t.user_attrs["error"] for t in failed)
    assert all(not (out / "trials" / f"{t.number:04d}").exists() for t in failed)
    assert "## Failed trials" in (out / "study.md").read_text()


def test_second_objective_gives_a_pareto_front(make_cfg, tmp_path):
    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    space = parse_space({**LR, "model.head": {"type": "categorical", "choices": ["linear", "mlp"]}})
    result = tune(cfg, space, TuneOptions(trials=3, out=out, also="trainable_params", sampler="random"))
    assert result.directions == ["maximize", "minimize"] and result.chosen
    assert {c["number"] for c in result.chosen} == {t.number for t in result.study.best_trials}
    assert all(c["test"]["num_examples"] == 80 for c in result.chosen)
    header = next(csv.reader((out / "trials.csv").open()))
    assert "f1_macro" in header and "trainable_params" in header
    assert "Pareto front" in (out / "study.md").read_text() and (out / "pareto_front.png").is_file()


def test_two_workers_on_one_journal_run_distinct_trials(make_cfg, tmp_path):
    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cfg.to_yaml())
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(LR))
    out.mkdir()
    journal = f"journal:{out / 'journal.log'}"
    cmd = [sys.executable, "scripts/tune.py", "--config", str(recipe), "--space", str(tmp_path / "space.yaml"), "--trials", "4"]
    cmd += ["--out", str(out), "--storage", journal, "--pruner", "none", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    trials = _trials(out, storage=journal)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 4 <= len(done) <= 5, [t.state for t in trials]  # a worker may finish the trial it started as the other reached 4
    assert len({t.number for t in done}) == len(done) and len({t.user_attrs["run_dir"] for t in done}) == len(done)
    assert {t.user_attrs["pid"] for t in done} == {w.pid for w in workers}, "both workers ran trials"


# ---- PostgreSQL (many machines) ----------------------------------------------------------------
POSTGRES = os.environ.get("NLP_TRANSFER_POSTGRES_URL", "postgresql://nlp_transfer:nlp_transfer@127.0.0.1:5432/nlp_transfer_test")


def _postgres_reachable() -> str | None:
    """None when the server answers; else why not."""
    try:
        import psycopg2

        psycopg2.connect(POSTGRES, connect_timeout=3).close()
        return None
    except Exception as e:  # no driver, no server, no role
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def test_postgres_storage_runs_trials_with_heartbeats_and_resumes(make_cfg, tmp_path):
    why = _postgres_reachable()
    if why is not None:
        if os.environ.get("NLP_TRANSFER_REQUIRE_POSTGRES"):
            pytest.fail(f"NLP_TRANSFER_REQUIRE_POSTGRES is set but {POSTGRES} cannot be reached: {why}")
        pytest.skip(f"no PostgreSQL server at {POSTGRES} ({why}); .ci/run starts one")
    import uuid

    name = f"toy-{uuid.uuid4().hex[:8]}"
    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    opts = TuneOptions(trials=2, out=out, storage=POSTGRES, study=name, pruner="none")
    try:
        result = tune(cfg, parse_space(LR), opts)
        storage = getattr(result.study._storage, "_backend", result.study._storage)  # optuna wraps RDB storages in a cache
        assert (
            storage.get_heartbeat_interval() > 0 and storage.get_heartbeat_stale_trial_callback() is not None
        )  # a killed worker's trial is retried
        assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 2
        assert not (out / "study.db").exists() and f"optuna-dashboard {POSTGRES}" in (out / "study.md").read_text()
        tune(cfg, parse_space(LR), opts)  # finished: adds nothing
        assert len(optuna.load_study(study_name=name, storage=open_storage(POSTGRES)).trials) == 2
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(POSTGRES))


# ---- robustness through the command and over many trials ----------------------------------------
def _running_trial(db: Path, number: int) -> bool:
    """Trial ``number`` is RUNNING in the SQLite study (read while the worker writes: a locked file is 'not yet')."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return con.execute("SELECT 1 FROM trials WHERE number = ? AND state = 'RUNNING'", (number,)).fetchone() is not None
    except sqlite3.Error:
        return False


def test_kill_9_of_the_command_then_the_same_command_gives_n_trials_without_duplicates(make_cfg, tmp_path):
    from conftest import kill_when

    cfg, out = make_cfg(tmp_path, *FAST, "train.epochs=1"), tmp_path / "tune"
    recipe, space = tmp_path / "recipe.yaml", tmp_path / "space.yaml"
    recipe.write_text(cfg.to_yaml())
    space.write_text(yaml.safe_dump(LR))
    cmd = [sys.executable, "scripts/tune.py", "--config", str(recipe), "--space", str(space), "--trials", "3", "--out", str(out)]
    cmd += ["--pruner", "none", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    kill_when(cmd, lambda: _running_trial(out / "study.db", 1), env, "trial 1 started")  # trial 0 finished, trial 1 running
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    trials = _trials(out)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(done) == 3 and len(killed) == 1 and killed[0].number == 1, [(t.number, t.state, t.user_attrs) for t in trials]
    assert len({t.params["train.lr"] for t in done}) == 3, "a resumed search draws new values"
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["run_dir"] for t in done}) == 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(f"{t.number:04d}" for t in done)  # no run dir of the killed trial
    (retry,) = [t for t in done if t.user_attrs.get("retry_of") == 1]
    assert killed[0].params.items() <= retry.params.items()  # the killed trial ran again with the values it had drawn
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 4


MEMORY_PROBE = """
import gc, json, resource, sys
import torch
from nlp_transfer.config import RecipeConfig
from nlp_transfer.experiments import tune as t
from nlp_transfer.experiments.search_space import parse_space

cfg = RecipeConfig.from_yaml(sys.argv[1])
real, seen = t.Search.objective, []

def objective(self, trial):
    try:
        return real(self, trial)
    finally:
        gc.collect()
        modules = sum(isinstance(o, torch.nn.Module) for o in gc.get_objects())
        seen.append({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "modules": modules})

t.Search.objective = objective
t.tune(cfg, parse_space(json.loads(sys.argv[2])), t.TuneOptions(trials=20, out=sys.argv[3], pruner="none", sampler="random"))
print(json.dumps(seen))
"""


def test_peak_memory_after_20_trials_is_within_10_percent_of_that_after_5(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, *FAST, "train.epochs=1", "data.max_samples=120")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cfg.to_yaml())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", MEMORY_PROBE, str(recipe), json.dumps(LR), str(tmp_path / "tune")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == 20
    after5, after20 = seen[4], seen[19]
    assert after20["peak_kb"] <= 1.10 * after5["peak_kb"], (after5, after20)
    assert after20["modules"] == after5["modules"], "models of finished trials stay in memory"


def test_continued_pretraining_in_the_space_adapts_once_per_setting_and_best_yaml_names_the_checkpoint(make_cfg, tmp_path, caplog):
    """adapt.* in the space: a trial adapts before training, into DIR/adapted/KEY, and later trials with the same
    settings reuse it; adapt.epochs=0 trains the recipe's own checkpoint; the results block sums the search up."""
    import logging

    from nlp_transfer.experiments.tune_report import results_markdown

    caplog.set_level(logging.INFO, logger="nlp_transfer")
    cfg = make_cfg(tmp_path, *FAST, "adapt.max_samples=64", "adapt.lr=1e-3")
    space = parse_space({"adapt.epochs": {"type": "categorical", "choices": [0, 1]}, **LR})
    out = tmp_path / "tune"
    out.mkdir()
    study = optuna.create_study(study_name="toy", storage=f"sqlite:///{out / 'study.db'}", direction="maximize")
    for epochs in (1, 0, 1):  # queued, so each setting is drawn
        study.enqueue_trial({"adapt.epochs": epochs})
    result = tune(cfg, space, TuneOptions(trials=3, out=out, pruner="none", study="toy"))
    trials = sorted(result.study.trials, key=lambda t: t.number)
    assert [t.params["adapt.epochs"] for t in trials] == [1, 0, 1] and all(t.state == TrialState.COMPLETE for t in trials)
    adapted = sorted(p for p in (out / "adapted").iterdir() if p.is_dir())
    assert len(adapted) == 1 and (adapted[0] / "adapt.json").is_file()  # one setting, adapted once
    assert caplog.text.count("continued pretraining for this trial") == 1 and f"reusing {adapted[0]}" in caplog.text
    used = [RecipeConfig.from_yaml(out / "trials" / f"{t.number:04d}" / "recipe.yaml").model.name_or_path for t in trials]
    assert used[0] == used[2] == str(adapted[0]) and used[1] == cfg.model.name_or_path
    best = RecipeConfig.from_yaml(out / "best.yaml")
    assert best.model.name_or_path == used[result.study.best_trial.number]
    text = results_markdown(result, cfg, space, "toy-space")
    assert "3 trials (3 complete)" in text and "| epochs run | `adapt.epochs` | `train.lr` |" in text and "| complete |" in text
    assert f"The chosen trial ({result.study.best_trial.number}) on the test split" in text
