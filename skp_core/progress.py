"""Progress that stays readable in a log: a live bar on a terminal, plain lines elsewhere.

tqdm redraws its bar with carriage returns; written to a file (a CI log, ``2> run.log``, a
systemd journal) a 60-step run becomes mostly bar. :func:`progress` returns a tqdm bar when
the stream is a terminal and otherwise a :class:`LogProgress`, which prints one plain line at
about every tenth of the total (and at the end), with the same ``update`` / ``set_postfix`` /
``close`` calls and iteration, so callers do not care which they got.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LogProgress", "progress"]


class LogProgress:
    """Plain-line progress: ``desc: n/total unit (p %), t s, postfix``, about ten times."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        file: TextIO | None = None,
        lines: int = 10,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc, self.unit = desc, unit
        self.n = initial
        self.file = file
        self._every = max(1, (total or 0) // max(1, lines))
        self._next = initial + self._every
        self._postfix = ""
        self._start = time.perf_counter()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LogProgress was given no iterable"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next and (self.total is None or self.n < self.total):
            self._print()
            while self._next <= self.n:
                self._next += self._every

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print()

    def _print(self) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        line = f"{self.desc}: {done} {self.unit}{share}, {time.perf_counter() - self._start:.1f} s"
        if self._postfix:
            line += f", {self._postfix}"
        print(line, file=self.file or sys.stderr, flush=True)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    initial: int = 0,
    file: TextIO | None = None,
) -> Any:
    """A tqdm bar on a terminal, a :class:`LogProgress` otherwise (nothing when disabled)."""
    stream = file or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    if disable or interactive:
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            disable=disable,
            initial=initial,
            file=file,
        )
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file)
