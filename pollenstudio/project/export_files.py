"""Image files that exports write: copies of the pictures the project registered, never links
to them and never another file (issue 31).

- An exported image is always a **copy** (:func:`copy_registered`), never a hard or symbolic
  link: tools that take a YOLO folder resize or re-encode its images in place, and through a
  link that would rewrite the user's original micrograph. A copy costs disk space; a
  labels-only export (``--no-images``) costs none.
- Only the **registered** picture leaves the project: ``Project.file_problem`` (missing,
  unreadable as an image, other pixel size) and, where the project holds the file's content
  hash, the SHA-256 of the very bytes copied (a stack's planes: ``core.stack.stack_hash``)
  must match. A project file that names ``/etc/passwd`` or another picture exports nothing
  of it. A file that fails is skipped with its reason; the export goes on (like detect).
- Every file goes through ``core.atomic`` (unique temp file in the target folder + rename),
  so a planted symlink is replaced, not written through, and a full disk leaves no
  truncated image (:class:`~pollenstudio.core.atomic.WriteError`).
- :class:`ExportManifest`: the files an export wrote (``.pollenstudio-export.json`` in its
  folder), so the next export into that folder removes those, and only those, and refuses
  to replace a file it did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pollenstudio.core.atomic import WriteError, atomic_write, os_reason, write_text
from pollenstudio.core.errors import ImageReadError

MANIFEST = ".pollenstudio-export.json"  # the files an export wrote, so the next one can clear them
_CHUNK = 1 << 20


class _NotRegistered(Exception):
    """Raised inside an atomic write to drop the temporary file: the source is not the
    registered picture (or could not be read); carries the reason."""


def registered_problem(project, rec, check_content: bool = True) -> str | None:
    """Why the file(s) of ``rec`` must not be exported, or None. ``Project.file_problem``
    (missing, not an image, other pixel size) and, with ``check_content`` and a registered
    hash, the content hash of the file (or of a stack's plane files) as it is now."""
    problem = project.file_problem(rec)
    if problem is not None or not check_content or not rec.sha256:
        return problem
    from pollenstudio.core.imageio import file_sha256
    from pollenstudio.core.stack import stack_hash

    try:
        planes = project.plane_paths(rec)
        now = stack_hash(planes) if planes else file_sha256(project.image_path(rec))
    except OSError as exc:
        return f"{rec.path}: cannot read ({os_reason(exc)})"
    if now != rec.sha256:
        return (f"{rec.path}: the file is not the picture this project registered (its content differs); "
                "not exported. Put the original back, or remove the image from the project")
    return None


def copy_registered(project, rec, dst: Path) -> str | None:
    """Copy the file of the single image ``rec`` to ``dst`` (a new file; never a link),
    hashing the bytes as they are copied. Returns None when ``dst`` holds the registered
    picture, else the reason it was not written (nothing is left at ``dst``'s temp name;
    an earlier ``dst`` is left as it was). A failure to write raises WriteError."""
    problem = registered_problem(project, rec, check_content=False)  # the copy hashes the content itself
    if problem is not None:
        return problem
    src = project.image_path(rec)
    h = hashlib.sha256()
    try:
        with atomic_write(dst, "wb", encoding=None) as out:
            try:
                f = open(src, "rb")
            except OSError as exc:
                raise _NotRegistered(f"{rec.path}: cannot read ({os_reason(exc)})") from None
            with f:
                while True:
                    try:
                        block = f.read(_CHUNK)
                    except OSError as exc:
                        raise _NotRegistered(f"{rec.path}: cannot read ({os_reason(exc)})") from None
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
            if rec.sha256 and h.hexdigest() != rec.sha256:
                raise _NotRegistered(f"{rec.path}: the file is not the picture this project registered (its content "
                                     "differs); not exported. Put the original back, or remove the image from the "
                                     "project")
    except _NotRegistered as exc:
        return str(exc)
    return None


def write_png(arr, dst: Path, what: str) -> None:
    """``arr`` (RGB or grey, 8 or 16 bit) as a PNG at ``dst``, written atomically."""
    import cv2
    import numpy as np

    data = np.ascontiguousarray(arr[..., ::-1]) if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", data)
    if not ok:
        raise WriteError(f"cannot encode {what} as PNG")
    with atomic_write(dst, "wb", encoding=None) as f:
        f.write(buf.tobytes())


def read_view(project, rec, view) -> tuple[object, str | None]:
    """(pixels, None) of one view of ``rec`` (a plane index, "edf" or "best"), after checking
    that its files are the registered ones; (None, reason) when they are not or cannot be
    read (a stack whose planes differ in bit depth, a damaged file ...)."""
    problem = registered_problem(project, rec) or whole_slide_problem(project, rec)
    if problem is not None:
        return None, problem
    try:
        return project.read_plane(rec, view), None
    except ImageReadError as exc:
        return None, f"{rec.path}: cannot read ({exc})"
    except OSError as exc:
        return None, f"{rec.path}: cannot read ({os_reason(exc)})"
    except (ValueError, MemoryError) as exc:  # OpenCV/tifffile on a file that decodes to nonsense
        return None, f"{rec.path}: cannot read ({type(exc).__name__}: {exc})"


def whole_slide_problem(project, rec) -> str | None:
    """Why a view or plane of ``rec`` is not written as a picture of its own: it is a
    whole-slide scan read tile by tile (``core.slide``), whose planes are gigabytes decoded
    and too large for a PNG; None for any other image (or one that cannot be read: the
    reader says why)."""
    from pollenstudio.core.errors import ImageReadError
    from pollenstudio.core.slide import shared_slide

    try:
        slide = shared_slide(project.image_path(rec), project.plane_paths(rec))
    except (ImageReadError, OSError):
        return None
    if not slide.lazy:
        return None
    return (f"{rec.path}: a whole-slide scan ({slide.width:,} x {slide.height:,} px"
            f"{f', {slide.planes} planes' if slide.planes > 1 else ''}) is not written as one picture per plane "
            "or view; export its file as it is (COCO, or YOLO of a single-plane scan)")


class ExportManifest:
    """The files one export wrote into ``folder`` (paths relative to it), kept in
    ``folder/.pollenstudio-export.json``. :meth:`clear_previous` removes the files the
    previous export listed (and only those: the user's own files stay);
    :meth:`check_free` refuses, before anything is written, to replace a file that
    no PollenStudio export wrote; :meth:`save` lists what this export wrote (call it in a
    ``finally``: a failed export lists what it wrote, so the next one clears it)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.previous: list[str] = self._read()
        self.written: list[str] = []

    def _read(self) -> list[str]:
        man = self.folder / MANIFEST
        if not man.is_file():
            return []
        try:
            listed = json.loads(man.read_text(encoding="utf-8")).get("files", [])
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return []
        return [r for r in listed if isinstance(r, str) and "\x00" not in r] if isinstance(listed, list) else []

    def _inside(self, rel: str) -> Path | None:
        p = self.folder / rel
        try:
            if p.parent.resolve().is_relative_to(self.folder.resolve()):  # a listed link is removed, not its target
                return p
        except (OSError, ValueError):
            pass
        return None

    def check_free(self, rels, what: str) -> None:
        """WriteError when a file this export will write exists and the previous export did
        not write it (a file of the user's: never replaced silently)."""
        ours = set(self.previous)
        taken = [r for r in rels if r not in ours and os.path.lexists(self.folder / r)]
        if taken:
            shown = ", ".join(str(self.folder / r) for r in taken[:3])
            raise WriteError(f"{what}: {len(taken)} file(s) this export would write already exist and are not on the "
                             f"list of files the last export into {self.folder} wrote ({shown}"
                             f"{' ...' if len(taken) > 3 else ''}); they are not replaced. Move them away (older "
                             "versions kept no such list: delete the folder if it holds only their export) or "
                             "export to another name. Nothing was written")

    def clear_previous(self) -> None:
        for rel in self.previous:
            p = self._inside(rel)
            try:
                if p is not None and (p.is_symlink() or p.is_file()):
                    p.unlink()
            except OSError:
                continue
        self.previous = []
        (self.folder / MANIFEST).unlink(missing_ok=True)

    def add(self, rel: str) -> None:
        self.written.append(rel)

    def save(self) -> None:
        if self.written or (self.folder / MANIFEST).exists():
            write_text(self.folder / MANIFEST, json.dumps({"files": self.written}))


__all__ = ["MANIFEST", "ExportManifest", "copy_registered", "read_view", "registered_problem", "whole_slide_problem",
           "write_png"]
