"""Adapter modes through peft (lora, dora, ia3, prompt_tuning) on tiny random BERT, GPT-2 and Llama.

What must hold: exactly the adapter and the head train, every other tensor stays bit-identical;
an adapter run reloads from base + adapter to the same logits; merging folds the adapter in
without changing them; the frozen-prefix cache below top-layer adapters changes nothing; a
missing or different base checkpoint, and recipes that cannot work, fail in one line.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, build_cfg
from test_caches import _prefix_check, accelerator, toy  # noqa: F401  (fixtures)

from nlp_transfer import ConfigError, ModelError, load_data, load_run, merge_run, train
from nlp_transfer.models.adapters import ADAPTER_FILES, fingerprint, is_adapted
from nlp_transfer.models.fast import speedups
from nlp_transfer.recipes import build_classifier
from nlp_transfer.transfer.modes import apply_transfer, param_groups

trainer_module = importlib.import_module("nlp_transfer.training.trainer")
ADAPTER_PARTS = (".lora_", ".ia3_", ".prompt_encoder.")


@pytest.fixture
def model_dirs(tiny_bert_dir, tiny_gpt2_dir, tiny_llama_dir) -> dict[str, Path]:
    return {"bert": tiny_bert_dir, "gpt2": tiny_gpt2_dir, "llama": tiny_llama_dir}


def adapted(cfg):
    model, tokenizer = build_classifier(cfg, ["neg", "pos"])
    apply_transfer(model, cfg.transfer)
    return model, tokenizer


def adapted_modules(model) -> set[str]:
    """Short names (within a layer) of the modules that carry an adapter."""
    out = set()
    for name, module in model.backbone.named_modules():
        if hasattr(module, "base_layer") and not name.endswith("base_layer"):
            parts = name.split(".")
            last_digit = max(i for i, p in enumerate(parts) if p.isdigit())
            out.add(".".join(parts[last_digit + 1 :]))
    return out


# ---- which modules get adapters ----------------------------------------------------------------
def test_auto_targets_follow_the_architecture(tmp_path, model_dirs, toy_csv):
    cfg = lambda arch, mode: build_cfg(tmp_path, model_dirs[arch], toy_csv, f"transfer.mode={mode}", "model.pooling=mean")  # noqa: E731
    assert adapted_modules(adapted(cfg("bert", "lora"))[0]) == {"attention.self.query", "attention.self.value"}
    assert adapted_modules(adapted(cfg("gpt2", "lora"))[0]) == {"attn.c_attn"}
    llama = {f"self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")} | {
        f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")
    }
    assert adapted_modules(adapted(cfg("llama", "lora"))[0]) == llama
    model = adapted(cfg("bert", "ia3"))[0]
    assert adapted_modules(model) == {"attention.self.key", "attention.self.value", "attention.output.dense", "output.dense"}
    assert model.backbone.peft_config["default"].feedforward_modules == {"output.dense"}


def test_layers_to_transform_counts_from_the_top_and_names_the_layers(tmp_path, tiny_llama_dir, toy_csv):
    cfg = build_cfg(tmp_path, tiny_llama_dir, toy_csv, "transfer.mode=lora", "transfer.peft.layers_to_transform=[-1]", "model.pooling=last")
    model, _ = adapted(cfg)
    lora = [n for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n]
    assert lora and all(".layers.1." in n for n in lora)
    assert model.meta["adapter"]["layers_to_transform"] == [1]
    ia3 = adapted(cfg.replace("transfer.mode=ia3"))[0]
    assert {n.split(".layers.")[1].split(".")[0] for n, p in ia3.named_parameters() if ".ia3_" in n} == {"1"}


@pytest.mark.parametrize(
    "targets, match",
    [
        (
            "[query, valu]",
            r"valu matches no linear module \(did you mean 'value'\?\); the backbone's linear modules are: "
            r"attention\.self\.query, attention\.self\.key, attention\.self\.value, attention\.output\.dense",
        ),
        ("[pooler.dense]", r"pooler\.dense matches no linear module in layers \[1\]"),
    ],
)
def test_targets_that_match_nothing_list_the_linear_modules(tmp_path, tiny_bert_dir, toy_csv, targets, match):
    layers = ["transfer.peft.layers_to_transform=[1]"] if "pooler" in targets else []
    cfg = build_cfg(tmp_path, tiny_bert_dir, toy_csv, "transfer.mode=lora", f"transfer.peft.target_modules={targets}", *layers)
    with pytest.raises(ConfigError, match=match):
        adapted(cfg)


def test_a_layer_that_does_not_exist_is_named(tmp_path, tiny_bert_dir, toy_csv):
    cfg = build_cfg(tmp_path, tiny_bert_dir, toy_csv, "transfer.mode=lora", "transfer.peft.layers_to_transform=[0, 2]")
    with pytest.raises(ConfigError, match=r"layer 2 does not exist; the backbone has 2 layers \(0\.\.1, or -1\.\.-2 from the top\)"):
        adapted(cfg)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("transfer.mode=lora", "model.head=logreg"), "logreg is fitted on frozen features and needs transfer.mode=feature_extraction"),
        (("transfer.mode=lora", "transfer.l2sp=0.01"), "l2sp=0.01 has nothing to hold back with transfer.mode=lora"),
        (("transfer.mode=dora", "model.pretrained=false"), "adapts pretrained weights it keeps frozen"),
        (("transfer.mode=full", "transfer.peft.r=16"), "transfer.peft configures the adapter modes .* no effect with transfer.mode=full"),
        (("transfer.mode=prompt_tuning", "transfer.peft.layers_to_transform=[1]"), "layers_to_transform does not apply to prompt_tuning"),
        (("transfer.mode=prompt_tuning", "transfer.layerwise_lr_decay=0.8"), "layerwise_lr_decay does not apply to prompt_tuning"),
        (("transfer.mode=lora", "transfer.peft.target_modules=all"), "target_modules='all' is not valid; use auto or a list"),
        (("transfer.mode=lora", "transfer.peft.bias=some"), "transfer.peft.bias='some' is not valid"),
        (("transfer.mode=lora", "transfer.peft.layers_to_transform=[1, 1]"), r"layers_to_transform=\[1, 1\] names a layer twice"),
    ],
)
def test_recipes_that_cannot_work_fail_in_one_line(make_cfg, tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_cfg(tmp_path, *overrides)
    assert "\n" not in str(e.value)


def test_prompt_tuning_longer_than_the_positions_is_refused(tmp_path, tiny_bert_dir, toy_csv):
    cfg = build_cfg(tmp_path, tiny_bert_dir, toy_csv, "transfer.mode=prompt_tuning", "transfer.peft.num_virtual_tokens=40")
    with pytest.raises(ConfigError, match="max_length \\+ transfer.peft.num_virtual_tokens = 72 exceeds the 64 positions"):
        adapted(cfg)


# ---- training changes exactly the adapter and the head; reload and merge keep the logits ---------
def _keep_model(monkeypatch) -> dict:
    """The live model of the next train() call, and a copy of its state right after the adapter was added."""
    kept = {}
    original = trainer_module.apply_transfer

    def apply_and_snapshot(model, cfg, *a, **kw):
        out = original(model, cfg, *a, **kw)
        kept["model"] = model
        kept["before"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return out

    monkeypatch.setattr(trainer_module, "apply_transfer", apply_and_snapshot)
    return kept


CASES = [(arch, mode) for arch in ("bert", "gpt2", "llama") for mode in ("lora", "dora", "ia3", "prompt_tuning")]


@pytest.mark.parametrize("arch, mode", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_adapter_runs_train_only_the_adapter_and_reload_and_merge_to_the_same_logits(
    tmp_path, model_dirs, toy_csv, monkeypatch, arch, mode
):
    kept = _keep_model(monkeypatch)
    cfg = build_cfg(
        tmp_path,
        model_dirs[arch],
        toy_csv,
        f"transfer.mode={mode}",
        "train.epochs=1",
        "train.lr=1e-2",
        "model.pooling=auto",
        "transfer.peft.num_virtual_tokens=4",
    )
    result = train(cfg, progress=False)
    model, before = kept["model"].eval(), kept["before"]
    after = model.state_dict()
    assert after.keys() == before.keys()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("head.") or any(part in n for part in ADAPTER_PARTS) for n in trained)
    assert any(n.startswith("head.") for n in trained) and any(not n.startswith("head.") for n in trained)
    for name, value in after.items():
        if name in trained:
            assert not torch.equal(value, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(value, before[name]), f"{name} changed but is frozen"
    assert result.parameters["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)

    # The run directory holds the adapter and the head, not the base weights; the manifest names the base.
    run = result.output_dir
    assert all((run / f).is_file() for f in ADAPTER_FILES) and not (run / "model.safetensors").exists()
    manifest = json.loads((run / "nlp_transfer.json").read_text())
    assert manifest["adapter"]["method"] == mode and manifest["adapter"]["base_checkpoint"] == str(model_dirs[arch])
    assert manifest["transformers_class"] is None and "export RUN OUT --merge" in manifest["transformers_note"]
    summary = (run / "summary.md").read_text()
    assert f"An adapter run ({mode})" in summary and f"mode `{mode}`: " in summary

    data = load_data(cfg.data)
    texts, labels = list(data.splits["test"]["text"]), [data.labels[i] for i in data.splits["test"]["label"]]
    predictor = load_run(run, device="cpu")
    assert is_adapted(predictor.model.backbone)
    logits = predictor.logits(texts)
    enc = predictor.tokenizer(texts[:6], padding=True, return_tensors="pt")
    with torch.no_grad():
        live = model(**enc)["logits"].numpy()
    np.testing.assert_allclose(logits[:6], live, atol=1e-5, rtol=1e-5)  # reload = the trained model
    np.testing.assert_allclose(predictor.logits(texts, batch_size=5), logits, atol=1e-5, rtol=1e-5)
    assert predictor.evaluate(texts, labels).metrics["accuracy"] == pytest.approx(result.test["accuracy"])

    merged_dir = tmp_path / "merged"
    if mode == "prompt_tuning":
        with pytest.raises(ModelError, match="prompt_tuning adapter adds virtual input tokens and has no weights to fold"):
            merge_run(run, merged_dir)
        assert not merged_dir.exists()
        return
    merged = merge_run(run, merged_dir)
    assert merged.max_logit_difference < 1e-5
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_model.safetensors").exists()
    reloaded = load_run(merged_dir, device="cpu")
    assert not is_adapted(reloaded.model.backbone)
    np.testing.assert_allclose(reloaded.logits(texts), logits, atol=1e-5, rtol=1e-5)
    assert json.loads((merged_dir / "nlp_transfer.json").read_text())["merged_adapter"]["method"] == mode


def test_a_merged_run_with_the_architectures_own_head_loads_in_plain_transformers(make_cfg, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = make_cfg(tmp_path, "transfer.mode=lora", "model.pooling=pooler", "train.epochs=1", "train.lr=1e-2")
    result = train(cfg, progress=False)
    run = result.output_dir
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        merge_run(run, run.parent)  # the tmp folder exists
    merged = merge_run(run, tmp_path / "merged")
    assert merged.transformers_class == "BertForSequenceClassification"
    predictor = load_run(run, device="cpu")
    texts = list(load_data(cfg.data).splits["test"]["text"])[:8]
    enc = predictor.tokenizer(texts, padding=True, return_tensors="pt")
    plain = AutoModelForSequenceClassification.from_pretrained(str(merged.output_dir)).eval()
    with torch.no_grad():
        np.testing.assert_allclose(plain(**enc).logits.numpy(), predictor.logits(texts), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(result.predictor.logits(texts), predictor.logits(texts))  # the in-memory adapter run
    with pytest.raises(ConfigError, match="is not an adapter run"):
        merge_run(merged.output_dir, tmp_path / "again")
    # The adapter run's card says nlp-transfer (its base is not saved); the merged run's says transformers.
    from huggingface_hub import ModelCard

    assert ModelCard.load(run / "README.md").data.library_name == "nlp-transfer"
    card = ModelCard.load(merged.output_dir / "README.md")
    assert card.data.library_name == "transformers" and "merged-adapter" in card.data.tags
    assert "adapter merged into the base weights" in card.text


# ---- the base checkpoint ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(tiny_bert_dir, toy_csv, tmp_path_factory):
    """A LoRA run on a private copy of the tiny BERT (the tests below move and replace that copy)."""
    base = tmp_path_factory.mktemp("base") / "bert"
    shutil.copytree(tiny_bert_dir, base)
    cfg = build_cfg(tmp_path_factory.mktemp("lora"), base, toy_csv, "transfer.mode=lora", "train.epochs=1")
    return base, train(cfg, progress=False).output_dir


def test_a_missing_base_checkpoint_is_one_line_naming_it(lora_run, tmp_path):
    base, run = lora_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "nlp_transfer.json").read_text())
    assert manifest["adapter"]["base_path"] == str(base.resolve())
    manifest["adapter"]["base_checkpoint"] = "moved/away"  # e.g. a relative path, read from another directory
    (copy / "nlp_transfer.json").write_text(json.dumps(manifest))
    assert load_run(copy).labels == ["neg", "pos"]  # found where training found it
    manifest["adapter"]["base_path"] = str(tmp_path / "gone")
    (copy / "nlp_transfer.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="needs its base checkpoint 'moved/away'.*make that checkpoint available") as e:
        load_run(copy)
    assert "\n" not in str(e.value)


def test_a_different_base_checkpoint_is_refused(lora_run, tmp_path):
    from transformers import AutoModel

    base, run = lora_run
    original = AutoModel.from_pretrained(str(base))
    pooler, original.pooler = original.pooler, None  # mean pooling: the recipe drops the pooler before adapting
    want = fingerprint(original)
    original.pooler = pooler
    keep = tmp_path / "keep"
    shutil.copytree(base, keep)
    try:
        torch.manual_seed(123)
        type(original)(original.config).save_pretrained(base)  # same architecture, other weights
        with pytest.raises(ModelError, match=rf"'{base}' is not the one the adapter .* was trained on .*{want[:19]}"):
            load_run(run)
    finally:
        shutil.rmtree(base)
        shutil.copytree(keep, base)
    assert load_run(run).labels == ["neg", "pos"]


def test_an_adapter_run_without_its_adapter_file_is_incomplete(lora_run, tmp_path):
    _, run = lora_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match="is incomplete: missing adapter_model.safetensors"):
        load_run(copy)


def test_export_cli_needs_merge_and_refuses_a_full_run_in_one_line(make_cfg, tmp_path):
    run = train(make_cfg(tmp_path, "train.epochs=1"), progress=False).output_dir
    for args, message in ((["--merge"], "is not an adapter run"), ([], "choose what to export: --merge")):
        proc = subprocess.run(
            [sys.executable, "scripts/export.py", str(run), str(tmp_path / "out"), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---- the frozen-prefix cache below top-layer adapters ------------------------------------------
@pytest.mark.parametrize("mode", ["lora", "ia3"])
def test_top_layer_adapters_give_the_same_loss_and_gradients_with_the_prefix_cache(toy, accelerator, mode):  # noqa: F811
    cfg, model, tok, tokens, collate = toy
    apply_transfer(model, cfg.replace(f"transfer.mode={mode}", "transfer.peft.layers_to_transform=[1]").transfer)
    assert model.backbone.config.hidden_dropout_prob > 0  # dropout in the adapted layer is exercised
    _prefix_check(model, tokens["train"], collate, accelerator)


def test_lora_runs_with_and_without_the_prefix_cache_agree(make_cfg, tmp_path):
    top = ("transfer.mode=lora", "transfer.peft.layers_to_transform=[-1]", "train.epochs=2", "train.lr=1e-2")
    cached = train(make_cfg(tmp_path / "a", *top), progress=False)
    plain = train(make_cfg(tmp_path / "b", *top, "transfer.cache_prefix=false"), progress=False)
    assert cached.timing["cache"]["prefix"]["first_trained_layer"] == 1 and plain.timing["cache"] == {}
    for a, b in zip(cached.history, plain.history):
        assert a["validation"]["confusion_matrix"] == b["validation"]["confusion_matrix"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert cached.test["confusion_matrix"] == plain.test["confusion_matrix"]
    from safetensors.torch import load_file

    a, b = (load_file(str(r.output_dir / "adapter_model.safetensors")) for r in (cached, plain))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_bias_training_below_the_adapters_switches_the_prefix_cache_off(make_cfg, tmp_path):
    r = train(
        make_cfg(tmp_path, "transfer.mode=lora", "transfer.peft.layers_to_transform=[1]", "transfer.peft.bias=all", "train.epochs=1"),
        progress=False,
    )
    assert r.timing["cache"] == {}  # the embeddings' LayerNorm bias trains: nothing below layer 1 is frozen


# ---- every task type, heads, and training options --------------------------------------------
@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    from test_tasks import task_rows

    p = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    rows = task_rows(200)
    for i, r in enumerate(rows):
        r["second"] = rows[-1 - i]["text"]
        r["polarity"] = "pos" if "pos" in r["labels"] else "neg"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


@pytest.mark.parametrize(
    "overrides",
    [
        ("data.label_column=labels",),  # multi-label
        ("data.label_column=score", "train.loss=huber"),  # regression
        ("data.label_column=polarity", "data.text_pair_column=second", "model.pooling=pooler"),  # pairs
        ("data.label_column=polarity", "model.chunking=true", "model.max_length=8", "model.chunk_stride=2"),
    ],
    ids=["multi_label", "regression", "pairs", "chunking"],
)
@pytest.mark.parametrize("mode", ["lora", "prompt_tuning"])
def test_adapters_train_and_reload_every_task_type(tmp_path, tiny_bert_dir, task_file, overrides, mode):
    cfg = build_cfg(
        tmp_path,
        tiny_bert_dir,
        task_file,
        f"transfer.mode={mode}",
        "transfer.peft.num_virtual_tokens=4",
        "train.epochs=1",
        "train.lr=1e-2",
        *overrides,
    )
    result = train(cfg, progress=False)
    data = load_data(cfg.data)
    test = data.splits["test"]
    pairs = list(test["text_pair"]) if "text_pair" in test.column_names else None
    labels = list(test["label"])
    if data.task == "multi_label":
        labels = [[data.labels[i] for i, v in enumerate(row) if v] for row in labels]
    elif data.task == "single_label":
        labels = [data.labels[i] for i in labels]
    metrics = load_run(result.output_dir, device="cpu").evaluate(list(test["text"]), labels, text_pairs=pairs).metrics
    key = {"single_label": "accuracy", "multi_label": "f1_micro", "regression": "mse"}[data.task]
    assert metrics[key] == pytest.approx(result.test[key], rel=1e-5)


def test_lora_with_an_mlp_head_class_weights_layer_decay_early_stopping_and_bf16(make_cfg, tmp_path):
    cfg = make_cfg(
        tmp_path,
        "transfer.mode=dora",
        "model.head=mlp",
        "train.class_weights=balanced",
        "transfer.layerwise_lr_decay=0.5",
        "train.early_stopping_patience=1",
        "train.epochs=3",
        "train.mixed_precision=bf16",
        "train.lr=1e-2",
        "train.head_lr=2e-2",
    )
    model, _ = adapted(cfg)
    lrs = {g["depth"]: g["lr"] for g in param_groups(model, cfg.train, cfg.transfer)}
    assert lrs == {1: pytest.approx(5e-3), 2: pytest.approx(1e-2), 3: pytest.approx(2e-2)}  # layer 0, layer 1, head
    result = train(cfg, progress=False)
    assert result.setup["class_weights"] is not None and 1 <= len(result.history) <= 3
    assert load_run(result.output_dir).model.meta["head"] == "mlp"


def test_the_first_token_speed_up_applies_under_lora_and_keeps_the_logits(make_cfg, tmp_path, tiny_bert_dir):
    cfg = make_cfg(tmp_path, "transfer.mode=lora", "model.pooling=cls")
    model, tok = adapted(cfg)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # a non-zero update
    model.eval()
    enc = tok(["good film", "the plot was dull and the ending too"], padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**enc)["logits"]
        with speedups(model, dropout=False, attention=False, first_token=True, allocator=False) as s:
            assert s.first_token
            fast = model(**enc)["logits"]
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    prompt, _ = adapted(cfg.replace("transfer.mode=prompt_tuning", "transfer.peft.num_virtual_tokens=4"))
    with speedups(prompt, dropout=False, attention=False, first_token=True, allocator=False) as s:
        assert not s.first_token and "virtual tokens" in s.describe()


def test_prompt_tuning_reads_the_texts_states_and_keeps_sentence_pairs_token_types(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "transfer.mode=prompt_tuning", "transfer.peft.num_virtual_tokens=3", "model.pooling=cls")
    model, tok = adapted(cfg)
    model.eval()
    enc = tok(["good film"], ["bad plot"], return_tensors="pt")
    with torch.no_grad():
        pooled = model.encode(**enc)
        base = model.backbone.get_base_model()
        embeds = torch.cat([model.backbone.get_prompt(batch_size=1), base.get_input_embeddings()(enc["input_ids"])], 1)
        tt = torch.cat([torch.zeros(1, 3, dtype=torch.long), enc["token_type_ids"]], 1)
        mask = torch.ones(1, embeds.shape[1], dtype=torch.long)
        expected = base(inputs_embeds=embeds, attention_mask=mask, token_type_ids=tt).last_hidden_state[:, 3]
        torch.testing.assert_close(pooled, expected)
        dropped = base(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, 3]
    assert not torch.allclose(pooled, dropped)  # the second text's token types count


# ---- one process against two ---------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_train_lora_to_the_same_metrics_as_one(make_cfg, tmp_path):
    import os

    from conftest import free_port

    same = ("transfer.mode=lora", "train.lr=1e-12", "train.head_lr=1e-12", "train.epochs=1", "train.eval_batch_size=32")
    one = train(make_cfg(tmp_path / "one", *same), progress=False)
    cfg = make_cfg(tmp_path / "two", *same)
    recipe = tmp_path / "two.yaml"
    recipe.write_text(cfg.to_yaml())
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            free_port(),
            "scripts/train.py",
            "--config",
            str(recipe),
            "--no-progress",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((Path(cfg.output.dir) / "metrics.json").read_text())
    assert two["environment"]["num_processes"] == 2
    drop = lambda m: {k: v for k, v in m.items() if k != "loss"}  # noqa: E731
    assert drop(two["test"]) == json.loads(json.dumps(drop(one.test)))
    assert two["test"]["loss"] == pytest.approx(one.test["loss"], rel=1e-5)
    np.testing.assert_allclose(
        load_run(cfg.output.dir).logits(["good film", "bad plot"]), load_run(one.output_dir).logits(["good film", "bad plot"]), atol=1e-6
    )
