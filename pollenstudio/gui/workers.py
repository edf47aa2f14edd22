"""Run engine jobs off the GUI thread and turn their progress/cancel protocol into signals.

A job is a plain function ``fn(token, *args) -> result`` that calls ``token.update`` and
``token.check()`` (``pollenstudio.core.progress.CancelToken``); it never touches widgets.
:class:`JobRunner` keeps one slot per job kind: submitting a new job of a kind cancels the
previous one and its late results are dropped, so a stale image or thumbnail never lands.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from pollenstudio.core.errors import Cancelled, PollenStudioError
from pollenstudio.core.memory import release_freed_heap_soon
from pollenstudio.core.progress import CancelToken

log = logging.getLogger(__name__)
# a job that ran this long (a detection, a map, an image decode) gives the memory it freed
# back to the system when it ends; a quick one (a thumbnail) skips the few ms that costs
RELEASE_AFTER_S = 0.2


class _Signals(QObject):
    # No Python objects cross threads in signals: a queued ``Signal(object)`` carrying None
    # corrupted None's refcount (PySide6 6.12, Python 3.11) and aborted the app. The result
    # waits on ``Job.result`` and ``finished`` only says it is there.
    progress = Signal(int, int, str)
    finished = Signal()
    failed = Signal(str)
    cancelled = Signal()


class Job(QRunnable):
    """One call of ``fn(token, *args, **kwargs)`` on a pool thread."""

    def __init__(self, fn: Callable[..., Any], *args, **kwargs):
        super().__init__()
        self.setAutoDelete(False)  # Python owns it; the runner drops it when done
        self.signals = _Signals()
        self.token = CancelToken(on_update=self._on_update)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.done = False

    def _on_update(self, done: int, total: int, message: str) -> None:
        self.signals.progress.emit(done, total, message)

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            self._run()
        except RuntimeError:
            # the signals object died with the app (quit while a job was still running):
            # nobody is left to tell
            log.debug("job finished after the app was closed")
        finally:
            if time.monotonic() - t0 >= RELEASE_AFTER_S:
                # what the job freed (tensors, tiles, image copies) stays in this thread's
                # malloc arena, resident, unless it is handed back (core.memory), a moment
                # later: not while the GUI thread draws the job's result
                release_freed_heap_soon()
            self.done = True

    def _run(self) -> None:
        try:
            self.token.check()
            result = self.fn(self.token, *self.args, **self.kwargs)
            self.token.check()
        except Cancelled:
            self.signals.cancelled.emit()
        except PollenStudioError as exc:  # expected failures: the message is for the user
            self.signals.failed.emit(str(exc))
        except Exception as exc:  # a bug: keep the traceback in the log, show the gist
            log.error("job %s failed:\n%s", getattr(self.fn, "__name__", self.fn), traceback.format_exc())
            self.signals.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.result = result
            self.signals.finished.emit()


class JobRunner(QObject):
    """One job slot per kind on a thread pool; a new job of a kind cancels the old one."""

    def __init__(self, parent: QObject | None = None, pool: QThreadPool | None = None):
        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        self._slots: dict[str, Job] = {}
        self._running: set[Job] = set()

    def submit(
        self,
        kind: str,
        fn: Callable[..., Any],
        *args,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        **kwargs,
    ) -> Job:
        self.cancel(kind)
        job = Job(fn, *args, **kwargs)
        self._slots[kind] = job
        self._running.add(job)

        def current() -> bool:
            return self._slots.get(kind) is job

        def finished(result):
            self._finish(kind, job)
            if on_done is not None:
                on_done(result)

        def failed(msg):
            self._finish(kind, job)
            if on_error is not None:
                on_error(msg)

        # late signals of a replaced job are ignored: ``current()`` is False for them
        job.signals.finished.connect(lambda: current() and finished(job.result))
        job.signals.failed.connect(lambda m: current() and failed(m))
        job.signals.cancelled.connect(lambda: self._running.discard(job))
        if on_progress is not None:
            job.signals.progress.connect(lambda d, t, m: current() and on_progress(d, t, m))
        self.pool.start(job)
        return job

    def _finish(self, kind: str, job: Job) -> None:
        self._running.discard(job)
        if self._slots.get(kind) is job:
            del self._slots[kind]

    def cancel(self, kind: str) -> None:
        job = self._slots.pop(kind, None)
        if job is not None:
            job.token.cancel()

    def cancel_all(self) -> None:
        for kind in list(self._slots):
            self.cancel(kind)

    def busy(self, kind: str) -> bool:
        return kind in self._slots


class NewestFirstLoader(QObject):
    """One background job that works through requests newest first (what is on screen now),
    keeping only the latest ``MAX_QUEUED``: items scrolled past are dropped and ask again
    when painted again, so a fast scroll does not leave thousands of decodes behind it.

    Subclasses call :meth:`_enqueue` from ``request`` and implement ``_drain(token)``, which
    takes work with :meth:`_pop_newest` (under ``self._lock``) until it returns None.
    """

    MAX_QUEUED = 128

    def __init__(self, parent: QObject | None = None, pool=None):
        import collections
        import threading

        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        self._queue: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._job: Job | None = None
        self.failed: set = set()

    def _enqueue(self, key, payload) -> None:
        if key in self.failed:
            return
        with self._lock:
            self._queue[key] = payload
            self._queue.move_to_end(key)
            while len(self._queue) > self.MAX_QUEUED:
                self._queue.popitem(last=False)
            running = self._job is not None and not self._job.done
        if not running:
            self._start()

    def _pop_newest(self):
        """(key, payload) of the newest request, or None when none is left (hold no lock)."""
        with self._lock:
            return self._queue.popitem(last=True) if self._queue else None

    def clear(self) -> None:
        """Drop queued requests and stop the job (project closed or view reset)."""
        with self._lock:
            self._queue.clear()
        if self._job is not None:
            self._job.token.cancel()
            self._job = None

    def _start(self) -> None:
        job = Job(self._drain)
        job.signals.finished.connect(lambda j=job: self._job_done(j))
        self._job = job
        self.pool.start(job)

    def _job_done(self, job: Job) -> None:
        with self._lock:
            more = bool(self._queue) and self._job is job
        if more:
            self._start()

    def _drain(self, token) -> None:  # pragma: no cover - subclasses implement it
        raise NotImplementedError
