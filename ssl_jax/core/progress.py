"""The one progress bar: done/total in named units, rate and ETA, on stderr (quiet when not a
terminal unless asked)."""

from __future__ import annotations

import sys
import time

BYTES = "B"  # the unit whose counts are shown as sizes (KB, MB, GB)


def format_size(n: float) -> str:
    """A byte count for people: '512 B', '3.4 MB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


class Progress:
    """`label: done/total unit [####....] rate unit/s ETA`, redrawn at most every 0.2 s and
    once at the end (with the elapsed time).

    `done` starts the count (a resumed download); the rate and ETA count only what is done
    from then on. `enabled=None` draws only when stderr is a terminal."""

    def __init__(self, total: int, label: str, *, unit: str = "items", done: int = 0,
                 enabled: bool | None = None, width: int = 28):
        self.total, self.label, self.unit, self.width = max(total, 0), label, unit, width
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done = self._start_done = min(max(done, 0), self.total)
        self.start = time.perf_counter()
        self._last = 0.0
        self._draw(force=True)

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw(force=self.done == self.total)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.width * frac)
        elapsed = now - self.start
        new = self.done - self._start_done
        rate = new / elapsed if elapsed > 0 and new else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = f"ETA {eta:5.0f}s" if eta == eta else "ETA     ?"
        if self.unit == BYTES:
            counts, speed = (f"{format_size(self.done)}/{format_size(self.total)}",
                             f"{format_size(rate)}/s")
        else:
            counts, speed = (f"{self.done}/{self.total} {self.unit}",
                             f"{rate:5.1f} {self.unit}/s")
        sys.stderr.write(f"\r{self.label}: {counts} [{'#' * filled}{'.' * (self.width - filled)}]"
                         f" {speed} {eta_s}")
        if self.done >= self.total:
            sys.stderr.write(f"  ({elapsed:.1f}s)\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done < self.total:
            sys.stderr.write("\n")
            sys.stderr.flush()
