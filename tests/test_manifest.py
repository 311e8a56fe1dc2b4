"""The run manifest: one versioned file, one writer, one reader; older runs load, newer ones fail in one line."""

from __future__ import annotations

import json
import shutil

import pytest
from test_predict_cli import user_error
from torch import nn

from nlp_transfer import ModelError, load_run, read_manifest
from nlp_transfer.cli import predict_main
from nlp_transfer.manifest import FORMAT_VERSION, MANIFEST_FILE
from nlp_transfer.training import Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir, toy_csv):
    from conftest import build_cfg

    cfg = build_cfg(tmp_path_factory.mktemp("manifest"), tiny_bert_dir, toy_csv, "train.epochs=1", "train.eval_batch_size=16")
    with Trainer(cfg, progress=False) as t:
        t.setup()
        applied = t.s.raw_model  # speed-ups on while training ...
        assert any(type(m).__name__ == "FastDropout" for m in applied.modules())
        t.fit()
        result = t.finish()
    return result, t.s.raw_model


def test_the_manifest_says_how_to_load_the_run(run):
    result, _ = run
    m = read_manifest(result.output_dir)
    assert m.format_version == FORMAT_VERSION and m.labels == ["neg", "pos"] and m.task == "single_label"
    assert (m.precision, m.eval_batch_size, m.max_length, m.pooling) == ("no", 16, 32, "mean")
    assert m.versions["transformers"] and m.versions["torch"]
    predictor = load_run(result.output_dir)
    assert (predictor.precision, predictor.batch_size) == ("no", 16)


def test_speed_ups_are_undone_before_the_model_is_saved(run):
    _, model = run
    from transformers import AttentionInterface

    assert not any(type(m).__name__ == "FastDropout" for m in model.modules())
    assert sum(type(m) is nn.Dropout for m in model.modules()) > 0
    assert model.backbone.config._attn_implementation == "sdpa"
    assert "nlp_transfer" not in AttentionInterface._global_mapping
    assert all("forward" not in vars(m) for m in model.modules())


def test_a_format_1_run_directory_loads(run, tmp_path):
    result, _ = run
    old = tmp_path / "old"
    shutil.copytree(result.output_dir, old)
    raw = json.loads((old / MANIFEST_FILE).read_text())
    for key in ("precision", "eval_batch_size", "versions", "name"):
        raw.pop(key)
    raw["format_version"] = 1
    (old / MANIFEST_FILE).write_text(json.dumps(raw))
    metrics = json.loads((old / "metrics.json").read_text())
    metrics["environment"]["mixed_precision"] = "bf16"  # format 1 kept the precision here
    (old / "metrics.json").write_text(json.dumps(metrics))
    m = read_manifest(old)
    assert (m.precision, m.eval_batch_size) == ("bf16", 16)  # ... and the batch size in recipe.yaml
    texts = ["a good film", "a dull film"]
    assert list(load_run(old, precision="no").predict(texts)) == list(load_run(result.output_dir).predict(texts))


@pytest.mark.parametrize("version", [3, None])
def test_an_unknown_format_fails_in_one_line_naming_it(run, tmp_path, capsys, version):
    result, _ = run
    new = tmp_path / "new"
    shutil.copytree(result.output_dir, new)
    raw = json.loads((new / MANIFEST_FILE).read_text())
    raw["format_version"] = version
    (new / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=f"manifest format {version!r}"):
        load_run(new)
    line = user_error(capsys, predict_main, str(new), "-")
    assert f"format {version!r}" in line and "reads formats 1, 2" in line


def test_a_damaged_manifest_is_one_line(run, tmp_path):
    result, _ = run
    bad = tmp_path / "bad"
    shutil.copytree(result.output_dir, bad)
    (bad / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="run manifest .* is damaged"):
        read_manifest(bad)
