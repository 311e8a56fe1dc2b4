"""Evaluate a saved run on labelled texts: metrics, confusion matrix, misclassified examples.

    ev = load_run("runs/rt-minilm-full").evaluate(texts, labels)
    ev.metrics["f1_macro"], ev.misclassified()[:5]
    ev.save("runs/rt-minilm-full/eval-test")   # metrics.json, report.md, misclassified.csv, confusion_matrix.png

The metrics are the task's (:meth:`nlp_transfer.tasks.Task.score`) plus the mean
training-objective ``loss``, so they read like a run's own ``metrics.json``. "Misclassified"
means a wrong class, a wrong label set (multi-label) or, for regression, every example,
largest absolute error first.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nlp_transfer.errors import DataError
from nlp_transfer.reporting.markdown import cell, confusion_table, per_class_table
from nlp_transfer.reporting.plots import plot_confusion_matrix
from nlp_transfer.tasks import Task, get_task
from nlp_transfer.tasks.labels import UNKNOWN_TO_MODEL


@dataclass
class Evaluation:
    """Predictions on labelled texts and what they score."""

    metrics: dict
    predictions: object  # the task's predictions container (nlp_transfer.tasks)
    y_true: np.ndarray
    texts: list[str]
    text_pairs: list[str] | None = None
    task: str | Task = "single_label"

    def __post_init__(self) -> None:
        self.task = get_task(self.task)

    @property
    def classes(self) -> list[str]:
        return self.predictions.classes

    def misclassified(self) -> list[dict]:
        """Wrong predictions, worst first: row, text, true, predicted and the task's columns:

        * single-label: ``score`` and ``true_probability``, most confident first;
        * multi-label (label sets joined with ``|``): ``wrong_labels``, most wrong decisions first;
        * regression (every example): ``error`` (predicted - true), largest absolute error first.
        """
        order, cells = self.task.mistakes(self.predictions, self.y_true, self.classes)
        rows = []
        for i in order:
            row = {"row": int(i), "text": self.texts[i]}
            if self.text_pairs is not None:
                row["text_pair"] = self.text_pairs[i]
            row.update(cells(i))
            rows.append(row)
        return rows

    def _columns(self) -> list[str]:
        return ["row", "text", *(["text_pair"] if self.text_pairs is not None else []), "true", "predicted", *self.task.mistake_columns]

    def report(self, title: str = "Evaluation", source: str = "", show: int = 20) -> str:
        """Markdown: headline metrics, per-class table, confusion matrix, the worst mistakes."""
        m = self.metrics
        wrong = self.misclassified()
        lines = [f"# {title}", "", *([f"Data: {source}", ""] if source else []), f"{self.task.headline(m)}; loss {m['loss']:.4f}", ""]
        if "per_class" in m:
            lines += [per_class_table(m), ""]
        if "confusion_matrix" in m:
            lines += ["Confusion matrix (rows: true, columns: predicted):", "", confusion_table(m), ""]
        lines += [self.task.mistakes_heading(len(wrong), m["num_examples"], min(show, len(wrong))), ""]
        if wrong:
            lines += self.task.mistake_table(wrong[:show], cell)
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, title: str = "Evaluation", source: str = "") -> dict[str, Path]:
        """Write ``metrics.json``, ``report.md``, ``misclassified.csv`` and (single-label) ``confusion_matrix.png``."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        files = {"metrics": d / "metrics.json", "report": d / "report.md", "misclassified": d / "misclassified.csv"}
        files["metrics"].write_text(json.dumps(self.metrics, indent=2))
        with open(files["misclassified"], "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self._columns(), lineterminator="\n")
            w.writeheader()
            w.writerows(self.misclassified())
        png = None
        if "confusion_matrix" in self.metrics:
            png = plot_confusion_matrix(self.metrics["confusion_matrix"], self.classes, d / "confusion_matrix.png", title)
        report = self.report(title, source)
        if png is not None:
            files["confusion_matrix"] = png
            report += f"\n![confusion matrix]({png.name})\n"
        files["report"].write_text(report)
        return files


def evaluate_texts(
    predictor,
    texts: Sequence[str],
    labels: Sequence,
    text_pairs: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Predict ``texts`` with ``predictor`` and score against ``labels``: names or integers
    (single-label); lists of names, or strings joined by the run's ``data.label_separator`` or
    JSON lists (multi-label); numbers (regression)."""
    texts = list(texts)
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise DataError("no labelled texts to evaluate")
    model = predictor.model
    separator = model.meta.get("label_separator")
    y = model.task.targets(labels, predictor.labels, "the data", separator, UNKNOWN_TO_MODEL)
    preds = predictor.predict(texts, text_pairs=text_pairs, batch_size=batch_size, progress=progress)
    metrics = model.task.score(preds.logits, y, predictor.labels, model.thresholds)
    with torch.no_grad():
        metrics["loss"] = float(
            model.loss_fn(torch.from_numpy(preds.logits).to(predictor.device), torch.from_numpy(y).to(predictor.device))
        )
    return Evaluation(metrics, preds, y, texts, list(text_pairs) if text_pairs is not None else None, model.task)
