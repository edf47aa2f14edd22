"""Finding an image's file again after it was moved, renamed or never found.

``pollenstudio relink PROJECT [SEARCH_DIR...]`` and File > Find missing images... call
:func:`find_missing_files` (read-only: it proposes) and :func:`apply_relink` (one
transaction). Search order for each missing image:

1. by content: a file whose SHA-256 equals the one recorded when the image was added
   (only files of the recorded size are hashed, so a large folder is cheap to scan);
   this finds moved *and* renamed files;
2. by name: a file of the same name (case-insensitive) with the same pixel size, for
   images registered without a file (e.g. a COCO import whose files were elsewhere) or
   whose file was re-saved. A file that is already another image of the project is
   never used twice.

What was found, how, and what is still missing comes back as a :class:`RelinkReport`.
No torch and no Qt here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.errors import ImageReadError, ProjectError


@dataclass
class Found:
    image_id: int
    old_path: str
    new_path: str  # absolute
    how: str  # "hash" or "name"


@dataclass
class RelinkReport:
    searched: list[str] = field(default_factory=list)
    files_scanned: int = 0
    found: list[Found] = field(default_factory=list)
    still_missing: list[tuple[int, str]] = field(default_factory=list)  # (image id, stored path)
    applied: bool = False

    @property
    def by_hash(self) -> list[Found]:
        return [f for f in self.found if f.how == "hash"]

    @property
    def by_name(self) -> list[Found]:
        return [f for f in self.found if f.how == "name"]

    def to_dict(self) -> dict:
        return {
            "searched": self.searched, "files_scanned": self.files_scanned,
            "found_by_hash": len(self.by_hash), "found_by_name": len(self.by_name),
            "found": [{"image_id": f.image_id, "old": f.old_path, "new": f.new_path, "how": f.how}
                      for f in self.found],
            "still_missing": [{"image_id": i, "path": p} for i, p in self.still_missing],
            "applied": self.applied,
        }

    def text(self) -> str:
        lines = [f"searched {', '.join(self.searched)} ({self.files_scanned} image files)"]
        lines.append(f"found {len(self.found)}: {len(self.by_hash)} by content, {len(self.by_name)} by name")
        for f in self.found[:20]:
            lines.append(f"  {f.old_path} -> {f.new_path} ({'same content' if f.how == 'hash' else 'same name and size'})")
        if len(self.found) > 20:
            lines.append(f"  ... and {len(self.found) - 20} more")
        lines.append(f"still missing {len(self.still_missing)}")
        for _, p in self.still_missing[:20]:
            lines.append(f"  {p}")
        if len(self.still_missing) > 20:
            lines.append(f"  ... and {len(self.still_missing) - 20} more")
        return "\n".join(lines)


def _image_files(folder: Path):
    from pollenstudio.core.imageio import is_image_file

    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".pollen"))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if is_image_file(p) and p.is_file():
                yield p


def find_missing_files(project, search_dirs=None, progress=None) -> RelinkReport:
    """Look for the files of the project's missing images under ``search_dirs`` (default:
    the project folder). Changes nothing; see :func:`apply_relink`."""
    from pollenstudio.core.imageio import file_sha256
    from pollenstudio.core.stack import stack_info as image_info  # a focal stack's planes share one size

    raw = list(search_dirs) if search_dirs else [project.folder]
    for d in raw:
        if not str(d).strip() or "\x00" in str(d) or not Path(d).is_dir():
            raise ProjectError(f"search folder {str(d)!r} not found (give folders to search for the images)")
    dirs = [Path(d) for d in raw]
    report = RelinkReport(searched=[str(d) for d in dirs])
    missing = {r.id: r for r in project.missing_images()}
    if not missing:
        return report
    rows = {r[0]: (r[1], r[2]) for r in project._q("SELECT id, sha256, size_bytes FROM images")}
    known_files = {str(project.image_path(r)) for r in project.images() if r.id not in missing}
    by_size: dict = {}
    by_name: dict[str, list[int]] = {}
    for rec in missing.values():
        sha, size = rows[rec.id]
        if sha:
            by_size.setdefault(size, []).append((rec.id, sha))
        by_name.setdefault(Path(rec.path).name.lower(), []).append(rec.id)
    files = []
    seen = set()
    for d in dirs:
        for p in _image_files(d):
            real = str(p.resolve())
            if real not in seen and real not in known_files:
                seen.add(real)
                files.append(p)
    report.files_scanned = len(files)
    found: dict[int, Found] = {}
    used: set[str] = set()
    name_cands: list[tuple[int, Path]] = []
    for n, p in enumerate(files):
        if progress is not None:
            progress.check()
            progress.update(n, len(files), p.name)
        try:
            size = p.stat().st_size
            cands = by_size.get(size, []) + by_size.get(None, [])
            sha = file_sha256(p) if cands else None
        except (OSError, ImageReadError):
            continue
        for image_id, want in cands:
            if want == sha and image_id not in found and str(p) not in used:
                found[image_id] = Found(image_id, missing[image_id].path, str(p.resolve()), "hash")
                used.add(str(p))
        for image_id in by_name.get(p.name.lower(), []):
            name_cands.append((image_id, p))
    for image_id, p in name_cands:  # by name only after every content match is known
        if image_id in found or str(p) in used:
            continue
        rec = missing[image_id]
        try:
            info = image_info(p)
        except ImageReadError:
            continue
        if rec.width and rec.height and (info.width, info.height) != (rec.width, rec.height):
            continue  # another picture under the same name: its boxes would not fit
        found[image_id] = Found(image_id, rec.path, str(p.resolve()), "name")
        used.add(str(p))
    report.found = sorted(found.values(), key=lambda f: f.image_id)
    report.still_missing = [(i, r.path) for i, r in sorted(missing.items()) if i not in found]
    if progress is not None:
        progress.update(len(files), len(files), "done")
    return report


def apply_relink(project, report: RelinkReport) -> RelinkReport:
    """Point each found image at its new file (one transaction; not undoable: the old
    paths led nowhere)."""
    from pollenstudio.core.imageio import file_sha256
    from pollenstudio.core.stack import stack_info as image_info  # a focal stack's planes share one size

    updates = []
    for f in report.found:
        p = Path(f.new_path)
        try:
            info = image_info(p)
            sha = file_sha256(p)
            size = p.stat().st_size
        except (OSError, ImageReadError):
            continue
        updates.append((f.image_id, p, sha, size, info))
    if updates:
        with project.importing():
            for image_id, p, sha, size, info in updates:
                project._relocate(image_id, p, sha, size, info.width, info.height, info.bit_depth, info.channels)
    report.applied = True
    return report


def relink_project(project, search_dirs=None, progress=None, dry_run: bool = False) -> RelinkReport:
    report = find_missing_files(project, search_dirs, progress)
    return report if dry_run else apply_relink(project, report)


__all__ = ["Found", "RelinkReport", "apply_relink", "find_missing_files", "relink_project"]
