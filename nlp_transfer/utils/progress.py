"""Progress for long work: a bar in a terminal, a log line at intervals elsewhere.

tqdm redraws its bar in place on a terminal; written to a file (CI, cluster logs, a pipe)
every redraw becomes a line, so a 100k-text prediction wrote hundreds. :func:`progress`
keeps the bar where standard error is a terminal and otherwise logs ``desc: i/n (x%)`` at
most every ``interval`` seconds (and once at the end).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger("nlp_transfer")
LOG_INTERVAL = float(os.environ.get("NLP_TRANSFER_PROGRESS_INTERVAL", "30"))


def interactive() -> bool:
    """Whether standard error is a terminal (a bar redraws in place there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _IntervalLog:
    """The part of tqdm's interface the package uses, logging at intervals instead of drawing."""

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None, interval: float, unit: str):
        self.iterable, self.desc, self.interval, self.unit = iterable, desc, interval, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in kw.items())

    def _line(self, i: int, t0: float) -> None:
        of = f"/{self.total:,} ({100 * i / self.total:.0f}%)" if self.total else ""
        elapsed = max(time.perf_counter() - t0, 1e-9)
        rate = f"{i / elapsed:,.1f}/s" if i / elapsed >= 1 else f"{elapsed / max(i, 1):,.1f}s each"  # slow steps: seconds each
        logger.info(f"{self.desc}: {i:,}{of} {self.unit}, {rate}" + (f", {self.postfix}" if self.postfix else ""))

    def __iter__(self) -> Iterator[T]:
        t0 = last = time.perf_counter()
        i = 0
        for i, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if now - last >= self.interval:
                self._line(i, t0)
                last = now
        if i and time.perf_counter() - t0 >= self.interval:  # short work logs nothing
            self._line(i, t0)

    def __len__(self) -> int:
        return len(self.iterable)


def progress(
    iterable: Iterable[T],
    desc: str = "",
    total: int | None = None,
    enabled: bool = True,
    unit: str = "batches",
    interval: float | None = None,
):
    """``iterable``, reporting progress: tqdm's bar on a terminal, interval log lines elsewhere, nothing when
    not ``enabled``. The result has ``set_postfix(**values)``."""
    if not enabled:
        return _IntervalLog(iterable, desc, total, float("inf"), unit)
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False)
    return _IntervalLog(iterable, desc, total, LOG_INTERVAL if interval is None else interval, unit)
