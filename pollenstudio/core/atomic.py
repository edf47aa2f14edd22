"""Writing user files so that a reader never sees half of one.

Every writer of a file the user keeps (COCO JSON, YOLO labels, CSV reports, model files and
training states) goes through :func:`atomic_write`: the data goes to a temporary file with a
unique name in the target
folder (``tempfile.mkstemp``: created exclusively, so a symlink planted at a predictable
name is never followed), is flushed to disk and then renamed over the target. On any
failure - a full disk, a cancel, a crash - the previous file is untouched and the
temporary file is removed. OS errors come back as :class:`PollenStudioError` that name
the file and the reason ("the disk is full" for ENOSPC), never as a traceback. The file gets
the permissions of the file it replaces, else those of any new file (0666 less the umask,
like the project file), not the temporary file's 0600.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pollenstudio.core.errors import PollenStudioError


class WriteError(PollenStudioError):
    """A file could not be written (no space, no permission, not a file ...)."""


DISK_FULL_ERRNOS = frozenset(e for e in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if e)


def is_disk_full(exc: BaseException) -> bool:
    """An OS error (or an error of a library that wraps one) that means "no space left"."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return any(w in text for w in ("No space left on device", "Disk quota exceeded", "StorageFull",
                                   "os error 28", "database or disk is full", "the disk is full"))


def os_reason(exc: OSError) -> str:
    if is_disk_full(exc):
        return f"the disk is full ({exc.strerror or 'no space left on device'})"
    return exc.strerror or str(exc) or type(exc).__name__


def new_file_mode(replacing: Path) -> int:
    """Permissions for a file we write: those of the file it replaces, else what a plain
    ``open()`` would give (0666 less the umask), never mkstemp's 0600."""
    try:
        st = replacing.stat()
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask() sets it, racing other threads' files)
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        # the permissions of the file it replaces, else those a normal file gets (mkstemp: 0600)
        os.chmod(tmp, new_file_mode(p))
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


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb", encoding=None) as f:
        f.write(data)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["WriteError", "atomic_write", "check_output_path", "is_disk_full", "make_dir", "new_file_mode", "os_reason",
           "write_bytes", "write_text"]
