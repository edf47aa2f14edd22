"""Finding an image's file again after it was moved, renamed or never found.

``pollenstudio relink PROJECT [SEARCH_DIR...]`` and File > Find missing images... call
:func:`find_missing_files` (read-only: it proposes) and :func:`apply_relink` (one
transaction). Search order for each missing image:

1. by content: a file whose SHA-256 equals the one recorded when the image was added
   (only files of the recorded size are hashed, so a large folder is cheap to scan);
   this finds moved *and* renamed files;
2. by name: a file of the same name (case-insensitive) with the same pixel size (and plane
   count), for images registered without a file (e.g. a COCO import whose files were
   elsewhere) or whose file was re-saved. A file that is already another image of the
   project is never used twice.

A focal stack kept as plane files (issue 31) is one image whose content hash covers every
plane (``core.stack.stack_hash``): it is found only as a whole, never by one file. The
files of each searched folder are grouped into candidate stacks (the stored plane names,
or names that differ only in one number) and a candidate is the stack when the hash of its
planes' hashes, in order, is the recorded one; relinking then moves every plane. A stack
is never matched by name: with one folder per field and planes named ``0z.png``,
``1z.png`` ... every field looks alike. (A stack registered without a hash, from a COCO
import whose files were elsewhere, is matched by its plane names only when exactly one
folder holds them all.) What was not found says why in :attr:`RelinkReport.reasons`.

What was found, how, and what is still missing comes back as a :class:`RelinkReport`.
No torch and no Qt here.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.errors import ImageReadError, ProjectError


@dataclass
class Found:
    image_id: int
    old_path: str
    new_path: str  # absolute (a stack of plane files: its first plane)
    how: str  # "hash" or "name"
    plane_files: list[str] | None = None  # a stack of plane files: every plane's new path, in order


@dataclass
class RelinkReport:
    searched: list[str] = field(default_factory=list)
    files_scanned: int = 0
    found: list[Found] = field(default_factory=list)
    still_missing: list[tuple[int, str]] = field(default_factory=list)  # (image id, stored path)
    reasons: dict[int, str] = field(default_factory=dict)  # image id -> why it was not relinked (stacks)
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
            "found": [{"image_id": f.image_id, "old": f.old_path, "new": f.new_path, "how": f.how,
                       **({"plane_files": f.plane_files} if f.plane_files else {})} for f in self.found],
            "still_missing": [{"image_id": i, "path": p, **({"reason": self.reasons[i]} if i in self.reasons else {})}
                              for i, p in self.still_missing],
            "applied": self.applied,
        }

    def text(self) -> str:
        lines = [f"searched {', '.join(self.searched)} ({self.files_scanned} image files)"]
        lines.append(f"found {len(self.found)}: {len(self.by_hash)} by content, {len(self.by_name)} by name")
        for f in self.found[:20]:
            how = "same content" if f.how == "hash" else "same name and size"
            if f.plane_files:
                how += f", all {len(f.plane_files)} planes in {Path(f.new_path).parent}"
            lines.append(f"  {f.old_path} -> {f.new_path} ({how})")
        if len(self.found) > 20:
            lines.append(f"  ... and {len(self.found) - 20} more")
        lines.append(f"still missing {len(self.still_missing)}")
        for i, p in self.still_missing[:20]:
            lines.append(f"  {p}" + (f": {self.reasons[i]}" if i in self.reasons else ""))
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


_NUMBER = re.compile(r"\d+")


def _candidate_stacks(names: list[str], by_folder: dict[Path, dict[str, Path]], n: int) -> list[list[Path]]:
    """Ordered plane lists of ``n`` files that could be a stack whose planes were called
    ``names``: in each folder, the files of those names (a moved folder), and every group of
    ``n`` files whose names differ only in one number, in the order of that number (renamed
    planes)."""
    want = [x.lower() for x in names]
    out: list[list[Path]] = []
    seen: set[tuple] = set()

    def add(files: list[Path]) -> None:
        key = tuple(str(f) for f in files)
        if key not in seen:
            seen.add(key)
            out.append(files)

    for folder, files in by_folder.items():
        if all(x in files for x in want):
            add([files[x] for x in want])
        groups: dict[tuple, dict[int, Path]] = {}
        clash: set[tuple] = set()
        for low, p in files.items():
            for m in _NUMBER.finditer(p.name):
                key = (p.name[:m.start()].lower(), p.name[m.end():].lower())
                planes = groups.setdefault(key, {})
                if int(m.group()) in planes:
                    clash.add(key)  # 'z1' and 'z01': not one numbering
                planes[int(m.group())] = p
        for key, planes in groups.items():
            if len(planes) == n and key not in clash:
                add([planes[z] for z in sorted(planes)])
    return out


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
    known_files: set[str] = set()
    for r in project.images():
        if r.id not in missing:
            known_files.add(str(project.image_path(r)))
            known_files.update(str(f) for f in project.plane_paths(r) or [])
    stacks = {i: r for i, r in missing.items() if r.plane_files}
    singles = {i: r for i, r in missing.items() if not r.plane_files}
    by_size: dict = {}
    by_name: dict[str, list[int]] = {}
    for rec in singles.values():
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
    shas: dict[str, str] = {}

    def sha_of(p: Path) -> str:
        if str(p) not in shas:
            shas[str(p)] = file_sha256(p)
        return shas[str(p)]

    name_cands: list[tuple[int, Path]] = []
    for n, p in enumerate(files):
        if progress is not None:
            progress.check()
            progress.update(n, len(files), p.name)
        try:
            size = p.stat().st_size
            cands = by_size.get(size, []) + by_size.get(None, [])
            sha = sha_of(p) if cands else None
        except (OSError, ImageReadError):
            continue
        for image_id, want in cands:
            if want == sha and image_id not in found and str(p) not in used:
                found[image_id] = Found(image_id, missing[image_id].path, str(p.resolve()), "hash")
                used.add(str(p))
        for image_id in by_name.get(p.name.lower(), []):
            name_cands.append((image_id, p))

    # stacks of plane files: by the content of all their planes together
    if stacks:
        by_folder: dict[Path, dict[str, Path]] = {}
        for p in files:
            by_folder.setdefault(p.parent, {})[p.name.lower()] = p
        for image_id, rec in sorted(stacks.items()):
            if progress is not None:
                progress.check()
            sha = rows[image_id][0]
            names = [Path(f).name for f in rec.plane_files]
            cands = [c for c in _candidate_stacks(names, by_folder, len(rec.plane_files))
                     if not any(str(f) in used for f in c)]
            if sha:
                match = None
                for c in cands:
                    try:
                        if hashlib.sha256("".join(sha_of(f) for f in c).encode()).hexdigest() == sha:
                            match = c
                            break
                    except OSError:
                        continue
                if match is None:
                    report.reasons[image_id] = (
                        f"a focal stack of {len(names)} plane files; no searched folder holds planes with its content "
                        "(a stack is found by the content of all its planes, never by file names: fields named "
                        "alike would be mixed up)")
                    continue
            else:  # registered without its files: by the plane names, in one folder only
                named = [c for c in cands if [f.name.lower() for f in c] == [x.lower() for x in names]]
                if len(named) != 1:
                    report.reasons[image_id] = (
                        f"a focal stack of {len(names)} plane files registered without its content; "
                        + ("no searched folder holds all its planes" if not named else
                           f"{len(named)} folders hold planes of these names ("
                           + ", ".join(str(c[0].parent) for c in named[:3])
                           + "): cannot tell which is its own; search its folder alone"))
                    continue
                match = named[0]
                try:
                    info = image_info(match[0])
                except ImageReadError as exc:
                    report.reasons[image_id] = str(exc)
                    continue
                if rec.width and rec.height and (info.width, info.height) != (rec.width, rec.height):
                    report.reasons[image_id] = (f"planes named like it in {match[0].parent} are {info.width}x"
                                                f"{info.height} pixels, not {rec.width}x{rec.height}")
                    continue
            found[image_id] = Found(image_id, rec.path, str(match[0].resolve()), "hash" if sha else "name",
                                    plane_files=[str(f.resolve()) for f in match])
            used.update(str(f) for f in match)

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
        if info.planes != (rec.planes or 1):
            continue  # another number of focal planes: the grains' planes would not fit
        found[image_id] = Found(image_id, rec.path, str(p.resolve()), "name")
        used.add(str(p))
    report.found = sorted(found.values(), key=lambda f: f.image_id)
    report.still_missing = [(i, r.path) for i, r in sorted(missing.items()) if i not in found]
    report.reasons = {i: why for i, why in report.reasons.items() if i not in found}
    if progress is not None:
        progress.update(len(files), len(files), "done")
    return report


def apply_relink(project, report: RelinkReport) -> RelinkReport:
    """Point each found image at its new file (a stack of plane files: at every new plane
    file; one transaction; not undoable: the old paths led nowhere). A found item whose
    files changed since the search is left as it is."""
    from pollenstudio.core.imageio import file_sha256
    from pollenstudio.core.stack import import_info, stack_hash

    rows = {r[0]: r[1] for r in project._q("SELECT id, sha256 FROM images")}
    updates = []
    for f in report.found:
        p = Path(f.new_path)
        planes = [Path(q) for q in f.plane_files] if f.plane_files else None
        try:
            info = import_info(p, planes)
            sha = stack_hash(planes) if planes else file_sha256(p)
            size = p.stat().st_size
        except (OSError, ImageReadError):
            continue
        if f.how == "hash" and sha != rows.get(f.image_id):
            continue  # changed since the search: not the same content any more
        updates.append((f.image_id, p, sha, size, info, planes))
    if updates:
        with project.importing():
            for image_id, p, sha, size, info, planes in updates:
                project._relocate(image_id, p, sha, size, info.width, info.height, info.bit_depth, info.channels,
                                  plane_files=planes)
    report.applied = True
    return report


def relink_project(project, search_dirs=None, progress=None, dry_run: bool = False) -> RelinkReport:
    report = find_missing_files(project, search_dirs, progress)
    return report if dry_run else apply_relink(project, report)


__all__ = ["Found", "RelinkReport", "apply_relink", "find_missing_files", "relink_project"]
