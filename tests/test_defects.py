"""Defects found by trying the framework as a new user would; one test each (the "one house" issue)."""

from __future__ import annotations

import json
import logging
import random
import shutil

import pytest
from conftest import build_cfg, toy_rows, write_csv
from test_predict_cli import user_error

from nlp_transfer import ConfigError, DataError, load_data, train
from nlp_transfer.cli import evaluate_main, predict_main, run_cli
from nlp_transfer.config import DataConfig, ModelConfig


@pytest.fixture(scope="module")
def stars(tmp_path_factory, tiny_bert_dir):
    """A CSV whose labels read as numbers 1.0 ... 5.0 (star ratings, a CSV reader types them as floats), and its run."""
    rng = random.Random(3)
    words = {1.0: "awful", 2.0: "bad", 3.0: "fine", 4.0: "good", 5.0: "superb"}
    rows = [
        (f"the film was {words[s]} {rng.choice(['really', 'quite', 'so'])} {i}", f"{s:.1f}")
        for i, s in enumerate([1.0, 2.0, 3.0, 4.0, 5.0] * 30)
    ]
    root = tmp_path_factory.mktemp("stars")
    csv_file = write_csv(root / "stars.csv", rows, header=("text", "stars"))
    cfg = build_cfg(root, tiny_bert_dir, csv_file, "data.label_column=stars", "train.epochs=1")
    return csv_file, train(cfg, progress=False)


def test_star_ratings_train_and_evaluate_from_the_same_file(stars, capsys, tmp_path):
    csv_file, result = stars
    assert json.loads((result.output_dir / "nlp_transfer.json").read_text())["labels"] == ["1", "2", "3", "4", "5"]
    out = tmp_path / "eval"
    code = run_cli(evaluate_main, [str(result.output_dir), str(csv_file), "--label-column", "stars", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 150


def test_predict_reads_a_field_longer_than_131072_characters(stars, tmp_path):
    _, result = stars
    long_text = " ".join(["good"] * 60_000)  # 300k characters: Python's csv module refuses fields over 131,072
    src = write_csv(tmp_path / "long.csv", [(long_text,), ("bad",)], header=("text",))
    out = tmp_path / "pred.jsonl"
    assert run_cli(predict_main, [str(result.output_dir), str(src), "-o", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["text"] == long_text and rows[0]["label"] in ("1", "2", "3", "4", "5")


def test_a_damaged_model_file_is_one_error_line(stars, capsys, tmp_path):
    _, result = stars
    broken = tmp_path / "run"
    shutil.copytree(result.output_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    src = write_csv(tmp_path / "in.csv", [("a good film",)], header=("text",))
    line = user_error(capsys, predict_main, str(broken), str(src))
    assert "model weights" in line and str(broken) in line and "damaged" in line


def test_max_length_beyond_the_position_embeddings_names_the_limit(tiny_bert_dir):
    from nlp_transfer.recipes import build_classifier

    with pytest.raises(ConfigError, match=r"model.max_length=100000 exceeds .* 64 positions .* at most 64"):
        build_classifier(ModelConfig(name_or_path=str(tiny_bert_dir), max_length=100000), ["a", "b"])
    model, _ = build_classifier(ModelConfig(name_or_path=str(tiny_bert_dir), max_length=64), ["a", "b"])  # the limit itself is fine
    assert model.meta["max_length"] == 64


def test_a_file_that_is_not_utf8_names_the_encoding_and_line(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("text,label\nnice film,pos\ncaf\xe9 scene,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8.*line 3") as e:
        load_data(DataConfig(source=None, train_file=str(f)))
    assert "\n" not in str(e.value) and "An error occurred while generating the dataset" not in str(e.value)


def test_a_jsonl_file_with_one_malformed_line_names_the_line(tmp_path):
    f = tmp_path / "data.jsonl"
    lines = [json.dumps({"text": t, "label": y}) for t, y in toy_rows(20)]
    lines[6] = '{"text": "broken, "label": "pos"}'
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 7 is not valid JSON"):
        load_data(DataConfig(source=None, train_file=str(f)))


def test_a_text_column_of_numbers_is_read_as_texts(tmp_path, tiny_bert_dir):
    rows = [(str(1000 + i), "even" if i % 2 == 0 else "odd") for i in range(60)]
    f = write_csv(tmp_path / "numbers.csv", rows)
    data = load_data(DataConfig(source=None, train_file=str(f)))
    texts = [t for split in data.splits.values() for t in split["text"]]
    assert all(isinstance(t, str) for t in texts) and sorted(texts) == sorted(t for t, _ in rows)


def test_progress_outside_a_terminal_logs_at_intervals(caplog):
    from nlp_transfer.utils.progress import progress

    caplog.set_level(logging.INFO, logger="nlp_transfer")
    assert list(progress(range(100_000), "predicting", interval=3600)) == list(range(100_000))
    assert len(caplog.records) == 0  # short work: no line per update, none at all
    caplog.clear()
    items = list(progress(range(5), "encoding", interval=0.0))
    assert items == list(range(5)) and 1 <= len(caplog.records) <= 6
    assert "encoding: 5/5 (100%)" in caplog.records[-1].getMessage()


def test_slow_steps_are_logged_as_seconds_each_not_zero_per_second(caplog, monkeypatch):
    """A batch that takes 36 s was logged as '0.0/s'; it says '36.0s each'."""
    from nlp_transfer.utils import progress as p

    clock = iter([0.0, 36.0, 36.0])  # start; after the first batch; its log line (then 72 s from there on)
    monkeypatch.setattr(p.time, "perf_counter", lambda: next(clock, 72.0))
    caplog.set_level(logging.INFO, logger="nlp_transfer")
    list(p.progress(range(2), "encoding", interval=1.0))
    assert "encoding: 1/2 (50%) batches, 36.0s each" in caplog.records[0].getMessage()
