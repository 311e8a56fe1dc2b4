"""Active learning: query strategies on hand-made inputs, the simulation's oracle, a person's loop on disk
(write, fill, run again; bad label files refused), and an interrupted simulation resumed."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, build_cfg, kill_when, toy_rows, write_csv

from nlp_transfer.cli import label_main, run_cli
from nlp_transfer.experiments.active import Oracle, simulate, simulate_one
from nlp_transfer.experiments.strategies import greedy_k_center, kappa_average, query, scores

# Hand-made probabilities over 4 classes: each uncertainty strategy has its own most wanted row.
PROBS = np.array(
    [
        [0.97, 0.01, 0.01, 0.01],  # 0: confident
        [0.4995, 0.4985, 0.002, 0.0],  # 1: a near tie of the top two (breaking_ties)
        [0.30, 0.28, 0.28, 0.14],  # 2: the lowest top probability (least_confidence)
        [0.31, 0.23, 0.23, 0.23],  # 3: the flattest distribution (entropy)
        [0.80, 0.10, 0.05, 0.05],  # 4: labelled already
    ]
)
EMB = np.random.default_rng(0).normal(size=(5, 3))


def _q(name, n, labelled=(4,), probs=PROBS, emb=EMB, seed=0):
    unl = np.setdiff1d(np.arange(len(emb)), labelled)
    return query(name, n, probs=probs, embeddings=emb, labelled=np.asarray(labelled, dtype=np.int64), unlabelled=unl, seed=seed).tolist()


def test_uncertainty_strategies_pick_by_their_definitions():
    assert _q("least_confidence", 1) == [2]
    assert _q("entropy", 1) == [3]
    assert _q("breaking_ties", 1) == [1]
    assert _q("least_confidence", 4) == [2, 3, 1, 0]  # top probability .30 < .31 < .4995 < .97
    assert _q("breaking_ties", 4) == [1, 2, 3, 0]  # margins .001 < .02 < .08 < .96
    ent = scores("entropy", PROBS)
    assert _q("entropy", 4) == sorted(range(4), key=lambda i: -ent[i]) and ent.argmax() == 3
    assert 4 not in _q("entropy", 4)


def test_random_draws_from_the_unlabelled_rows_with_its_seed():
    picks = {tuple(_q("random", 2, seed=s)) for s in range(20)}
    assert all(4 not in p and len(set(p)) == 2 for p in picks)
    assert len(picks) > 3  # the seed changes the draw
    assert _q("random", 2, seed=7) == _q("random", 2, seed=7)
    with pytest.raises(Exception, match="needs a model"):
        _q("entropy", 1, probs=None)


def test_kmeans_takes_the_text_nearest_each_cluster_centre():
    # three tight clusters around the axes; in each, the text at the centre (the axis itself) and two around it
    rows, centres = [], []
    for axis in range(3):
        e = np.eye(3)[axis]
        other = np.eye(3)[(axis + 1) % 3]
        centres.append(len(rows))
        rows += [e, e + 0.1 * other, e - 0.1 * other]
    emb = np.asarray(rows)
    picked = _q("kmeans", 3, labelled=(), probs=None, emb=emb)
    assert sorted(picked) == centres


def test_coreset_takes_the_text_farthest_from_everything_chosen():
    angles = np.radians([0, 10, 45, 90, 170, 180])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1], [3], [1], [2], [1], [5]])  # lengths do not matter
    # labelled: 0 degrees; farthest 180, then 90 (90 degrees from both), then 45 (45 from 0 and from 90)
    assert _q("coreset", 3, labelled=(0,), probs=None, emb=emb) == [5, 3, 2]
    assert greedy_k_center(emb, np.array([0, 5]), np.array([1, 2, 3, 4]), 1, 0).tolist() == [3]


def test_kappa_average_waits_for_its_window_and_measures_change():
    same = [[0, 1, 1, 0]] * 3
    assert kappa_average(same) is None
    assert kappa_average(same + [[0, 1, 1, 0]]) == 1.0
    assert kappa_average([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]) == -1.0


class SpyLabels:
    """Labels that record every row read."""

    def __init__(self, labels):
        self.labels, self.reads = list(labels), []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.labels[i]


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 8)) + 2.0 * np.eye(8)[y]
    return x, y


@pytest.mark.parametrize("strategy", ["breaking_ties", "coreset"])
def test_simulation_reads_a_label_only_when_it_is_queried(strategy):
    x, y = _blobs()
    xt, yt = _blobs(60, seed=1)
    spy = SpyLabels(y)
    oracle = Oracle(spy)
    points = simulate_one(strategy, x, oracle, xt, yt, ["a", "b", "c"], batch=6, rounds=4, seed=0, C=1.0)
    picked = [p["picked"] for p in points]
    assert oracle.queried == picked  # one query per round, of exactly the rows picked
    assert spy.reads == [r for rows in picked for r in rows]  # nothing else was ever read, in that order
    assert len(set(spy.reads)) == 24 and points[-1]["labels"] == 24
    # the labels of rows never queried cannot matter: change them all and every pick and score stays the same
    other = y.copy()
    hidden = np.setdiff1d(np.arange(len(y)), spy.reads)
    other[hidden] = (other[hidden] + 1) % 3
    again = simulate_one(strategy, x, Oracle(other), xt, yt, ["a", "b", "c"], batch=6, rounds=4, seed=0, C=1.0)
    assert [p["picked"] for p in again] == picked and [p["accuracy"] for p in again] == [p["accuracy"] for p in points]
    assert points[-1]["accuracy"] > 0.8  # the blobs are learnable


# ---- a person in the loop, on the tiny model ----------------------------------------------------------
@pytest.fixture
def loop(tmp_path, tiny_bert_dir, toy_csv):
    cfg = build_cfg(
        tmp_path,
        tiny_bert_dir,
        toy_csv,
        "transfer.mode=feature_extraction",
        "model.head=logreg",
        "model.logreg_c=1.0",
        f"transfer.cache_dir={tmp_path / 'cache'}",
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cfg.to_yaml())
    rows = toy_rows(60, seed=5)
    pool = write_csv(tmp_path / "pool.csv", [(f"t{i}", text) for i, (text, _) in enumerate(rows)], header=("id", "text"))
    truth = {f"t{i}": label for i, (_, label) in enumerate(rows)}
    out = tmp_path / "al"
    args = ["--config", str(recipe), "--pool", str(pool), "--strategy", "breaking_ties", "--batch", "8", "--rounds", "2", "--out", str(out)]
    return {"args": args + ["--no-seed"], "out": out, "truth": truth, "tmp": tmp_path, "recipe": recipe, "cfg": cfg}


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fill(path: Path, truth: dict, keep=None, change=None) -> None:
    rows = _read(path)
    for i, r in enumerate(rows):
        if keep is None or i < keep:
            r["label"] = truth[r["id"]]
    rows = change(rows) if change else rows
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "guess", "score", "label"])
        w.writeheader()
        w.writerows(rows)


def _call(args, capsys) -> tuple[int, str, str]:
    code = run_cli(label_main, args + ["--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip_write_fill_run_again_then_train(loop, capsys):
    out, truth = loop["out"], loop["truth"]
    code, stdout, _ = _call(loop["args"], capsys)
    first = _read(out / "round-1" / "to_label.csv")
    assert code == 0 and "round 1" in stdout and len(first) == 8
    assert all(r["label"] == "" and r["guess"] == "" for r in first)  # nothing labelled yet: no model, no guesses
    code, _, err = _call(loop["args"], capsys)
    assert code == 2 and err.strip().startswith("error: no labels in") and len(err.strip().splitlines()) == 1
    _fill(out / "round-1" / "to_label.csv", truth, keep=6)  # partly filled
    code, stdout, _ = _call(loop["args"], capsys)
    second = _read(out / "round-2" / "to_label.csv")
    state = json.loads((out / "state.json").read_text())
    assert code == 0 and stdout.startswith("6 labels read") and len(state["answers"]) == 6
    assert {r["id"] for r in second}.isdisjoint(state["answers"]) and len(second) == 8
    assert all(r["guess"] in ("neg", "pos") and 0.5 <= float(r["score"]) <= 1 for r in second)  # the model's guesses now
    (out / "round-2" / "labels.jsonl").write_text("".join(json.dumps({"id": r["id"], "label": truth[r["id"]]}) + "\n" for r in second))
    code, stdout, _ = _call(loop["args"] + ["--train"], capsys)
    assert code == 0 and "finished" in stdout and "14 labels in all" in stdout
    run = out / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["sizes"]["train"] == 14 and (run / "nlp_transfer.json").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: [{**rows[0], "label": "meh"}] + rows[1:], "label 'meh' is not one of neg, pos"),
        (lambda rows: rows + [rows[0]], "is labelled twice"),
        (lambda rows: rows + [{**rows[0], "id": "t999"}], "id 't999' was not asked in round-1"),
    ],
)
def test_bad_label_files_are_refused_in_one_line_and_change_nothing(loop, capsys, change, message):
    out = loop["out"]
    assert _call(loop["args"], capsys)[0] == 0
    _fill(out / "round-1" / "to_label.csv", loop["truth"], change=change)
    before = (out / "state.json").read_bytes()
    code, _, err = _call(loop["args"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err
    assert (out / "state.json").read_bytes() == before and not (out / "round-2").exists()
    assert not [p for p in out.rglob(".*tmp*")]


def test_a_step_stopped_between_its_files_is_repeated_with_the_same_batch(loop, capsys, monkeypatch):
    from nlp_transfer.experiments import active

    out = loop["out"]
    assert _call(loop["args"], capsys)[0] == 0
    _fill(out / "round-1" / "to_label.csv", loop["truth"])
    real = active.atomic_write

    def dies_after_the_batch(path, text):
        real(path, text)
        if path.name == "to_label.csv":
            raise RuntimeError("killed")

    monkeypatch.setattr(active, "atomic_write", dies_after_the_batch)
    with pytest.raises(RuntimeError):
        run_cli(label_main, loop["args"] + ["--no-progress"])
    first_try = (out / "round-2" / "to_label.csv").read_text()
    assert len(json.loads((out / "state.json").read_text())["asked"]) == 1  # the labels were kept; round 2 not recorded
    monkeypatch.setattr(active, "atomic_write", real)
    assert _call(loop["args"], capsys)[0] == 0
    state = json.loads((out / "state.json").read_text())
    assert (out / "round-2" / "to_label.csv").read_text() == first_try and len(state["asked"]) == 2 and len(state["answers"]) == 8


def test_a_changed_setting_is_refused(loop, capsys):
    assert _call(loop["args"], capsys)[0] == 0
    args = [a if a != "breaking_ties" else "entropy" for a in loop["args"]]
    code, _, err = _call(args, capsys)
    assert code == 2 and "another --strategy" in err


def _seeded_recipe(loop, *dotted: str) -> Path:
    """The loop's recipe on a seed set of 4 labelled examples per class."""
    recipe = loop["tmp"] / "seeded.yaml"
    recipe.write_text(loop["cfg"].replace("data.samples_per_class=4", *dotted).to_yaml())
    return recipe


def test_the_recipes_labelled_examples_seed_the_loop(loop, capsys):
    args = [a for a in loop["args"] if a != "--no-seed"]
    args[args.index(str(loop["recipe"]))] = str(_seeded_recipe(loop))
    code, stdout, _ = _call(args, capsys)
    first = _read(loop["out"] / "round-1" / "to_label.csv")
    state = json.loads((loop["out"] / "state.json").read_text())
    assert code == 0 and "0 labels so far; round 1" in stdout
    assert state["settings"]["seeded"] == 8 and state["seed_set"] == {"examples": 8, "per_label": {"neg": 4, "pos": 4}}
    # a model from the first round on: every text asked has the seed model's guess and its probability
    assert len(first) == 8 and all(r["guess"] in ("neg", "pos") and 0.5 <= float(r["score"]) <= 1 for r in first)
    code, _, err = _call(args + ["--no-seed"], capsys)  # the same loop without its seed set is another loop
    assert code == 2 and "another seed set" in err
    code, _, err = _call(args[:-2] + ["--out", str(loop["tmp"] / "other"), "--labels", "bad,good"], capsys)
    assert code == 2 and "--no-seed" in err and len(err.strip().splitlines()) == 1


def test_setfit_is_the_model_queried(loop, capsys, monkeypatch):
    pytest.importorskip("setfit")
    from nlp_transfer.experiments import active, active_setfit

    recipe = _seeded_recipe(loop, "transfer.mode=setfit", "transfer.setfit.num_iterations=1", "train.epochs=1", "train.batch_size=16")
    args = [a for a in loop["args"] if a != "--no-seed"]
    args[args.index(str(loop["recipe"]))] = str(recipe)
    fitted = []
    real = active_setfit.setfit_probs

    def recorded(*a, **k):
        fitted.append((a, real(*a, **k)))
        return fitted[-1][1]

    def no_logreg(*a, **k):
        raise AssertionError("the logistic regression was fitted")

    monkeypatch.setattr(active_setfit, "setfit_probs", recorded)
    monkeypatch.setattr(active, "fit_probs", no_logreg)
    code, _, err = _call(args + ["--model", "setfit"], capsys)
    assert code == 0, err
    (cfg, lab_texts, y, num_labels, seed, pool_texts), probs = fitted[0]
    assert len(fitted) == 1 and len(lab_texts) == 8 and sorted(y.tolist()) == [0] * 4 + [1] * 4 and probs.shape == (60, 2)
    asked = _read(loop["out"] / "round-1" / "to_label.csv")
    row = {t: i for i, t in enumerate(pool_texts)}
    for r in asked:  # the guesses and scores written are SetFit's
        p = probs[row[r["text"]]]
        assert r["guess"] == ("neg", "pos")[int(p.argmax())] and float(r["score"]) == pytest.approx(p.max(), abs=1e-4)
    margins = np.sort(probs, 1)[:, -1] - np.sort(probs, 1)[:, -2]  # breaking_ties: the smallest margins of SetFit's probabilities
    assert sorted(row[r["text"]] for r in asked) == sorted(np.argsort(margins, kind="stable")[:8].tolist())


def test_setfit_missing_is_one_line(loop, capsys, monkeypatch):
    from nlp_transfer.utils import extras

    monkeypatch.setattr(extras, "missing_modules", lambda mods: [m for m in mods if m == "setfit"])
    code, _, err = _call(loop["args"] + ["--model", "setfit"], capsys)
    assert code == 2 and err.strip() == "error: " + extras.extra_hint("fewshot", "nlp-transfer label --model setfit", ["setfit"])


def test_label_studio_tasks_are_written_with_the_models_guess(loop, capsys):
    out, truth = loop["out"], loop["truth"]
    args = loop["args"] + ["--format", "label-studio"]
    code, stdout, _ = _call(args, capsys)
    tasks = json.loads((out / "round-1" / "to_label.json").read_text())
    assert code == 0 and "into Label Studio" in stdout and not (out / "round-1" / "to_label.csv").exists()
    assert len(tasks) == 8 and all(set(t["data"]) == {"text", "id"} and t["predictions"] == [] for t in tasks)  # no model yet
    export = [{"id": i, "data": t["data"], "annotations": [_ls_choice(truth[t["data"]["id"]])]} for i, t in enumerate(tasks, 1)]
    (out / "round-1" / "labels.json").write_text(json.dumps(export))
    code, stdout, _ = _call(args, capsys)
    second = json.loads((out / "round-2" / "to_label.json").read_text())
    assert code == 0 and stdout.startswith("8 labels read")
    for t in second:
        (pred,) = t["predictions"]
        (result,) = pred["result"]
        assert pred["model_version"] == "round-2" and 0.5 <= pred["score"] <= 1
        assert result["type"] == "choices" and result["value"]["choices"][0] in ("neg", "pos") and result["to_name"] == "text"


def _ls_choice(label: str, cancelled: bool = False) -> dict:
    value = {"choices": [label]}
    return {"was_cancelled": cancelled, "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": value}]}


def test_a_label_studio_export_is_read_as_labels(loop, capsys):
    out, truth = loop["out"], loop["truth"]
    assert _call(loop["args"], capsys)[0] == 0
    asked = [r["id"] for r in _read(out / "round-1" / "to_label.csv")]
    export = [
        {"id": 11, "data": {"text": "x", "id": asked[0]}, "annotations": [_ls_choice("meh", cancelled=True), _ls_choice(truth[asked[0]])]},
        {"id": 12, "data": {"text": "x", "id": asked[1]}, "annotations": [_ls_choice(truth[asked[1]])]},
        {"id": 13, "data": {"text": "x", "id": asked[2]}, "annotations": []},  # not labelled yet
    ]
    path = out / "round-1" / "labels.json"
    path.write_text(json.dumps(export))
    code, stdout, _ = _call(loop["args"], capsys)
    state = json.loads((out / "state.json").read_text())
    assert code == 0 and stdout.startswith("2 labels read") and state["answers"] == {a: truth[a] for a in asked[:2]}
    # a label outside the label set: one line naming the task, nothing written
    path2 = out / "round-2" / "labels.json"
    second = [r["id"] for r in _read(out / "round-2" / "to_label.csv")]
    path2.write_text(json.dumps([{"data": {"id": second[0]}, "annotations": [_ls_choice("meh")]}]))
    before = (out / "state.json").read_bytes()
    code, _, err = _call(loop["args"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "labels.json: task 1: label 'meh' is not one of neg, pos" in err
    assert (out / "state.json").read_bytes() == before and not (out / "round-3").exists()


# ---- an interrupted simulation resumes with the same picks ---------------------------------------------
def test_kill_9_mid_simulation_then_the_same_command_gives_the_same_picks(tmp_path, tiny_bert_dir, toy_csv, capsys):
    cfg = build_cfg(tmp_path, tiny_bert_dir, toy_csv, "transfer.mode=feature_extraction", f"transfer.cache_dir={tmp_path / 'cache'}")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cfg.to_yaml())
    common = ["--batch", "8", "--rounds", "5", "--seeds", "2"]
    strategies = ["breaking_ties"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nlp_transfer", "label", "--config", str(recipe), "--simulate", "--strategy", *strategies]
    cmd += common + ["--out", str(killed), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    kill_when(cmd, lambda: (killed / "random" / "seed-0.json").is_file(), env, "the first round was saved", timeout=180)
    files = sorted(p.relative_to(killed) for p in killed.rglob("*.json"))
    assert files and Path("breaking_ties/seed-1.json") not in files  # stopped part-way
    for f in killed.rglob("seed-*.json"):
        json.loads(f.read_text())  # every file whole
    resumed = simulate(str(recipe), strategies, batch=8, rounds=5, seeds=2, out=killed)
    whole = simulate(str(recipe), strategies, batch=8, rounds=5, seeds=2, out=tmp_path / "whole")
    key = lambda pts: [(p["strategy"], p["seed"], p["round"], p["picked"], round(p["accuracy"], 9)) for p in pts]  # noqa: E731
    assert key(resumed.points) == key(whole.points) and len(whole.points) == 2 * 2 * 5
    assert "| breaking_ties |" in whole.table and "labels to reach random's 40" in whole.table
    assert (tmp_path / "whole" / "active.json").is_file()


@pytest.mark.slow
def test_simulation_on_minilm_and_rotten_tomatoes(tmp_path):
    """Two rounds on real MiniLM features of a few hundred Rotten Tomatoes reviews: the loop learns."""
    result = simulate(
        "rotten_tomatoes/minilm-logreg",
        ["breaking_ties"],
        batch=32,
        rounds=2,
        seeds=1,
        out=tmp_path / "al",
        overrides=["data.max_samples=300", f"transfer.cache_dir={tmp_path / 'cache'}"],
    )
    last = [p for p in result.points if p["round"] == 2]
    assert {p["strategy"] for p in last} == {"random", "breaking_ties"} and all(p["labels"] == 64 for p in last)
    assert all(p["accuracy"] > 0.58 for p in last)  # chance is 0.5
