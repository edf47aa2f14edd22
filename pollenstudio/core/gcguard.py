"""Keep Python's full garbage collections from freezing the GUI.

A full (generation 2) collection walks every container object of the process (torch, Qt,
pyqtgraph: several hundred thousand of them) with the GIL held throughout, so whichever
thread sets it off, the GUI thread cannot run for 80-130 ms on a 2-core machine
(``bench/ui_stall_model.py`` prints every collection of each phase). Bursts of allocation
set them off: importing torch, reading a checkpoint and building a model in a worker, the
first batches of a training run. Two measures:

- :func:`freeze` once the app's long-lived objects exist (the main window, and after each
  burst): they are moved out of all later collections, which then only walk what was
  allocated since;
- :func:`held` around a burst in a worker: no collection runs while it lasts, then what it
  left alive is frozen.

Frozen objects are still freed by reference counting when the app lets go of them (a
replaced model, a closed project); only reference cycles among them are never reclaimed.
That leak is not measured; it grows with each model load or project switch, not with
time, and is the price of a GUI that does not stall.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_holds = 0  # workers inside held(): collection is off while any is
_was_enabled = True


def freeze() -> None:
    """Take every object alive now out of later collections."""
    gc.freeze()


def hold() -> None:
    """Start a burst: no garbage collection until the matching :func:`release`."""
    global _holds, _was_enabled
    with _lock:
        if _holds == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holds += 1


def release() -> None:
    """End a burst started by :func:`hold`: freeze what it left alive; the last one out
    switches collection back on (if it was on before the first hold)."""
    global _holds
    with _lock:
        if _holds == 0:
            raise RuntimeError("gcguard.release() without hold()")
        _holds -= 1
        gc.freeze()
        if _holds == 0 and _was_enabled:
            gc.enable()


@contextmanager
def held():
    """``with held(): <import torch, load a model>``: see :func:`hold`."""
    hold()
    try:
        yield
    finally:
        release()


class Burst:
    """A hold that may end before its block does: ``with Burst() as b: ... b.end() ...``
    (a training run ends its burst after the first batch, long before the run ends)."""

    def __init__(self):
        self._on = False

    def __enter__(self) -> "Burst":
        hold()
        self._on = True
        return self

    def end(self) -> None:
        if self._on:
            self._on = False
            release()

    def __exit__(self, *exc) -> None:
        self.end()
