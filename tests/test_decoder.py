"""GPT-style decoders on tiny random GPT-2 and Llama checkpoints with a tiny word-level tokenizer.

The fixtures mimic real decoders' traps: no pad token (GPT-2, Llama), a BOS token added in
front (Llama), left padding (many Llama-family tokenizers), absolute positions (GPT-2), no
biases (Llama), and a tokenizer with no end-of-sequence token either.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SPECIALS, WORDS, build_cfg
from safetensors.torch import load_file

from nlp_transfer import ConfigError, ModelError, RecipeConfig, TextClassifier, load_data, load_run, train
from nlp_transfer.config import ModelConfig, TransferConfig
from nlp_transfer.metrics import compute_metrics
from nlp_transfer.recipes import build_decoder_classifier, is_decoder_checkpoint
from nlp_transfer.recipes.decoder import is_decoder_config
from nlp_transfer.transfer.modes import apply_transfer

train_module = importlib.import_module("nlp_transfer.training.trainer")

TEXTS = [
    "superb",
    "the film was dull and the plot was tedious",
    "a lovely warm comedy",
    "boring",
    "the cast is charming but the script is weak and the ending was so bland",
]


@pytest.fixture(params=["gpt2", "llama"])
def decoder_dir(request, tiny_gpt2_dir, tiny_llama_dir) -> Path:
    return {"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[request.param]


def build(model_dir: Path, **model) -> tuple[TextClassifier, object]:
    cfg = ModelConfig(name_or_path=str(model_dir), head_dropout=0.0, **{"max_length": 64, **model})
    torch.manual_seed(0)
    return build_decoder_classifier(cfg, ["neg", "pos"])


def logits(model, tokenizer, texts, side: str) -> np.ndarray:
    tokenizer.padding_side = side
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc)["logits"].numpy()


# ---- detection and dispatch ------------------------------------------------------------------
def test_decoders_are_detected_by_their_config(tiny_gpt2_dir, tiny_llama_dir, tiny_bert_dir, monkeypatch):
    assert is_decoder_checkpoint(ModelConfig(name_or_path=str(tiny_gpt2_dir)))  # by architectures
    assert is_decoder_checkpoint(ModelConfig(name_or_path=str(tiny_llama_dir)))  # by model type
    assert not is_decoder_checkpoint(ModelConfig(name_or_path=str(tiny_bert_dir)))
    from transformers import AutoConfig

    for name in ("bert", "roberta", "distilbert", "t5", "bart"):  # encoders; BERT and BART can also be causal LMs
        assert not is_decoder_config(AutoConfig.for_model(name)), name
    for name in ("gpt2", "llama", "qwen2", "mistral"):
        assert is_decoder_config(AutoConfig.for_model(name)), name

    seen = []
    recipes = importlib.import_module("nlp_transfer.recipes")
    monkeypatch.setattr(recipes, "build_decoder_classifier", lambda cfg, labels: seen.append("decoder"))
    monkeypatch.setattr(recipes, "build_encoder_classifier", lambda cfg, labels: seen.append("encoder"))
    for d in (tiny_llama_dir, tiny_bert_dir):
        recipes.build_classifier(RecipeConfig.from_dict({"model": {"name_or_path": str(d)}}), ["a", "b"])
    assert seen == ["decoder", "encoder"]


def test_auto_pooling_is_the_last_token_and_cls_is_refused(tiny_llama_dir):
    model, _ = build(tiny_llama_dir)
    assert model.pooling == "last" and model.meta["kind"] == "decoder"
    assert model.backbone.config.use_cache is False
    assert build(tiny_llama_dir, pooling="mean")[0].pooling == "mean"
    with pytest.raises(ModelError, match="pooling='cls'.*use last"):
        build(tiny_llama_dir, pooling="cls")
    with pytest.raises(ModelError, match="no pooler"):
        build(tiny_llama_dir, pooling="pooler")


def test_pretrained_false_gives_the_decoder_random_weights(tiny_llama_dir):
    pretrained, _ = build(tiny_llama_dir)
    torch.manual_seed(1)  # the fixture's "pretrained" weights are themselves seed-0 random ones
    scratch, tok = build_decoder_classifier(ModelConfig(name_or_path=str(tiny_llama_dir), pretrained=False, max_length=64), ["neg", "pos"])
    assert type(scratch.backbone) is type(pretrained.backbone) and scratch.pooling == "last"
    assert tok.pad_token == "</s>" and scratch.backbone.config.pad_token_id == 2
    a, b = scratch.backbone.state_dict(), pretrained.backbone.state_dict()
    assert a.keys() == b.keys() and not torch.equal(a["layers.0.mlp.up_proj.weight"], b["layers.0.mlp.up_proj.weight"])


# ---- pad token -------------------------------------------------------------------------------
def test_end_of_sequence_token_serves_as_pad_without_growing_the_vocabulary(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(str(tiny_gpt2_dir))
    model, tok = build(tiny_gpt2_dir)
    assert tok.pad_token == tok.eos_token == "</s>" and tok.pad_token_id == 2
    assert model.backbone.config.pad_token_id == 2 and model.meta["pad_token"] == "eos"
    assert len(tok) == len(original) == model.backbone.get_input_embeddings().num_embeddings
    pretrained = load_file(str(tiny_gpt2_dir / "model.safetensors"))
    assert torch.equal(model.backbone.wte.weight, pretrained["transformer.wte.weight"])


def test_a_tokenizer_without_eos_gets_a_new_pad_token(no_eos_gpt2_dir):
    model, tok = build(no_eos_gpt2_dir)
    n = len(SPECIALS + WORDS)
    assert tok.pad_token == "<pad>" and tok.pad_token_id == n and len(tok) == n + 1
    assert model.backbone.get_input_embeddings().num_embeddings == n + 1
    assert model.backbone.config.pad_token_id == n and model.backbone.config.vocab_size == n + 1
    assert model.meta["pad_token"] == "added"
    a = logits(model, tok, TEXTS, "right")
    assert np.isfinite(a).all()
    np.testing.assert_allclose(logits(model, tok, TEXTS, "left"), a, atol=1e-5)


def test_an_existing_pad_token_is_kept(tmp_path, tiny_gpt2_dir):
    import shutil

    from transformers import AutoTokenizer

    d = tmp_path / "with-pad"
    shutil.copytree(tiny_gpt2_dir, d)
    tok = AutoTokenizer.from_pretrained(str(d))
    tok.pad_token = "<unk>"
    tok.save_pretrained(d)
    model, tok = build(d)
    assert tok.pad_token == "<unk>" and model.backbone.config.pad_token_id == 0 and model.meta["pad_token"] == "own"


# ---- padding equivalence -----------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["auto", "mean", "max"])
def test_same_logits_alone_and_padded_left_or_right(decoder_dir, pooling):
    model, tok = build(decoder_dir, pooling=pooling)
    model.eval()
    alone = np.concatenate([logits(model, tok, [t], "right") for t in TEXTS])
    right = logits(model, tok, TEXTS, "right")
    left = logits(model, tok, TEXTS, "left")
    np.testing.assert_allclose(right, alone, atol=1e-5)
    np.testing.assert_allclose(left, alone, atol=1e-5)
    assert np.abs(alone[0] - alone[1]).max() > 1e-4  # the texts do give different logits


def test_left_padding_would_shift_gpt2_positions_without_the_fix(tiny_gpt2_dir):
    """The check above has teeth: GPT-2's absolute positions change its output under left
    padding unless positions are counted over real tokens."""
    model, tok = build(tiny_gpt2_dir)
    model.eval()
    alone = np.concatenate([logits(model, tok, [t], "right") for t in TEXTS])
    model.meta["kind"] = "encoder"  # switch the position fix off
    assert np.abs(logits(model, tok, TEXTS, "left") - alone).max() > 1e-3


# ---- transfer modes --------------------------------------------------------------------------
def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def names(model, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


LAYOUT = {  # (embeddings, top layer, final norm) of each tiny decoder, as TextClassifier parameter names
    "gpt2": (("backbone.wte.", "backbone.wpe."), "backbone.h.1.", "backbone.ln_f."),
    "llama": (("backbone.embed_tokens.",), "backbone.layers.1.", "backbone.norm."),
}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_each_transfer_mode_selects_the_expected_parameters(arch, tiny_gpt2_dir, tiny_llama_dir):
    model, _ = build({"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[arch])
    embeddings, top, norm = LAYOUT[arch]
    everything = names(model, "")
    head = names(model, "head.")

    apply_transfer(model, TransferConfig(mode="feature_extraction"))
    assert trainable(model) == head
    apply_transfer(model, TransferConfig(mode="partial", unfreeze_top=1))
    assert trainable(model) == head | names(model, top, norm)
    apply_transfer(model, TransferConfig(mode="gradual"), epoch=1)
    assert trainable(model) == head | names(model, top, norm)
    apply_transfer(model, TransferConfig(mode="gradual"), epoch=3)
    assert trainable(model) == everything
    apply_transfer(model, TransferConfig(mode="partial", unfreeze_top=2))  # every layer, not the embeddings
    assert trainable(model) == everything - names(model, *embeddings)
    apply_transfer(model, TransferConfig(mode="full"))
    assert trainable(model) == everything
    if arch == "gpt2":
        apply_transfer(model, TransferConfig(mode="bitfit"))
        assert trainable(model) == head | {n for n in everything if n.endswith(".bias")}
    else:  # Llama has no biases: bitfit would silently train the head alone
        with pytest.raises(ConfigError, match="bitfit.*no bias.*use partial or feature_extraction"):
            apply_transfer(model, TransferConfig(mode="bitfit"))


def run(tmp_path, model_dir, toy_csv, *overrides):
    cfg = build_cfg(tmp_path, model_dir, toy_csv, "model.pooling=auto", "train.metric_for_best=loss", *overrides)
    return cfg, train(cfg, progress=False)


@pytest.mark.parametrize(
    "arch, overrides, frozen, changed",
    [
        ("llama", ("transfer.mode=feature_extraction", "train.lr=3e-2", "train.epochs=3"), ("",), ()),
        ("llama", ("transfer.mode=partial", "transfer.unfreeze_top=1"), ("embed_tokens.", "layers.0."), ("layers.1.", "norm.")),
        ("gpt2", ("transfer.mode=gradual", "train.epochs=2"), ("wte.", "wpe.", "h.0."), ("h.1.", "ln_f.")),
        ("gpt2", ("transfer.mode=bitfit",), ("",), ()),  # biases checked below
        ("llama", ("transfer.mode=full",), (), ("embed_tokens.", "layers.0.", "layers.1.", "norm.")),
    ],
    ids=["llama-feature_extraction", "llama-partial", "gpt2-gradual", "gpt2-bitfit", "llama-full"],
)
def test_training_changes_exactly_the_trained_parameters(
    tmp_path, tiny_gpt2_dir, tiny_llama_dir, toy_csv, arch, overrides, frozen, changed
):
    model_dir = {"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[arch]
    cfg, result = run(tmp_path, model_dir, toy_csv, *overrides)
    assert all(np.isfinite(e["train_loss"]) for e in result.history)
    before = {k.removeprefix("transformer."): v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    after = load_file(str(result.output_dir / "model.safetensors"))
    assert set(after) <= set(before)
    bitfit = cfg.transfer.mode == "bitfit"
    for name in after:
        if name.startswith(frozen) and not (bitfit and name.endswith(".bias")):
            assert torch.equal(after[name], before[name]), f"{name} changed but should be frozen"
    for prefix in changed:
        weights = [n for n in after if n.startswith(prefix) and n.endswith("weight")]
        assert weights and all(not torch.equal(after[n], before[n]) for n in weights), f"{prefix} did not train"
    if bitfit:
        assert all(not torch.equal(after[n], before[n]) for n in after if n.endswith(".bias"))


def test_full_finetuning_learns_the_toy_task_with_left_padding(tmp_path, tiny_llama_dir, toy_csv):
    cfg, result = run(tmp_path, tiny_llama_dir, toy_csv, "train.epochs=4", "train.metric_for_best=f1_macro")
    assert result.test["accuracy"] > 0.85, result.test


# ---- save and reload ---------------------------------------------------------------------
@pytest.mark.parametrize("which", ["llama", "no-eos-gpt2"])
def test_save_and_reload_reproduce_the_logits(tmp_path, tiny_llama_dir, no_eos_gpt2_dir, toy_csv, monkeypatch, which):
    model_dir = {"llama": tiny_llama_dir, "no-eos-gpt2": no_eos_gpt2_dir}[which]
    kept = {}
    original = train_module.build_classifier

    def keep(cfg, labels):  # the live model object, trained in place by train()
        kept["model"], kept["tokenizer"] = original(cfg, labels)
        return kept["model"], kept["tokenizer"]

    monkeypatch.setattr(train_module, "build_classifier", keep)
    cfg, result = run(tmp_path, model_dir, toy_csv, "train.epochs=1", "transfer.mode=full")
    d = result.output_dir
    meta = json.loads((d / "nlp_transfer.json").read_text())
    assert meta["kind"] == "decoder" and meta["pooling"] == "last"

    data = load_data(RecipeConfig.from_yaml(d / "recipe.yaml").data)
    texts = list(data.splits["test"]["text"])
    predictor = load_run(d, device="cpu")
    assert predictor.tokenizer.pad_token == kept["tokenizer"].pad_token
    assert predictor.tokenizer.padding_side == kept["tokenizer"].padding_side
    live = kept["model"].eval()
    expected = np.concatenate([logits(live, kept["tokenizer"], [t], "right") for t in texts[:10]])
    got = predictor.logits(texts)
    np.testing.assert_allclose(got[:10], expected, atol=1e-5)
    np.testing.assert_allclose(predictor.logits(texts, batch_size=7), got, atol=1e-5)
    preds = got.argmax(-1)
    recomputed = compute_metrics(list(data.splits["test"]["label"]), preds, label_names=data.labels)
    assert recomputed["confusion_matrix"] == json.loads((d / "metrics.json").read_text())["test"]["confusion_matrix"]


# ---- memory options ------------------------------------------------------------------------
def _layer_calls(model) -> list[int]:
    calls = []
    from nlp_transfer.models.layers import find_layers

    # A submodule's pre-hook: hooks on the layer itself stay outside the checkpoint, and the
    # recompute stops early, once it has what backward needs, so post-hooks may not run.
    find_layers(model.backbone)[1][-1].mlp.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gradient_checkpointing_with_frozen_embeddings_gives_the_same_gradients(arch, tiny_gpt2_dir, tiny_llama_dir):
    model_dir = {"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[arch]
    grads, calls = {}, {}
    for ckpt in (False, True):
        model, tok = build(model_dir, gradient_checkpointing=ckpt)
        apply_transfer(model, TransferConfig(mode="partial", unfreeze_top=1))  # embeddings and layer 0 frozen
        model.train()
        calls[ckpt] = _layer_calls(model)
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        model(**enc, labels=torch.tensor([1, 0, 1, 0, 0]))["loss"].backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert len(calls[False]) == 1 and len(calls[True]) == 2  # the top layer really ran again in backward
    assert set(grads[True]) == set(grads[False]) and any(n.startswith(LAYOUT[arch][1]) for n in grads[True])
    for n in grads[False]:
        torch.testing.assert_close(grads[True][n], grads[False][n], atol=1e-6, rtol=1e-5)
        assert grads[True][n].abs().sum() > 0, f"{n} got no gradient"


def test_gradient_checkpointing_trains_end_to_end(tmp_path, tiny_llama_dir, toy_csv):
    cfg, result = run(
        tmp_path,
        tiny_llama_dir,
        toy_csv,
        "model.gradient_checkpointing=true",
        "transfer.mode=partial",
        "transfer.unfreeze_top=1",
        "train.epochs=1",
    )
    before, after = load_file(str(tiny_llama_dir / "model.safetensors")), load_file(str(result.output_dir / "model.safetensors"))
    assert not torch.equal(after["layers.1.mlp.up_proj.weight"], before["layers.1.mlp.up_proj.weight"])
    assert torch.equal(after["embed_tokens.weight"], before["embed_tokens.weight"])


def test_bf16_backbone_needs_a_frozen_backbone():
    with pytest.raises(ConfigError, match="backbone_dtype=bfloat16 needs a frozen backbone.*transfer.mode=partial"):
        RecipeConfig.from_dict({"model": {"backbone_dtype": "bfloat16"}, "transfer": {"mode": "partial"}})
    with pytest.raises(ConfigError, match="did you mean 'bfloat16'"):
        ModelConfig(backbone_dtype="bfloat")
    RecipeConfig.from_dict({"model": {"backbone_dtype": "bfloat16"}, "transfer": {"mode": "feature_extraction"}})


def test_bf16_backbone_feature_extraction_run_reloads_in_bf16(tmp_path, tiny_llama_dir, toy_csv):
    cfg, result = run(
        tmp_path,
        tiny_llama_dir,
        toy_csv,
        "model.backbone_dtype=bfloat16",
        "transfer.mode=feature_extraction",
        "train.epochs=20",
        "train.lr=3e-2",
    )
    after = load_file(str(result.output_dir / "model.safetensors"))
    assert all(w.dtype == torch.bfloat16 for w in after.values())
    assert all(w.dtype == torch.float32 for w in load_file(str(result.output_dir / "head.safetensors")).values())
    predictor = load_run(result.output_dir, device="cpu")
    assert next(predictor.model.backbone.parameters()).dtype == torch.bfloat16
    data = load_data(cfg.data)
    preds = predictor.logits(list(data.splits["test"]["text"])).argmax(-1)
    recomputed = compute_metrics(list(data.splits["test"]["label"]), preds, label_names=data.labels)
    assert recomputed["confusion_matrix"] == json.loads((result.output_dir / "metrics.json").read_text())["test"]["confusion_matrix"]


# ---- the caches of feature extraction and partial ----------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_partial_runs_with_and_without_the_prefix_cache_agree(arch, tmp_path, tiny_gpt2_dir, tiny_llama_dir, toy_csv):
    """The frozen-prefix cache replays states computed once per example (unpadded); with
    positions counted over real tokens they fit any batch, padded left (Llama) or right (GPT-2)."""
    model_dir = {"gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}[arch]
    partial = ("transfer.mode=partial", "transfer.unfreeze_top=1", "train.epochs=2")
    _, cached = run(tmp_path / "a", model_dir, toy_csv, *partial)
    _, plain = run(tmp_path / "b", model_dir, toy_csv, *partial, "transfer.cache_prefix=false")
    assert cached.timing["cache"]["prefix"]["first_trained_layer"] == 1 and plain.timing["cache"] == {}
    a, b = (load_file(str(r.output_dir / "model.safetensors")) for r in (cached, plain))
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.c_attn.bias"):  # GPT-2's fused q|k|v bias: the key part gets zero gradient
            x, y = torch.cat([x[:32], x[64:]]), torch.cat([y[:32], y[64:]])  # in exact arithmetic (Adam amplifies noise)
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=k)
    assert [e["validation"]["accuracy"] for e in cached.history] == [e["validation"]["accuracy"] for e in plain.history]
    assert cached.test["confusion_matrix"] == plain.test["confusion_matrix"]


def test_logreg_head_on_decoder_features(tmp_path, tiny_llama_dir, toy_csv):
    cfg, result = run(tmp_path, tiny_llama_dir, toy_csv, "transfer.mode=feature_extraction", "model.head=logreg")
    assert result.history[0]["logreg"]["C"] > 0
    predictor = load_run(result.output_dir, device="cpu")
    data = load_data(cfg.data)
    preds = predictor.logits(list(data.splits["test"]["text"])).argmax(-1)
    recomputed = compute_metrics(list(data.splits["test"]["label"]), preds, label_names=data.labels)
    assert recomputed["confusion_matrix"] == result.test["confusion_matrix"]
