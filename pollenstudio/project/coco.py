"""COCO detection JSON export and import.

Export: category ids from 1 (project taxon order), image and annotation ids from 1,
``bbox = [x, y, w, h]`` in pixels, ``area`` (polygon area when there is a polygon, else box
area), ``iscrowd = 0``, image width/height, ``file_name`` relative to the JSON file's
folder, ``segmentation`` = ``[polygon]`` or ``[]``. Reviewed-only (default) writes the
grains of reviewed images as plain labels; ``reviewed_only=False`` writes every image and
every non-rejected annotation, with ``score``, ``status`` and ``source`` keys for those
that have them.

Extra keys (COCO allows them; pycocotools and other tools ignore them), written only when
set and read back by the import below, so an export/import round trip keeps the project's
image- and taxon-level facts:
- image ``review_status``: ``"new"``, ``"in_review"`` or ``"reviewed"`` (always written).
  Import gives a new image the explicit mark that reproduces it: a reviewed image without any
  decided grain in the file (a reviewed *empty* image, a training negative) stays reviewed,
  an image marked "not finished" without proposals stays in review;
- image ``um_per_px`` (calibration, a positive number) and ``group`` (slide / sample id);
- category ``color`` (``"#rrggbb"``), ``hotkey`` (``"1"``-``"9"``) and ``parent`` (name of
  the parent taxon in the same file). On import they apply to taxa the import creates; a
  taxon already in the project keeps its own, and a hotkey another taxon uses is not taken.
- focal stacks (issue 19): image ``planes`` (the plane count, written when above 1) and
  ``plane_files`` (file names of the planes, relative like ``file_name``, for a stack kept as
  one file per plane; ``file_name`` is then its first plane); annotation ``plane`` (0-based
  plane where the grain is sharpest). A stack stays one COCO image, so the file is valid COCO
  and tools that know no stacks see the image ``file_name`` names. With
  ``planes_as_images`` each stack plane that holds grains is also written as an image file of
  its own (``<json stem>_planes/<image>_zNN.png``) and listed as its own COCO image with
  ``stack_of`` (the stack's ``file_name``) and ``plane``, carrying the grains of that plane
  only; import folds such images back into their stack when the stack's file is found (else
  they are imported as the single images they are). Plane images are written atomically
  (``project.export_files``), only from a stack whose files are the registered ones, listed
  in ``<json stem>_planes/.pollenstudio-export.json``; a file there that the last export did
  not write (a user's file, a planted link) is never replaced: the export is refused in
  words. A stack that cannot be read is listed as one image and named under ``skipped``.
  COCO has no image-copying option: other images are named by path, never copied.
- who decided and when (several reviewers, issue 30): annotation ``author`` (the reviewer
  who made the last decision on it; absent on untouched proposals) and ``created`` /
  ``updated`` (ISO 8601 UTC with milliseconds, e.g. ``"2026-12-07T04:31:12.345Z"``; seconds
  since the epoch are read too). Import keeps them; without them a grain gets the import's time.
Images already in the project are reused as they are: their review mark, calibration and
group are not changed by an import. Project-level facts (the grain-size calibration, model
versions, runs, undo history) are not part of a COCO file.

Import reads files from other tools as they are: ids from 0, a Roboflow-style
super-category that no annotation uses (skipped), empty segmentation lists, fractional
areas (ignored: recomputed), extra keys, absent optional fields, sub-folders in file
names, polygons (the first polygon of a grain is kept; RLE masks are ignored).
Rules:
- annotations without ``score`` are labels: status ``added``, source human; with a
  ``score`` they are model proposals (status ``proposed``) unless a ``status`` key says
  otherwise (our own ``--all`` export);
- boxes may overshoot the image by up to 1 px (float rounding in other tools) and are
  clipped; further out, or with zero/negative size, is an error;
- ``iscrowd = 1`` regions are not single grains and are skipped (counted in the summary);
- image files that are not found are registered as missing (listed in the summary) with
  their annotations; :meth:`Project.relink` attaches them later;
- an image already in the project (same file or same content) is reused, and an
  annotation identical to one it already has is not added twice, so re-importing a file
  changes nothing;
- everything is validated before anything is written, in one transaction: any error
  raises :class:`ImportFormatError` and leaves the project unchanged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pollenstudio.core.atomic import write_text
from pollenstudio.core.errors import ImageReadError, ImportFormatError
from pollenstudio.core.names import text_problem
from pollenstudio.core.types import OBJECT_STATUSES, AnnotationStatus, Box, Source

OVERSHOOT_PX = 1.0
_MAX_LISTED = 8


@dataclass
class ImportCounts:
    """What any import added; format-specific summaries extend it (JSON key order kept)."""

    images_added: int = 0
    images_reused: int = 0
    annotations_added: int = 0
    annotations_duplicate: int = 0
    categories_added: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ImportSummary(ImportCounts):
    categories_skipped: list[str] = field(default_factory=list)  # unused super-categories
    missing_files: list[str] = field(default_factory=list)
    images_relinked: int = 0  # images the project had lost, found again by this import
    skipped_crowd: int = 0
    warnings: list[str] = field(default_factory=list)


class _Problems:
    """Collects validation problems so the user sees several at once, not one per run."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "; ".join(self.items[:_MAX_LISTED])
        more = f" (and {len(self.items) - _MAX_LISTED} more)" if len(self.items) > _MAX_LISTED else ""
        raise ImportFormatError(f"{self.source}: {len(self.items)} problem(s), nothing imported: {shown}{more}")


def iso_time(t: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds ('2026-12-07T04:31:12.345Z')."""
    if t is None:
        return None
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_time(v) -> float | None:
    """A time of a COCO file (ISO 8601, or seconds since the epoch) in seconds; None when
    absent or unreadable (the import's own time is used then)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) and v > 0 else None
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return d.timestamp()
    return None


def _polygon_area(poly) -> float:
    n = len(poly) // 2
    s = 0.0
    for i in range(n):
        x1, y1 = poly[2 * i], poly[2 * i + 1]
        x2, y2 = poly[2 * ((i + 1) % n)], poly[2 * ((i + 1) % n) + 1]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def _finite_number(v) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer like 10**400
        return False


MAX_COORD = 1e7  # pixels; no micrograph is ten million pixels across
MAX_SIDE = 1_000_000  # image width/height
MAX_NAME = 200  # characters in a taxon name


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def bad_text(text: str) -> str | None:
    """Why ``text`` cannot be a taxon name or file name (control characters break one-name-
    per-line files and terminals; direction controls disguise a name), or None: the rule of
    ``core.names``, the same for every way a name comes in."""
    return text_problem(text)


# ---------------------------------------------------------------------------- export
def export_coco(project, out_path: str | os.PathLike, reviewed_only: bool = True,
                planes_as_images: bool = False) -> dict:
    """Write a COCO JSON of the project; returns a summary (counts, path). With
    ``planes_as_images`` every focal-stack plane that holds grains is written as an image of
    its own as well (see the module docstring)."""
    from pollenstudio.core.atomic import check_output_path

    out_path = check_output_path(out_path, "COCO file")
    out_dir = out_path.resolve().parent
    cats = project.categories()
    cat_index = {c.id: i + 1 for i, c in enumerate(cats)}
    by_id = {c.id: c for c in cats}
    categories = []
    for c in cats:
        entry = {"id": cat_index[c.id], "name": c.name,
                 "supercategory": by_id[c.parent_id].name if c.parent_id in by_id else "pollen",
                 "color": c.color}
        if c.hotkey:
            entry["hotkey"] = c.hotkey
        if c.parent_id in by_id:
            entry["parent"] = by_id[c.parent_id].name
        categories.append(entry)
    if reviewed_only:
        recs = project.images(status="reviewed")
        keep = OBJECT_STATUSES
    else:
        recs = project.images()
        keep = {s for s in AnnotationStatus if s is not AnnotationStatus.REJECTED}
    def rel_to_out(path: Path) -> str:
        try:
            return Path(os.path.relpath(path, out_dir)).as_posix()
        except ValueError:  # another drive (Windows): only an absolute path can point there
            return path.as_posix()

    images, annotations = [], []
    plane_images: list[tuple[dict, list[dict]]] = []
    pending: list[tuple] = []  # stacks whose planes become images of their own
    for n, rec in enumerate(recs, start=1):
        rel = rel_to_out(project.image_path(rec))
        image = {"id": n, "file_name": rel, "width": rec.width, "height": rec.height,
                 "review_status": rec.status.value}
        if rec.um_per_px is not None:
            image["um_per_px"] = rec.um_per_px
        if rec.group is not None:
            image["group"] = rec.group
        if rec.is_stack:
            image["planes"] = rec.planes
            if rec.plane_files:
                image["plane_files"] = [rel_to_out(f) for f in project.plane_paths(rec)]
        per_plane: dict[int, list[dict]] = {}
        entries: list[dict] = []
        for a in project.annotations(rec.id):
            if a.status not in keep:
                continue
            x, y, w, h = a.box.xywh()
            entry = {
                "image_id": n,
                "category_id": cat_index[a.category_id],
                "bbox": [x, y, w, h],
                "area": _polygon_area(a.polygon) if a.polygon else w * h,
                "iscrowd": 0,
                "segmentation": [list(a.polygon)] if a.polygon else [],
            }
            # who decided and when (several reviewers, issue 30): read back by import_coco
            if a.author:
                entry["author"] = a.author
            entry["created"] = iso_time(a.created)
            entry["updated"] = iso_time(a.updated)
            if not reviewed_only:
                if a.score is not None:
                    entry["score"] = a.score
                entry["status"] = a.status.value
                entry["source"] = a.source.value
                if a.topk:
                    entry["topk"] = [list(t) for t in a.topk]
            if rec.is_stack:
                plane = a.plane if a.plane is not None else rec.planes // 2
                if a.plane is not None:
                    entry["plane"] = a.plane
                per_plane.setdefault(plane, []).append(entry)
            entries.append(entry)
        if planes_as_images and rec.is_stack and per_plane:
            # the stack's grains go with images of their planes instead (no grain listed twice)
            pending.append((rec, image, per_plane, entries))
            continue
        images.append(image)
        for e in entries:
            annotations.append(dict(e, id=len(annotations) + 1, image_id=image["id"]))
    skipped: list[dict] = []
    if pending:
        from pollenstudio.core.atomic import make_dir
        from pollenstudio.project.export_files import ExportManifest

        folder = make_dir(out_path.parent / f"{out_path.stem}_planes", "folder of plane images")
        manifest = ExportManifest(folder)
        manifest.check_free([_plane_name(image, rec, z) for rec, image, per_plane, _ in pending for z in per_plane],
                            f"COCO export {out_path.name}")
        manifest.clear_previous()
        try:
            for rec, image, per_plane, entries in pending:
                problem = _write_planes(project, rec, image, per_plane, folder, manifest, plane_images)
                if problem is not None:  # listed as the one stack image it is, with its grains
                    skipped.append({"path": rec.path, "reason": f"{problem}; its planes were not written as images "
                                                                "(the stack is listed as one image)"})
                    images.append(image)
                    for e in entries:
                        annotations.append(dict(e, id=len(annotations) + 1, image_id=image["id"]))
        finally:
            manifest.save()
    planes_written = len(plane_images)
    for image, entries in plane_images:
        image["id"] = max((im["id"] for im in images), default=0) + 1
        images.append(image)
        for e in entries:
            annotations.append(dict(e, id=len(annotations) + 1, image_id=image["id"]))
    doc = {
        "info": {"description": f"PollenStudio export of {project.name}",
                 "version": "reviewed" if reviewed_only else "all"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    text = json.dumps(doc)  # dumps uses the C encoder; dump(f) streams in pure Python (5x slower)
    write_text(out_path, text)  # unique temp file + rename: a reader never sees half a file
    return {"path": str(out_path), "images": len(images), "annotations": len(annotations),
            "categories": len(categories), "reviewed_only": reviewed_only, "plane_images": planes_written,
            "skipped": skipped}


def _plane_name(image: dict, rec, plane: int) -> str:
    return f"{Path(image['file_name']).stem.replace('.ome', '')}_{rec.id}_z{plane:02d}.png"


def _write_planes(project, rec, image: dict, per_plane: dict[int, list[dict]], folder: Path, manifest,
                  plane_images: list) -> str | None:
    """Write the planes of one stack that hold grains as PNG files in ``folder`` (atomic
    writes, listed in ``manifest``); queue their COCO images (``stack_of``, ``plane``) with
    copies of their grains. Returns None, or why the stack's planes were not written (its
    files are not the registered ones, or cannot be read): the caller then lists the stack
    as one image, and none of its plane files is left."""
    from pollenstudio.project.export_files import registered_problem, whole_slide_problem, write_png

    problem = registered_problem(project, rec) or whole_slide_problem(project, rec)
    if problem is not None:
        return problem
    queued, names = [], []
    try:
        with project.open_stack(rec) as st:
            for plane in sorted(per_plane):
                arr = st.plane(plane)
                name = _plane_name(image, rec, plane)
                write_png(arr, folder / name, f"plane {plane + 1} of {rec.path}")
                names.append(name)
                entry = {"file_name": f"{folder.name}/{name}", "width": image["width"], "height": image["height"],
                         "review_status": image["review_status"], "stack_of": image["file_name"], "plane": plane}
                for k in ("um_per_px", "group"):
                    if k in image:
                        entry[k] = image[k]
                queued.append((entry, [dict(e, plane=plane) for e in per_plane[plane]]))
    except (ImageReadError, OSError, ValueError, MemoryError) as exc:  # a WriteError (full disk) goes up
        for name in names:
            (folder / name).unlink(missing_ok=True)
        names.clear()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return f"{rec.path}: cannot read the stack ({reason})"
    finally:
        for name in names:  # a failed write (full disk) still lists them, so the next export clears them
            manifest.add(name)
    plane_images.extend(queued)
    return None


# ---------------------------------------------------------------------------- import
def find_coco_files(folder: str | os.PathLike) -> list[Path]:
    """COCO files in a dataset folder as other tools write them: ``*.json`` at the top level
    or Roboflow's ``<split>/_annotations.coco.json``; only files with an 'images' list count."""
    folder = Path(folder)
    cands = sorted(set(folder.glob("*.json")) | set(folder.glob("*/_annotations.coco.json")))
    out = []
    for c in cands:
        try:
            doc = json.loads(c.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("images"), list) and isinstance(doc.get("categories"), list):
            out.append(c)
    return out


def _load_json(path: Path):
    if not path.is_file():  # a folder, a FIFO or a device would block or fail to read
        raise ImportFormatError(f"{path}: not found or not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImportFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise ImportFormatError(f"{path.name}: not a text file (COCO annotations are JSON)") from None
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise ImportFormatError(f"{path.name}: JSON nested too deeply to be a COCO file") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise ImportFormatError(f"{path.name}: not a usable JSON file ({exc})") from None


def _fold_plane_images(images_in: list, root: Path) -> tuple[list, dict, dict]:
    """Planes exported as images of their own (``stack_of`` + ``plane``) become their stack
    again when the stack's file is found: returns the image list with one entry per such stack
    (taking the id of its first plane image, or of the stack's own entry), and per folded image
    id its stack's id and its plane."""
    stack_ids: dict[str, object] = {}
    for im in images_in:
        if isinstance(im, dict) and isinstance(im.get("file_name"), str) and not im.get("stack_of"):
            stack_ids.setdefault(os.path.normpath(im["file_name"].replace("\\", "/")), im.get("id"))
    out, fold, fold_plane = [], {}, {}
    for im in images_in:
        so = im.get("stack_of") if isinstance(im, dict) else None
        if not (isinstance(so, str) and so.strip() and _is_id(im.get("id")) and _is_id(im.get("plane"))
                and not bad_text(so) and _find_image(root, so) is not None):
            out.append(im)
            continue
        key = os.path.normpath(so.replace("\\", "/"))
        if key not in stack_ids:
            stack_ids[key] = im["id"]
            out.append({k: v for k, v in im.items() if k not in ("stack_of", "plane")} | {"file_name": so})
        fold[im["id"]] = stack_ids[key]
        fold_plane[im["id"]] = im["plane"]
    return out, fold, fold_plane


def _find_image(root: Path, file_name: str) -> Path | None:
    rel = Path(file_name.replace("\\", "/"))
    for cand in (root / rel, root / "images" / rel, root / rel.name, root / "images" / rel.name):
        try:
            if cand.is_file():
                return cand
        except (OSError, ValueError):
            continue
    return None


def _topk(v):
    """Our own --all export carries top-k taxa; anything else shaped differently is ignored."""
    if isinstance(v, list) and all(isinstance(t, list) and len(t) == 2 and _finite_number(t[1]) for t in v):
        return [(str(t[0]), float(t[1])) for t in v] or None
    return None


def _box_from_polygon(poly) -> list[float]:
    xs, ys = poly[0::2], poly[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _status_of(a: dict) -> str:
    """Annotation status on import: the ``status`` key of our own ``--all`` export, else a
    proposal when it has a score, else a human label."""
    status = a.get("status")
    if status not in {s.value for s in AnnotationStatus}:
        status = "proposed" if a.get("score") is not None else "added"
    return status


def _apply_category_extras(conn, created: list[str], name_to_id: dict[str, int], extra: dict[str, dict],
                           existing: dict) -> None:
    """Colour, hotkey and parent from the file for the taxa this import created (in the
    import's transaction; not undoable, like the rest of an import)."""
    taken = {c.hotkey for c in existing.values() if c.hotkey}
    for name in created:
        e = extra.get(name, {})
        cid = name_to_id[name]
        if "color" in e:
            conn.execute("UPDATE categories SET color = ? WHERE id = ?", (e["color"], cid))
        if e.get("hotkey") and e["hotkey"] not in taken:
            taken.add(e["hotkey"])
            conn.execute("UPDATE categories SET hotkey = ? WHERE id = ?", (e["hotkey"], cid))
        parent = name_to_id.get(e.get("parent", ""))
        if parent is not None and parent != cid:
            conn.execute("UPDATE categories SET parent_id = ? WHERE id = ?", (parent, cid))


def import_coco(project, json_path: str | os.PathLike, images_root: str | os.PathLike | None = None,
                progress=None) -> ImportSummary:
    """Import a COCO detection file into ``project`` (see module docstring for the rules)."""
    from pollenstudio.core.imageio import file_sha256
    from pollenstudio.core.stack import import_info

    json_path = Path(json_path)
    if images_root is not None:
        if str(images_root).strip() == "" or not Path(images_root).is_dir():
            raise ImportFormatError(f"images folder {str(images_root)!r} not found; nothing imported "
                                    "(--images names the folder the COCO file names are relative to)")
    root = Path(images_root) if images_root is not None else json_path.resolve().parent
    doc = _load_json(json_path)
    pr = _Problems(json_path.name)
    summary = ImportSummary()
    if not isinstance(doc, dict):
        raise ImportFormatError(f"{json_path.name}: a COCO file is a JSON object with 'images', 'annotations' "
                                "and 'categories'")
    for key in ("images", "categories"):
        if not isinstance(doc.get(key), list):
            raise ImportFormatError(f"{json_path.name}: '{key}' list is missing; is this a COCO detection file?")
    anns_in = doc.get("annotations", [])
    if not isinstance(anns_in, list):
        raise ImportFormatError(f"{json_path.name}: 'annotations' must be a list")

    # categories ---------------------------------------------------------------
    cats: dict[int, str] = {}
    cat_extra: dict[str, dict] = {}  # name -> color / hotkey / parent from our own exports
    supers = set()
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not _is_id(c.get("id")) or not isinstance(c.get("name"), str) \
                or not c["name"].strip():
            pr.add(f"category #{i} needs an integer 'id' and a text 'name'")
            continue
        if c["id"] in cats:
            pr.add(f"category id {c['id']} appears twice")
            continue
        name = c["name"].strip()
        why = bad_text(name) or ("is longer than 200 characters" if len(name) > MAX_NAME else None)
        if why:
            pr.add(f"category {c['id']}: the name {name[:40]!r} {why}")
            continue
        cats[c["id"]] = name
        if isinstance(c.get("supercategory"), str) and c["supercategory"]:
            supers.add(c["supercategory"])
        extra = {}
        color = c.get("color")
        if isinstance(color, str) and len(color) == 7 and color[0] == "#" and all(
                ch in "0123456789abcdefABCDEF" for ch in color[1:]):
            extra["color"] = color.lower()
        if isinstance(c.get("hotkey"), str) and c["hotkey"] in "123456789" and len(c["hotkey"]) == 1:
            extra["hotkey"] = c["hotkey"]
        if isinstance(c.get("parent"), str) and c["parent"].strip() and not bad_text(c["parent"].strip()):
            extra["parent"] = c["parent"].strip()
        cat_extra[cats[c["id"]]] = extra

    # images ---------------------------------------------------------------------
    images_in, fold, fold_plane = _fold_plane_images(doc["images"], root)
    imgs: dict[int, dict] = {}
    names_seen: dict[str, int] = {}
    for i, im in enumerate(images_in):
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            pr.add(f"image #{i} needs an integer 'id' and a 'file_name'")
            continue
        if im["id"] in imgs:
            pr.add(f"image id {im['id']} appears twice")
            continue
        fname = im["file_name"]
        if not fname.strip() or fname.endswith(("/", "\\")) or bad_text(fname):
            pr.add(f"image {im['id']}: file_name {fname[:60]!r} is not a file name")
            continue
        key = os.path.normpath(fname.replace("\\", "/"))
        if key in names_seen:
            pr.add(f"image {im['id']}: {fname!r} is listed twice (also image {names_seen[key]})")
            continue
        names_seen[key] = im["id"]
        w, h = im.get("width"), im.get("height")
        if any(v is not None and not (_finite_number(v) and 0 <= v <= MAX_SIDE) for v in (w, h)):
            pr.add(f"image {im['id']} ({fname}): width/height must be numbers from 1 to {MAX_SIDE}")
            continue
        um = im.get("um_per_px")
        if um is not None and not (_finite_number(um) and 0 < um <= 1e6):
            pr.add(f"image {im['id']} ({fname}): um_per_px must be a positive number")
            continue
        group = im.get("group")
        review = im.get("review_status")
        pfiles = im.get("plane_files")
        if pfiles is not None and not (isinstance(pfiles, list) and len(pfiles) >= 2 and all(
                isinstance(f, str) and f.strip() and not bad_text(f) for f in pfiles)):
            pr.add(f"image {im['id']} ({fname}): plane_files must be a list of two or more file names")
            continue
        if pfiles is not None:
            from pollenstudio.core.stack import MAX_PLANES

            if len(pfiles) > MAX_PLANES:
                pr.add(f"image {im['id']} ({fname}): {len(pfiles)} plane files; at most {MAX_PLANES} planes per stack "
                       "can be imported")
                continue
            twice = sorted({f for f in pfiles if pfiles.count(f) > 1}) if len(set(pfiles)) < len(pfiles) else []
            if twice:
                pr.add(f"image {im['id']} ({fname}): plane file {twice[0]!r} is listed twice in plane_files; a focal "
                       "stack lists each plane file once")
                continue
        imgs[im["id"]] = {"file_name": fname, "width": w, "height": h, "plane_files": pfiles,
                          "um_per_px": float(um) if um is not None else None,
                          "group": group if isinstance(group, str) and group and not bad_text(group) else None,
                          "review_status": review if review in ("new", "in_review", "reviewed") else None}

    # annotations ------------------------------------------------------------------
    seen_ann: set = set()
    parsed = []
    used_cats = set()
    for i, a in enumerate(anns_in):
        label = f"annotation {a.get('id', '#' + str(i))}" if isinstance(a, dict) else f"annotation #{i}"
        if not isinstance(a, dict):
            pr.add(f"{label} is not an object")
            continue
        if "id" in a:
            if not isinstance(a["id"], (int, str)) or isinstance(a["id"], bool):
                pr.add(f"annotation #{i}: 'id' must be a number or text")
                continue
            if a["id"] in seen_ann:
                pr.add(f"annotation id {a['id']} appears twice")
                continue
            seen_ann.add(a["id"])
        if _is_id(a.get("image_id")) and a["image_id"] in fold:  # a grain of a plane exported as its own image: back to its stack
            a = dict(a, image_id=fold[a["image_id"]], plane=a.get("plane", fold_plane[a["image_id"]]))
        if not _is_id(a.get("image_id")) or a["image_id"] not in imgs:
            pr.add(f"{label}: unknown image id {str(a.get('image_id'))[:40]}")
            continue
        if not _is_id(a.get("category_id")) or a["category_id"] not in cats:
            pr.add(f"{label}: unknown category id {str(a.get('category_id'))[:40]}")
            continue
        if a.get("iscrowd", 0):
            summary.skipped_crowd += 1
            continue
        poly = None
        seg = a.get("segmentation")
        if isinstance(seg, list) and seg:
            first = seg[0] if isinstance(seg[0], list) else seg
            if len(first) >= 6 and len(first) % 2 == 0 and all(_finite_number(v) for v in first):
                poly = [float(v) for v in first]
        bbox = a.get("bbox")
        if bbox is None and poly is not None:
            bbox = _box_from_polygon(poly)
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)):
            pr.add(f"{label}: 'bbox' must be four numbers [x, y, width, height]")
            continue
        x, y, w, h = (float(v) for v in bbox)
        if max(abs(x), abs(y), w, h) > MAX_COORD:
            pr.add(f"{label}: box {bbox} is far outside any image")
            continue
        if poly is not None and max(abs(v) for v in poly) > MAX_COORD:
            pr.add(f"{label}: polygon is far outside any image")
            continue
        if w <= 0 or h <= 0:
            pr.add(f"{label}: box has zero or negative size (width {w}, height {h})")
            continue
        score = a.get("score")
        if score is not None and not (_finite_number(score) and 0.0 <= score <= 1.0):
            pr.add(f"{label}: 'score' must be a number from 0 to 1, got {str(score)[:40]}")
            continue
        plane = a.get("plane")
        if plane is not None and (not _is_id(plane) or plane < 0):
            pr.add(f"{label}: 'plane' must be a focal plane number from 0, got {str(plane)[:40]}")
            continue
        used_cats.add(a["category_id"])
        parsed.append((a, Box(x, y, x + w, y + h), poly, label))

    # an unused category that is another's super-category (Roboflow's id 0) is a folder, not a
    # taxon, unless a category names it as its ``parent`` (a parent taxon in our own export)
    parents = {e["parent"] for e in cat_extra.values() if "parent" in e}
    for cid, name in list(cats.items()):
        if cid not in used_cats and name in supers and name not in parents:
            summary.categories_skipped.append(name)
            del cats[cid]
    pr.raise_if_any()

    # resolve image files (headers only) -------------------------------------------
    resolved: dict[int, dict] = {}
    files_seen: dict[str, int] = {}
    planes_seen: dict[str, int] = {}  # a plane file belongs to one stack
    total = len(imgs)
    for n, (iid, im) in enumerate(imgs.items()):
        if progress is not None:
            progress.check()
            progress.update(n, total, im["file_name"])
        path = _find_image(root, im["file_name"])
        entry = {"key": iid, "width": im["width"], "height": im["height"], "missing": 0,
                 "um_per_px": im["um_per_px"], "group": im["group"]}
        if path is None and (root / im["file_name"]).is_dir():
            pr.add(f"image {iid}: {im['file_name']!r} is a folder, not an image file")
            continue
        if path is not None:
            real = str(path.resolve())
            if real in files_seen:
                pr.add(f"image {iid}: {im['file_name']!r} is the same file as image {files_seen[real]}")
                continue
            files_seen[real] = iid
        if path is None:
            entry.update(path=project._rel(root / im["file_name"]), missing=1)
            if im["plane_files"]:  # a stack whose files are elsewhere: still a stack (relink finds it whole)
                entry.update(planes=len(im["plane_files"]),
                             plane_files=[project._rel(root / f.replace("\\", "/")) for f in im["plane_files"]])
            summary.missing_files.append(im["file_name"])
            if not im["width"] or not im["height"]:
                pr.add(f"image {iid} ({im['file_name']}): file not found and no width/height given")
                continue
        else:
            planes_paths = None
            try:
                if im["plane_files"]:
                    from pollenstudio.core.stack import stack_hash

                    planes_paths = [_find_image(root, f) for f in im["plane_files"]]
                    lost = [f for f, q in zip(im["plane_files"], planes_paths) if q is None]
                    if lost:
                        pr.add(f"image {iid} ({im['file_name']}): plane file {lost[0]!r} not found")
                        continue
                    other = next((planes_seen[str(q.resolve())] for q in planes_paths
                                  if planes_seen.get(str(q.resolve()), iid) != iid), None)
                    if other is not None:
                        pr.add(f"image {iid} ({im['file_name']}): its plane files are also planes of image {other}")
                        continue
                    planes_seen.update({str(q.resolve()): iid for q in planes_paths})
                    info = import_info(planes_paths[0], planes_paths)  # the rules of every import path
                else:
                    info = import_info(path)
            except ImageReadError as exc:
                pr.add(f"image {iid}: {exc}")
                continue
            if im["width"] and im["height"] and (int(im["width"]), int(im["height"])) != (info.width, info.height):
                summary.warnings.append(f"{im['file_name']}: the file is {info.width}x{info.height}, the JSON says "
                                        f"{im['width']}x{im['height']}; using the file's size")
            entry.update(path=project._rel(path), width=info.width, height=info.height, bit_depth=info.bit_depth,
                         channels=info.channels, sha256=file_sha256(path), size_bytes=path.stat().st_size,
                         planes=info.planes)
            if planes_paths:
                entry.update(plane_files=[project._rel(q) for q in planes_paths], sha256=stack_hash(planes_paths))
        entry["width"], entry["height"] = int(entry["width"] or 0), int(entry["height"] or 0)
        resolved[iid] = entry
    if images_root is not None and resolved and all(e["missing"] for e in resolved.values()):
        raise ImportFormatError(f"none of the {len(resolved)} image files named in {json_path.name} is in "
                                f"{images_root}; nothing imported (check --images)")

    # bounds (1 px tolerance, then clip) -------------------------------------------------
    boxes = []
    for a, box, poly, label in parsed:
        im = resolved.get(a["image_id"])
        if im is None:
            continue
        planes = int(im.get("planes") or 1)
        if a.get("plane") is not None and planes > 1 and a["plane"] >= planes:
            pr.add(f"{label}: plane {a['plane']} does not exist; {im['path']} has {planes} planes (0-{planes - 1})")
            continue
        W, H = im["width"], im["height"]
        if W and H:
            if box.x1 < -OVERSHOOT_PX or box.y1 < -OVERSHOOT_PX or box.x2 > W + OVERSHOOT_PX or box.y2 > H + OVERSHOOT_PX:
                pr.add(f"{label}: box {list(box.xywh())} lies outside image {im['path']} ({W}x{H})")
                continue
            box = box.clipped(W, H)
            if not box.is_valid():
                pr.add(f"{label}: box has no area inside the image")
                continue
            if poly is not None:
                xs, ys = poly[0::2], poly[1::2]
                if min(xs) < -OVERSHOOT_PX or min(ys) < -OVERSHOOT_PX or max(xs) > W + OVERSHOOT_PX \
                        or max(ys) > H + OVERSHOOT_PX:
                    pr.add(f"{label}: polygon lies outside image {im['path']} ({W}x{H})")
                    continue
                poly = [min(max(v, 0.0), float(W if i % 2 == 0 else H)) for i, v in enumerate(poly)]
        boxes.append((a, box, poly))
    pr.raise_if_any()

    # the review mark a new image needs to keep the status the file gives it (see the docstring)
    decided: set[int] = set()
    proposed: set[int] = set()
    for a, _box, _poly in boxes:
        (proposed if _status_of(a) == "proposed" else decided).add(a["image_id"])
    for iid, entry in resolved.items():
        review = imgs[iid]["review_status"]
        if review == "reviewed" and iid not in decided:
            entry["mark"] = "reviewed"
        elif review == "in_review" and iid not in proposed:
            entry["mark"] = "open"

    # write: one transaction ---------------------------------------------------------------
    with project.importing() as conn:
        existing = {c.name: c for c in project.categories()}
        name_to_id = project.ensure_categories(sorted(set(cats.values()), key=lambda s: list(cats.values()).index(s)))
        summary.categories_added = [n for n in name_to_id if n not in existing]
        _apply_category_extras(conn, summary.categories_added, name_to_id, cat_extra, existing)
        new_images, key_to_image = [], {}
        by_sha: dict[str, int] = {}
        alias: dict[int, int] = {}
        missing_named = None
        for iid, entry in resolved.items():
            sha = entry.get("sha256")
            old = project.find_image(path=project.resolve_path(entry["path"]), sha256=sha)
            if old is None and not entry["missing"]:
                # a file the project lost (moved, or registered as missing by an import
                # with the wrong --images): adopt it instead of adding the image twice
                if missing_named is None:
                    missing_named = project.missing_by_name()
                # never a focal stack by name (fields with planes named alike would be mixed up):
                # a stack is adopted by its content (find_image above) only
                cands = [r for r in missing_named.get(Path(entry["path"]).name.lower(), [])
                         if (r.width, r.height) in ((entry["width"], entry["height"]), (0, 0))
                         and (r.sha256 is None or r.sha256 == sha)
                         and not r.plane_files and not entry.get("plane_files")
                         and (r.planes or 1) == int(entry.get("planes") or 1)]
                if cands:
                    old = cands[0]
                    missing_named[Path(entry["path"]).name.lower()].remove(old)
            if old is not None:
                lost = not project.image_path(old).is_file() or any(
                    not f.is_file() for f in project.plane_paths(old) or [])
                moved_stack = bool(old.plane_files) == bool(entry.get("plane_files")) and (old.planes or 1) == int(
                    entry.get("planes") or 1)
                if not entry["missing"] and lost and moved_stack:
                    project._relocate(old.id, project.resolve_path(entry["path"]), sha, entry.get("size_bytes"),
                                      entry["width"], entry["height"], entry.get("bit_depth", 8),
                                      entry.get("channels", 3),
                                      plane_files=[project.resolve_path(f) for f in entry.get("plane_files") or []])
                    summary.images_relinked += 1
                key_to_image[iid] = old.id
                summary.images_reused += 1
            elif sha and sha in by_sha:  # the same picture under two names in this file
                alias[iid] = by_sha[sha]
                summary.images_reused += 1
            else:
                if sha:
                    by_sha[sha] = iid
                new_images.append(entry)
        img_ids, _ = project.bulk_insert(new_images, [])
        for entry, new_id in zip(new_images, img_ids):
            key_to_image[entry["key"]] = new_id
        for iid, first in alias.items():
            key_to_image[iid] = key_to_image[first]
        summary.images_added = len(new_images)
        have = {}
        rows = []
        for a, box, poly in boxes:
            image_id = key_to_image[a["image_id"]]
            if image_id not in have:
                have[image_id] = {(x.box.xyxy(), x.category_id) for x in project.annotations(image_id)}
            cid = name_to_id[cats[a["category_id"]]]
            sig = (box.xyxy(), cid)
            if sig in have[image_id]:
                summary.annotations_duplicate += 1
                continue
            have[image_id].add(sig)
            score = a.get("score")
            status = _status_of(a)
            source = a.get("source")
            if source not in {s.value for s in Source}:
                source = "model" if score is not None and status != "added" else "human"
            rows.append({
                "image_id": image_id, "box": box, "polygon": poly, "category_id": cid,
                "score": float(score) if score is not None else (0.0 if status == "proposed" else None),
                "status": status, "source": source,
                "topk": _topk(a.get("topk")),
                "author": a.get("author") if isinstance(a.get("author"), str) and not bad_text(a["author"]) else None,
                "created": read_time(a.get("created")),
                "updated": read_time(a.get("updated")),
                "plane": a.get("plane") if a.get("plane") is not None and project.image(image_id).planes > 1 else None,
            })
        project.bulk_insert([], rows)
        summary.annotations_added = len(rows)
    if progress is not None:
        progress.update(total, total, "done")
    return summary
