"""Console helpers shared by subcommands: a progress bar and JSON output."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pollenstudio.core.progress import CancelToken


class ConsoleProgress(CancelToken):
    """Progress sink on stderr: a redrawn one-line bar on a terminal; in a log (not a
    terminal) a plain line about every 10 % so logs stay readable; nothing when quiet."""

    def __init__(self, label: str = "", quiet: bool = False, stream=None):
        super().__init__()
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._t0 = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._logged_decile = -1

    def update(self, done: int, total: int, message: str = "") -> None:
        super().update(done, total, message)
        if self.quiet:
            return
        now = time.monotonic()
        frac = done / total if total else 0.0
        if not self._tty:
            decile = int(frac * 10)
            if decile == self._logged_decile and done < total:
                return
            self._logged_decile = decile
            self.stream.write(f"{self.label} {done}/{total} ({frac:.0%}) {message}\n".replace("  ", " "))
            self.stream.flush()
            return
        if done < total and now - self._last < 0.2:
            return
        self._last = now
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


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1, with a message a user can act on."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def number_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    """argparse type: a finite number within [lo, hi] (ends open when asked)."""

    def parse(text: str) -> float:
        import math

        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise argparse.ArgumentTypeError(
                f"must be {'more than' if lo_open else 'at least'} {lo:g} and {'below' if hi_open else 'at most'} "
                f"{hi:g}, got {text}")
        return v

    return parse


MAX_IMGSZ = 4096  # model input side: larger inputs need tens of GB (use tiling for big images)


def model_imgsz(text: str) -> int:
    """argparse type: a model input size, a multiple of 32 from 64 to MAX_IMGSZ."""
    v = positive_int(text)
    if v % 32 or not 64 <= v <= MAX_IMGSZ:
        raise argparse.ArgumentTypeError(
            f"input size must be a multiple of 32 from 64 to {MAX_IMGSZ}, got {v} (big images are tiled)")
    return v
