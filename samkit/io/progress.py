"""The progress of a long job on stderr (``samkit label``: images; ``samkit train``: steps):
done of total, rate, ETA, failures.

On a terminal it is a rich progress bar (``samkit[cli]``); elsewhere (a log file, CI, no rich)
one plain line at most every ``LINE_EVERY`` seconds and one at the end (``lines=False``: none,
for a caller that logs lines of its own). The rate counts units finished since the bar was made,
and the ETA is the remaining count at that rate. Every labelling engine reports through the same
driver loop, so the bar is the same for ``local``, ``ray`` and ``serial``.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

LINE_EVERY = 10.0


def eta_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``advance(n, failed)`` after each finished batch; ``close()`` at the end."""

    def __init__(self, total: int, enabled: bool = True, stream=None, name: str = "labelling",
                 unit: str = "images", lines: bool = True) -> None:
        self.total, self.done, self.failed = int(total), 0, 0
        self.name, self.unit, self.lines, self.note = name, unit, lines, ""
        self.t0 = time.perf_counter()
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.total > 0
        self._bar = self._task = None
        self._last_line = 0.0
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            self._start_rich()

    def _start_rich(self) -> None:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn
        except ImportError:
            return
        self._bar = Bar(TextColumn(self.name), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                        console=Console(file=self.stream), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self.name, total=self.total, stats=self.stats())

    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.t0, 1e-9)

    def eta(self) -> Optional[float]:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None

    def stats(self) -> str:
        fails = f", {self.failed} failed" if self.failed else ""
        note = f", {self.note}" if self.note else ""
        return f"{self.rate():.2f} {self.unit}/s, ETA {eta_text(self.eta())}{fails}{note}"

    def advance(self, n: int, failed: int = 0, note: str = "") -> None:
        self.done += n
        self.failed += failed
        self.note = note
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, stats=self.stats())
            return
        now = time.perf_counter()
        if self.lines and (now - self._last_line >= LINE_EVERY or self.done >= self.total):
            self._last_line = now
            self.stream.write(f"{self.name} {self.done}/{self.total} {self.unit}, {self.stats()}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
