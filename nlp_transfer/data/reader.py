"""One reader for every tabular input: CSV, TSV, JSON, JSON Lines, Parquet, plain lines, standard input.

Training, prediction and evaluation used to read files two ways (``datasets`` with pandas typing,
``csv.DictReader`` with every cell a string), so the same file could give different labels and texts
depending on the command. :func:`read_table` is the one way: every format becomes a
:class:`pandas.DataFrame` under the same typing rules, and :func:`label_key` is the one label
normaliser, so star ratings read as ``4.0`` by one path and ``"4.0"`` by another give the same key.

Typing rules (the same for every format):

* only empty cells (CSV) or ``null``/absent keys (JSON) are missing: ``None`` in text/object columns,
  ``NaN`` in numeric ones; a text such as ``"NA"`` or ``"null"`` stays that text;
* columns named in ``text_columns`` are strings exactly as written (``"001"`` stays ``"001"``);
* other columns keep pandas' inferred types (numbers, bools; JSON/Parquet lists are Python lists);
* text is strict UTF-8 (a BOM is dropped); anything else is a one-line :class:`DataError`.

Every problem with an input (missing, empty, not UTF-8, malformed, no such column, empty texts)
is a one-line :class:`DataError` that says what is wrong and what to change.
"""

from __future__ import annotations

import bz2
import difflib
import gzip
import io
import json
import lzma
import shlex
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nlp_transfer.errors import DataError
from nlp_transfer.tasks.labels import label_key, label_names, zero_one  # noqa: F401 - label_key: the one normaliser

INPUT_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "lines")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "lines",
}
_DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}
_BOM = b"\xef\xbb\xbf"
# pandas' CSV options: only an empty cell is missing ("NA", "null", "None" stay texts); the whole
# file is typed at once (no per-chunk guesses); the first column is never silently taken as an index.
_CSV_OPTIONS = {"keep_default_na": False, "na_values": [""], "low_memory": False, "index_col": False, "encoding": "utf-8"}
_PROBE_ROWS = 1000


class NoRowsError(DataError):
    """The input holds no rows. A subclass so that callers can word it for their purpose
    (``read_inputs``: "has no texts to read"; training: "the train split would be empty")."""

    def __init__(self, name: str, why: str, where: str | None = None):
        self.name, self.why, self.where = name, why, where
        super().__init__(f"{name} has no rows ({why})" + (f"; check {where}" if where else ""))


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


# ---- formats and bytes -------------------------------------------------------------------
def _suffixes(path: str) -> tuple[str, str | None]:
    """(format extension, compression extension or None): ``x.csv.bz2`` -> ``(".csv", ".bz2")``."""
    p = Path(path)
    last = p.suffix.lower()
    if last in _DECOMPRESS:
        return Path(p.stem).suffix.lower(), last
    return last, None


def infer_format(path: str | None, given: str | None = None) -> str:
    """``given``, else from the extension (a compression suffix is looked through); standard
    input and files with other extensions are plain lines, one text each."""
    if given:
        return given
    if path in (None, "-"):
        return "lines"
    return _EXTENSIONS.get(_suffixes(path)[0], "lines")


def _name(path: str) -> str:
    return "standard input" if path == "-" else f"'{path}'"


def _stdin_bytes() -> bytes:
    """Standard input as bytes, so that it is decoded by the same strict rules as a file."""
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer.read() if buffer is not None else sys.stdin.read().encode("utf-8")


def _read_bytes(path: str, where: str | None) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz, .bz2 or .xz."""
    if path == "-":
        return _stdin_bytes()
    p = Path(path)
    if not p.is_file():
        what = f"data file '{path}'" if where else f"input file '{path}'"
        state = "is not a file" if p.exists() else "does not exist"
        raise DataError(f"{what} {state}" + (f"; check {where}" if where else ""))
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"could not read '{path}': {e.strerror or e}; check its permissions") from None
    compression = _suffixes(path)[1]
    if compression is None:
        return raw
    try:
        return _DECOMPRESS[compression](raw)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
        raise DataError(
            f"could not decompress '{path}' as {compression[1:]}: {_first_line(e)}; "
            f"check that it is a complete {compression[1:]} file or rename it without '{compression}'"
        ) from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _decode(raw: bytes, path: str) -> str:
    """Strict UTF-8 (a leading BOM dropped); no replacement characters, ever, because a
    silently garbled text would train or score a different sentence than the file holds."""
    skip = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(_not_utf8(raw, skip + e.start, path)) from None


def _not_utf8(raw: bytes, offset: int, path: str) -> str:
    line = raw.count(b"\n", 0, offset) + 1
    where = f"byte 0x{raw[offset]:02x} at line {line} (offset {offset}"
    if path == "-":
        return f"standard input is not UTF-8 text: {where}); send UTF-8 text (e.g. pipe it through iconv -f latin1 -t utf-8)"
    if _suffixes(path)[1]:
        return (
            f"'{path}' is not UTF-8 text: {where} after decompression); decompress it, save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8) and compress it again"
        )
    p = Path(path)
    fixed = shlex.quote(str(p.with_name(f"{p.stem}-utf8{p.suffix}")))
    return f"'{path}' is not UTF-8 text: {where}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 {shlex.quote(path)} > {fixed})"


# ---- one reader per format ---------------------------------------------------------------
def _read_lines(text: str, path: str) -> pd.DataFrame:
    """One text per non-blank line, as written (only the line ending removed). Splits on
    newlines only: a U+2028 or form feed inside a text does not cut it in two."""
    lines = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise NoRowsError(_name(path), "only blank lines" if text else "it is empty")
    return pd.DataFrame({"text": pd.Series(lines, dtype=object)})


def _read_csv(body: bytes, path: str, sep: str, text_columns: Sequence[str]) -> pd.DataFrame:
    """pandas' C parser on the (already checked) UTF-8 bytes: no field-size limit, pandas speed.

    Asking pandas for ``dtype=str`` makes it several times slower, so it is asked only for the
    text columns that the first rows show pandas would type as numbers or bools ("001" -> 1). The
    probe cannot be wrong: a column whose first rows hold a non-number is a string column."""
    probe = _pandas_csv(body, path, sep, nrows=_PROBE_ROWS)
    as_str = {c: str for c in text_columns if c in probe.columns and not _all_strings(probe[c])}
    df = probe if len(probe) < _PROBE_ROWS else _pandas_csv(body, path, sep, dtype=as_str or None)
    if len(df) == 0:
        raise NoRowsError(_name(path), "only a header")
    if df is probe and as_str:
        df = _pandas_csv(body, path, sep, dtype=as_str)
    return df


def _all_strings(s: pd.Series) -> bool:
    """pandas typed the column as text (pandas 3: str dtype; pandas 2: object of str)."""
    return isinstance(s.dtype, pd.StringDtype) or pd.api.types.infer_dtype(s, skipna=True) == "string"


def _pandas_csv(body: bytes, path: str, sep: str, **kwargs) -> pd.DataFrame:
    fmt = "tsv" if sep == "\t" else "csv"
    with warnings.catch_warnings():
        # With index_col=False pandas only warns, and drops data, when a row has more fields than the header.
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(io.BytesIO(body), sep=sep, **_CSV_OPTIONS, **kwargs)
        except pd.errors.EmptyDataError:
            raise NoRowsError(_name(path), "it is empty") from None
        except pd.errors.ParserWarning:
            reason = "the first row has more fields than the header"
        except (pd.errors.ParserError, ValueError) as e:
            reason = _first_line(e)
    raise DataError(
        f"could not read {_name(path)} as {fmt}: {reason}; every row needs one field per header column "
        f"(quote fields that contain {sep!r} or a line break)"
    )


def _read_json(text: str, path: str) -> list[dict]:
    """A list of objects; a .json file of one object per line is read as JSON Lines, as
    ``datasets`` does, so a file that trains also predicts."""
    if not text.strip():
        raise NoRowsError(_name(path), "it is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and _looks_like_jsonl(text):
            return _read_jsonl(text, path)
        raise DataError(f"could not read {_name(path)} as json: {e}; fix the file or save it as JSON Lines (.jsonl)") from None
    if not isinstance(data, list):
        raise DataError(
            f"could not read {_name(path)} as json: it holds {_json_kind(data)}, not a list of objects; "
            "write [{...}, {...}] with one object per row, or one object per line (.jsonl)"
        )
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"could not read {_name(path)} as json: item {i} is {_json_kind(row)}, not an object with named fields")
    if not data:
        raise NoRowsError(_name(path), "an empty list")
    return data


def _looks_like_jsonl(text: str) -> bool:
    first = next((line for line in text.split("\n") if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _json_kind(value) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _read_jsonl(text: str, path: str) -> list[dict]:
    """One object per line (blank lines skipped); errors name the 1-based line."""
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"could not read {_name(path)} as jsonl: line {n} is not valid JSON ({e.msg}: column {e.colno}); fix or remove that line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"could not read {_name(path)} as jsonl: line {n} is {_json_kind(row)}, not an object; write one {{...}} object per line"
            )
        rows.append(row)
    if not rows:
        raise NoRowsError(_name(path), "only blank lines" if text else "it is empty")
    return rows


def _from_records(rows: list[dict], text_columns: Sequence[str]) -> pd.DataFrame:
    """Text cells become strings before pandas sees them: a column of ints with a null would
    otherwise turn into floats and 42 into "42.0"."""
    for column in text_columns:
        for row in rows:
            value = row.get(column)
            if value is not None and not isinstance(value, str):
                row[column] = _as_text(value)
    return pd.DataFrame(rows)


def _as_text(value) -> str:
    """A non-string cell of a text column as text: numbers as written (42 -> "42", 1.5 -> "1.5");
    lists and objects as JSON."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_plain(value), ensure_ascii=False)
    return str(value)


def _plain(value):
    """Arrow/numpy containers as Python lists and dicts (what JSON gives for the same data)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _read_parquet(raw: bytes, path: str, text_columns: Sequence[str]) -> pd.DataFrame:
    """Via pyarrow (what pandas.read_parquet uses), so integer text columns become their digits
    before a null could turn them into floats. pandas' own metadata is ignored, as ``datasets``
    does, so the columns are typed like the other formats' (no Int64 or category dtypes; a saved
    index is an ordinary column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not raw:
        raise NoRowsError(_name(path), "it is empty")
    try:
        return parquet_frame(_parquet_table(pq.ParquetFile(pa.BufferReader(raw)), path), path, text_columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"could not read {_name(path)} as parquet: {_first_line(e)}; check that it is a complete Parquet file") from None


def parquet_frame(table, path: str, text_columns: Sequence[str]) -> pd.DataFrame:
    """A pyarrow table (a whole file or one batch of it) typed by the module's rules."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        for i, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):  # categories -> plain values, as the other formats give
                table = table.set_column(i, field.name, pc.cast(table.column(i), field.type.value_type))
            if field.name in text_columns and pa.types.is_integer(table.schema.field(i).type):
                table = table.set_column(i, field.name, pc.cast(table.column(i), pa.string()))
        nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
        df = table.to_pandas(ignore_metadata=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"could not read {_name(path)} as parquet: {_first_line(e)}; check that it is a complete Parquet file") from None
    for column in nested:
        df[column] = df[column].map(_plain, na_action="ignore")
    for column in text_columns:
        if column in df.columns and not isinstance(df[column].dtype, pd.StringDtype):
            df[column] = _objects(df[column]).map(_as_text, na_action="ignore")
    return df


def _parquet_table(parquet, path: str):
    """The file's table; Parquet allows two columns of one name, which every later step (looked
    up by name) would confuse, so that is an error here."""
    names = parquet.schema_arrow.names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{_name(path)} has more than one column named {', '.join(map(repr, twice))}; rename them")
    return parquet.read()


# ---- the one entry point -----------------------------------------------------------------
def _objects(s: pd.Series) -> pd.Series:
    """An object column whose missing cells are None (pandas' str dtype would give NaN)."""
    out = s.astype(object)
    missing = out.isna().to_numpy()
    if missing.any():
        out[missing] = None
    return out


def _normalise(df: pd.DataFrame, text_columns: Sequence[str]) -> pd.DataFrame:
    """Same dtypes whatever the format: strings and mixed columns as object with None for missing."""
    for column in df.columns:
        s = df[column]
        if column in text_columns or s.dtype == object or isinstance(s.dtype, pd.StringDtype):
            df[column] = _objects(s)
    return df


def _parse(raw: bytes, path: str, fmt: str, text_columns: Sequence[str]) -> pd.DataFrame:
    if fmt == "parquet":
        return _read_parquet(raw, path, text_columns)
    text = _decode(raw, path)
    if fmt == "lines":
        return _read_lines(text, path)
    if fmt in ("csv", "tsv"):
        if not text.strip():
            raise NoRowsError(_name(path), "it is empty")
        del text  # checked; pandas parses the bytes itself
        body = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
        return _read_csv(body, path, "\t" if fmt == "tsv" else ",", text_columns)
    rows = _read_json(text, path) if fmt == "json" else _read_jsonl(text, path)
    return _from_records(rows, text_columns)


def read_table(path: str, fmt: str | None = None, *, text_columns: Sequence[str] = (), where: str | None = None) -> pd.DataFrame:
    """``path`` (``-``: standard input) as a DataFrame with a fresh 0..n-1 index, typed by the
    module's rules whatever the format. ``text_columns`` are kept as written (names the file
    lacks are ignored: the caller reports missing columns in its own terms). ``where`` names the
    setting that chose the file (e.g. ``data.train_file``) for the not-found and no-rows errors."""
    fmt = infer_format(path, fmt)
    if fmt not in INPUT_FORMATS:
        raise DataError(f"unknown input format '{fmt}'; use one of {', '.join(INPUT_FORMATS)}")
    text_columns = tuple(text_columns)
    raw = _read_bytes(path, where)
    try:
        df = _parse(raw, path, fmt, text_columns)
    except NoRowsError as e:
        if where and not e.where:
            raise NoRowsError(e.name, e.why, where) from None
        raise
    if len(df) == 0:
        raise NoRowsError(_name(path), "an empty table", where)
    return _normalise(df, text_columns)


# ---- texts for prediction and evaluation -------------------------------------------------
def _column(df: pd.DataFrame, column: str, what: str, path: str, flag: str) -> list:
    """The column's cells as Python values (None for missing), or a did-you-mean error."""
    columns = [str(c) for c in df.columns]
    if column not in df.columns:
        near = difflib.get_close_matches(column, columns, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise DataError(f"{_name(path)} has no {what} column '{column}' ({flag}){hint}; the columns are: {', '.join(columns)}")
    s = df[column]
    if s.dtype.kind == "f":  # NaN is a missing number
        return [None if np.isnan(v) else v for v in s.tolist()]
    return s.tolist()  # numpy scalars -> Python int, float, bool


def _check_texts(texts: list, path: str, column: str, flag: str) -> list[str]:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(
            f"{_name(path)} has {len(bad)} empty or missing texts in column '{column}' (first at row {bad[0]}); "
            f"remove those rows or choose the right column with {flag}"
        )
    return texts


def _multi_hot_labels(df: pd.DataFrame, path: str, label_columns: Sequence[str]) -> list[list[str]]:
    """Per row, the names of the 0/1 label columns that are 1."""
    flag = "the run's data.label_columns"
    cols = [zero_one(_column(df, c, "label", path, flag), c, _name(path)) for c in label_columns]
    return label_names(zip(*cols), label_columns)


def _single_labels(df: pd.DataFrame, path: str, label_column: str) -> list:
    labels = _column(df, label_column, "label", path, "--label-column")
    missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, str) and not v.strip())]
    if missing:
        raise DataError(f"{_name(path)} has {len(missing)} rows without a label in column '{label_column}' (first at row {missing[0]})")
    return labels


def read_inputs(
    path: str = "-",
    fmt: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_columns: list[str] | None = None,
) -> Inputs:
    """Texts from a file or ``-`` (standard input); with ``label_column``, their labels too (typed
    by :func:`read_table`; compare them through :func:`label_key`), or with ``label_columns`` (0/1
    columns of a multi-label run) the list of labels whose column is 1. Texts, pairs and ids are
    strings as written; a missing id is None."""
    fmt = infer_format(path, fmt)
    as_text = [c for c in (text_column, text_pair_column, id_column) if c]
    try:
        df = read_table(path, fmt, text_columns=as_text)
    except NoRowsError as e:
        raise DataError(f"{e.name} has no texts to read ({e.why})") from None
    return inputs_from_frame(df, path, fmt, text_column, text_pair_column, label_column, id_column, label_columns)


def inputs_from_frame(
    df: pd.DataFrame,
    path: str,
    fmt: str,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    label_columns: list[str] | None = None,
) -> Inputs:
    """:class:`Inputs` from a table :func:`read_table` typed (or one chunk of it, :mod:`nlp_transfer.data.stream`)."""
    if fmt == "lines":
        if label_column or text_pair_column or id_column or label_columns:
            raise DataError(f"{_name(path)} is read as plain lines (one text each), which have no other columns; use a CSV or JSONL file")
        return Inputs(df["text"].tolist(), path)
    texts = _check_texts(_column(df, text_column, "text", path, "--text-column"), path, text_column, "--text-column")
    out = Inputs(texts, path, text_column)
    if text_pair_column:
        pairs = _column(df, text_pair_column, "text-pair", path, "--text-pair-column")
        out.text_pairs = _check_texts(pairs, path, text_pair_column, "--text-pair-column")
        out.text_pair_column = text_pair_column
    if label_columns:
        out.labels = _multi_hot_labels(df, path, label_columns)
    elif label_column:
        out.labels = _single_labels(df, path, label_column)
    if id_column:
        out.ids = _column(df, id_column, "id", path, "--id-column")
        out.id_column = id_column
    return out
