"""Progress of long work: what a stage is doing, how far it is, how fast, and the time left.

In a terminal, one line that updates in place; in a log (DVC's captured output, CI), a plain
line now and then, so a log neither stays silent for minutes nor fills with redraws. Work
that ends within a few seconds prints nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

QUIET_SECONDS = 3.0  # nothing is shown for work that ends before this
TERMINAL_EVERY = 0.5  # seconds between redraws of the terminal line
LOG_EVERY = 30.0  # seconds between plain lines in a log


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """Counts `total` items of work named `what`; `advance(n)` after each piece."""

    def __init__(self, what: str, total: int, unit: str = "images", stream: TextIO | None = None,
                 clock=time.monotonic):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.clock = clock
        self.started = self.shown = clock()
        self.done = 0
        self.printed = False
        self.shown_done = -1  # what `done` was when last shown

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _duration(left) if left != float("inf") else "?"
        share = self.done / self.total if self.total else 1.0
        return (f"{self.what}: {self.done}/{self.total} {self.unit} ({share:.0%}), "
                f"{rate:.1f} {self.unit}/s, {_duration(elapsed)} elapsed, {eta} left")

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.started < QUIET_SECONDS:
            return
        if now - self.shown >= (TERMINAL_EVERY if self.terminal else LOG_EVERY) \
                or not self.printed:
            self._show()

    def _show(self, end: str = "") -> None:
        self.shown, self.printed, self.shown_done = self.clock(), True, self.done
        if self.terminal:
            self.stream.write(f"\r{self.line()}\x1b[K{end}")
        else:
            self.stream.write(f"{self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        """The last state, once, if anything was shown (a terminal line ends here)."""
        if self.terminal and self.printed:
            self._show(end="\n")
        elif self.printed and self.shown_done != self.done:
            self._show()


def tracked(items: Iterable[T], what: str, total: int, unit: str = "images",
            stream: TextIO | None = None) -> Iterator[T]:
    """`items`, one by one, counted by a Progress."""
    progress = Progress(what, total, unit, stream)
    try:
        for item in items:
            yield item
            progress.advance()
    finally:
        progress.close()
