"""Giving freed memory back to the system (plain Python; the GUI's worker jobs call it).

glibc's allocator keeps memory a program has freed for its next allocations, in one arena
per thread that allocated it: after a detection, an edge map or a Grad-CAM pass in a worker
thread, hundreds of MB of freed tensors and arrays stayed in the app's resident memory
(``bench/memory_image.py --trim``: about 1.06 GB resident after Grad-CAM, 0.73 GB of it in
use). :func:`release_freed_heap` hands the free pages back (``malloc_trim(0)``: 5-150 ms
after a large job); elsewhere than Linux/glibc it does nothing. Run the moment a job ended,
while the GUI thread drew its result, the trim stalled the GUI for up to 150 ms (it locks
each malloc arena while it walks it); :func:`release_freed_heap_soon` runs it a moment later
on a thread of its own, once for any number of jobs that ended meanwhile (GUI stalls under
15 ms in the same bench).
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_trim = None  # glibc's malloc_trim, once looked up; False where there is none
_timer: threading.Timer | None = None  # the release asked for by release_freed_heap_soon
RELEASE_DELAY_S = 0.5  # after the last job ended: the GUI has drawn its result by then


def _malloc_trim():
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL("libc.so.6").malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
                _trim = fn
            except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
                _trim = False
    return _trim


def release_freed_heap() -> bool:
    """Return the heap memory freed but still held by the C allocator to the system.
    True when the allocator could be asked (glibc), False where there is nothing to call."""
    with _lock:
        fn = _malloc_trim()
        if not fn:
            return False
        fn(0)  # ctypes releases the GIL during the call: other threads run on
        return True


def release_freed_heap_soon(delay: float = RELEASE_DELAY_S) -> None:
    """:func:`release_freed_heap` ``delay`` seconds from now on a thread of its own; a new
    call before then moves it on (one release for a burst of jobs)."""
    global _timer

    def run() -> None:
        global _timer
        with _lock:
            if _timer is not timer:
                return  # replaced by a later request
            _timer = None
        release_freed_heap()

    timer = threading.Timer(max(0.0, float(delay)), run)
    timer.daemon = True  # never keeps the app from quitting
    with _lock:
        if _timer is not None:
            _timer.cancel()
        _timer = timer
    timer.start()
