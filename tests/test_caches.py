"""Frozen work done once: the on-disk feature cache, the frozen-prefix cache, the logreg head.

Cached and uncached paths must agree numerically; the cache must hit when nothing that
determines the features changed and miss when anything did.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file

from nlp_transfer import ConfigError, load_data, load_run, train
from nlp_transfer.data.batching import PadCollator, tokenize
from nlp_transfer.models.classifier import TextClassifier, build_head
from nlp_transfer.recipes import build_encoder_classifier
from nlp_transfer.transfer.caches import FeatureCache, cached_features
from nlp_transfer.transfer.modes import apply_transfer, trainable_depth_floor
from nlp_transfer.transfer.prefix import FrozenPrefix, PrefixCollator, PrefixDataset, encode_prefix, first_trained_layer, frozen_modules
from nlp_transfer.transfer.probe import C_GRID, fit_logreg

train_module = importlib.import_module("nlp_transfer.training.trainer")
SPLITS = ["train", "validation", "test"]


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    from nlp_transfer.training.precision import allow_precision_change

    allow_precision_change("no")
    return Accelerator(cpu=True, mixed_precision="no")


@pytest.fixture
def toy(make_cfg, tmp_path):
    """(cfg, model, tokenizer, tokens, collate) on the tiny BERT and the toy data."""
    cfg = make_cfg(tmp_path)
    data = load_data(cfg.data)
    model, tok = build_encoder_classifier(cfg.model, data.labels)
    tokens = tokenize(data.splits, tok, cfg.model.max_length)
    return cfg, model.eval(), tok, tokens, PadCollator(tok)


def _features(toy, accelerator, cache_dir, **changes):
    cfg, model, tok, tokens, collate = toy
    kw = {"pooling": model.pooling, "max_length": cfg.model.max_length, "precision": "no", "cache_dir": str(cache_dir)}
    kw.update(changes)
    return cached_features(model, tokens, tok, collate, 16, accelerator, **kw)


# ---- feature cache: hit, miss, invalidation ------------------------------------------------
def test_feature_cache_misses_then_hits_with_identical_features(toy, accelerator, tmp_path):
    first, st1 = _features(toy, accelerator, tmp_path / "cache")
    assert st1["misses"] == SPLITS and st1["hits"] == []
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 3
    second, st2 = _features(toy, accelerator, tmp_path / "cache")
    assert st2["hits"] == SPLITS and st2["misses"] == [] and st2["encode_seconds"] == 0.0
    for s in SPLITS:
        assert torch.equal(first[s].features, second[s].features)
        assert torch.equal(first[s].labels, second[s].labels)


def test_cached_features_equal_a_direct_forward_pass_in_dataset_order(toy, accelerator, tmp_path):
    cfg, model, tok, tokens, collate = toy
    feats, _ = _features(toy, accelerator, tmp_path / "cache")
    ds = tokens["validation"]
    with torch.no_grad():  # one example at a time: no padding at all
        direct = torch.cat([model.encode(**collate([ds[i]])) for i in range(len(ds))])
    torch.testing.assert_close(feats["validation"].features, direct, atol=1e-5, rtol=1e-5)
    assert feats["validation"].labels.tolist() == ds["labels"]


@pytest.mark.parametrize("change", ["pooling", "max_length", "precision", "weights", "tokenizer"])
def test_a_change_in_any_part_of_the_key_re_encodes(toy, accelerator, tmp_path, change):
    cfg, model, tok, tokens, collate = toy
    _features(toy, accelerator, tmp_path / "cache")
    kw = {}
    if change == "pooling":
        model.pooling, kw["pooling"] = "max", "max"
    elif change == "max_length":
        kw["max_length"] = 64  # same token ids (toy texts are short), different key
    elif change == "precision":
        kw["precision"] = "bf16"
    elif change == "weights":
        with torch.no_grad():
            next(model.backbone.encoder.layer[1].parameters()).add_(1e-3)
    elif change == "tokenizer":
        tok.truncation_side = "left"
    _, st = _features(toy, accelerator, tmp_path / "cache", **kw)
    assert st["misses"] == SPLITS and st["hits"] == []


def test_changed_data_re_encodes_only_the_changed_split_and_labels_are_not_part_of_the_key(toy, accelerator, tmp_path):
    cfg, model, tok, tokens, collate = toy
    _features(toy, accelerator, tmp_path / "cache")
    tokens["test"] = tokens["test"].select(range(len(tokens["test"]) - 1))  # one example fewer
    flipped = [1 - y for y in tokens["validation"]["labels"]]
    tokens["validation"] = tokens["validation"].remove_columns("labels").add_column("labels", flipped)
    feats, st = _features(toy, accelerator, tmp_path / "cache")
    assert st["hits"] == ["train", "validation"] and st["misses"] == ["test"]
    assert feats["validation"].labels.tolist() == flipped  # labels come from the data, not the cache


def test_a_damaged_cache_file_is_a_miss_and_is_replaced(toy, accelerator, tmp_path):
    first, _ = _features(toy, accelerator, tmp_path / "cache")
    for f in (tmp_path / "cache" / "features").glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    again, st = _features(toy, accelerator, tmp_path / "cache")
    assert st["misses"] == SPLITS
    _, st = _features(toy, accelerator, tmp_path / "cache")
    assert st["hits"] == SPLITS
    assert torch.equal(first["train"].features, again["train"].features)


def test_cache_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.save("k", torch.ones(3, 4), {"a": 1})
    assert [p.name for p in cache.dir.iterdir()] == ["k.safetensors"]
    assert cache.load("k", 3).shape == (3, 4)
    assert cache.load("k", 4) is None  # wrong length: not these examples
    assert cache.load("missing", 3) is None


# ---- feature extraction end to end: cached == uncached, second run skips encoding ----------
def test_feature_extraction_cached_and_uncached_runs_agree_and_the_second_run_hits(make_cfg, tmp_path):
    fe = (
        "transfer.mode=feature_extraction",
        "train.epochs=3",
        "train.lr=1e-2",
        "model.head_dropout=0.2",
        f"transfer.cache_dir={tmp_path / 'cache'}",
    )
    first = train(make_cfg(tmp_path / "a", *fe), progress=False)
    again = train(make_cfg(tmp_path / "b", *fe), progress=False)
    plain = train(make_cfg(tmp_path / "c", *fe, "transfer.cache_features=false"), progress=False)
    assert first.timing["cache"]["features"]["misses"] == SPLITS
    assert again.timing["cache"]["features"]["hits"] == SPLITS and again.timing["encode_seconds"] == 0.0
    assert plain.timing["cache"] == {}  # the backbone ran every step
    assert again.test == first.test
    head = lambda r: load_file(str(r.output_dir / "head.safetensors"))  # noqa: E731
    for k, v in head(first).items():
        torch.testing.assert_close(head(plain)[k], v, atol=1e-5, rtol=1e-4)
    assert [e["validation"]["accuracy"] for e in plain.history] == [e["validation"]["accuracy"] for e in first.history]
    assert plain.test["confusion_matrix"] == first.test["confusion_matrix"]


# ---- frozen-prefix cache ---------------------------------------------------------------------
def _loss_and_grads(model, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same dropout masks in the trained layers
    out = model(**batch)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out["loss"].item(), out["logits"].detach(), grads


def _prefix_check(model, ds, collate, accelerator, padding_side="right"):
    """Loss and gradients of the uncached and the prefix-cached path on the same batches."""
    first = first_trained_layer(model)
    assert first >= 1
    states = encode_prefix(model, ds, collate, 7, accelerator, first)  # other batches than below
    pcollate = PrefixCollator(collate, padding_side)
    pds = PrefixDataset(ds, states)
    frozen = frozen_modules(model)
    batches = [list(range(0, 12)), list(range(12, 20)), [3, 17, 5]]
    for idx in batches:
        model.train()
        for m in frozen:
            m.eval()
        plain = collate([ds[i] for i in idx])
        loss_a, logits_a, grads_a = _loss_and_grads(model, plain)
        prefix = FrozenPrefix(model, first).install()
        try:
            cached = pcollate([pds[i] for i in idx])
            assert torch.equal(cached["input_ids"], plain["input_ids"])
            loss_b, logits_b, grads_b = _loss_and_grads(model, cached)
        finally:
            prefix.remove()
        assert grads_a.keys() == grads_b.keys() and grads_a
        assert loss_b == pytest.approx(loss_a, abs=1e-5)
        torch.testing.assert_close(logits_b, logits_a, atol=1e-5, rtol=1e-5)
        for n in grads_a:
            torch.testing.assert_close(grads_b[n], grads_a[n], atol=1e-5, rtol=1e-4, msg=n)


def test_prefix_cache_gives_the_same_loss_and_gradients_on_bert(toy, accelerator):
    cfg, model, tok, tokens, collate = toy
    apply_transfer(model, cfg.replace("transfer.mode=partial", "transfer.unfreeze_top=1").transfer)
    assert model.backbone.config.hidden_dropout_prob > 0  # dropout in the trained layer is exercised
    _prefix_check(model, tokens["train"], collate, accelerator)
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("backbone.encoder.layer.0.") for n in names)  # real layers are back


def _tiny_llama(n_layers=3):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=60,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return LlamaModel(config)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_prefix_cache_gives_the_same_loss_and_gradients_on_a_llama_decoder(accelerator, padding_side):
    import datasets

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, size=24)
    ds = datasets.Dataset.from_dict(
        {
            "input_ids": [rng.integers(1, 60, size=n).tolist() for n in lengths],
            "labels": rng.integers(0, 3, size=24).tolist(),
            "length": lengths.tolist(),
        }
    )

    def collate(examples):
        t = max(len(e["input_ids"]) for e in examples)
        ids = torch.zeros(len(examples), t, dtype=torch.long)
        mask = torch.zeros(len(examples), t, dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            sl = slice(t - n, t) if padding_side == "left" else slice(0, n)
            ids[i, sl], mask[i, sl] = torch.tensor(e["input_ids"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([e["labels"] for e in examples])}

    model = TextClassifier(_tiny_llama(), build_head(32, 3, "linear", 0.0), "last", ["a", "b", "c"])
    model.backbone.config._attn_implementation = "eager"
    for n, p in model.named_parameters():  # top layer, final norm and head train
        p.requires_grad = n.startswith(("head.", "backbone.layers.2.", "backbone.norm."))
    if padding_side == "left":
        # Llama's positions ignore the mask: with left padding they shift with the amount of
        # padding, and the states of a sequence depend on its batch. Positions from the mask fix it.
        original = model.backbone.forward

        def forward(input_ids=None, attention_mask=None, **kw):
            kw["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            return original(input_ids=input_ids, attention_mask=attention_mask, **kw)

        model.backbone.forward = forward
    _prefix_check(model, ds, collate, accelerator, padding_side)


def test_partial_runs_with_and_without_the_prefix_cache_agree(make_cfg, tmp_path, tiny_bert_dir):
    partial = ("transfer.mode=partial", "transfer.unfreeze_top=1", "train.epochs=2")
    cached = train(make_cfg(tmp_path / "a", *partial), progress=False)
    plain = train(make_cfg(tmp_path / "b", *partial, "transfer.cache_prefix=false"), progress=False)
    assert cached.timing["cache"]["prefix"]["first_trained_layer"] == 1
    assert plain.timing["cache"] == {}
    a, b = (load_file(str(r.output_dir / "model.safetensors")) for r in (cached, plain))
    pretrained = load_file(str(tiny_bert_dir / "model.safetensors"))
    assert a.keys() == b.keys() == {k for k in pretrained if not k.startswith("pooler.")}  # whole (mean pooling: no pooler)
    for k in a:
        if k.endswith("attention.self.key.bias"):
            # Its gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys);
            # Adam scales the float noise up to full-size steps, so both runs move it at random.
            continue
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
        if k.startswith(("embeddings.", "encoder.layer.0.")):
            assert torch.equal(a[k], pretrained[k])
    assert [e["validation"]["accuracy"] for e in cached.history] == [e["validation"]["accuracy"] for e in plain.history]
    assert cached.test["confusion_matrix"] == plain.test["confusion_matrix"]
    # the saved (whole) model reproduces the test accuracy measured during training
    assert _reload_accuracy(cached.output_dir, make_cfg(tmp_path / "a", *partial)) == pytest.approx(cached.test["accuracy"])


def _reload_accuracy(run_dir, cfg) -> float:
    test = load_data(cfg.data).splits["test"]
    logits = load_run(run_dir).logits(test["text"])
    return float(np.mean(logits.argmax(-1) == np.asarray(test["label"])))


# ---- gradual schedule --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "every, step, floors",
    [
        (1, 1, [3, 2, 1, 0, 0]),  # ULMFiT: head, then one more group per epoch, embeddings last
        (2, 1, [3, 3, 2, 2, 1]),
        (1, 2, [3, 1, 0, 0, 0]),
    ],
)
def test_gradual_schedule_is_configurable(make_cfg, tmp_path, every, step, floors):
    t = make_cfg(tmp_path, "transfer.mode=gradual", f"transfer.unfreeze_every={every}", f"transfer.unfreeze_step={step}").transfer
    assert [trainable_depth_floor(t, 2, e) for e in range(5)] == floors


# ---- logistic-regression head ----------------------------------------------------------------
@pytest.mark.parametrize("num_labels", [2, 3])
def test_logreg_folded_into_a_linear_layer_gives_sklearn_probabilities(num_labels):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)) * rng.uniform(0.1, 10, size=8) + rng.normal(size=8)
    y = (x @ rng.normal(size=(8, num_labels))).argmax(1)
    w, b = fit_logreg(x, y, num_labels, C=1.0)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000, random_state=0)).fit(x, y)
    probs = torch.softmax(torch.as_tensor(x @ w.T + b), -1).numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(x), atol=1e-6)


def test_logreg_head_run_saves_a_linear_head_that_reloads(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "transfer.mode=feature_extraction", "model.head=logreg")
    result = train(cfg, progress=False)
    fit = result.history[0]["logreg"]
    assert fit["C"] in C_GRID and [r["C"] for r in fit["search"]] == list(C_GRID)
    assert result.test["accuracy"] > 0.65  # above chance (0.5) on the random tiny BERT's features
    assert isinstance(load_run(result.output_dir).model.head[-1], torch.nn.Linear)
    assert _reload_accuracy(result.output_dir, cfg) == pytest.approx(result.test["accuracy"])
    meta = json.loads((result.output_dir / "nlp_transfer.json").read_text())
    assert meta["head"] == "logreg"


def test_logreg_head_with_a_fixed_c_does_not_search(make_cfg, tmp_path):
    result = train(make_cfg(tmp_path, "transfer.mode=feature_extraction", "model.head=logreg", "model.logreg_c=0.5"), progress=False)
    assert result.history[0]["logreg"]["C"] == 0.5 and len(result.history[0]["logreg"]["search"]) == 1


@pytest.mark.parametrize("mode", ["full", "partial", "gradual", "bitfit"])
def test_logreg_head_needs_feature_extraction(make_cfg, tmp_path, mode):
    with pytest.raises(ConfigError, match=r"model.head=logreg .*transfer.mode=feature_extraction"):
        make_cfg(tmp_path, f"transfer.mode={mode}", "model.head=logreg")


# ---- heads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation, cls", [("gelu", torch.nn.GELU), ("relu", torch.nn.ReLU), ("tanh", torch.nn.Tanh)])
def test_mlp_head_activation_is_built_and_survives_reload(make_cfg, tmp_path, activation, cls):
    cfg = make_cfg(tmp_path, "model.head=mlp", "model.head_hidden_size=16", f"model.head_activation={activation}")
    model, tok = build_encoder_classifier(cfg.model, ["neg", "pos"])
    assert isinstance(model.head[2], cls) and model.head[1].out_features == 16
    model.save_pretrained(tmp_path / "saved", tok)
    again = TextClassifier.from_pretrained(tmp_path / "saved")
    assert isinstance(again.head[2], cls)
    x = torch.randn(4, 32)
    torch.testing.assert_close(again.eval().head(x), model.eval().head(x))


def test_unknown_head_activation_is_a_config_error(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="head_activation='swish'"):
        make_cfg(tmp_path, "model.head=mlp", "model.head_activation=swish")


# ---- two processes ---------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_encode_the_same_cache_as_one(make_cfg, tmp_path):
    """torchrun with 2 CPU processes (gloo): each encodes a share, the gathered features are
    bit-identical to one process's and in dataset order (uneven split sizes included)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    fe = ("transfer.mode=feature_extraction", "train.epochs=1")
    train(make_cfg(tmp_path / "one", *fe, f"transfer.cache_dir={tmp_path / 'c1'}"), progress=False)
    recipe = tmp_path / "two.yaml"
    recipe.write_text(make_cfg(tmp_path / "two", *fe, f"transfer.cache_dir={tmp_path / 'c2'}").to_yaml())
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(repo)}
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            free_port(),
            "scripts/train.py",
            "--config",
            str(recipe),
            "--no-progress",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 process(es)" in proc.stderr
    one = {p.name: load_file(str(p))["features"] for p in (tmp_path / "c1" / "features").glob("*.safetensors")}
    two = {p.name: load_file(str(p))["features"] for p in (tmp_path / "c2" / "features").glob("*.safetensors")}
    assert len(one) == 3 and one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=1e-6)
