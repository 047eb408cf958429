"""Download progress on stderr: a bar on a terminal, one line per file otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from smolfs import log

BAR_WIDTH = 24
#: Seconds between two redraws of the bar.
REDRAW = 0.1


def human(nbytes: float) -> str:
    """``62.3 MB`` (decimal units, as download sizes are usually given)."""
    for unit in ("B", "kB", "MB"):
        if nbytes < 1000:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} GB"


class Progress:
    """Progress of one file: ``advance(n)`` per chunk received, ``finish()`` at the end."""

    def __init__(
        self, name: str, total: int | None, start: int = 0, out: TextIO | None = None
    ) -> None:
        self.name = name
        self.total = total
        self.start = start
        self.done = start
        self.out = out or sys.stderr
        self.tty = self.out.isatty() and not log.QUIET
        self.t0 = time.monotonic()
        self._last_draw = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= REDRAW:
                self._last_draw = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        rate = (self.done - self.start) / max(now - self.t0, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            text = f"{self.name} [{bar}] {frac:4.0%} {human(self.done)}/{human(self.total)}"
        else:
            text = f"{self.name} {human(self.done)}"
        self.out.write(f"\r\x1b[K{text} {human(rate)}/s")
        self.out.flush()

    def clear(self) -> None:
        """Erase the bar (before an error or a retry message)."""
        if self.tty:
            self.out.write("\r\x1b[K")
            self.out.flush()

    def finish(self) -> None:
        """Replace the bar by one line: ``fetched base.tar.xz 62.3 MB in 4.1s``."""
        self.clear()
        if log.QUIET:
            return
        seconds = time.monotonic() - self.t0
        resumed = f" (resumed at {human(self.start)})" if self.start else ""
        self.out.write(f"fetched {self.name} {human(self.done)} in {seconds:.1f}s{resumed}\n")
        self.out.flush()
