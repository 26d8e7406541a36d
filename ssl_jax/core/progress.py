"""A small progress bar with rate and ETA on stderr (quiet when not a terminal unless asked)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool | None = None, width: int = 28):
        self.total, self.label, self.width = max(total, 0), label, width
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done = 0
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
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_s = f"ETA {eta:5.0f}s" if eta == eta else "ETA     ?"
        sys.stderr.write(f"\r{self.label:<22} [{'#' * filled}{'.' * (self.width - filled)}] "
                         f"{self.done}/{self.total} {rate:5.1f}/s {eta_s}")
        if self.done >= self.total:
            sys.stderr.write(f"  ({elapsed:.1f}s)\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done < self.total:
            sys.stderr.write("\n")
            sys.stderr.flush()
