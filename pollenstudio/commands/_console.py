"""Console helpers shared by subcommands: a progress bar and JSON output."""

from __future__ import annotations

import json
import sys
import time

from pollenstudio.core.progress import CancelToken


class ConsoleProgress(CancelToken):
    """Progress sink drawing a one-line bar on stderr (silent when not a terminal or quiet)."""

    def __init__(self, label: str = "", quiet: bool = False, stream=None):
        super().__init__()
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._t0 = time.monotonic()
        self._last = 0.0

    def update(self, done: int, total: int, message: str = "") -> None:
        super().update(done, total, message)
        if self.quiet:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        frac = done / total if total else 0.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = now - self._t0
        eta = (elapsed / done * (total - done)) if done else 0.0
        line = f"\r{self.label} [{bar}] {done}/{total} {elapsed:5.0f}s eta {eta:4.0f}s {message[:40]:<40}"
        self.stream.write(line)
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
