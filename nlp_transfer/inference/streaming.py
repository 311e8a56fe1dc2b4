"""Batch prediction that scales: input streamed in chunks, output written as it goes, resumable, sharded.

    predict_stream(load_run(run), iter_inputs("big.csv", chunk_rows=10_000), "predictions.csv")

* **Memory** holds one chunk of input and its predictions, whatever the number of rows.
* **Output** goes to ``OUT.partial`` as each chunk is predicted (a whole chunk in one write, then
  a flush) and becomes ``OUT`` by a rename when the last chunk is in: ``OUT`` is complete or absent.
* **Resume** (``resume=True``): the complete rows already in ``OUT.partial`` are counted (a record
  cut by a kill is truncated away, and so are the rows of an unfinished chunk) and that many input
  rows are skipped, so no row is lost or written twice and the file is the one an uninterrupted run
  writes. (With another chunk size the rows are still right, but batches differ, so the last digits
  of the scores may.)
* **Several processes** (``accelerate launch`` / ``torchrun``, one or many machines sharing the
  output's filesystem): chunk ``i`` goes to process ``i % world``, which appends it to its own
  ``OUT.part-RRR-of-WWW-chunkN``; when all are done, the main process merges the parts round-robin,
  chunk by chunk, into ``OUT`` (written beside it, then renamed). Every process reads (and checks)
  every chunk, so a bad row fails all processes alike instead of leaving the others waiting.
  Resuming needs the same number of processes and chunk size (the part names carry them).

Each chunk is predicted as ``Predictor.predict`` would predict it alone, so 2 processes give
exactly the bytes 1 process gives with the same chunk size.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from nlp_transfer.data.reader import Inputs
from nlp_transfer.errors import DataError
from nlp_transfer.inference.textio import prediction_rows, render_rows
from nlp_transfer.utils.progress import progress as progress_bar


@dataclass
class StreamResult:
    output: str  # the output file, or "standard output"
    predicted: int  # rows this process predicted in this run
    skipped: int  # rows already in the output when resuming (this process's share)
    rows: int | None  # rows in the finished output (the main process; None elsewhere)
    seconds: float


def part_path(output: str | Path, rank: int = 0, world: int = 1, chunk_rows: int = 0) -> Path:
    """Where a process writes before the output is complete: ``OUT.partial`` alone, else its own part."""
    out = Path(output)
    if world == 1:
        return out.with_name(out.name + ".partial")
    return out.with_name(f"{out.name}.part-{rank:03d}-of-{world:03d}-chunk{chunk_rows}")


def _records(path: Path) -> Iterator[tuple[bytes, int]]:
    """(raw record, byte offset after it) for each complete record of a CSV or JSONL file written by
    :func:`render_rows`: a record ends at a newline outside quotes (JSON Lines never has a newline
    inside a record; CSV quotes fields with one, and ``""`` escapes keep the quote count even)."""
    with open(path, "rb") as f:
        pending, quotes, end = [], 0, 0
        for line in f:
            pending.append(line)
            quotes += line.count(b'"')
            if line.endswith(b"\n") and quotes % 2 == 0:
                record = b"".join(pending)
                end += len(record)
                yield record, end
                pending, quotes = [], 0


def complete_rows(path: Path, fmt: str, chunk_rows: int | None = None) -> int:
    """Rows (CSV: after the header) wholly written to ``path``, truncating a partial last record away; with
    ``chunk_rows``, down to a whole number of chunks, so a resumed run predicts the rest in the batches an
    uninterrupted run would have used (the same bytes, not just the same rows)."""
    if not path.is_file():
        return 0
    ends = [0]
    for _, end in _records(path):
        ends.append(end)
    header = 1 if fmt == "csv" and len(ends) > 1 else 0
    rows = len(ends) - 1 - header
    if chunk_rows:
        rows -= rows % chunk_rows
    keep = ends[rows + header]
    if keep != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(keep)
    return rows


def _slice(inputs: Inputs, start: int) -> Inputs:
    cut = lambda v: v[start:] if v is not None else None  # noqa: E731
    return Inputs(
        inputs.texts[start:],
        inputs.source,
        inputs.text_column,
        cut(inputs.text_pairs),
        inputs.text_pair_column,
        cut(inputs.labels),
        cut(inputs.ids),
        inputs.id_column,
    )


def predict_stream(
    predictor,
    chunks: Iterable[Inputs],
    output: str | None,
    fmt: str = "csv",
    *,
    resume: bool = False,
    rank: int = 0,
    world: int = 1,
    chunk_rows: int = 10_000,
    batch_size: int | None = None,
    progress: bool = False,
    barrier: Callable[[], None] | None = None,
    explain: bool = False,
) -> StreamResult:
    """Predict ``chunks`` (from :func:`nlp_transfer.data.stream.iter_inputs` with ``chunk_rows``) into
    ``output`` (``None`` or ``-``: standard output) as CSV or JSONL, in input order (see the module).
    ``rank``/``world``/``barrier`` describe the processes of a distributed launch; ``explain`` adds each
    text's word attributions (:meth:`Predictor.explain`) to its row."""
    t0 = time.perf_counter()
    to_stdout = output in (None, "-")
    if to_stdout and (resume or world > 1):
        raise DataError("--resume and several processes need an output file (-o FILE): standard output cannot be resumed or merged")
    part = None if to_stdout else part_path(output, rank, world, chunk_rows)
    if part is not None and resume:
        _check_parts(Path(output), world, chunk_rows)
    if resume and part is not None and Path(output).is_file() and not _parts(Path(output)):
        return StreamResult(str(output), 0, 0, None, time.perf_counter() - t0)  # finished before: nothing to do
    skip = complete_rows(part, fmt, chunk_rows) if resume and part is not None else 0
    if part is not None and not resume:
        part.unlink(missing_ok=True)
    skipped, predicted = skip, 0
    sink = sys.stdout.buffer if to_stdout else _open(part)
    header = fmt == "csv" and (to_stdout or sink.tell() == 0)
    try:
        bar = progress_bar(enumerate(chunks), "predicting", enabled=progress and rank == 0, unit="chunks")
        for i, inputs in bar:
            if i % world != rank:
                continue
            if skip >= len(inputs.texts):
                skip -= len(inputs.texts)
                continue
            inputs, skip = (_slice(inputs, skip), 0) if skip else (inputs, 0)
            preds = predictor.predict(inputs.texts, text_pairs=inputs.text_pairs, batch_size=batch_size)
            rows = prediction_rows(inputs, preds)
            if explain:
                rows = [{**row, **ex.to_record()} for row, ex in zip(rows, predictor.explain(inputs.texts))]
            sink.write(render_rows(rows, predictor.labels, fmt, header=header).encode("utf-8"))
            sink.flush()  # a whole chunk per write: a kill leaves at most one chunk's tail to truncate
            header = False
            predicted += len(inputs.texts)
    finally:
        if not to_stdout:
            sink.close()
    if to_stdout:
        return StreamResult("standard output", predicted, 0, predicted, time.perf_counter() - t0)
    if world == 1:
        os.replace(part, output)
        return StreamResult(str(output), predicted, skipped, predicted + skipped, time.perf_counter() - t0)
    (barrier or (lambda: None))()
    rows = merge_parts(Path(output), world, chunk_rows, fmt) if rank == 0 else None
    (barrier or (lambda: None))()
    return StreamResult(str(output), predicted, skipped, rows, time.perf_counter() - t0)


def _open(part: Path):
    part.parent.mkdir(parents=True, exist_ok=True)
    return open(part, "ab")


def _parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.part-*")) + ([p] if (p := part_path(out)).is_file() else [])


def _check_parts(out: Path, world: int, chunk_rows: int) -> None:
    """Resuming with another number of processes or chunk size would shuffle rows: refuse, naming the leftovers."""
    expected = {part_path(out, r, world, chunk_rows).name for r in range(world)}
    other = [p for p in _parts(out) if p.name not in expected and (world > 1 or p.name != part_path(out).name)]
    if other:
        raise DataError(
            f"'{out}' has partial output from a run with another number of processes or chunk size "
            f"({other[0].name}); resume with the same ones, or drop --resume to start again"
        )


def merge_parts(out: Path, world: int, chunk_rows: int, fmt: str) -> int:
    """The parts of ``world`` processes merged chunk by chunk (chunk i is in part i % world) into ``out``,
    atomically; the parts are removed. Returns the number of rows."""
    parts = [part_path(out, r, world, chunk_rows) for r in range(world)]
    readers = [(record for record, _ in _records(p)) if p.is_file() else iter(()) for p in parts]
    tmp = out.with_name(f".{out.name}.merging")
    rows = 0
    with open(tmp, "wb") as f:
        if fmt == "csv":
            headers = [next(r, b"") for r in readers]
            f.write(headers[0])
        i = 0
        while True:
            chunk = list(islice(readers[i % world], chunk_rows))
            f.writelines(chunk)
            rows += len(chunk)
            if len(chunk) < chunk_rows:  # only the last chunk is short
                break
            i += 1
    os.replace(tmp, out)
    for p in _parts(out):
        p.unlink(missing_ok=True)
    return rows
