"""Texts in, predictions out: CSV, TSV, JSON Lines, JSON, plain lines, standard input.

Used by ``scripts/predict.py`` and ``scripts/evaluate.py``. Every problem with an input
file (missing, empty, no such column, empty texts) is a one-line :class:`DataError`.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

INPUT_FORMATS = ("csv", "tsv", "jsonl", "json", "lines")
OUTPUT_FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


@dataclass
class Inputs:
    """Texts (and optional pairs, labels, ids) read from one source, in file order."""

    texts: list[str]
    source: str
    text_column: str = "text"
    text_pairs: list[str] | None = None
    text_pair_column: str | None = None
    labels: list | None = None
    ids: list | None = None
    id_column: str | None = None


def infer_format(path: str | None, given: str | None = None) -> str:
    """``given``, else from the extension; standard input and other files are plain lines."""
    if given:
        return given
    if path in (None, "-"):
        return "lines"
    return _EXTENSIONS.get(Path(path).suffix.lower(), "lines")


def _name(path: str) -> str:
    return "standard input" if path == "-" else f"'{path}'"


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file '{path}' does not exist" + ("" if not p.exists() else " as a file"))
    return p.read_text(encoding="utf-8", errors="replace")


def read_records(path: str, fmt: str) -> list[dict]:
    """Rows of ``path`` (or ``-``) as dicts; plain lines become ``{"text": line}`` (blank lines skipped)."""
    raw = _read_text(path)
    if fmt == "lines":
        return [{"text": line} for line in raw.splitlines() if line.strip()]
    try:
        if fmt in ("csv", "tsv"):
            # Every cell stays a string: a text "NA" or "001" is kept as written.
            return list(csv.DictReader(io.StringIO(raw), delimiter="\t" if fmt == "tsv" else ","))
        if fmt == "jsonl":
            return [_record(json.loads(line), i) for i, line in enumerate(raw.splitlines()) if line.strip()]
        if fmt == "json":
            data = json.loads(raw) if raw.strip() else []
            if not isinstance(data, list):
                raise ValueError("expected a list of objects, one per text")
            return [_record(r, i) for i, r in enumerate(data)]
    except (ValueError, csv.Error) as e:
        raise DataError(f"could not read {_name(path)} as {fmt}: {str(e).splitlines()[0]}") from None
    raise DataError(f"unknown input format '{fmt}'; use one of {', '.join(INPUT_FORMATS)}")


def _record(obj, i: int) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"row {i} is not an object with named fields")
    return obj


def _column(rows: list[dict], column: str, what: str, path: str, flag: str) -> list:
    columns = list(dict.fromkeys(k for r in rows for k in r if k is not None))
    if column not in columns:
        near = difflib.get_close_matches(column, columns, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise DataError(f"{_name(path)} has no {what} column '{column}' ({flag}){hint}; the columns are: {', '.join(columns)}")
    return [r.get(column) for r in rows]


def _check_texts(texts: list, path: str, column: str, flag: str) -> list[str]:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(
            f"{_name(path)} has {len(bad)} empty or missing texts in column '{column}' (first at row {bad[0]}); "
            f"remove those rows or choose the right column with {flag}"
        )
    return texts


def read_inputs(
    path: str = "-",
    fmt: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_columns: list[str] | None = None,
) -> Inputs:
    """Texts from a file or ``-`` (standard input); with ``label_column``, their labels too, or with
    ``label_columns`` (0/1 columns of a multi-label run) the list of labels whose column is 1."""
    fmt = infer_format(path, fmt)
    rows = read_records(path, fmt)
    if not rows:
        raise DataError(f"{_name(path)} has no texts to read" + (" (only blank lines)" if fmt == "lines" else ""))
    if fmt == "lines":
        if label_column or text_pair_column or id_column or label_columns:
            raise DataError(f"{_name(path)} is read as plain lines (one text each), which have no other columns; use a CSV or JSONL file")
        return Inputs([r["text"] for r in rows], path)
    texts = _check_texts(_column(rows, text_column, "text", path, "--text-column"), path, text_column, "--text-column")
    out = Inputs(texts, path, text_column)
    if text_pair_column:
        pairs = _column(rows, text_pair_column, "text-pair", path, "--text-pair-column")
        out.text_pairs = _check_texts(pairs, path, text_pair_column, "--text-pair-column")
        out.text_pair_column = text_pair_column
    if label_columns:
        from .tasks import label_names, zero_one

        def number(v):
            try:
                return float(v) if isinstance(v, str) else v
            except ValueError:
                return v

        cols = [zero_one([number(v) for v in _column(rows, c, "label", path, "the run's data.label_columns")], c, _name(path))
                for c in label_columns]
        out.labels = label_names(zip(*cols), label_columns)
    elif label_column:
        labels = _column(rows, label_column, "label", path, "--label-column")
        missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, str) and not v.strip())]
        if missing:
            raise DataError(f"{_name(path)} has {len(missing)} rows without a label in column '{label_column}' (first at row {missing[0]})")
        out.labels = labels
    if id_column:
        out.ids = _column(rows, id_column, "id", path, "--id-column")
        out.id_column = id_column
    return out


# ---- predictions out ---------------------------------------------------------------------
def prediction_rows(inputs: Inputs, predictions) -> list[dict]:
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
    list in JSONL and joined with ``|`` in CSV.
    """
    fmt = fmt or ("jsonl" if output and Path(output).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv")
    if fmt not in OUTPUT_FORMATS:
        raise DataError(f"unknown output format '{fmt}'; use csv or jsonl")
    buf = io.StringIO()
    if fmt == "jsonl":
        for r in rows:
            buf.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        flat = [{**{k: ("|".join(v) if k == "labels" else v) for k, v in r.items() if k != "probabilities"},
                 **{f"prob_{c}": p for c, p in r.get("probabilities", {}).items()}} for r in rows]
        fields = list(flat[0]) if flat else ["label", "score", *[f"prob_{c}" for c in classes]]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(flat)
    if output in (None, "-"):
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(buf.getvalue(), encoding="utf-8")
    return fmt
