"""Predictions out: one row per text, written as CSV or JSON Lines in input order.

Used by ``scripts/predict.py``; reading the input is :mod:`nlp_transfer.data.reader`'s job.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from nlp_transfer.errors import DataError

OUTPUT_FORMATS = ("csv", "jsonl")


# ---- predictions out ---------------------------------------------------------------------
def prediction_rows(inputs, predictions) -> list[dict]:
    """One dict per text: [id], text, [text_pair], then the task's fields: label, score, probabilities
    (class -> p); labels (a list) and probabilities (multi-label); value (regression)."""
    rows = []
    for i, rec in enumerate(predictions.to_records()):
        row = {}
        if inputs.ids is not None:
            row[inputs.id_column or "id"] = inputs.ids[i]
        row[inputs.text_column] = inputs.texts[i]
        if inputs.text_pairs is not None:
            row[inputs.text_pair_column or "text_pair"] = inputs.text_pairs[i]
        rows.append({**row, **rec})
    return rows


def write_predictions(rows: list[dict], classes: list[str], output: str | None, fmt: str | None = None) -> str:
    """Write to ``output`` (``None`` or ``-``: standard output) as CSV or JSONL; returns the format.

    CSV has one ``prob_<class>`` column per class; JSONL one ``probabilities`` object. Numbers
    are written in full (``repr``), so they read back exactly. Multi-label ``labels`` are a JSON
    list in JSONL and joined with ``|`` in CSV; other lists (``--explain``'s attributions) are JSON in CSV.
    """
    fmt = output_format(output, fmt)
    text = render_rows(rows, classes, fmt)
    if output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
    return fmt


def output_format(output: str | None, fmt: str | None = None) -> str:
    """``fmt``, else from ``output``'s extension (.jsonl, .json, .ndjson: jsonl), else csv."""
    fmt = fmt or ("jsonl" if output and Path(output).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv")
    if fmt not in OUTPUT_FORMATS:
        raise DataError(f"unknown output format '{fmt}'; use csv or jsonl")
    return fmt


def render_rows(rows: list[dict], classes: list[str], fmt: str, header: bool = True) -> str:
    """``rows`` as CSV (with its header line unless ``header`` is false) or JSON Lines text (see :func:`write_predictions`)."""
    buf = io.StringIO()
    if fmt == "jsonl":
        for r in rows:
            buf.write(json.dumps(r, ensure_ascii=False) + "\n")
        return buf.getvalue()
    flat = [
        {
            **{
                k: ("|".join(v) if k == "labels" else json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v)
                for k, v in r.items()
                if k != "probabilities"
            },
            **{f"prob_{c}": p for c, p in r.get("probabilities", {}).items()},
        }
        for r in rows
    ]
    fields = list(flat[0]) if flat else ["label", "score", *[f"prob_{c}" for c in classes]]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(flat)
    return buf.getvalue()
