"""The training loop on a tiny random BERT and a learnable toy task, in process.

Every run takes about a second on one CPU thread; the full fine-tuning run is shared by the
tests that only read its run directory.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_cfg
from safetensors.torch import load_file

from nlp_transfer import ConfigError, RecipeConfig, load_data, load_run, train
from nlp_transfer.metrics import compute_metrics
from nlp_transfer.recipes import build_encoder_classifier
from nlp_transfer.transfer.modes import apply_transfer, param_groups

train_module = importlib.import_module("nlp_transfer.training.trainer")  # the package attribute `train` is the function

FULL = ("train.epochs=4",)  # lr 3e-3, batch 8: enough for a random 2-layer BERT to learn the toy task


def backbone_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors, in BertModel's names whichever layout the run was saved in
    (BertForSequenceClassification's where pooling and head are BERT's own: see interop.py)."""
    weights = load_file(str(Path(run_dir) / "model.safetensors"))
    if "classifier.weight" in weights:
        weights = {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}
    return weights


def record_initial_state(monkeypatch) -> dict[str, dict[str, torch.Tensor]]:
    """Snapshot the freshly built classifier (before any step) when train() builds it."""
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original = train_module.build_classifier

    def wrapper(cfg, labels):
        model, tok = original(cfg, labels)
        seen["backbone"] = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
        seen["head"] = {k: v.detach().clone() for k, v in model.head.state_dict().items()}
        return model, tok

    monkeypatch.setattr(train_module, "build_classifier", wrapper)
    return seen


# ---- one full fine-tuning run, read by several tests --------------------------------------
@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_bert_dir, toy_csv):
    tmp = tmp_path_factory.mktemp("full")
    cfg = build_cfg(tmp, tiny_bert_dir, toy_csv, *FULL)
    result = train(cfg, progress=False)
    return cfg, result


def test_full_finetuning_learns_the_toy_task(full_run):
    cfg, result = full_run
    losses = [e["train_loss"] for e in result.history]
    assert len(losses) == cfg.train.epochs
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[0] < 0.75  # the first epoch already moves away from chance (ln 2 = 0.69 at start)
    assert result.test["accuracy"] > 0.9, result.test
    assert result.test["num_examples"] == 80  # 20% of 400
    assert result.validation == result.history[result.best_epoch - 1]["validation"]


def test_run_directory_is_complete(full_run, tiny_bert_dir):
    cfg, result = full_run
    d = Path(cfg.output.dir)
    assert result.output_dir == d
    for name in (
        "config.json",
        "model.safetensors",
        "head.safetensors",
        "nlp_transfer.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "recipe.yaml",
        "metrics.json",
        "summary.md",
        "README.md",
    ):
        assert (d / name).is_file(), f"{name} missing from the run directory"
    # Written atomically: no temporary or backup siblings are left behind.
    assert sorted(p.name for p in d.parent.iterdir()) == [d.name]

    assert RecipeConfig.from_yaml(d / "recipe.yaml") == cfg
    meta = json.loads((d / "nlp_transfer.json").read_text())  # the run manifest: one file says how to load the run
    assert meta["labels"] == ["neg", "pos"] and meta["pooling"] == "mean" and meta["max_length"] == 32
    assert meta["format_version"] == 2 and meta["precision"] == "no" and meta["eval_batch_size"] == 32
    assert meta["task"] == "single_label" and meta["versions"]["transformers"]
    config = json.loads((d / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}

    from transformers import AutoTokenizer

    saved, original = AutoTokenizer.from_pretrained(str(d)), AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    text = "the film was superb but the ending was dull"
    assert saved(text)["input_ids"] == original(text)["input_ids"]
    assert 1 not in saved(text)["input_ids"]  # no [UNK]: the vocabulary travelled with the model

    m = json.loads((d / "metrics.json").read_text())
    assert len(m["epochs"]) == cfg.train.epochs
    assert [e["epoch"] for e in m["epochs"]] == list(range(1, cfg.train.epochs + 1))
    assert 1 <= m["best_epoch"] <= cfg.train.epochs
    best_f1 = max(e["validation"]["f1_macro"] for e in m["epochs"])
    assert m["epochs"][m["best_epoch"] - 1]["validation"]["f1_macro"] == best_f1
    test = m["test"]
    for key in ("accuracy", "f1_macro", "per_class", "confusion_matrix"):
        assert key in test
    assert test["accuracy"] == result.test["accuracy"]
    assert set(test["per_class"]) == {"neg", "pos"}
    cm = np.array(test["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == m["data"]["sizes"]["test"] == 80
    assert np.trace(cm) / cm.sum() == pytest.approx(test["accuracy"])
    assert m["environment"]["mixed_precision"] == "no"

    summary = (d / "summary.md").read_text()
    assert summary.startswith("# toy")
    assert f"accuracy **{test['accuracy']:.4f}**" in summary
    assert len(re.findall(r"^\| \d+ \|", summary, flags=re.M)) == cfg.train.epochs  # one row per epoch


def test_load_run_reproduces_test_metrics(full_run):
    cfg, result = full_run
    d = Path(cfg.output.dir)
    data = load_data(RecipeConfig.from_yaml(d / "recipe.yaml").data)  # the same deterministic splits
    texts = list(data.splits["test"]["text"])
    truth = [data.labels[i] for i in data.splits["test"]["label"]]

    predictor = load_run(d, device="cpu")
    preds = predictor.predict(texts)
    assert set(preds) <= {"neg", "pos"}
    index = {n: i for i, n in enumerate(predictor.labels)}
    recomputed = compute_metrics([index[t] for t in truth], [index[p] for p in preds], label_names=predictor.labels)
    metrics = json.loads((d / "metrics.json").read_text())["test"]
    assert recomputed["confusion_matrix"] == metrics["confusion_matrix"]
    assert recomputed["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-12)

    # Deterministic: two reloads give identical logits; batching does not change them beyond float noise.
    a = predictor.logits(texts)
    b = load_run(d, device="cpu").logits(texts)
    assert a.shape == (len(texts), 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(load_run(d, device="cpu").logits(texts, batch_size=7), a, atol=1e-5)
    probs = predictor.predict_proba(texts[:5])
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_train_returns_the_predictor_that_load_run_builds(full_run):
    """result.predictor is the trained model in memory (no reload), and predicts what the run directory does."""
    cfg, result = full_run
    texts = list(load_data(cfg.data).splits["test"]["text"])
    reloaded = load_run(result.output_dir)
    assert result.predictor is not None and result.predictor.model is not reloaded.model
    mine, theirs = result.predictor.predict(texts), reloaded.predict(texts)
    assert list(mine) == list(theirs)
    np.testing.assert_array_equal(mine.logits, theirs.logits)
    np.testing.assert_array_equal(mine.probabilities, theirs.probabilities)  # the same calibration
    assert result.predictor.calibration == reloaded.calibration is not None
    assert (result.predictor.precision, result.predictor.batch_size, result.predictor.spec) == (
        reloaded.precision,
        reloaded.batch_size,
        reloaded.spec,
    )


def test_best_epoch_weights_are_saved_and_tested(make_cfg, tmp_path, monkeypatch):
    """Validation says epoch 1 was best (scripted): the test split and the run directory must use the
    weights as they were after epoch 1, not the last epoch's."""
    real_evaluate = train_module.evaluate_model
    snapshots, scripted_f1 = [], [0.9, 0.5, 0.4]

    def scripted_evaluate(model, loader, accelerator, labels, *args, **kw):
        metrics = real_evaluate(model, loader, accelerator, labels, *args, **kw)
        snapshots.append({k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()})
        if len(snapshots) <= len(scripted_f1):  # validation calls; the last call is the test split
            metrics["f1_macro"] = scripted_f1[len(snapshots) - 1]
        return metrics

    monkeypatch.setattr(train_module, "evaluate_model", scripted_evaluate)  # the test split
    monkeypatch.setattr(importlib.import_module("nlp_transfer.training.objectives"), "evaluate_model", scripted_evaluate)  # validation
    cfg = make_cfg(tmp_path, "train.epochs=3")
    result = train(cfg, progress=False)
    assert len(snapshots) == 5 and result.best_epoch == 1  # 3 validations, test, validation again for calibration
    after_epoch1, after_epoch3, at_test, at_calibration = snapshots[0], snapshots[2], snapshots[3], snapshots[4]
    assert any(not torch.equal(after_epoch1[k], after_epoch3[k]) for k in after_epoch1)  # training went on
    assert all(torch.equal(at_test[k], after_epoch1[k]) for k in after_epoch1)
    assert all(torch.equal(at_calibration[k], after_epoch1[k]) for k in after_epoch1)
    saved = {
        **{f"backbone.{k}": v for k, v in backbone_weights(result.output_dir).items()},
        **{f"head.{k}": v for k, v in load_file(str(result.output_dir / "head.safetensors")).items()},
    }
    assert set(saved) == set(after_epoch1)
    assert all(torch.equal(saved[k], after_epoch1[k]) for k in saved)
    m = json.loads((result.output_dir / "metrics.json").read_text())
    assert m["best_epoch"] == 1 and m["validation"]["f1_macro"] == 0.9


# ---- which parameters train ----------------------------------------------------------------
@pytest.fixture
def tiny_classifier(make_cfg, tmp_path):
    """A fresh classifier with the BERT pooler kept (pooling auto), so every depth is present."""
    cfg = make_cfg(tmp_path, "model.pooling=auto")
    model, _ = build_encoder_classifier(cfg.model, ["neg", "pos"])
    return model, cfg


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _select(model, *prefixes: str, suffix: str | None = None) -> set[str]:
    names = {n for n, _ in model.named_parameters()}
    return {n for n in names if n.startswith(prefixes) or (suffix is not None and n.endswith(suffix))}


def test_parameter_layout_of_the_tiny_model(tiny_classifier):
    model, _ = tiny_classifier
    names = {n for n, _ in model.named_parameters()}
    groups = ("backbone.embeddings.", "backbone.encoder.layer.0.", "backbone.encoder.layer.1.", "backbone.pooler.", "head.")
    assert all(any(n.startswith(g) for g in groups) for n in names)
    assert all(any(n.startswith(g) for n in names) for g in groups)


@pytest.mark.parametrize(
    "mode, unfreeze_top, expected",
    [
        ("full", 0, ("backbone.", "head.")),
        ("feature_extraction", 2, ("head.",)),
        ("partial", 0, ("head.",)),
        ("partial", 1, ("backbone.encoder.layer.1.", "backbone.pooler.", "head.")),
        ("partial", 2, ("backbone.encoder.layer.", "backbone.pooler.", "head.")),
    ],
)
def test_apply_transfer_trains_exactly_the_expected_parameters(tiny_classifier, mode, unfreeze_top, expected):
    model, cfg = tiny_classifier
    transfer = cfg.replace(f"transfer.mode={mode}", f"transfer.unfreeze_top={unfreeze_top}").transfer
    counts = apply_transfer(model, transfer)
    assert _trainable(model) == _select(model, *expected)
    assert counts["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in _select(model, *expected))
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def test_bitfit_trains_biases_and_head_only(tiny_classifier):
    model, cfg = tiny_classifier
    apply_transfer(model, cfg.replace("transfer.mode=bitfit").transfer)
    assert _trainable(model) == _select(model, "head.", suffix=".bias")
    assert "backbone.encoder.layer.0.attention.self.query.bias" in _trainable(model)
    assert "backbone.encoder.layer.0.attention.self.query.weight" not in _trainable(model)
    assert "backbone.embeddings.LayerNorm.weight" not in _trainable(model)
    assert "head.1.weight" in _trainable(model)


def test_gradual_unfreezing_opens_one_group_per_epoch(tiny_classifier):
    model, cfg = tiny_classifier
    transfer = cfg.replace("transfer.mode=gradual").transfer
    expected = [
        ("head.",),
        ("head.", "backbone.pooler.", "backbone.encoder.layer.1."),
        ("head.", "backbone.pooler.", "backbone.encoder.layer."),
        ("head.", "backbone."),  # embeddings last
        ("head.", "backbone."),
    ]
    for epoch, prefixes in enumerate(expected):
        apply_transfer(model, transfer, epoch)
        assert _trainable(model) == _select(model, *prefixes), f"epoch {epoch}"


def test_unfreeze_top_larger_than_the_model_is_a_config_error(tiny_classifier):
    model, cfg = tiny_classifier
    with pytest.raises(ConfigError, match=r"unfreeze_top=3 .*only 2 layers"):
        apply_transfer(model, cfg.replace("transfer.mode=partial", "transfer.unfreeze_top=3").transfer)


def test_unfreeze_top_larger_than_the_model_fails_train_before_writing(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "transfer.mode=partial", "transfer.unfreeze_top=5")
    with pytest.raises(ConfigError, match="unfreeze_top=5"):
        train(cfg, progress=False)
    assert not Path(cfg.output.dir).exists()


def test_param_groups_layerwise_decay_and_no_decay(tiny_classifier):
    model, cfg = tiny_classifier
    cfg = cfg.replace("transfer.layerwise_lr_decay=0.5", "train.lr=1e-3", "train.head_lr=1e-2", "train.weight_decay=0.1")
    apply_transfer(model, cfg.transfer)
    groups = param_groups(model, cfg.train, cfg.transfer)
    by_name = {n: g for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, _ in model.named_parameters()}  # every parameter exactly once
    assert sum(len(g["names"]) for g in groups) == len(by_name)
    assert by_name["head.1.weight"]["lr"] == pytest.approx(1e-2)
    assert by_name["backbone.encoder.layer.1.output.dense.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["backbone.encoder.layer.0.output.dense.weight"]["lr"] == pytest.approx(5e-4)
    assert by_name["backbone.embeddings.word_embeddings.weight"]["lr"] == pytest.approx(2.5e-4)
    assert by_name["backbone.encoder.layer.0.output.dense.weight"]["weight_decay"] == 0.1
    assert by_name["backbone.encoder.layer.0.output.dense.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.encoder.layer.0.output.LayerNorm.weight"]["weight_decay"] == 0.0


# ---- frozen parameters stay frozen through a real training run -----------------------------
@pytest.mark.parametrize(
    "overrides, frozen, changed",
    [
        # feature extraction: the whole backbone (pooler included) is bit-identical
        (("transfer.mode=feature_extraction", "train.lr=3e-2", "train.epochs=3"), ("",), ()),
        (("transfer.mode=partial", "transfer.unfreeze_top=1"), ("embeddings.", "encoder.layer.0."), ("encoder.layer.1.", "pooler.")),
        # gradual over 3 epochs: the head, then the top layer (+ pooler), then layer 0; the
        # embeddings never open. Every parameter is in the optimiser from the start and weight
        # decay is on, so this also checks that frozen parameters are not decayed.
        (
            ("transfer.mode=gradual", "train.epochs=3", "train.weight_decay=0.1"),
            ("embeddings.",),
            ("encoder.layer.0.", "encoder.layer.1.", "pooler."),
        ),
    ],
    ids=["feature_extraction", "partial", "gradual"],
)
def test_frozen_backbone_parameters_are_bit_identical(make_cfg, tmp_path, tiny_bert_dir, monkeypatch, overrides, frozen, changed):
    initial = record_initial_state(monkeypatch)
    # Best epoch by validation loss, which falls every epoch here: the last epoch's weights are
    # saved, so what changed reflects every epoch (a restored earlier epoch would hide it).
    cfg = make_cfg(tmp_path, "model.pooling=auto", "train.metric_for_best=loss", *overrides)
    result = train(cfg, progress=False)
    if changed:
        assert result.best_epoch == cfg.train.epochs
    pretrained = load_file(str(tiny_bert_dir / "model.safetensors"))
    after = backbone_weights(result.output_dir)
    assert set(after) == set(pretrained)
    for name in pretrained:
        if name.startswith(frozen):
            assert torch.equal(after[name], pretrained[name]), f"{name} changed but should be frozen"
    for prefix in changed:
        names = [n for n in pretrained if n.startswith(prefix) and n.endswith("weight")]
        assert names and all(not torch.equal(after[n], pretrained[n]) for n in names), f"{prefix} did not train"
    head = load_file(str(result.output_dir / "head.safetensors"))
    assert set(head) == set(initial["head"])
    assert all(not torch.equal(head[k], initial["head"][k]) for k in head), "the head did not train"
    # The model train() started from is the pretrained checkpoint itself.
    assert all(torch.equal(initial["backbone"][k], pretrained[k]) for k in pretrained)


def test_bitfit_training_changes_only_biases(make_cfg, tmp_path, tiny_bert_dir):
    result = train(make_cfg(tmp_path, "transfer.mode=bitfit"), progress=False)
    pretrained = load_file(str(tiny_bert_dir / "model.safetensors"))
    after = backbone_weights(result.output_dir)
    changed = {n for n in after if not torch.equal(after[n], pretrained[n])}
    assert changed, "no bias trained"
    assert all(n.endswith(".bias") for n in changed), sorted(n for n in changed if not n.endswith(".bias"))


# ---- output directory safety ---------------------------------------------------------------
def test_existing_output_dir_without_overwrite_is_refused_and_untouched(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path)
    out = Path(cfg.output.dir)
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    with pytest.raises(ConfigError, match="already exists.*output.overwrite"):
        train(cfg, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---- gradient accumulation, optimiser steps and schedule -----------------------------------
def test_gradient_accumulation_steps_and_schedule(make_cfg, tmp_path, monkeypatch):
    """33 batches per epoch with accumulation 2: 17 optimiser steps per epoch (the last one on a
    single batch), and the linear schedule reaches zero exactly at the last step."""
    steps = []
    schedulers = []

    class CountingAdamW(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            steps.append(1)
            return super().step(*args, **kwargs)

    import transformers

    original = transformers.get_linear_schedule_with_warmup

    def recording_schedule(*args, **kwargs):
        s = original(*args, **kwargs)
        schedulers.append((s, args, kwargs))
        return s

    monkeypatch.setattr(torch.optim, "AdamW", CountingAdamW)
    monkeypatch.setattr(transformers, "get_linear_schedule_with_warmup", recording_schedule)

    # An existing run directory, replaced because overwrite is set.
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    cfg = make_cfg(tmp_path, "train.grad_accum_steps=2", "train.epochs=2", "train.warmup_ratio=0.1", "output.overwrite=true")
    result = train(cfg, progress=False)

    n_train = json.loads((out / "metrics.json").read_text())["data"]["sizes"]["train"]
    batches = math.ceil(n_train / cfg.train.batch_size)
    assert (n_train, batches) == (260, 33)  # odd: the last accumulation window has one batch
    per_epoch = math.ceil(batches / 2)
    assert len(steps) == cfg.train.epochs * per_epoch == 34
    ((scheduler, args, _),) = schedulers
    assert args[1:] == (3, 34)  # warmup steps, total steps
    assert scheduler.get_last_lr()[0] == 0.0  # stepped exactly total_steps times
    assert all(math.isfinite(e["train_loss"]) for e in result.history)
    # overwrite replaced the old directory atomically, leaving no temporary siblings
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---- bf16 autocast on CPU -------------------------------------------------------------------
def test_bf16_autocast_trains_on_cpu(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "train.mixed_precision=bf16", "train.epochs=3")
    result = train(cfg, progress=False)
    losses = [e["train_loss"] for e in result.history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    assert all(math.isfinite(e["validation"]["loss"]) for e in result.history)
    assert result.test["accuracy"] > 0.8
    m = json.loads((result.output_dir / "metrics.json").read_text())
    assert m["environment"]["mixed_precision"] == "bf16"
    weights = {**backbone_weights(result.output_dir), **load_file(str(result.output_dir / "head.safetensors"))}
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())  # master weights stay fp32


def test_precision_can_change_between_runs_in_one_process(make_cfg, tmp_path):
    """Accelerate keeps one precision per process; train() must still allow a second run with another."""
    a = train(make_cfg(tmp_path / "a", "train.epochs=1"), progress=False)
    b = train(make_cfg(tmp_path / "b", "train.epochs=1", "train.mixed_precision=bf16"), progress=False)
    envs = [json.loads((r.output_dir / "metrics.json").read_text())["environment"]["mixed_precision"] for r in (a, b)]
    assert envs == ["no", "bf16"]


def test_clipped_parameters_can_be_reused_every_step():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType
    from torch import nn

    from nlp_transfer.training.loop import trainable_parameters as _clipped

    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    single = _clipped(model, SimpleNamespace(distributed_type=DistributedType.NO))
    assert single == [model[1].weight, model[1].bias]
    fsdp = _clipped(model, SimpleNamespace(distributed_type=DistributedType.FSDP))
    # accelerate clips FSDP shards only when it is handed exactly the model's parameters, on every step
    for _ in range(2):
        assert [p for p in fsdp] == [p for p in model.parameters()]


def test_the_loop_takes_another_objective(make_cfg, tmp_path):
    """The loop is objective-agnostic: an objective that only shrinks the logits trains through the same
    set-up, hooks and finish (the next methods plug in here: contrastive pairs, language modelling)."""
    import torch

    from nlp_transfer.training import Trainer
    from nlp_transfer.training.evaluation import evaluate_model

    class ShrinkLogits:
        metric = "loss"

        def loss(self, model, batch):
            batch.pop("labels")
            logits = model(**batch)["logits"]
            loss = (logits.float() ** 2).mean()
            return loss, loss

        def validate(self, s):
            with torch.no_grad():
                batches = [s.model(**{k: v for k, v in b.items() if k != "labels"})["logits"] for b in s.val_loader]
            return {"loss": float(torch.cat(batches).pow(2).mean())}

    with Trainer(make_cfg(tmp_path, "train.epochs=2", "train.lr=1e-2"), progress=False) as t:
        t.setup()
        assert evaluate_model(t.s.model, t.s.val_loader, t.s.accelerator, t.s.data.labels)["num_examples"] == 60
        t.fit(ShrinkLogits())
        result = t.finish()
    losses = [e["validation"]["loss"] for e in result.history]
    assert losses[-1] < losses[0] and result.best_epoch == 2  # lower is better for "loss"
    assert result.test["num_examples"] == 80 and "accuracy" in result.test  # finish scores the test split as usual
