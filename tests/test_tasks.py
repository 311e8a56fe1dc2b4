"""Task types: multi-label and regression beside single-label (nlp_transfer/tasks.py).

Losses and metrics against hand-computed values, threshold tuning, task inference, label
storage, bad input as one-line errors, and short end-to-end runs on a toy task whose labels
follow from the words used: ``pos`` when a positive word occurs, ``neg`` when a negative one
does (both, one or neither), and a score ``0.7 * positives - 0.4 * negatives + 0.05 * words``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILLER, NEG_WORDS, POS_WORDS, build_cfg, write_csv

from nlp_transfer import ConfigError, DataError, RecipeConfig, load_data, load_run, train
from nlp_transfer.config import DataConfig
from nlp_transfer.metrics import is_better, multilabel_metrics, regression_metrics
from nlp_transfer.tasks import get_task, infer_task, tune_thresholds


def build_loss(task, loss="auto", huber_delta=1.0):
    return get_task(task).build_loss(loss, huber_delta)


def decide(task, logits, thresholds=None):
    return get_task(task).decide(logits, thresholds)


def selection_metric(task, requested):
    return get_task(task).selection_metric(requested)


from test_cli import assert_user_error, run_train, setup  # noqa: F401, E402  (setup: a fixture)


def task_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        npos, nneg = rng.randint(0, 2), rng.randint(0, 2)
        words = rng.choices(FILLER, k=rng.randint(3, 6)) + rng.sample(POS_WORDS, npos) + rng.sample(NEG_WORDS, nneg)
        rng.shuffle(words)
        text = " ".join(words)
        if text in seen:
            continue
        seen.add(text)
        labels = [name for name, k in (("neg", nneg), ("pos", npos)) if k]
        rows.append(
            {
                "text": text,
                "labels": labels,
                "tags": "|".join(labels),
                "pos": int(npos > 0),
                "neg": int(nneg > 0),
                "score": round(0.7 * npos - 0.4 * nneg + 0.05 * len(words), 4),
            }
        )
    return rows


@pytest.fixture(scope="module")
def task_jsonl(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("task-data") / "tasks.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in task_rows(300)) + "\n")
    return p


@pytest.fixture(scope="module")
def task_csv(tmp_path_factory) -> Path:
    rows = task_rows(300)
    cols = ("text", "tags", "pos", "neg", "score")
    return write_csv(tmp_path_factory.mktemp("task-csv") / "tasks.csv", [[r[c] for c in cols] for r in rows], header=cols)


# ---- losses --------------------------------------------------------------------------------------
def test_losses_match_hand_computed_values():
    logits = torch.tensor([[0.0, 2.0]])
    bce = build_loss("multi_label")(logits, torch.tensor([[1.0, 0.0]]))
    assert bce.item() == pytest.approx((math.log(2) + math.log(1 + math.e**2)) / 2, rel=1e-6)
    ce = build_loss("single_label")(logits, torch.tensor([1]))
    assert ce.item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)
    out = torch.tensor([[1.0], [3.0]])  # a regression head has one output
    target = torch.tensor([0.0, 1.0])
    assert build_loss("regression")(out, target).item() == pytest.approx(2.5)  # (1 + 4) / 2
    # Huber, delta 1: error 1 -> 0.5 * 1^2 = 0.5; error 2 -> 1 * (2 - 0.5) = 1.5; mean 1.0
    assert build_loss("regression", "huber", 1.0)(out, target).item() == pytest.approx(1.0)
    assert build_loss("regression", "huber", 3.0)(out, target).item() == pytest.approx(1.25)  # quadratic: (0.5 + 2) / 2


def test_a_loss_that_does_not_fit_the_task_is_refused():
    with pytest.raises(ConfigError, match="train.loss='bce' does not fit a regression task"):
        build_loss("regression", "bce")
    with pytest.raises(ConfigError, match="does not fit a single_label task"):
        build_loss("single_label", "mse")


# ---- metrics -------------------------------------------------------------------------------------
def test_multilabel_metrics_match_hand_computed_values():
    y_true = [[1, 0], [1, 1], [0, 0]]
    y_pred = [[1, 1], [1, 0], [0, 0]]
    m = multilabel_metrics(y_true, y_pred, ["a", "b"])
    # label a: tp 2, fp 0, fn 0; label b: tp 0, fp 1, fn 1. Pooled: tp 2, fp 1, fn 1.
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "predicted": 2}
    assert m["per_class"]["b"]["f1"] == 0.0 and m["per_class"]["b"]["support"] == 1
    assert m["precision_micro"] == pytest.approx(2 / 3) and m["recall_micro"] == pytest.approx(2 / 3)
    assert m["f1_micro"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx(0.5) and m["precision_macro"] == pytest.approx(0.5)
    assert m["subset_accuracy"] == pytest.approx(1 / 3)  # only the last row is exactly right
    assert m["hamming_loss"] == pytest.approx(2 / 6)  # two wrong decisions of six
    assert m["num_examples"] == 3 and m["labels"] == ["a", "b"]


def test_regression_metrics_match_hand_computed_values():
    m = regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert m["mse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(math.sqrt(0.5))
    # ranks equal values here, so Spearman = Pearson = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12 / 60
    assert m["spearman"] == pytest.approx(0.8) and m["pearson"] == pytest.approx(0.8)
    assert regression_metrics([1, 2, 3, 4], [2, 4, 6, 8])["pearson"] == pytest.approx(1.0)
    assert regression_metrics([1, 2, 3], [5, 5, 5])["pearson"] == 0.0  # undefined for a constant prediction


def test_model_selection_direction_and_defaults():
    assert is_better("mse", 0.1, 0.2) and not is_better("mse", 0.3, 0.2)
    assert is_better("hamming_loss", 0.1, 0.2) and is_better("pearson", 0.9, 0.8)
    assert selection_metric("single_label", "auto") == "f1_macro"
    assert selection_metric("multi_label", "auto") == "f1_micro"
    assert selection_metric("regression", "auto") == "mse"
    with pytest.raises(ConfigError, match="'accuracy' is not a regression metric"):
        selection_metric("regression", "accuracy")


# ---- thresholds ------------------------------------------------------------------------------------
def test_thresholds_are_tuned_for_the_best_f1():
    probs = np.array([[0.9, 0.2], [0.6, 0.15], [0.3, 0.1], [0.2, 0.05]])
    y = np.array([[1, 1], [1, 0], [0, 0], [0, 0]])
    # label 0: any threshold in (0.3, 0.6] is perfect -> the one nearest 0.5; label 1: only (0.15, 0.2]
    assert tune_thresholds(probs, y, "per_label") == [0.5, 0.2]
    # one threshold for both: 0.5 gives micro F1 0.8 (label 1's positive missed); 0.2 gives 0.75
    assert tune_thresholds(probs, y, "global") == [0.5, 0.5]
    assert decide("multi_label", np.log(probs / (1 - probs)), [0.5, 0.2]).tolist() == y.tolist()


def test_thresholds_outside_zero_one_are_refused():
    with pytest.raises(ConfigError, match=r"train.thresholds=1.5 must be in \[0, 1\]"):
        RecipeConfig.from_dict({"train": {"thresholds": 1.5}})
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\].*got -0.1"):
        RecipeConfig.from_dict({"train": {"thresholds": [0.5, -0.1]}})
    with pytest.raises(ConfigError, match="train.thresholds='best' is not valid"):
        RecipeConfig.from_dict({"train": {"thresholds": "best"}})
    assert RecipeConfig.from_dict({"train": {"thresholds": [0.3, 0.7]}}).train.thresholds == [0.3, 0.7]


# ---- inference and label storage -------------------------------------------------------------------
def test_task_inference_rules():
    assert infer_task("auto", [["a"], ["a", "b"], []]) == "multi_label"
    assert infer_task("auto", ["a|b", "a"], label_separator="|") == "multi_label"
    assert infer_task("auto", ["x"], label_columns=["a", "b"]) == "multi_label"
    many = [i / 7 for i in range(30)]
    assert infer_task("auto", many) == "regression"
    assert infer_task("auto", [0.5, 1.5, 2.5] * 10) == "single_label"  # few distinct values: classes
    assert infer_task("auto", [float(i) for i in range(30)]) == "single_label"  # whole numbers: classes
    assert infer_task("auto", [str(v) for v in many]) == "single_label"  # strings are names, never numbers
    assert infer_task("regression", [1, 2, 1]) == "regression"
    with pytest.raises(ConfigError, match="data.task=single_label but the data has list-valued labels"):
        infer_task("single_label", [["a"], ["b"]])


@pytest.mark.parametrize("how", ["list", "separator", "columns"])
def test_multi_label_data_three_ways(how, task_jsonl, task_csv):
    cfg = {
        "list": dict(train_file=str(task_jsonl), label_column="labels"),
        "separator": dict(train_file=str(task_csv), label_column="tags", label_separator="|"),
        "columns": dict(train_file=str(task_csv), label_columns=["neg", "pos"]),
    }[how]
    data = load_data(DataConfig(source=None, **cfg))
    assert data.task == "multi_label" and data.labels == ["neg", "pos"]
    rows = {r["text"]: r for r in task_rows(300)}
    train = data.splits["train"]
    assert train.features["label"].feature.dtype == "float32"
    for text, vec in zip(train["text"][:20], train["label"][:20]):
        assert vec == [float(rows[text]["neg"]), float(rows[text]["pos"])]
    counts = data.label_counts("train")
    assert counts == {"neg": int(sum(v[0] for v in train["label"])), "pos": int(sum(v[1] for v in train["label"]))}
    assert sum(data.sizes().values()) == 300


def test_regression_data_is_inferred_and_stored_as_floats(task_csv):
    data = load_data(DataConfig(source=None, train_file=str(task_csv), label_column="score"))
    assert data.task == "regression" and data.labels == ["score"] and data.num_labels == 1
    assert data.splits["test"].features["label"].dtype == "float32"
    assert data.label_counts("train") == {}
    stats = data.summary()["target"]["train"]
    assert stats["min"] <= stats["mean"] <= stats["max"]


# ---- bad input ---------------------------------------------------------------------------------------
def test_non_numeric_regression_target_is_one_line(tmp_path):
    f = write_csv(tmp_path / "bad.csv", [["good film", "1.5"], ["bad film", "high"]] * 10)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(source=None, train_file=str(f), task="regression"))
    msg = str(e.value)
    assert "\n" not in msg and "regression target 'label' must be a number" in msg and "got 'high' at row 1" in msg
    g = write_csv(tmp_path / "gap.csv", [["good film", "1.5"], ["bad film", ""]] * 10)
    with pytest.raises(DataError, match="got an empty cell at row 1"):
        load_data(DataConfig(source=None, train_file=str(g), task="regression"))


def test_multi_label_bad_rows_are_one_line(tmp_path):
    rows = [{"text": f"text {i}", "labels": ["a"] if i % 2 else ["b"]} for i in range(20)]
    rows[5]["labels"] = None
    f = tmp_path / "missing.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"row 5 .* has no labels") as e:
        load_data(DataConfig(source=None, train_file=str(f), label_column="labels", task="multi_label"))
    assert "\n" not in str(e.value)
    g = write_csv(tmp_path / "cols.csv", [[f"text {i}", i % 2, 2 if i == 3 else 0] for i in range(20)], header=("text", "a", "b"))
    with pytest.raises(DataError, match=r"label column 'b' must hold 0 or 1 in every row, got 2 at row 3"):
        load_data(DataConfig(source=None, train_file=str(g), label_columns=["a", "b"]))
    with pytest.raises(DataError, match=r"no column 'c' \(data.label_columns\)"):
        load_data(DataConfig(source=None, train_file=str(g), label_columns=["a", "c"]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n".join(json.dumps({"text": f"t {i}", "labels": []}) for i in range(20)))
    with pytest.raises(DataError, match="no training row has a label"):
        load_data(DataConfig(source=None, train_file=str(empty), label_column="labels"))


def test_recipe_mismatches_are_config_errors(tmp_path, tiny_bert_dir, task_csv):
    with pytest.raises(ConfigError, match="data.label_columns must name at least one"):
        DataConfig(source=None, train_file="x.csv", label_columns=[])
    with pytest.raises(ConfigError, match="describe multi-label data, but data.task=regression"):
        DataConfig(source=None, train_file="x.csv", label_columns=["a"], task="regression")
    with pytest.raises(ConfigError, match="model.head=logreg .* cannot learn a multi_label task"):
        build_cfg(tmp_path, tiny_bert_dir, task_csv, "data.task=multi_label", "model.head=logreg", "transfer.mode=feature_extraction")
    # Inferred tasks are checked when training starts, before a model is built.
    for overrides, match in [
        (("data.label_column=score", "model.head=logreg", "transfer.mode=feature_extraction"), "but the data is regression"),
        (("data.label_column=score", "train.metric_for_best=f1_micro"), "'f1_micro' is not a regression metric"),
        (("data.label_columns=[neg, pos]", "train.thresholds=[0.5, 0.5, 0.5]"), "3 values but there are 2 labels"),
        (("data.label_column=score", "train.thresholds=0.5"), "applies to multi-label data"),
    ]:
        cfg = build_cfg(tmp_path, tiny_bert_dir, task_csv, *overrides)
        with pytest.raises(ConfigError, match=match):
            train(cfg, progress=False)
        assert not (tmp_path / "run").exists()


# ---- end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi_run(tmp_path_factory, tiny_bert_dir, task_jsonl):
    cfg = build_cfg(tmp_path_factory.mktemp("multi"), tiny_bert_dir, task_jsonl, "data.label_column=labels", "train.epochs=3")
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_bert_dir, task_csv):
    cfg = build_cfg(
        tmp_path_factory.mktemp("regression"), tiny_bert_dir, task_csv, "data.label_column=score", "train.epochs=3", "train.loss=huber"
    )
    return cfg, train(cfg, progress=False)


def test_multi_label_run_learns_and_restores_its_thresholds(multi_run, task_jsonl):
    cfg, result = multi_run
    d = result.output_dir
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["task"] == "multi_label" and metrics["metric_for_best"] == "f1_micro"
    best = metrics["epochs"][metrics["best_epoch"] - 1]["validation"]
    assert metrics["test"]["thresholds"] == best["thresholds"]  # tuned on validation, applied to test
    assert result.test["f1_micro"] > 0.75 and result.test["hamming_loss"] < 0.25
    meta = json.loads((d / "nlp_transfer.json").read_text())
    assert meta["task"] == "multi_label" and meta["thresholds"] == best["thresholds"]
    assert json.loads((d / "config.json").read_text())["problem_type"] == "multi_label_classification"

    predictor = load_run(d, device="cpu")
    assert predictor.model.thresholds == best["thresholds"]
    data = load_data(cfg.data)
    test = data.splits["test"]
    preds = predictor.predict(test["text"])
    assert all(isinstance(p, list) and set(p) <= {"neg", "pos"} for p in preds)
    assert preds.probabilities.shape == (len(test), 2) and ((preds.probabilities >= 0) & (preds.probabilities <= 1)).all()
    # Calibrated (Platt per label): the thresholds are mapped with the probabilities, so they still read the decisions.
    assert meta["calibration"]["method"] == "platt" and preds.raw_thresholds == best["thresholds"]
    assert preds.ids.tolist() == (preds.probabilities >= np.array(preds.thresholds)).astype(int).tolist()
    raw = load_run(d, device="cpu", calibrated=False).predict(test["text"])
    assert raw.thresholds == best["thresholds"] and raw.ids.tolist() == preds.ids.tolist()
    assert raw.ids.tolist() == (raw.probabilities >= np.array(best["thresholds"])).astype(int).tolist()
    assert preds.to_records()[0].keys() == {"labels", "probabilities"}
    # The reloaded run scores the test split exactly as training did.
    truth = [[n for n, on in zip(data.labels, v) if on] for v in test["label"]]
    ev = predictor.evaluate(test["text"], truth)
    for k in ("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss"):
        assert ev.metrics[k] == pytest.approx(metrics["test"][k])
    assert ev.metrics["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    assert all(r["wrong_labels"] >= 1 for r in ev.misclassified())
    summary = (d / "summary.md").read_text()
    assert "micro F1 **" in summary and "| threshold |" in summary and "Confusion matrix" not in summary
    n_train = metrics["data"]["sizes"]["train"]
    assert f"| train | {n_train:,} | " in summary  # shares are of examples (a text may carry both labels)
    assert not (d / "confusion_matrix.png").exists()


def test_regression_run_predicts_numbers(regression_run):
    cfg, result = regression_run
    d = result.output_dir
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["metric_for_best"] == "mse"
    t = result.test
    assert t["mse"] < t["target_std"] ** 2 and t["pearson"] > 0.5  # better than predicting the mean
    predictor = load_run(d, device="cpu")
    data = load_data(cfg.data)
    test = data.splits["test"]
    preds = predictor.predict(test["text"])
    assert all(isinstance(v, float) for v in preds) and preds.values.shape == (len(test),)
    assert preds.to_records()[0] == {"value": preds[0]}
    ev = predictor.evaluate(test["text"], [str(v) for v in test["label"]])  # numbers as read from a CSV
    assert ev.metrics["mse"] == pytest.approx(t["mse"], rel=1e-5)
    assert ev.metrics["loss"] == pytest.approx(t["loss"], rel=1e-4)  # the Huber loss, as in training
    errors = [abs(r["error"]) for r in ev.misclassified()]
    assert errors == sorted(errors, reverse=True) and len(errors) == len(test)
    with pytest.raises(DataError, match="must be a number"):
        predictor.evaluate(test["text"][:2], ["1.0", "high"])
    summary = (d / "summary.md").read_text()
    assert "MSE **" in summary and "Pearson" in summary and "Regression target per split" in summary


def test_regression_run_with_the_architectures_own_head_loads_in_plain_transformers(tmp_path, tiny_bert_dir, task_csv):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = build_cfg(tmp_path, tiny_bert_dir, task_csv, "data.label_column=score", "model.pooling=pooler", "train.epochs=1")
    d = train(cfg, progress=False).output_dir
    native = AutoModelForSequenceClassification.from_pretrained(d).eval()
    assert native.config.problem_type == "regression" and native.config.num_labels == 1
    texts = ["good film", "a bad and dull film"]
    tok = AutoTokenizer.from_pretrained(d)
    with torch.no_grad():
        theirs = native(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0].numpy()
    ours = load_run(d, device="cpu", precision="no").predict(texts).values
    assert np.allclose(theirs, ours, atol=1e-5)


@pytest.mark.parametrize("task", ["multi_label", "regression"])
@pytest.mark.parametrize("mode", ["feature_extraction", "partial"])
def test_cached_paths_train_each_task(tmp_path, tiny_bert_dir, task_csv, task, mode):
    """The feature cache (float label vectors / floats beside cached features) and the frozen-prefix cache."""
    label = "data.label_columns=[neg, pos]" if task == "multi_label" else "data.label_column=score"
    extra = ("transfer.unfreeze_top=1",) if mode == "partial" else ("train.lr=1e-2",)
    cfg = build_cfg(tmp_path, tiny_bert_dir, task_csv, label, f"transfer.mode={mode}", "train.epochs=2", *extra)
    result = train(cfg, progress=False)
    cache = result.timing["cache"]
    assert ("features" in cache) == (mode == "feature_extraction")
    key = "f1_micro" if task == "multi_label" else "mse"
    assert math.isfinite(result.test[key]) and math.isfinite(result.test["loss"])
    reloaded = load_run(result.output_dir, device="cpu").predict(["good film", "bad film"])
    assert len(reloaded) == 2


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_decoder_recipe_trains_each_task(tmp_path, tiny_llama_dir, task_csv, task):  # noqa: F811
    label = "data.label_columns=[neg, pos]" if task == "multi_label" else "data.label_column=score"
    cfg = build_cfg(tmp_path, tiny_llama_dir, task_csv, label, "model.pooling=auto", "train.epochs=2")
    result = train(cfg, progress=False)
    preds = load_run(result.output_dir, device="cpu").predict(["good film"])
    assert isinstance(preds[0], list if task == "multi_label" else float)


# ---- command line ------------------------------------------------------------------------------------
def test_predict_and_evaluate_clis_on_a_multi_label_run(tmp_path, capsys, multi_run):
    import csv

    from nlp_transfer.cli import evaluate_main, predict_main, run_cli

    d = multi_run[1].output_dir
    rows = task_rows(30, seed=5)
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(json.dumps({"text": r["text"], "labels": r["labels"]}) for r in rows) + "\n")
    out = tmp_path / "pred.csv"
    assert run_cli(predict_main, [str(d), str(f), "-o", str(out), "--no-progress"]) == 0
    got = list(csv.DictReader(out.open()))
    python = load_run(d, device="cpu").predict([r["text"] for r in rows])
    assert [g["labels"] for g in got] == ["|".join(p) for p in python]
    assert set(got[0]) == {"text", "labels", "prob_neg", "prob_pos"}
    capsys.readouterr()
    assert run_cli(evaluate_main, [str(d), str(f), "--label-column", "labels", "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    report = capsys.readouterr().out
    assert "micro F1 **" in report and "Hamming loss" in report and "Confusion matrix" not in report
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["num_examples"] == 30 and not (tmp_path / "ev" / "confusion_matrix.png").exists()
    assert "wrong_labels" in (tmp_path / "ev" / "misclassified.csv").read_text().splitlines()[0]


def test_evaluate_cli_on_a_regression_run_reproduces_its_test_metrics(capsys, regression_run):
    from nlp_transfer.cli import evaluate_main, run_cli

    _, result = regression_run
    assert run_cli(evaluate_main, [str(result.output_dir), "--no-progress"]) == 0
    report = capsys.readouterr().out
    assert "Largest errors" in report
    mse = float(report.split("MSE **")[1].split("**")[0])
    assert mse == pytest.approx(result.test["mse"], abs=1e-4)


def test_evaluate_cli_reads_the_label_columns_a_run_was_trained_on(tmp_path, capsys, tiny_bert_dir, task_csv):
    from nlp_transfer.cli import evaluate_main, run_cli

    cfg = build_cfg(tmp_path, tiny_bert_dir, task_csv, "data.label_columns=[neg, pos]", "train.epochs=1", "train.thresholds=0.4")
    result = train(cfg, progress=False)
    assert json.loads((result.output_dir / "nlp_transfer.json").read_text())["thresholds"] == [0.4, 0.4]  # fixed: not tuned
    assert run_cli(evaluate_main, [str(result.output_dir), str(task_csv), "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["num_examples"] == 300 and saved["thresholds"] == [0.4, 0.4]


def test_train_cli_bad_task_input_is_one_error_line(setup):  # noqa: F811
    proc = run_train("--config", str(setup.recipe), "train.thresholds=1.5")
    assert_user_error(proc, setup, "train.thresholds=1.5 must be in [0, 1]")
    proc = run_train("--config", str(setup.recipe), "data.task=regression")
    assert_user_error(proc, setup, "regression target 'label' must be a number", "got 'neg' at row 0")


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_sliding_windows_aggregate_per_document_for_each_task(tmp_path, tiny_bert_dir, task_csv, task):
    label = "data.label_columns=[neg, pos]" if task == "multi_label" else "data.label_column=score"
    cfg = build_cfg(
        tmp_path, tiny_bert_dir, task_csv, label, "model.chunking=true", "model.max_length=8", "model.chunk_stride=2", "train.epochs=1"
    )
    result = train(cfg, progress=False)
    t = result.test
    assert t["num_windows"] > t["num_examples"] == 60  # documents are counted once, windows aggregated
    preds = load_run(result.output_dir, device="cpu").predict(["good great fine film with a lovely cast and music"])
    assert isinstance(preds[0], list if task == "multi_label" else float)


def test_class_weights_and_weighted_sampler_are_single_label_only(tmp_path, tiny_bert_dir, task_csv):
    for extra in ("train.class_weights=balanced", "train.sampler=weighted"):
        cfg = build_cfg(tmp_path, tiny_bert_dir, task_csv, "data.label_columns=[neg, pos]", extra)
        with pytest.raises(ConfigError, match="balance single-label classes, but the data is multi_label"):
            train(cfg, progress=False)


def test_evaluate_cli_label_column_flag_overrides_a_zero_one_columns_run_even_abbreviated(tmp_path, capsys, tiny_bert_dir, task_csv):
    from nlp_transfer.cli import evaluate_main, run_cli

    cfg = build_cfg(tmp_path / "run", tiny_bert_dir, task_csv, "data.label_columns=[neg, pos]", "train.epochs=1")
    d = train(cfg, progress=False).output_dir
    f = tmp_path / "in.jsonl"  # a list column, none of the run's 0/1 columns
    f.write_text("\n".join(json.dumps({"text": r["text"], "labels": r["labels"]}) for r in task_rows(20, seed=7)) + "\n")
    for flag in ("--label-column", "--label-col"):  # argparse accepts the abbreviation: so must the override
        capsys.readouterr()
        assert run_cli(evaluate_main, [str(d), str(f), flag, "labels", "--no-progress"]) == 0, flag
        assert "micro F1 **" in capsys.readouterr().out
    assert run_cli(evaluate_main, [str(d), str(f), "--no-progress"]) != 0  # without it: the run's columns, missing here


# ---- predictions: slicing and fancy indexing keep the per-row fields ---------------------------
def _all_predictions():
    from nlp_transfer.tasks import MultiLabelPredictions, Predictions, RegressionPredictions

    logits = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    return [
        Predictions(logits, ["a", "b", "c"], {"method": "temperature", "temperature": 2.0}),
        MultiLabelPredictions(logits, ["a", "b", "c"], [0.4, 0.5, 0.6]),
        RegressionPredictions(logits[:, :1], ["y"]),
    ]


@pytest.mark.parametrize("index", [slice(1, 4), slice(None, None, -2), [4, 0, 0], np.array([5, -1, 2]), np.array([1, 0, 1, 0, 0, 1], bool)])
def test_predictions_slices_and_index_arrays_keep_every_row_field(index):
    for full in _all_predictions():
        rows = np.arange(len(full))[index]
        part = full[index]
        assert type(part) is type(full) and list(part) == [full[int(i)] for i in rows]
        for name in full.row_fields:
            np.testing.assert_array_equal(getattr(part, name), getattr(full, name)[rows])
        assert part.classes == full.classes
        assert part.to_records() == [full.to_records()[i] for i in rows]
        if hasattr(full, "scores"):
            np.testing.assert_array_equal(part.scores, full.scores[rows])
        if hasattr(full, "thresholds"):
            assert part.thresholds == full.thresholds


def test_predictions_integer_indexing_is_a_lists():
    single, multi, regression = _all_predictions()
    assert single[-1] == list(single)[-1] and single[np.int64(2)] == list(single)[2]
    assert multi[0] == list(multi)[0] and isinstance(regression[1], float)
    assert len(single[[]]) == 0 and single[[]].probabilities.shape == (0, 3)
    with pytest.raises(IndexError):
        single[6]
    with pytest.raises(TypeError):
        single["a"]
