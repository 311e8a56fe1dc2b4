"""The run report (summary.md) and its PNG plots; plots are skipped, with a note, without matplotlib."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from nlp_transfer import RecipeConfig, plots, train
from nlp_transfer.reporting.report import write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir, toy_csv):
    from conftest import build_cfg

    cfg = build_cfg(tmp_path_factory.mktemp("report"), tiny_bert_dir, toy_csv, "train.epochs=3")
    return cfg, train(cfg, progress=False).output_dir


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} missing"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000, f"{path.name}: {len(data)} bytes"


def test_report_has_every_section_and_its_plots(run):
    cfg, d = run
    text = (d / "summary.md").read_text()
    metrics = json.loads((d / "metrics.json").read_text())
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == ["Test", "Calibration", "Epochs", "Data", "Loading this run", "Recipe"]
    assert_png(d / "reliability_diagram.png")
    assert "![reliability diagram](reliability_diagram.png)" in text
    # The recipe, as resolved, reads back to the run's config.
    recipe = re.search(r"```yaml\n(.*?)```", text, flags=re.S).group(1)
    assert RecipeConfig.from_dict(yaml.safe_load(recipe)) == cfg
    # Data sizes and label balance, per split.
    for split, counts in metrics["data"]["label_counts"].items():
        n = sum(counts.values())
        cells = " | ".join(f"{counts[c]:,} ({counts[c] / n:.1%})" for c in ("neg", "pos"))
        assert f"| {split} | {n:,} | {cells} |" in text
    # Every epoch, the test metrics and the per-class table.
    assert len(re.findall(r"^\| \d+ \|", text, flags=re.M)) == cfg.train.epochs
    t = metrics["test"]
    assert f"accuracy **{t['accuracy']:.4f}**, macro F1 **{t['f1_macro']:.4f}**" in text
    assert f"| neg | {t['per_class']['neg']['precision']:.4f} |" in text
    assert "![confusion matrix on test](confusion_matrix.png)" in text and "![learning curves](learning_curves.png)" in text
    assert_png(d / "confusion_matrix.png")
    assert_png(d / "learning_curves.png")


def test_without_matplotlib_plots_are_skipped_with_a_note(run, tmp_path, monkeypatch, caplog):
    cfg, d = run
    copy = tmp_path / "run"
    shutil.copytree(d, copy)
    for png in copy.glob("*.png"):
        png.unlink()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes `import matplotlib.figure` fail
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setattr(plots, "_noted", False)
    with caplog.at_level(logging.WARNING, logger="nlp_transfer"):
        write_summary(copy, cfg, json.loads((copy / "metrics.json").read_text()))
    assert "matplotlib (not installed)" in caplog.text and "nlp-transfer[plots]" in caplog.text
    assert not list(copy.glob("*.png"))
    text = (copy / "summary.md").read_text()
    assert "![" not in text and "## Epochs" in text and "| true \\ predicted | neg | pos |" in text


def test_comparison_chart(tmp_path):
    rows = [
        {"method": "TF-IDF + logistic regression", "pretrained": None, "accuracy": 0.77, "f1_macro": 0.76, "seconds": 2.0},
        {"method": "random init", "pretrained": False, "accuracy": 0.61, "f1_macro": 0.60, "seconds": 300.0},
        {"method": "full fine-tuning", "pretrained": True, "accuracy": 0.84, "f1_macro": 0.83, "seconds": 280.0},
    ]
    assert_png(plots.plot_comparison(rows, tmp_path / "c.png", "title"))
