"""nlp_transfer.data.reader: one reader, one set of typing rules, one label normaliser.

Self-contained: tmp_path files, no fixtures, no network.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nlp_transfer.data import reader

DataError = reader.DataError
NoRowsError = reader.NoRowsError


def one_line(excinfo) -> str:
    """The error's message, which must be a single line (entry points print it as one)."""
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# ---- the same rows in every format -------------------------------------------------------
ROWS = [
    {"text": "NA", "code": "001", "stars": 1.0, "label": 1, "flag": True, "tags": ["a", "b"]},
    {"text": 'a "quoted", comma', "code": "042", "stars": 2.5, "label": 0, "flag": False, "tags": []},
    {"text": "naïve café ✓", "code": "7", "stars": 5.0, "label": 1, "flag": True, "tags": ["c"]},
    {"text": "null", "code": None, "stars": None, "label": 0, "flag": False, "tags": None},
]
FLAT = [{k: v for k, v in r.items() if k != "tags"} for r in ROWS]
TEXT = ["text", "code"]


def expected(with_tags: bool) -> pd.DataFrame:
    rows = ROWS if with_tags else FLAT
    df = pd.DataFrame({k: pd.Series([r[k] for r in rows], dtype=object) for k in rows[0]})
    df["stars"] = df["stars"].astype(float)
    df["label"] = df["label"].astype(np.int64)
    df["flag"] = df["flag"].astype(bool)
    return df


def write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    pd.DataFrame(rows).to_csv(path, sep=sep, index=False)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def compressed(path: Path, suffix: str) -> Path:
    """``path`` compressed next to itself as ``path + suffix``."""
    pack = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    out = path.with_name(path.name + suffix)
    out.write_bytes(pack(path.read_bytes()))
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda d: write_csv(d / "x.csv", FLAT),
        lambda d: write_csv(d / "x.tsv", FLAT, sep="\t"),
        lambda d: compressed(write_csv(d / "x.csv", FLAT), ".bz2"),
        lambda d: write_json(d / "x.json", FLAT),
        lambda d: write_jsonl(d / "x.jsonl", FLAT),
        lambda d: write_parquet(d / "x.parquet", FLAT),
    ],
    ids=["csv", "tsv", "csv.bz2", "json", "jsonl", "parquet"],
)
def test_same_rows_read_to_equal_frames_in_every_format(tmp_path, make):
    df = reader.read_table(str(make(tmp_path)), text_columns=TEXT)
    pd.testing.assert_frame_equal(df, expected(with_tags=False))
    assert df.loc[3, "code"] is None and np.isnan(df.loc[3, "stars"])  # only empty cells are missing


@pytest.mark.parametrize(
    "make",
    [
        lambda d: write_json(d / "x.json", ROWS),
        lambda d: write_jsonl(d / "x.jsonl", ROWS),
        lambda d: compressed(write_jsonl(d / "x.jsonl", ROWS), ".gz"),
        lambda d: write_parquet(d / "x.parquet", ROWS),
        lambda d: compressed(write_parquet(d / "x.parquet", ROWS), ".xz"),
    ],
    ids=["json", "jsonl", "jsonl.gz", "parquet", "parquet.xz"],
)
def test_list_columns_stay_python_lists(tmp_path, make):
    df = reader.read_table(str(make(tmp_path)), text_columns=TEXT)
    pd.testing.assert_frame_equal(df, expected(with_tags=True))
    assert type(df.loc[0, "tags"]) is list  # not a numpy array (Parquet) or a string


# ---- typing rules ------------------------------------------------------------------------
def test_text_column_of_numbers_stays_as_written_in_csv(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("text,id,n\n001,001,001\n42,7,2\n1.50,,3\n", encoding="utf-8")
    df = reader.read_table(str(src), text_columns=["text", "id", "not_there"])
    assert df["text"].tolist() == ["001", "42", "1.50"]
    assert df["id"].tolist() == ["001", "7", None]
    assert df["n"].tolist() == [1, 2, 3] and df["n"].dtype == np.int64  # other columns keep pandas' types


def test_text_column_typed_late_in_a_long_csv_is_still_exact(tmp_path):
    # The dtype probe reads the first rows: a text column that looks numeric there must still be re-read exactly.
    src = tmp_path / "x.csv"
    src.write_text("text,label\n" + "".join(f"{i:04d},1\n" for i in range(3000)), encoding="utf-8")
    df = reader.read_table(str(src), text_columns=["text"])
    assert df["text"].iloc[0] == "0000" and df["text"].iloc[-1] == "2999" and len(df) == 3000


def test_text_column_of_numbers_in_json_and_parquet(tmp_path):
    rows = [{"text": 42, "f": 1.5}, {"text": None, "f": None}, {"text": "x", "f": 2.0}]
    want = {"text": ["42", None, "x"], "f": ["1.5", None, "2.0"]}
    assert reader.read_table(str(write_jsonl(tmp_path / "x.jsonl", rows)), text_columns=["text", "f"]).to_dict("list") == want
    ints = [{"text": 42, "f": 1.5}, {"text": None, "f": None}, {"text": 7, "f": 2.0}]  # an int64 column with a null
    df = reader.read_table(str(write_parquet(tmp_path / "x.parquet", ints)), text_columns=["text", "f"])
    assert df.to_dict("list") == {"text": ["42", None, "7"], "f": ["1.5", None, "2.0"]}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_na_like_texts_are_kept_and_only_empty_cells_are_missing(tmp_path, fmt):
    texts = ["NA", "null", "None", "n/a", "NaN", "#N/A"]
    if fmt == "csv":
        src = tmp_path / "x.csv"
        src.write_text("text,label\n" + "".join(f"{t},{t}\n" for t in texts) + ",\n", encoding="utf-8")
    else:
        src = write_jsonl(tmp_path / "x.jsonl", [{"text": t, "label": t} for t in texts] + [{"text": None, "label": None}])
    df = reader.read_table(str(src), text_columns=["text"])
    assert df["text"].tolist() == [*texts, None]
    assert df["label"].tolist() == [*texts, None]  # not only text columns: no default NA strings anywhere


def test_a_200000_character_field_reads(tmp_path):
    long = "x" * 200_000
    for name, sep in (("x.csv", ","), ("x.tsv", "\t")):
        src = tmp_path / name
        src.write_text(f"text{sep}label\n{long}{sep}1\nshort{sep}0\n", encoding="utf-8")
        df = reader.read_table(str(src), text_columns=["text"])
        assert df["text"].str.len().tolist() == [200_000, 5]


def test_utf8_bom_is_dropped(tmp_path):
    csv_src = tmp_path / "x.csv"
    csv_src.write_bytes(b"\xef\xbb\xbftext,label\nhi,1\n")
    jsonl_src = tmp_path / "x.jsonl"
    jsonl_src.write_bytes(b'\xef\xbb\xbf{"text": "hi", "label": 1}\n')
    for src in (csv_src, jsonl_src):
        df = reader.read_table(str(src), text_columns=["text"])
        assert df.columns.tolist() == ["text", "label"] and df["text"].tolist() == ["hi"]


def test_plain_lines_skip_blank_lines_and_keep_the_text(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("first\n\n  second  \r\nthird\u2028same line\n   \n", encoding="utf-8")
    df = reader.read_table(str(src))
    assert df.columns.tolist() == ["text"]
    assert df["text"].tolist() == ["first", "  second  ", "third\u2028same line"]


def test_standard_input_is_read_as_bytes_by_the_same_rules(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"text,n\n001,1\n")))
    assert reader.read_table("-", "csv", text_columns=["text"]).to_dict("list") == {"text": ["001"], "n": [1]}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\n")))
    with pytest.raises(DataError) as e:
        reader.read_table("-")
    assert one_line(e).startswith("standard input is not UTF-8 text: byte 0xe9 at line 1 (offset 3)")


def test_a_json_file_of_json_lines_is_read_as_jsonl(tmp_path):
    src = tmp_path / "x.json"
    src.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n', encoding="utf-8")
    assert reader.read_table(str(src)).to_dict("list") == {"text": ["a", "b"], "label": [1, 2]}


@pytest.mark.parametrize(
    "path, given, want",
    [
        ("x.csv", None, "csv"),
        ("x.TSV", None, "tsv"),
        ("x.json", None, "json"),
        ("x.jsonl", None, "jsonl"),
        ("x.ndjson", None, "jsonl"),
        ("x.parquet", None, "parquet"),
        ("x.txt", None, "lines"),
        ("x.csv.bz2", None, "csv"),
        ("x.jsonl.gz", None, "jsonl"),
        ("x.tsv.xz", None, "tsv"),
        ("x.dat", None, "lines"),
        ("-", None, "lines"),
        (None, None, "lines"),
        ("x.txt", "csv", "csv"),
        ("my.data.csv", None, "csv"),
    ],
)
def test_infer_format(path, given, want):
    assert reader.infer_format(path, given) == want


# ---- labels ------------------------------------------------------------------------------
def test_star_ratings_give_the_same_keys_read_as_floats_strings_or_ints(tmp_path):
    src = tmp_path / "stars.csv"
    src.write_text("text,stars\n" + "".join(f"t{i},{i}.0\n" for i in range(1, 6)), encoding="utf-8")
    floats = reader.read_table(str(src), text_columns=["text"])["stars"].tolist()
    assert floats == [1.0, 2.0, 3.0, 4.0, 5.0]  # pandas types them as floats
    want = ["1", "2", "3", "4", "5"]
    assert [reader.label_key(v) for v in floats] == want
    assert [reader.label_key(f"{i}.0") for i in range(1, 6)] == want  # the same file read as strings
    assert [reader.label_key(i) for i in range(1, 6)] == want
    assert [reader.label_key(np.float64(i)) for i in range(1, 6)] == want
    as_strings = reader.read_table(str(src), text_columns=["text", "stars"])["stars"].tolist()
    assert as_strings == ["1.0", "2.0", "3.0", "4.0", "5.0"] and [reader.label_key(v) for v in as_strings] == want


@pytest.mark.parametrize(
    "value, key",
    [
        (1, "1"),
        (1.0, "1"),
        (np.int64(3), "3"),
        (np.float32(4.0), "4"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (np.float32(0.1), "0.1"),
        (True, "True"),
        (np.bool_(False), "False"),
        (" pos ", "pos"),
        ("1.0", "1"),
        ("5.00", "5"),
        ("-2.0", "-2"),
        (" 3.0 ", "3"),
        ("007", "007"),
        ("1e3", "1e3"),
        ("NA", "NA"),
        ("fresh", "fresh"),
        ("2.5", "2.5"),
        ("1.05", "1.05"),
        ("1", "1"),
    ],
)
def test_label_key(value, key):
    assert reader.label_key(value) == key


# ---- errors ------------------------------------------------------------------------------
def test_latin1_bytes_give_a_one_line_utf8_error_with_the_line(tmp_path):
    data = "text,label\ngood,1\ncafé bien,0\n".encode("latin-1")
    src = tmp_path / "x.csv"
    src.write_bytes(data)
    with pytest.raises(DataError) as e:
        reader.read_table(str(src), text_columns=["text"])
    msg = one_line(e)
    offset = data.index(b"\xe9")
    assert f"'{src}' is not UTF-8 text: byte 0xe9 at line 3 (offset {offset})" in msg
    assert "iconv -f latin1 -t utf-8" in msg and "x-utf8.csv" in msg


def test_a_utf8_error_is_found_in_every_text_format(tmp_path):
    for name in ("x.jsonl", "x.json", "x.txt", "x.tsv"):
        src = tmp_path / name
        src.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
        with pytest.raises(DataError, match=r"is not UTF-8 text: byte 0xe9 at line 2"):
            reader.read_table(str(src))


def test_a_malformed_jsonl_line_names_its_line(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text('{"text": "a"}\n\n{"text": "b" "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        reader.read_table(str(src))
    assert one_line(e).startswith(f"could not read '{src}' as jsonl: line 3 is not valid JSON (Expecting ',' delimiter: column 14)")
    src.write_text('{"text": "a"}\n["b"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is a list, not an object"):
        reader.read_table(str(src))


def test_json_must_be_a_list_of_objects(tmp_path):
    src = tmp_path / "x.json"
    src.write_text('{"data": [{"text": "a"}]}', encoding="utf-8")
    with pytest.raises(DataError) as e:
        reader.read_table(str(src))
    assert "holds an object, not a list of objects" in one_line(e)
    src.write_text('[{"text": "a"}, "b"]', encoding="utf-8")
    with pytest.raises(DataError, match="item 1 is a string, not an object"):
        reader.read_table(str(src))
    src.write_text('[{"text": "a"},]', encoding="utf-8")
    with pytest.raises(DataError, match="could not read .* as json: Expecting value: line 1 column 16"):
        reader.read_table(str(src))


@pytest.mark.parametrize("content", ["text,label\na,1\nb,2,3\nc,4\n", "text,label\na,1,3\nb,2\n"])
def test_a_csv_row_with_too_many_fields_is_an_error_not_lost_data(tmp_path, content):
    src = tmp_path / "x.csv"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        reader.read_table(str(src))
    msg = one_line(e)
    assert msg.startswith(f"could not read '{src}' as csv: ") and "quote fields" in msg


def test_a_damaged_parquet_or_archive_is_a_one_line_error(tmp_path):
    src = write_parquet(tmp_path / "x.parquet", FLAT)
    src.write_bytes(src.read_bytes()[:-20])
    with pytest.raises(DataError) as e:
        reader.read_table(str(src))
    assert one_line(e).startswith(f"could not read '{src}' as parquet: ")
    bad = tmp_path / "x.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError) as e:
        reader.read_table(str(bad))
    assert one_line(e).startswith(f"could not decompress '{bad}' as gz: ")


def test_a_missing_file_names_the_setting(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError) as e:
        reader.read_table(missing)
    assert one_line(e) == f"input file '{missing}' does not exist"
    with pytest.raises(DataError) as e:
        reader.read_table(missing, where="data.train_file")
    assert one_line(e) == f"data file '{missing}' does not exist; check data.train_file"


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("empty.csv", "", "it is empty"),
        ("blank.csv", "\n\n", "it is empty"),
        ("header.csv", "text,label\n", "only a header"),
        ("header.tsv", "text\tlabel\n", "only a header"),
        ("empty.json", "[]", "an empty list"),
        ("empty.jsonl", "\n\n", "only blank lines"),
        ("blank.txt", " \n\n", "only blank lines"),
        ("bom.csv", "\ufeff", "it is empty"),
    ],
)
def test_no_rows(tmp_path, name, content, why):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    with pytest.raises(NoRowsError) as e:
        reader.read_table(str(src), where="data.validation_file")
    assert one_line(e) == f"'{src}' has no rows ({why}); check data.validation_file"


def test_an_empty_parquet_table_has_no_rows(tmp_path):
    src = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), src)
    with pytest.raises(NoRowsError, match="has no rows"):
        reader.read_table(str(src))


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown input format 'xml'; use one of csv, tsv"):
        reader.read_table(str(write_csv(tmp_path / "x.csv", FLAT)), "xml")


# ---- read_inputs -------------------------------------------------------------------------
def test_read_inputs_types(tmp_path):
    src = write_csv(
        tmp_path / "x.csv",
        [{"id": "007", "text": "1999", "pair": "ok", "stars": 4.0}, {"id": "", "text": "fine", "pair": "0", "stars": 2.5}],
    )
    got = reader.read_inputs(str(src), text_pair_column="pair", label_column="stars", id_column="id")
    assert got.texts == ["1999", "fine"] and got.text_pairs == ["ok", "0"]  # texts and pairs as written
    assert got.ids == ["007", None]  # ids as written: "007" is not 7
    assert got.labels == [4.0, 2.5] and all(type(v) is float for v in got.labels)  # Python values, typed by pandas
    assert [reader.label_key(v) for v in got.labels] == ["4", "2.5"]


def test_read_inputs_missing_column_suggests_the_near_one(tmp_path):
    src = write_csv(tmp_path / "x.csv", FLAT)
    with pytest.raises(DataError) as e:
        reader.read_inputs(str(src), text_column="txt")
    msg = one_line(e)
    assert f"'{src}' has no text column 'txt' (--text-column); did you mean 'text'?" in msg
    assert msg.endswith("the columns are: text, code, stars, label, flag")
    with pytest.raises(DataError, match=r"has no label column 'lable' \(--label-column\); did you mean 'label'\?"):
        reader.read_inputs(str(src), label_column="lable")


def test_read_inputs_empty_texts(tmp_path):
    src = tmp_path / "holes.csv"
    src.write_text("text,label\ngood film,pos\n,neg\n   ,neg\ndull,neg\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        reader.read_inputs(str(src))
    assert one_line(e).startswith(f"'{src}' has 2 empty or missing texts in column 'text' (first at row 1); ")


def test_read_inputs_missing_labels(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("text,label\na,1\nb,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has 1 rows without a label in column 'label' \(first at row 1\)"):
        reader.read_inputs(str(src), label_column="label")


def test_read_inputs_zero_one_label_columns_give_label_lists(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("text,toxic,funny,sad\na,1,0,1\nb,0,0,0\nc,0.0,1.0,0\n", encoding="utf-8")
    got = reader.read_inputs(str(src), label_columns=["toxic", "funny", "sad"])
    assert got.labels == [["toxic", "sad"], [], ["funny"]]
    jsonl = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "toxic": True, "funny": "1"}, {"text": "b", "toxic": 0, "funny": "0"}])
    assert reader.read_inputs(str(jsonl), label_columns=["toxic", "funny"]).labels == [["toxic", "funny"], []]


@pytest.mark.parametrize("cell, shown", [("2", "2"), ("yes", "'yes'"), ("", "an empty cell")])
def test_read_inputs_label_columns_must_be_zero_one(tmp_path, cell, shown):
    src = tmp_path / "x.csv"
    src.write_text(f"text,toxic\na,1\nb,{cell}\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        reader.read_inputs(str(src), label_columns=["toxic"])
    assert "label column 'toxic' must hold 0 or 1 in every row, got " in one_line(e) and f"got {shown} at row 1" in str(e.value)


@pytest.mark.parametrize("name, content", [("empty.csv", ""), ("header.csv", "text,label\n"), ("blank.txt", "\n  \n")])
def test_read_inputs_with_no_rows_says_no_texts(tmp_path, name, content):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        reader.read_inputs(str(src))
    assert one_line(e).startswith(f"'{src}' has no texts to read (")


def test_read_inputs_plain_lines_and_stdin(tmp_path, monkeypatch):
    src = tmp_path / "x.txt"
    src.write_text("one\n\ntwo\n", encoding="utf-8")
    got = reader.read_inputs(str(src))
    assert got.texts == ["one", "two"] and got.labels is None and got.source == str(src)
    with pytest.raises(DataError, match="read as plain lines"):
        reader.read_inputs(str(src), label_column="label")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(DataError, match="^standard input has no texts to read"):
        reader.read_inputs("-")


def test_duplicate_parquet_column_names_are_an_error(tmp_path):
    src = tmp_path / "x.parquet"
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), src)
    with pytest.raises(DataError) as e:
        reader.read_table(str(src))
    assert "more than one column named 'text'" in one_line(e)
