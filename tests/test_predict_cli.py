"""`scripts/predict.py` and `scripts/evaluate.py` against the same model used from Python.

One case per script runs it in a subprocess (a few seconds each: Python, torch and the tiny
model start up); the other cases call the same entry functions in process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, build_cfg, toy_rows, write_csv

from nlp_transfer import compute_metrics, load_run, train
from nlp_transfer.cli import evaluate_main, predict_main, run_cli

ROWS = toy_rows(40, seed=11)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_bert_dir, toy_csv) -> Path:
    cfg = build_cfg(tmp_path_factory.mktemp("predict"), tiny_bert_dir, toy_csv, "train.epochs=3")
    return train(cfg, progress=False).output_dir


@pytest.fixture(scope="module")
def in_python(run_dir):
    """What the model gives in Python for ROWS' texts."""
    return load_run(run_dir, device="cpu").predict([t for t, _ in ROWS])


def script(name: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("NLP_TRANSFER_TRACEBACK", None)
    proc = subprocess.run(
        [sys.executable, f"scripts/{name}.py", *args], cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    return proc


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def user_error(capsys, main, *argv: str, stdin: str | None = None, monkeypatch=None) -> str:
    """Run an entry function in process; it must end in exit code 2 with exactly one `error:` line."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = run_cli(main, list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def assert_same(rows: list[dict], in_python, prob) -> None:
    """Labels equal; probabilities equal to the last bit (written in full, read back as float32)."""
    assert [r["label"] for r in rows] == list(in_python)
    got = np.array([[prob(r, c) for c in in_python.classes] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(got, in_python.probabilities)
    np.testing.assert_array_equal(np.array([float(r["score"]) for r in rows], dtype=np.float32), in_python.scores)


# ---- predict: the CLI writes what Python gives ---------------------------------------------
def test_predict_csv_file_to_csv_equals_python(tmp_path, run_dir):
    # Same batches as in Python, so bit-identical (other batch sizes pad differently: ~1e-7 apart).
    in_python = load_run(run_dir, device="cpu").predict([t for t, _ in ROWS], batch_size=7)
    src = write_csv(tmp_path / "in.csv", [(f"r{i}", t) for i, (t, _) in enumerate(ROWS)], header=("id", "review"))
    out = tmp_path / "out" / "pred.csv"
    proc = ok(
        script("predict", str(run_dir), str(src), "--text-column", "review", "--id-column", "id", "-o", str(out), "--batch-size", "7")
    )
    assert f"{len(ROWS)} predictions (csv) -> {out}" in proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["id", "review", "label", "score", "prob_neg", "prob_pos"]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(ROWS))]  # input order, not length order
    assert [r["review"] for r in rows] == [t for t, _ in ROWS]
    assert_same(rows, in_python, lambda r, c: float(r[f"prob_{c}"]))


def test_predict_stdin_lines_to_jsonl_equals_python(capsys, monkeypatch, run_dir, in_python):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(t for t, _ in ROWS) + "\n\n"))  # blank lines are skipped
    assert run_cli(predict_main, [str(run_dir), "--output-format", "jsonl", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [t for t, _ in ROWS]
    assert_same(rows, in_python, lambda r, c: r["probabilities"][c])


def test_predict_jsonl_file_in_process(tmp_path, capsys, run_dir, in_python):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, (t, _) in enumerate(ROWS)))
    out = tmp_path / "pred.jsonl"
    assert run_cli(predict_main, [str(run_dir), str(src), "-o", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(rows[0]) == ["text", "label", "score", "probabilities"]
    assert_same(rows, in_python, lambda r, c: r["probabilities"][c])


# ---- predict: bad input ---------------------------------------------------------------------
def test_missing_run_directory(tmp_path, capsys):
    line = user_error(capsys, predict_main, str(tmp_path / "nope"), "-")
    assert "run directory" in line and "does not exist" in line


def test_missing_model_files(tmp_path, capsys, run_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "model.safetensors").unlink()
    line = user_error(capsys, predict_main, str(broken), "-")
    assert "is incomplete" in line and "model weights" in line and "model.safetensors" in line
    shutil.rmtree(broken)
    broken.mkdir()
    line = user_error(capsys, predict_main, str(broken), "-")
    assert "not a run directory" in line and "nlp_transfer.json" in line


def test_input_without_the_text_column(tmp_path, capsys, run_dir):
    src = write_csv(tmp_path / "in.csv", ROWS[:3], header=("review", "label"))
    line = user_error(capsys, predict_main, str(run_dir), str(src))
    assert "no text column 'text'" in line and "--text-column" in line and "review, label" in line


@pytest.mark.parametrize("name, content", [("empty.csv", ""), ("header.csv", "text,label\n"), ("blank.txt", "\n  \n")])
def test_empty_input(tmp_path, capsys, run_dir, name, content):
    (tmp_path / name).write_text(content)
    line = user_error(capsys, predict_main, str(run_dir), str(tmp_path / name))
    assert "has no texts" in line


def test_empty_stdin_and_empty_texts(tmp_path, capsys, monkeypatch, run_dir):
    assert "standard input has no texts" in user_error(capsys, predict_main, str(run_dir), stdin="", monkeypatch=monkeypatch)
    src = write_csv(tmp_path / "holes.csv", [("good film", "pos"), ("", "neg"), ("dull", "neg")])
    line = user_error(capsys, predict_main, str(run_dir), str(src))
    assert "1 empty or missing texts in column 'text' (first at row 1)" in line


def test_missing_input_file(tmp_path, capsys, run_dir):
    assert "does not exist" in user_error(capsys, predict_main, str(run_dir), str(tmp_path / "no.csv"))


# ---- evaluate --------------------------------------------------------------------------------
def test_evaluate_cli_metrics_equal_the_metrics_module(tmp_path, run_dir, in_python):
    rows = ROWS[:-4] + [(t, "neg") for t, _ in ROWS[-4:]]  # a few wrong labels: something to misclassify
    src = write_csv(tmp_path / "labelled.csv", rows, header=("text", "sentiment"))
    out = tmp_path / "eval"
    proc = ok(script("evaluate", str(run_dir), str(src), "--label-column", "sentiment", "--out", str(out), "--no-progress"))
    metrics = json.loads((out / "metrics.json").read_text())
    y_true = [["neg", "pos"].index(y) for _, y in rows]
    expected = compute_metrics(y_true, in_python.ids, label_names=["neg", "pos"])
    assert {k: v for k, v in metrics.items() if k != "loss"} == expected
    assert metrics["loss"] > 0
    wrong = list(csv.DictReader((out / "misclassified.csv").open()))
    assert len(wrong) == int((np.array(y_true) != in_python.ids).sum()) > 0
    scores = [float(r["score"]) for r in wrong]
    assert scores == sorted(scores, reverse=True)  # most confident mistakes first
    for r in wrong:
        i = int(r["row"])
        assert r["text"] == rows[i][0] and r["true"] == rows[i][1] and r["predicted"] == in_python[i] != r["true"]
    report = (out / "report.md").read_text()
    assert f"accuracy **{expected['accuracy']:.4f}**" in report and "| true \\ predicted | neg | pos |" in report
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert f"accuracy **{expected['accuracy']:.4f}**" in proc.stdout


def test_evaluate_without_a_file_reproduces_the_run_test_metrics(capsys, tmp_path, run_dir):
    # The run's own evaluation batches (train.eval_batch_size, by token count): exact even in bf16.
    assert load_run(run_dir, device="cpu").batch_size == 32
    assert run_cli(evaluate_main, [str(run_dir), "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert {k: v for k, v in metrics.items() if k != "loss"} == {k: v for k, v in recorded.items() if k != "loss"}
    assert metrics["loss"] == pytest.approx(recorded["loss"], rel=1e-4)
    assert "the run's test split" in capsys.readouterr().out


def test_evaluate_labels_the_model_does_not_know(tmp_path, capsys, run_dir):
    src = write_csv(tmp_path / "l.csv", [("good film", "pos"), ("a plot", "neutral"), ("dull", "meh")])
    line = user_error(capsys, evaluate_main, str(run_dir), str(src))
    assert "labels the model does not know: 'meh', 'neutral'" in line and "the model's labels are: neg, pos" in line


def test_evaluate_needs_the_label_column(tmp_path, capsys, run_dir):
    src = write_csv(tmp_path / "l.csv", ROWS[:3], header=("text", "y"))
    line = user_error(capsys, evaluate_main, str(run_dir), str(src))
    assert "no label column 'label'" in line and "--label-column" in line
