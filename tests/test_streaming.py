"""Streamed batch prediction (`scripts/predict.py`): chunks in, rows out as they are predicted, resume, 2 processes.

The model is a random tiny BERT saved as a run (what it predicts does not matter, only that every
path predicts the same). Inputs are larger than several chunks (--chunk-size 7 or 50).
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
from conftest import REPO, free_port, kill_when, save_run, toy_rows, write_csv

from nlp_transfer import load_run
from nlp_transfer.cli import predict_main, run_cli
from nlp_transfer.data.stream import iter_inputs
from nlp_transfer.inference.streaming import complete_rows, part_path

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [(f"id{i}", t, t[::-1]) for i, (t, _) in enumerate(toy_rows(61, seed=3))]
ROWS[5] = ("id5", 'a "quoted", multi\nline text, good', "x")  # a CSV record over two lines


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir) -> Path:
    return save_run(tmp_path_factory.mktemp("stream"), tiny_bert_dir, pooling="mean")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The same rows as CSV, TSV, JSONL, Parquet and plain lines."""
    import pandas as pd

    d = tmp_path_factory.mktemp("inputs")
    df = pd.DataFrame(ROWS, columns=["id", "text", "pair"])
    files = {
        "csv": write_csv(d / "in.csv", ROWS, header=("id", "text", "pair")),
        "tsv": d / "in.tsv",
        "jsonl": d / "in.jsonl",
        "parquet": d / "in.parquet",
        "lines": d / "in.txt",
    }
    df.to_csv(files["tsv"], sep="\t", index=False)
    files["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    df.to_parquet(files["parquet"], row_group_size=9)  # batches stop at row groups: chunks are re-cut to size
    files["lines"].write_text("".join(t.replace("\n", " ") + "\n" for _, t, _ in ROWS))
    return files


def predict(out: Path, *argv: str) -> Path:
    assert run_cli(predict_main, [*argv, "-o", str(out), "--no-progress"]) == 0
    return out


def test_chunks_are_exact_and_in_file_order(inputs):
    for fmt, path in inputs.items():
        columns = {} if fmt == "lines" else {"text_pair_column": "pair", "id_column": "id"}
        chunks = list(iter_inputs(str(path), chunk_rows=7, **columns))
        assert [len(c.texts) for c in chunks] == [7] * 8 + [5], fmt
        texts = [t for c in chunks for t in c.texts]
        assert texts == [t if fmt != "lines" else t.replace("\n", " ") for _, t, _ in ROWS], fmt
        if fmt != "lines":
            assert [i for c in chunks for i in c.ids] == [r[0] for r in ROWS]


def test_streamed_output_equals_in_memory_prediction(tmp_path, run, inputs):
    expected = load_run(run).predict([t for _, t, _ in ROWS], text_pairs=[p for _, _, p in ROWS])
    outs = {
        fmt: predict(tmp_path / f"{fmt}.csv", str(run), str(path), "--text-pair-column", "pair", "--id-column", "id", "--chunk-size", "7")
        for fmt, path in inputs.items()
        if fmt != "lines"
    }
    with open(outs["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [r[0] for r in ROWS] and rows[5]["text"] == ROWS[5][1]
    assert [r["label"] for r in rows] == list(expected)
    got = np.array([[float(r[f"prob_{c}"]) for c in expected.classes] for r in rows])
    np.testing.assert_allclose(got, expected.probabilities, atol=1e-6, rtol=0)  # other batches: float rounding only
    for fmt in ("tsv", "jsonl", "parquet"):
        assert outs[fmt].read_bytes() == outs["csv"].read_bytes(), fmt
    assert not part_path(outs["csv"]).exists()
    whole = predict(tmp_path / "whole.jsonl", str(run), str(inputs["csv"]), "--text-pair-column", "pair", "--chunk-size", "1000")
    lines = [json.loads(line) for line in whole.read_text().splitlines()]
    assert [r["label"] for r in lines] == list(expected)


def test_resume_truncates_a_cut_record_and_skips_written_rows(tmp_path, run, inputs):
    full = predict(tmp_path / "full.csv", str(run), str(inputs["csv"]), "--chunk-size", "7")
    out = tmp_path / "out.csv"
    data = full.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 15  # 2 1/2 chunks' worth plus part of a record
    part_path(out).write_bytes(data[:cut])
    assert complete_rows(part_path(out), "csv") == data[:cut].count(b"\n") - 1 - 1  # header, multi-line record
    assert part_path(out).read_bytes() == data[: data.rindex(b"\n", 0, cut) + 1]  # the cut record went
    assert complete_rows(part_path(out), "csv", 7) == 28  # whole chunks only
    predict(out, str(run), str(inputs["csv"]), "--chunk-size", "7", "--resume")
    assert out.read_bytes() == data and not part_path(out).exists()
    before = out.stat().st_mtime_ns
    predict(out, str(run), str(inputs["csv"]), "--resume")  # complete: nothing to do
    assert out.stat().st_mtime_ns == before


def test_resume_after_kill_9_gives_the_uninterrupted_file(tmp_path, run, tiny_bert_dir):
    rows = [(t,) for t, _ in toy_rows(1200, seed=9)]
    src = write_csv(tmp_path / "big.csv", rows, header=("text",))
    whole = predict(tmp_path / "whole.jsonl", str(run), str(src), "--chunk-size", "100", "--batch-size", "32")
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        "scripts/predict.py",
        str(run),
        str(src),
        "-o",
        str(out),
        "--chunk-size",
        "100",
        "--no-progress",
        "--batch-size",
        "32",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # killed once the first chunk is out
    kill_when(cmd, lambda: part_path(out).exists() and part_path(out).stat().st_size > 0, env, "it could be killed")
    assert not out.exists()
    done = complete_rows(part_path(out), "jsonl")
    assert 0 < done < len(rows) and done % 100 == 0
    predict(out, str(run), str(src), "--chunk-size", "100", "--batch-size", "32", "--resume")
    assert out.read_bytes() == whole.read_bytes()


def test_two_processes_give_the_output_of_one(tmp_path, run, inputs):
    one = predict(tmp_path / "one.csv", str(run), str(inputs["csv"]), "--id-column", "id", "--chunk-size", "7")
    two = tmp_path / "two.csv"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            free_port(),
            "scripts/predict.py",
            str(run),
            str(inputs["csv"]),
            "-o",
            str(two),
            "--id-column",
            "id",
            "--chunk-size",
            "7",
            "--no-progress",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 processes" in proc.stderr
    assert two.read_bytes() == one.read_bytes()
    assert not list(tmp_path.glob("two.csv.*"))


def test_streaming_errors_are_one_line(tmp_path, run, inputs, capsys, monkeypatch):
    bad = write_csv(tmp_path / "bad.csv", [("a good film",), ("",)], header=("text",))
    for argv, message in [
        ([str(run), str(inputs["csv"]), "--text-column", "txt"], "did you mean 'text'"),
        ([str(run), str(bad)], "empty or missing texts"),
        ([str(run), str(tmp_path / "missing.csv")], "does not exist"),
        ([str(run), str(inputs["csv"]), "--resume"], "need an output file"),
    ]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        assert run_cli(predict_main, argv + ["--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and message in err, err
    part_path(tmp_path / "o.csv", 1, 3, 7).write_text("x\n")
    assert run_cli(predict_main, [str(run), str(inputs["csv"]), "-o", str(tmp_path / "o.csv"), "--resume", "--no-progress"]) == 2
    assert "another number of processes" in capsys.readouterr().err
