"""Progress of a sweep: a tqdm bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LineProgress", "progress_bar"]

LINES = 20
"""Lines a non-terminal stream gets over a whole run (one per ``total / LINES`` jobs)."""


class LineProgress:
    """``desc: done/total`` lines, one per ``step`` jobs and one at the end (no ``\\r``)."""

    def __init__(self, total: int, initial: int, desc: str, stream: TextIO) -> None:
        self.total, self.done, self.desc, self.stream = total, initial, desc, stream
        self.step = max(1, -(-total // LINES))
        self._printed = initial

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done - self._printed >= self.step or self.done == self.total:
            self._print()

    def _print(self) -> None:
        print(f"{self.desc}: {self.done}/{self.total}", file=self.stream, flush=True)
        self._printed = self.done

    def close(self) -> None:
        if self._printed != self.done:
            self._print()


def progress_bar(total: int, initial: int = 0, desc: str = "jobs", enabled: bool = True,
                 stream: TextIO | None = None) -> Any:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a
    :class:`LineProgress`; disabled entirely when ``enabled`` is False."""
    stream = sys.stderr if stream is None else stream
    if enabled and not stream.isatty():
        return LineProgress(total, initial, desc, stream)
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, unit="job",
                file=stream)
