"""Writing user files so that a reader never sees half of one.

Every writer of a file the user keeps (COCO JSON, YOLO labels, CSV reports) goes through
:func:`atomic_write`: the data goes to a temporary file with a unique name in the target
folder (``tempfile.mkstemp``: created exclusively, so a symlink planted at a predictable
name is never followed), is flushed to disk and then renamed over the target. On any
failure - a full disk, a cancel, a crash - the previous file is untouched and the
temporary file is removed. OS errors come back as :class:`PollenStudioError` that name
the file and the reason, never as a traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pollenstudio.core.errors import PollenStudioError


class WriteError(PollenStudioError):
    """A file could not be written (no space, no permission, not a file ...)."""


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_output_path(path: str | os.PathLike, what: str = "output file") -> Path:
    """A path we may write a file to: not empty, not an existing folder. Its folder is
    created. Raises WriteError in words."""
    if str(path).strip() == "":
        raise WriteError(f"no {what} given (the path is empty)")
    if "\x00" in str(path):
        raise WriteError(f"{what} {str(path)!r}: a path cannot contain a NUL character")
    p = Path(path)
    if p.is_dir():
        raise WriteError(f"{p} is a folder; give a file name for the {what} (e.g. {p / 'export'}.json)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the folder {p.parent}: {os_reason(exc)}") from None
    if not p.parent.is_dir():
        raise WriteError(f"cannot write {p}: {p.parent} is not a folder")
    return p


def make_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create a folder we write into (an existing file there is an error in words)."""
    if str(path).strip() == "":
        raise WriteError(f"no {what} given (the path is empty)")
    if "\x00" in str(path):
        raise WriteError(f"{what} {str(path)!r}: a path cannot contain a NUL character")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise WriteError(f"{p} is a file; the {what} must be a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the folder {p}: {os_reason(exc)}") from None
    return p


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator:
    """``with atomic_write(path) as f: f.write(...)``: the file appears complete or not at all."""
    p = check_output_path(path)
    binary = "b" in mode
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {p}: {os_reason(exc)}") from None
    try:
        with os.fdopen(fd, mode, **({} if binary else {"encoding": encoding, "newline": newline})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # keep the permissions a normal file would get (mkstemp makes it 0600)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except OSError as exc:
        _unlink(tmp)
        raise WriteError(f"cannot write {p}: {os_reason(exc)}; the previous file (if any) is unchanged") from None
    except BaseException:
        _unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "w", encoding=encoding, newline="") as f:
        f.write(text)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["WriteError", "atomic_write", "check_output_path", "make_dir", "os_reason", "write_text"]
