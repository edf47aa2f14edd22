"""The progress/cancel protocol every long job takes.

A job calls ``progress.update(done, total, message)`` between units of work (batches,
images, epochs) and ``progress.check()`` where it may stop; ``check`` raises
:class:`Cancelled` once cancel was requested. The GUI adapts this to Qt signals, the CLI to
a progress bar, tests to a list.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from pollenstudio.core.errors import Cancelled


@runtime_checkable
class Progress(Protocol):
    def update(self, done: int, total: int, message: str = "") -> None: ...

    @property
    def cancelled(self) -> bool: ...

    def check(self) -> None: ...


class CancelToken:
    """Thread-safe progress sink with a cancel flag. Subclass or pass ``on_update``."""

    def __init__(self, on_update=None):
        self._event = threading.Event()
        self._on_update = on_update
        self.done = 0
        self.total = 0
        self.message = ""

    def update(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total, self.message = done, total, message
        if self._on_update is not None:
            self._on_update(done, total, message)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class NullProgress(CancelToken):
    """Progress sink that records nothing and is never cancelled unless asked."""
