"""Inputs in chunks: the reader's formats read a slice at a time, so memory does not grow with the file.

    for chunk in iter_inputs("reviews.csv", chunk_rows=10_000):   # Inputs of up to 10,000 rows each, in file order
        ...

CSV and TSV go through pandas' ``chunksize``, JSON Lines and plain lines are read line by line,
Parquet by pyarrow's ``iter_batches``; each chunk is typed and checked by the same rules as
:func:`nlp_transfer.data.reader.read_inputs` (it is the same code, run per chunk), so a streamed
file gives the texts, pairs and ids the whole-file reader gives. A JSON array (``.json``) cannot
be read in pieces: it is read whole, then cut into chunks. Standard input (``-``) streams too,
except Parquet, which needs the whole file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from nlp_transfer.data import reader as R
from nlp_transfer.errors import DataError

_OPEN = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def iter_inputs(
    path: str = "-",
    fmt: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    id_column: str | None = None,
    chunk_rows: int = 10_000,
) -> Iterator[R.Inputs]:
    """:class:`~nlp_transfer.data.reader.Inputs` of up to ``chunk_rows`` rows each, in file order (see the module)."""
    fmt = R.infer_format(path, fmt)
    if fmt not in R.INPUT_FORMATS:
        raise DataError(f"unknown input format '{fmt}'; use one of {', '.join(R.INPUT_FORMATS)}")
    if fmt == "lines" and (text_pair_column or id_column):
        raise DataError(f"{R._name(path)} is read as plain lines (one text each), which have no other columns; use a CSV or JSONL file")
    as_text = [c for c in (text_column, text_pair_column, id_column) if c]
    rows = 0
    for df in _exact(_frames(path, fmt, as_text, chunk_rows), chunk_rows):
        if len(df):
            rows += len(df)
            yield R.inputs_from_frame(
                R._normalise(df.reset_index(drop=True), as_text), path, fmt, text_column, text_pair_column, id_column=id_column
            )
    if rows == 0:
        raise DataError(f"{R._name(path)} has no texts to read (it is empty{' or only a header' if fmt in ('csv', 'tsv') else ''})")


def _exact(frames: Iterator[pd.DataFrame], n: int) -> Iterator[pd.DataFrame]:
    """Chunks of exactly ``n`` rows but the last (Parquet batches stop at row-group ends): the processes of a
    distributed run and a resumed run cut the input at the same rows."""
    buffer: list[pd.DataFrame] = []
    held = 0
    for df in frames:
        buffer.append(df)
        held += len(df)
        while held >= n:
            whole = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
            yield whole.iloc[:n]
            rest = whole.iloc[n:]
            buffer, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0]


def _binary(path: str):
    """The input as a binary stream (decompressed on the fly for .gz, .bz2, .xz)."""
    if path == "-":
        return getattr(sys.stdin, "buffer", None) or io.BytesIO(sys.stdin.read().encode("utf-8"))
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file '{path}' {'is not a file' if p.exists() else 'does not exist'}")
    return _OPEN.get(R._suffixes(path)[1], open)(p, "rb")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending) of strict UTF-8 text; splits on \\n only."""
    stream = io.TextIOWrapper(_binary(path), encoding="utf-8-sig", errors="strict", newline="\n")
    n = 0
    try:
        for n, line in enumerate(stream, 1):
            yield n, line.removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise DataError(f"{R._name(path)} is not UTF-8 text (at line {n + 1}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"could not read {R._name(path)}: {R._first_line(e)}; check that it is complete") from None


def _frames(path: str, fmt: str, as_text: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    if fmt == "lines":
        yield from _batched(
            (line for _, line in _lines(path) if line.strip()), chunk_rows, lambda b: pd.DataFrame({"text": pd.Series(b, dtype=object)})
        )
    elif fmt == "jsonl":
        yield from _batched(_json_lines(path), chunk_rows, lambda b: R._from_records(b, as_text))
    elif fmt in ("csv", "tsv"):
        yield from _csv_frames(path, "\t" if fmt == "tsv" else ",", as_text, chunk_rows)
    elif fmt == "parquet":
        yield from _parquet_frames(path, as_text, chunk_rows)
    else:  # a JSON array: whole, then in slices
        df = R.read_table(path, fmt, text_columns=as_text)
        for start in range(0, len(df), chunk_rows):
            yield df.iloc[start : start + chunk_rows]


def _batched(items, n: int, make) -> Iterator[pd.DataFrame]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield make(batch)
            batch = []
    if batch:
        yield make(batch)


def _json_lines(path: str) -> Iterator[dict]:
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"could not read {R._name(path)} as jsonl: line {n} is not valid JSON ({e.msg}: column {e.colno}); fix or remove that line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"could not read {R._name(path)} as jsonl: line {n} is {R._json_kind(row)}, not an object; "
                "write one {...} object per line"
            )
        yield row


def _csv_frames(path: str, sep: str, as_text: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    fmt = "tsv" if sep == "\t" else "csv"
    source = _binary(path)
    try:
        reader = pd.read_csv(
            source, sep=sep, chunksize=chunk_rows, dtype={c: str for c in as_text} or None, **{**R._CSV_OPTIONS, "low_memory": True}
        )
        yield from reader
    except pd.errors.EmptyDataError:
        return
    except UnicodeDecodeError:
        raise DataError(f"{R._name(path)} is not UTF-8 text; save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(
            f"could not read {R._name(path)} as {fmt}: {R._first_line(e)}; every row needs one field per header "
            f"column (quote fields that contain {sep!r} or a line break)"
        ) from None


def _parquet_frames(path: str, as_text: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pa.BufferReader(R._read_bytes("-", None)) if path == "-" else str(_existing(path))
        parquet = pq.ParquetFile(source)
        names = parquet.schema_arrow.names
        if len(set(names)) < len(names):
            R._parquet_table(parquet, path)  # raises its one-line error
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield R.parquet_frame(pa.Table.from_batches([batch]), path, as_text)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"could not read {R._name(path)} as parquet: {R._first_line(e)}; check that it is a complete Parquet file"
        ) from None


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file '{path}' {'is not a file' if p.exists() else 'does not exist'}")
    return p
