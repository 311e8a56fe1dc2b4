"""ONNX export (`scripts/export.py RUN OUT --onnx`): the exported graph on onnxruntime against PyTorch.

Runs are random tiny models saved as run directories (no training: agreement is about the graph,
not what it learnt). Each export takes a few seconds (torch.export traces the model).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import save_run, toy_rows

from nlp_transfer import load_run, read_manifest
from nlp_transfer.errors import ConfigError
from nlp_transfer.inference.export import export_onnx
from nlp_transfer.manifest import write_manifest

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [t for t, _ in toy_rows(30, seed=5)] + ["good " * 40 + "bad", "x"]
PAIRS = [t for t, _ in toy_rows(32, seed=6)]


def assert_same(torch_run: Path, onnx_run: Path, pairs=None, atol=1e-4) -> None:
    a = load_run(torch_run, device="cpu").predict(TEXTS, text_pairs=pairs)
    b = load_run(onnx_run, device="cpu").predict(TEXTS, text_pairs=pairs)
    assert list(a) == list(b)
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=atol, rtol=0)
    np.testing.assert_allclose(b.logits, a.logits, atol=atol, rtol=0)


def test_chunked_encoder_export_matches_pytorch(tmp_path, tiny_bert_dir):
    run = save_run(tmp_path, tiny_bert_dir, pooling="mean", head="mlp", chunking=True, chunk_stride=4, max_length=16)
    result = export_onnx(run, tmp_path / "onnx")
    assert result.max_logit_difference <= 1e-4
    m = read_manifest(result.output_dir)
    assert m.backend == "onnx" and m.onnx["file"] == "model.onnx" and m.labels == ["neg", "pos", "meh"]
    assert (result.output_dir / "model.onnx").is_file() and not (result.output_dir / "model.safetensors").exists()
    predictor = load_run(result.output_dir)
    assert predictor.runner is not None and predictor.spec.chunking  # long texts: windows, aggregated as in PyTorch
    assert_same(run, result.output_dir)
    labels = ["neg", "pos", "meh"] * 10 + ["pos", "neg"]
    ours, theirs = predictor.evaluate(TEXTS, labels).metrics, load_run(run).evaluate(TEXTS, labels).metrics
    assert ours["accuracy"] == theirs["accuracy"] and abs(ours["loss"] - theirs["loss"]) < 1e-4  # evaluation runs on ONNX too


def test_decoder_export_matches_pytorch_with_left_padding_multi_label(tmp_path, tiny_llama_dir):
    run = save_run(tmp_path, tiny_llama_dir, pooling="last", head="linear")
    manifest = read_manifest(run)
    manifest.task, manifest.thresholds, manifest.loss = "multi_label", [0.4, 0.5, 0.6], None
    write_manifest(run, manifest)
    out = export_onnx(run, tmp_path / "onnx").output_dir
    predictor = load_run(out)
    assert predictor.tokenizer.padding_side == "left" and predictor.task == "multi_label"
    assert predictor.predict(TEXTS[:3]).thresholds == [0.4, 0.5, 0.6]
    assert_same(run, out)


def test_int8_quantization_agrees_roughly(tmp_path, tiny_gpt2_dir):
    run = save_run(tmp_path, tiny_gpt2_dir, pooling="mean", head="linear")
    int8 = export_onnx(run, tmp_path / "int8", quantize="int8")
    m = read_manifest(int8.output_dir)
    assert m.onnx["quantize"] == "int8" and m.backend == "onnx"
    import onnx

    ops = Counter(node.op_type for node in onnx.load(str(int8.output_dir / "model.onnx")).graph.node)
    assert ops["MatMulInteger"] > ops["MatMul"], ops  # the weight matmuls are quantized (the attention ones stay fp32)
    q = load_run(int8.output_dir).predict(TEXTS).probabilities
    p = load_run(run).predict(TEXTS).probabilities
    assert q.shape == p.shape and np.abs(q - p).max() < 0.1


def test_export_refusals(tmp_path, tiny_bert_dir):
    run = save_run(tmp_path, tiny_bert_dir, pooling="cls")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export_onnx(run, tmp_path / "taken")
    with pytest.raises(ConfigError, match="unknown quantization"):
        export_onnx(run, tmp_path / "q", quantize="int4")
    manifest = read_manifest(run)
    manifest.adapter = {"method": "lora", "base_checkpoint": "x"}
    adapter_run = tmp_path / "adapter"
    adapter_run.mkdir()
    write_manifest(adapter_run, manifest)
    for f in ("adapter_config.json", "adapter_model.safetensors", "head.safetensors", "tokenizer.json"):
        (adapter_run / f).write_text("{}")
    with pytest.raises(ConfigError, match="--merge"):
        export_onnx(adapter_run, tmp_path / "o")
    assert not (tmp_path / "o").exists() and not (tmp_path / "q").exists()


def test_export_and_predict_command_lines_sentence_pairs(tmp_path, tiny_bert_dir, capsys, monkeypatch):
    import io

    from nlp_transfer.cli import export_main, predict_main, run_cli

    run = save_run(tmp_path, tiny_bert_dir, pooling="pooler", head="linear")
    out = tmp_path / "onnx"
    assert run_cli(export_main, [str(run), str(out), "--onnx"]) == 0
    assert "largest logit difference" in capsys.readouterr().err
    assert read_manifest(out).onnx["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert_same(run, out, pairs=PAIRS)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS[:5]) + "\n"))
    assert run_cli(predict_main, [str(out), "--output-format", "jsonl", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = load_run(run).predict(TEXTS[:5])
    assert [r["label"] for r in rows] == list(expected)
    np.testing.assert_allclose([r["score"] for r in rows], expected.scores, atol=1e-5)
    for argv, message in [
        ([str(out), "--precision", "bf16"], "ONNX export"),
        ([str(run), str(tmp_path / "x"), "--quantize", "int8"], "--onnx"),
        ([str(run), str(tmp_path / "x"), "--onnx", "--merge"], "choose one of --merge and --onnx"),
    ]:
        main = predict_main if "--precision" in argv else export_main
        monkeypatch.setattr(sys, "stdin", io.StringIO("a\n"))
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and message in err, err
