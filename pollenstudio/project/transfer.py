"""Import and export: the one place that decides what a source is and how it gets in.

``pollenstudio import`` / ``export``, File > Import... / Export... and "Open image folder"
all call this module; none of them dispatches on formats itself.

- :func:`detect_source` says what a path is: a COCO ``.json`` file (or a folder holding
  exactly one, e.g. a Roboflow export), a YOLO dataset folder (``classes.txt`` + labels),
  a plain folder of images, or one image file (a field, a focal-stack TIFF or a whole-slide
  scan: accepted wherever a folder of images is).
- :func:`import_into` imports into an open project and records the import as a run
  (only once it succeeded: a failed or cancelled import leaves the project as it was; the
  format importers write in one transaction).
- :func:`import_to_folder` opens the project at a folder, or creates one there, and
  imports; if it created the project and the import fails or is cancelled, the project is
  removed again, so a failed first import leaves no empty project behind.
- :func:`export_project` writes COCO JSON, a YOLO folder or the CSV count report.

Progress and cancel go through ``core.progress`` (``progress.update`` / ``progress.check``).
No torch and no Qt here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.errors import ImportFormatError, PollenStudioError, ProjectError
from pollenstudio.core.imageio import IMAGE_SUFFIXES, is_image_file
from pollenstudio.core.progress import NullProgress
from pollenstudio.project.schema import DB_NAME

IMPORT_KINDS = ("coco", "yolo", "images")
EXPORT_FORMATS = ("coco", "yolo", "csv", "grains")


@dataclass
class ImportResult:
    kind: str  # "coco", "yolo" or "images"
    source: str  # the file or folder imported (resolved)
    run_id: int
    summary: dict = field(default_factory=dict)  # the importer's counts (see to_dict)
    created: bool = False  # import_to_folder made the project

    def to_dict(self) -> dict:
        """The summary ``pollenstudio import --json`` prints: kind + the importer's keys.
        Image folders: images_added, duplicates, unreadable [{path, reason}]."""
        return {"kind": self.kind, **self.summary}


def detect_source(source: str | os.PathLike, kind: str = "auto") -> tuple[str, Path]:
    """(kind, path to read) for ``source``. ``kind`` "auto" decides from the path; an
    explicit kind is checked against it. Raises ImportFormatError, changing nothing."""
    from pollenstudio.project.coco import find_coco_files
    from pollenstudio.project.yolo import is_yolo_folder

    if str(source).strip() == "" or "\x00" in str(source):
        raise ImportFormatError(f"{str(source)!r} is not a file or folder name")
    src = Path(source)
    if kind not in ("auto", *IMPORT_KINDS):
        raise ImportFormatError(f"unknown import kind {kind!r}: expected one of {', '.join(IMPORT_KINDS)}")
    if not src.exists():
        raise ImportFormatError(f"{src}: not found")
    if not (src.is_file() or src.is_dir()):  # a FIFO, socket or device would block or mislead
        raise ImportFormatError(f"{src}: not a regular file or folder")
    if src.is_file():
        if kind in ("auto", "coco") and src.suffix.lower() == ".json":
            return "coco", src
        if kind in ("auto", "images") and is_image_file(src):
            return "images", src  # one image file (a whole-slide scan, a stack TIFF, a field)
        if kind == "auto":
            raise ImportFormatError(f"{src}: expected a COCO .json file, an image file or a folder "
                                    "(YOLO dataset or images)")
        if kind == "images":
            raise ImportFormatError(f"{src}: not an image file (expected {', '.join(IMAGE_SUFFIXES)}) "
                                    "or a folder of images")
        raise ImportFormatError(f"{src}: a {kind} import reads a folder" if kind != "coco"
                                else f"{src}: a COCO import reads a .json file")
    # a folder
    if kind == "images":
        return "images", src
    yolo = is_yolo_folder(src)
    if kind == "yolo" or (kind == "auto" and yolo):
        return "yolo", src
    coco_files = [] if yolo else find_coco_files(src)
    if len(coco_files) == 1:
        return "coco", coco_files[0]
    if coco_files:
        names = ", ".join(str(f.relative_to(src)) for f in coco_files)
        raise ImportFormatError(f"{src} holds several COCO files ({names}); import them one by one")
    if kind == "coco":
        raise ImportFormatError(f"{src}: no COCO .json file in this folder")
    return "images", src


def import_into(project, source: str | os.PathLike, kind: str = "auto", images_root: str | os.PathLike | None = None,
                progress=None, stack_pattern: str | None = None) -> ImportResult:
    """Import ``source`` into an open ``project`` and record the run. ``images_root``: COCO,
    the folder the file names are relative to (default: the JSON's folder). ``stack_pattern``
    (image folders): file-name pattern of focal planes, e.g. ``*_z{z}.png`` (see
    ``core.stack.group_plane_files``); multi-page and OME-TIFF stacks need none."""
    progress = progress or NullProgress()
    kind, path = detect_source(source, kind)
    if stack_pattern is not None:  # '' is a pattern too, and a wrong one: refused in words
        from pollenstudio.core.stack import pattern_regex

        pattern_regex(stack_pattern)  # a bad pattern is refused before anything is read
        if kind != "images":
            raise ImportFormatError(f"--stack-pattern groups the image files of a folder; {path.name} is a "
                                    f"{kind.upper()} import (its stacks come from the file)")
        if path.is_file():
            raise ImportFormatError(f"--stack-pattern groups the image files of a folder; {path.name} is one "
                                    "file (a multi-page or OME-TIFF stack is recognised without a pattern)")
    progress.check()
    if kind == "coco":
        from pollenstudio.project.coco import import_coco

        summary = import_coco(project, path, images_root=images_root, progress=progress).to_dict()
    elif kind == "yolo":
        from pollenstudio.project.yolo import import_yolo

        summary = import_yolo(project, path, progress=progress).to_dict()
    else:
        # a cancel raises Cancelled; into an existing project the files read so far stay
        if path.is_file():  # one image file: the folder's rules (core.stack.import_info), no sample
            res = project.add_images([path], progress=progress)
        else:
            res = project.add_folder(path, progress=progress, stack_pattern=stack_pattern)
        if path.is_file() and res.errors:
            raise ImportFormatError(f"{res.errors[0][1]}; nothing imported")
        if res.errors and not res.added and not res.duplicates and not res.relinked:
            shown = "; ".join(r for _, r in res.errors[:3])
            raise ImportFormatError(f"{path}: none of the {len(res.errors)} image(s) could be imported ({shown}"
                                    f"{' ...' if len(res.errors) > 3 else ''}); nothing imported")
        summary = {"images_added": len(res.added), "duplicates": list(res.duplicates),
                   "unreadable": [{"path": p, "reason": r} for p, r in res.errors]}
        if res.relinked:  # images whose files the project had lost: found again by their content
            summary["relinked"] = len(res.relinked)
        stacks = [r for r in (project.image(i) for i in res.added) if r.is_stack]
        if stacks:
            summary["stacks"] = len(stacks)
            summary["planes"] = sum(r.planes for r in stacks)
    # recorded only on success: a failed import leaves the project as it was
    params = {"source": str(Path(source).resolve()), "kind": kind}
    if stack_pattern is not None:
        params["stack_pattern"] = stack_pattern
    if images_root is not None:
        params["images_root"] = str(images_root)
    run_id = project.start_run("import", params)
    project.finish_run(run_id, "done", summary)
    return ImportResult(kind, params["source"], run_id, summary)


def import_to_folder(target: str | os.PathLike, source: str | os.PathLike, kind: str = "auto",
                     images_root: str | os.PathLike | None = None, progress=None, stack_pattern: str | None = None):
    """Open the project in ``target`` (a new one when it holds none) and import ``source``
    into it. Returns ``(project, ImportResult)`` with the project open: the caller closes
    it (or hands it to the GUI). On any failure, cancel included, a project this call
    created is closed and removed (its folder too, when the call made the folder and it
    is empty again) and the error is raised; an existing project is left as it was."""
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.project.store import Project

    if str(target).strip() == "" or "\x00" in str(target):
        raise ProjectError(f"{str(target)!r} is not a project folder name")
    target = Path(target)
    detect_source(source, kind)  # bad input: say so before creating anything
    if stack_pattern is not None:
        from pollenstudio.core.stack import pattern_regex

        pattern_regex(stack_pattern)
    created = not (target / DB_NAME).exists() and not target.is_file()
    folder_existed = target.exists()
    project = Project.create(target) if created else Project.open(target)
    try:
        result = import_into(project, source, kind, images_root, progress, stack_pattern=stack_pattern)
    except BaseException:
        project.close()
        if created:
            _remove_project(target, remove_folder=not folder_existed)
        raise
    result.created = created
    return project, result


def _remove_project(folder: Path, remove_folder: bool) -> None:
    """Delete the database files of a project made moments ago (nothing else in it)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        (folder / (DB_NAME + suffix)).unlink(missing_ok=True)
    if remove_folder and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def project_with_image(path: str | Path):
    """The project of an image file's folder, with the file in it: the folder's project when
    it has one (the file is added when it is not in it yet), else a new project there holding
    only this file (an unreadable file leaves no project behind). Returns (project, image id,
    created)."""
    from pollenstudio.project.store import Project

    p = Path(path).resolve()
    folder = p.parent
    created = not (folder / DB_NAME).exists()
    proj = Project.create(folder) if created else Project.open(folder)
    try:
        rec = proj.find_image(p)
        if rec is None:
            res = proj.add_images([p])
            if res.errors:
                raise ProjectError("; ".join(reason for _, reason in res.errors) + "; nothing imported")
            rec = proj.find_image(p) or (proj.image(res.added[0]) if res.added else None)
            if rec is None and res.duplicates:
                rec = proj.find_image(sha256=_sha(p))
        if rec is None:
            raise ProjectError(f"{p.name}: could not be added to the project in {folder}")
        return proj, rec.id, created
    except BaseException:
        proj.close()
        if created:
            _remove_project(folder, remove_folder=False)
        raise


def _sha(p: Path) -> str:
    from pollenstudio.core.imageio import file_sha256

    return file_sha256(p)


def export_project(project, fmt: str, out: str | os.PathLike, reviewed_only: bool = True,
                   copy_images: bool = True, progress=None, planes_as_images: bool = False,
                   stack_view: str = "edf") -> dict:
    """Write ``fmt`` ("coco", "yolo", "csv", "grains": one CSV row per grain with its
    sizes) to ``out`` (a file; a folder for YOLO).
    ``reviewed_only``: reviewed images and their grains (training data); else every
    image with every non-rejected annotation and its score. Returns the writer's summary
    with "format" added. ``copy_images``: YOLO copies the image files (never links them; only
    files that are the registered pictures: ``project.export_files``); images it cannot
    export are listed under ``skipped`` (path, reason), as are stacks whose planes COCO
    could not write as images."""
    if fmt not in EXPORT_FORMATS:
        raise PollenStudioError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    progress = progress or NullProgress()
    progress.update(0, 0, f"Exporting {fmt.upper()}...")
    progress.check()
    if fmt == "coco":
        from pollenstudio.project.coco import export_coco

        summary = export_coco(project, out, reviewed_only=reviewed_only, planes_as_images=planes_as_images)
    elif fmt == "yolo":
        from pollenstudio.project.yolo import export_yolo

        summary = export_yolo(project, out, reviewed_only=reviewed_only, copy_images=copy_images,
                              stack_view=stack_view, progress=progress)
    elif fmt == "grains":
        from pollenstudio.project.report import write_grains_csv

        summary = write_grains_csv(project, out, reviewed_only=reviewed_only)
    else:
        from pollenstudio.project.report import write_counts_csv

        summary = write_counts_csv(project, out, reviewed_only=reviewed_only)
    return {"format": fmt, **summary}


__all__ = ["EXPORT_FORMATS", "IMPORT_KINDS", "ImportResult", "detect_source", "export_project", "import_into",
           "import_to_folder"]
