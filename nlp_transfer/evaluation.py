"""Evaluate a saved run on labelled texts: metrics, confusion matrix, misclassified examples.

    ev = load_run("runs/rt-minilm-full").evaluate(texts, labels)
    ev.metrics["f1_macro"], ev.misclassified()[:5]
    ev.save("runs/rt-minilm-full/eval-test")   # metrics.json, report.md, misclassified.csv, confusion_matrix.png

The metrics are the task's (:func:`nlp_transfer.tasks.score`: argmax and
:func:`nlp_transfer.compute_metrics` for single-label; the saved thresholds for multi-label;
MSE, MAE and correlations for regression) plus the mean training-objective ``loss``, so they
read like a run's own ``metrics.json``. "Misclassified" means a wrong class, a wrong label set
(multi-label) or, for regression, every example, largest absolute error first.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError
from .metrics import confusion_table, headline, per_class_table


def label_ids(labels: Sequence, classes: Sequence[str]) -> np.ndarray:
    """Label names (or integers naming them) -> the model's class ids; unknown labels are an error."""
    from .data import _label_key, unknown_labels

    index = {c: i for i, c in enumerate(classes)}
    keys = [_label_key(v) for v in labels]
    shown = unknown_labels(keys, index)
    if shown:
        raise DataError(
            f"the data has labels the model does not know: {shown}; the model's labels are: {', '.join(classes)} "
            "(fix the label column or evaluate a run trained on these labels)"
        )
    return np.array([index[k] for k in keys], dtype=np.int64)


@dataclass
class Evaluation:
    """Predictions on labelled texts and what they score."""

    metrics: dict
    predictions: "object"  # nlp_transfer.predict.Predictions
    y_true: np.ndarray
    texts: list[str]
    text_pairs: list[str] | None = None

    task: str = "single_label"

    @property
    def classes(self) -> list[str]:
        return self.predictions.classes

    def misclassified(self) -> list[dict]:
        """Wrong predictions, worst first: row, text, true, predicted and

        * single-label: ``score`` and ``true_probability``, most confident first;
        * multi-label (label sets joined with ``|``): ``wrong_labels``, most wrong decisions first;
        * regression (every example): ``error`` (predicted - true), largest absolute error first.
        """
        p = self.predictions
        if self.task == "multi_label":
            from .tasks import label_names

            n_wrong = (p.ids != self.y_true.astype(np.int64)).sum(1)
            wrong = np.flatnonzero(n_wrong)
            wrong = wrong[np.argsort(-n_wrong[wrong], kind="stable")]
            true = label_names(self.y_true, self.classes)
            cells = lambda i: {"true": "|".join(true[i]),  # noqa: E731
                               "predicted": "|".join(p[i]), "wrong_labels": int(n_wrong[i])}
        elif self.task == "regression":
            err = p.values - self.y_true
            wrong = np.argsort(-np.abs(err), kind="stable")
            cells = lambda i: {"true": float(self.y_true[i]), "predicted": p[i], "error": float(err[i])}  # noqa: E731
        else:
            wrong = np.flatnonzero(p.ids != self.y_true)
            wrong = wrong[np.argsort(-p.scores[wrong], kind="stable")]
            cells = lambda i: {"true": self.classes[self.y_true[i]], "predicted": p[i], "score": float(p.scores[i]),  # noqa: E731
                               "true_probability": float(p.probabilities[i, self.y_true[i]])}
        rows = []
        for i in wrong:
            row = {"row": int(i), "text": self.texts[i]}
            if self.text_pairs is not None:
                row["text_pair"] = self.text_pairs[i]
            row.update(cells(i))
            rows.append(row)
        return rows

    def _columns(self) -> list[str]:
        extra = {"multi_label": ["wrong_labels"], "regression": ["error"]}.get(self.task, ["score", "true_probability"])
        return ["row", "text", *(["text_pair"] if self.text_pairs is not None else []), "true", "predicted", *extra]

    def report(self, title: str = "Evaluation", source: str = "", show: int = 20) -> str:
        """Markdown: headline metrics, per-class table, confusion matrix, the most confident mistakes."""
        m = self.metrics
        wrong = self.misclassified()
        if self.task == "single_label":
            head = (f"{m['num_examples']:,} examples: accuracy **{m['accuracy']:.4f}**, macro F1 **{m['f1_macro']:.4f}**, "
                    f"macro precision {m['precision_macro']:.4f}, macro recall {m['recall_macro']:.4f}, "
                    f"weighted F1 {m['f1_weighted']:.4f}, micro F1 {m['f1_micro']:.4f}, loss {m['loss']:.4f}")
        else:
            head = f"{headline(m)}; loss {m['loss']:.4f}"
        lines = [f"# {title}", "", *([f"Data: {source}", ""] if source else []), head, ""]
        if "per_class" in m:
            lines += [per_class_table(m), ""]
        if "confusion_matrix" in m:
            lines += ["Confusion matrix (rows: true, columns: predicted):", "", confusion_table(m), ""]
        if self.task == "regression":
            lines += [f"## Largest errors (the {min(show, len(wrong))} of {m['num_examples']:,} furthest off)", ""]
            lines += ["| row | text | true | predicted | error |", "|---:|---|---:|---:|---:|"]
            lines += [f"| {r['row']} | {_cell(r['text'])} | {r['true']:.4f} | {r['predicted']:.4f} | {r['error']:+.4f} |" for r in wrong[:show]]
            return "\n".join(lines) + "\n"
        worst = "most confident" if self.task == "single_label" else "most wrong labels"
        lines += [f"## Misclassified: {len(wrong):,} of {m['num_examples']:,}" + (f" (the {min(show, len(wrong))} {worst} below)" if wrong else ""), ""]
        if wrong and self.task == "multi_label":
            lines += ["| row | text | true | predicted | wrong labels |", "|---:|---|---|---|---:|"]
            lines += [f"| {r['row']} | {_cell(r['text'])} | {r['true']} | {r['predicted']} | {r['wrong_labels']} |" for r in wrong[:show]]
        elif wrong:
            lines += ["| row | text | true | predicted | score |", "|---:|---|---|---|---:|"]
            for r in wrong[:show]:
                lines.append(f"| {r['row']} | {_cell(r['text'])} | {r['true']} | {r['predicted']} | {r['score']:.3f} |")
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, title: str = "Evaluation", source: str = "") -> dict[str, Path]:
        """Write ``metrics.json``, ``report.md``, ``misclassified.csv`` and (single-label) ``confusion_matrix.png``."""
        from .plots import plot_confusion_matrix

        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        files = {"metrics": d / "metrics.json", "report": d / "report.md", "misclassified": d / "misclassified.csv"}
        files["metrics"].write_text(json.dumps(self.metrics, indent=2))
        wrong = self.misclassified()
        with open(files["misclassified"], "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self._columns(), lineterminator="\n")
            w.writeheader()
            w.writerows(wrong)
        png = None
        if "confusion_matrix" in self.metrics:
            png = plot_confusion_matrix(self.metrics["confusion_matrix"], self.classes, d / "confusion_matrix.png", title)
        report = self.report(title, source)
        if png is not None:
            files["confusion_matrix"] = png
            report += f"\n![confusion matrix]({png.name})\n"
        files["report"].write_text(report)
        return files


def _cell(text: str, limit: int = 160) -> str:
    """Text fit for one Markdown table cell."""
    t = " ".join(text.split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def evaluate_texts(
    predictor, texts: Sequence[str], labels: Sequence, text_pairs: Sequence[str] | None = None,
    batch_size: int | None = None, progress: bool = False,
) -> Evaluation:
    """Predict ``texts`` with ``predictor`` and score against ``labels``: names or integers
    (single-label); lists of names, or strings joined by the run's ``data.label_separator`` or
    JSON lists (multi-label); numbers (regression)."""
    import torch

    from .tasks import encode_targets, score

    texts = list(texts)
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise DataError("no labelled texts to evaluate")
    model = predictor.model
    y = encode_targets(model.task, labels, predictor.labels, model.meta.get("label_separator"), "the evaluation data")
    preds = predictor.predict(texts, text_pairs=text_pairs, batch_size=batch_size, progress=progress)
    metrics = score(model.task, preds.logits, y, predictor.labels, model.thresholds)
    with torch.no_grad():
        metrics["loss"] = float(model.loss_fn(torch.from_numpy(preds.logits).to(predictor.device), torch.from_numpy(y).to(predictor.device)))
    return Evaluation(metrics, preds, y, texts, list(text_pairs) if text_pairs is not None else None, model.task)
