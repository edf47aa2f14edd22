"""Giving freed memory back to the system (plain Python; the GUI's worker jobs call it).

glibc's allocator keeps memory a program has freed for its next allocations, in one arena
per thread that allocated it: after a detection, an edge map or a Grad-CAM pass in a worker
thread, hundreds of MB of freed tensors and arrays stayed in the app's resident memory
(``bench/memory_image.py --trim``: about 1.06 GB resident after Grad-CAM, 0.73 GB of it in
use). :func:`release_freed_heap` hands the free pages back (``malloc_trim(0)``: 5-100 ms
for a GB heap, each arena locked only while it is trimmed); elsewhere than Linux/glibc it
does nothing.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()
_trim = None  # glibc's malloc_trim, once looked up; False where there is none


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
