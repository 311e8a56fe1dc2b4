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
from nlp_transfer.errors import ConfigError, ModelError
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


def _ops(run_dir: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(run_dir / "model.onnx")).graph.node)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_optimized_encoder_graph_is_fused_and_matches_pytorch(tmp_path, tiny_bert_dir, pooling):
    run = save_run(tmp_path, tiny_bert_dir, pooling=pooling, head="mlp")
    result = export_onnx(run, tmp_path / "onnx")
    ops = _ops(result.output_dir)
    # onnxruntime's BERT fusions: embeddings + LayerNorm, residual + LayerNorm, bias + GELU, and attention;
    # with cls pooling the last layer computes position 0 alone (its attention is not the fused pattern)
    assert ops["EmbedLayerNormalization"] == 1 and ops["SkipLayerNormalization"] >= 3 and ops["BiasGelu"] == 2, ops
    assert ops["Attention"] == (1 if pooling == "cls" else 2), ops
    assert "Erf" not in ops and "LayerNormalization" not in ops
    m = read_manifest(result.output_dir)
    assert m.onnx["optimizer"]["fused"]["Attention"] == ops["Attention"] and result.optimized == m.onnx["optimizer"]
    assert result.max_logit_difference <= 1e-4
    assert_same(run, result.output_dir, atol=1e-4)
    plain = export_onnx(run, tmp_path / "plain", optimize=False)
    assert plain.optimized is None and "Attention" not in _ops(plain.output_dir)


def test_int8_choice_meets_its_agreement_target(tmp_path, tiny_bert_dir):
    run = save_run(tmp_path, tiny_bert_dir, pooling="mean", head="linear")
    calib = [t for t, _ in toy_rows(64, seed=8)]
    said = []
    int8 = export_onnx(run, tmp_path / "int8", quantize="int8", agreement=0.97, calibration_texts=calib, say=said.append)
    q = read_manifest(int8.output_dir).onnx["int8"]
    assert q == int8.int8 and q["target"] == 0.97 and q["agreement"] >= 0.97 and q["evaluation_texts"] == 64
    assert q["method"] in ("dynamic", "static") and {c["method"] for c in q["candidates"]} >= {"dynamic", "static"}
    assert len(said) == len(q["candidates"])
    ops = _ops(int8.output_dir)
    quantized = ops["MatMulInteger"] + ops["QAttention"] + ops["DynamicQuantizeMatMul"] + ops["QuantizeLinear"]
    assert quantized > 0, ops
    # the recorded agreement is what the written graph does in the predictor (same texts, same batches)
    ours, fp32 = list(load_run(int8.output_dir).predict(calib)), list(load_run(run).predict(calib))
    assert np.mean([a == b for a, b in zip(ours, fp32)]) == pytest.approx(q["agreement"])


def test_int8_keeps_sensitive_nodes_in_fp32_when_quantizing_everything_misses(tmp_path, tiny_bert_dir, monkeypatch):
    import onnx

    from nlp_transfer.inference import onnx_optimize

    run = save_run(tmp_path, tiny_bert_dir, pooling="mean", head="linear")
    calib = [t for t, _ in toy_rows(48, seed=9)]
    calls, real_quantize = [], onnx_optimize._quantize

    def quantize(method, fp32, out, calibration, exclude, only):
        calls.append((method, list(exclude), only))
        real_quantize(method, fp32, out, calibration, exclude, only)

    # labels count as kept only where some nodes stayed fp32: quantizing everything must miss the target
    monkeypatch.setattr(onnx_optimize, "_quantize", quantize)
    monkeypatch.setattr(onnx_optimize, "_same", lambda a, b: np.full(len(a), bool(calls[-1][1])))
    int8 = export_onnx(run, tmp_path / "int8", quantize="int8", calibration_texts=calib)
    q = int8.int8
    assert [c["excluded"] for c in q["candidates"][:2]] == [0, 0] and q["candidates"][0]["agreement"] == 0.0
    assert any(only for _, _, only in calls)  # the sensitivity of each group of nodes was measured
    assert q["agreement"] == 1.0 and q["nodes_excluded"], q
    graph = onnx.load(str(int8.output_dir / "model.onnx")).graph
    kept = {n.name: n.op_type for n in graph.node}
    assert all(kept.get(name) in ("MatMul", "Attention", "Gemm") for name in q["nodes_excluded"]), (q["nodes_excluded"], kept)
    assert read_manifest(int8.output_dir).onnx["int8"]["nodes_excluded"] == q["nodes_excluded"]


def test_int8_refuses_an_unreachable_target_and_writes_nothing(tmp_path, tiny_gpt2_dir, monkeypatch):
    from nlp_transfer.inference import onnx_optimize

    run = save_run(tmp_path, tiny_gpt2_dir, pooling="mean", head="linear")
    monkeypatch.setattr(onnx_optimize, "_same", lambda a, b: np.zeros(len(a), dtype=bool))  # every label "changes"
    with pytest.raises(ModelError, match="no int8 quantization reached 99.50%"):
        export_onnx(run, tmp_path / "int8", quantize="int8", calibration_texts=TEXTS)
    assert not (tmp_path / "int8").exists()
    with pytest.raises(ConfigError, match="recipe.yaml"):
        export_onnx(run, tmp_path / "int8", quantize="int8")  # no validation texts to calibrate on


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
