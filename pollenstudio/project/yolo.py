"""YOLO txt export and import.

Layout (what detector training tools expect)::

    DATASET/classes.txt            one taxon name per line; line number = class index
    DATASET/images/<name>.<ext>    copies of the images (never links: see ``export_files``)
    DATASET/labels/<name>.txt      one line per grain: "class cx cy w h", normalised to [0, 1]

Export writes reviewed grains only by default; ``reviewed_only=False`` writes every image
and every non-rejected annotation, with the score as a sixth column for proposals.

Import accepts that layout, including sub-folders (``images/train/x.png`` pairs with
``labels/train/x.txt``), or images and labels side by side in one folder; ``obj.names`` is
accepted for ``classes.txt``. Lines may be boxes ("c cx cy w h"), boxes with a score
(imported as proposals) or polygons ("c x1 y1 x2 y2 ..."; the polygon is kept and its
bounding box used). Coordinates may overshoot [0, 1] by 0.001 (rounding) and are clipped.
An image with an empty label file is marked reviewed (the file says: no grains); an image
without a label file is left new. Everything is validated before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.errors import ImageReadError, ImportFormatError
from pollenstudio.core.types import OBJECT_STATUSES, AnnotationStatus, Box
from pollenstudio.project.coco import MAX_NAME, ImportCounts, _Problems, bad_text

TOLERANCE = 1e-3
CLASS_FILES = ("classes.txt", "obj.names")


@dataclass
class YoloImportSummary(ImportCounts):
    unreadable_images: list[str] = field(default_factory=list)
    orphan_labels: list[str] = field(default_factory=list)  # label files without an image


def is_yolo_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / n).is_file() for n in CLASS_FILES)


# ---------------------------------------------------------------------------- export
def export_yolo(project, out_dir: str | os.PathLike, reviewed_only: bool = True, copy_images: bool = True,
                stack_view: str = "edf", progress=None) -> dict:
    """Write a YOLO dataset folder; returns a summary. Every file is written to a unique
    temporary name and renamed into place; the files of an earlier export into the same
    folder (and only those) are removed first. A focal stack is written as one PNG image:
    its extended-depth-of-field composite (``stack_view="edf"``) or its sharpest plane
    (``"best"``); YOLO has no planes.

    ``copy_images``: images are **copied**, never linked (a trainer that resizes the
    exported images in place must not rewrite the originals), and only when the file is the
    picture the project registered (``export_files``). An image that is missing, not the
    registered picture or unreadable (a damaged stack) is skipped with its label file, so
    every label has its image; the summary lists it under ``skipped`` (path, reason) and
    missing files under ``missing_images``. Without ``copy_images`` only labels are written,
    one per image."""
    if stack_view not in ("edf", "best"):
        raise ValueError(f"stack_view must be 'edf' or 'best', got {stack_view!r}")
    from pollenstudio.core.atomic import WriteError, make_dir, os_reason, write_text
    from pollenstudio.project.export_files import ExportManifest, copy_registered, read_view, write_png

    cats = project.categories()
    for c in cats:  # one name per line: a line break inside a name would shift every index
        if any(ch in c.name for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            raise WriteError(f"taxon {c.name!r} has a line break in its name; rename it before a YOLO export "
                             "(classes.txt holds one name per line)")
    out = make_dir(out_dir, "YOLO export folder")
    manifest = ExportManifest(out)
    try:
        manifest.clear_previous()
        (out / "labels").mkdir(parents=True, exist_ok=True)
        if copy_images:
            (out / "images").mkdir(exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot write into {out}: {os_reason(exc)}") from None

    def put(rel: str, text: str) -> None:
        write_text(out / rel, text)
        manifest.add(rel)

    index = {c.id: i for i, c in enumerate(cats)}
    if reviewed_only:
        recs = project.images(status="reviewed")
        keep = OBJECT_STATUSES
    else:
        recs = project.images()
        keep = {s for s in AnnotationStatus if s is not AnnotationStatus.REJECTED}
    used_stems: set[str] = set()
    n_img, n_ann, missing, skipped = 0, 0, [], []
    try:
        put("classes.txt", "".join(c.name + "\n" for c in cats))
        for k, rec in enumerate(recs):
            if progress is not None:  # copying (and hashing) every image takes a while on big projects
                progress.check()
                progress.update(k, len(recs), rec.path)
            src = project.image_path(rec)
            stem = Path(rec.path).stem
            if stem in used_stems:  # same name in two folders
                stem = f"{rec.id}_{stem}"
            used_stems.add(stem)
            if copy_images:
                if rec.is_stack:
                    rel = f"images/{stem}.png"
                    arr, problem = read_view(project, rec, stack_view)
                    if problem is None:
                        write_png(arr, out / rel, f"the {stack_view} view of {rec.path}")
                else:
                    rel = f"images/{stem}{src.suffix.lower()}"
                    problem = copy_registered(project, rec, out / rel)
                if problem is not None:  # neither image nor label: every label has its image
                    if not src.is_file():
                        missing.append(rec.path)
                    skipped.append({"path": rec.path, "reason": problem})
                    continue
                manifest.add(rel)
            lines = []
            W, H = float(rec.width), float(rec.height)
            for a in project.annotations(rec.id):
                if a.status not in keep or not W or not H:
                    continue
                cx, cy = a.box.center
                line = f"{index[a.category_id]} {cx / W:.6f} {cy / H:.6f} {a.box.width / W:.6f} {a.box.height / H:.6f}"
                if not reviewed_only and a.status is AnnotationStatus.PROPOSED and a.score is not None:
                    line += f" {a.score:.6f}"
                lines.append(line + "\n")
            put(f"labels/{stem}.txt", "".join(lines))
            n_img += 1
            n_ann += len(lines)
    finally:
        manifest.save()  # even a failed export lists what it wrote, so the next one clears it
    return {"path": str(out), "images": n_img, "annotations": n_ann, "categories": len(cats),
            "missing_images": missing, "skipped": skipped, "reviewed_only": reviewed_only}


# ---------------------------------------------------------------------------- import
def _read_classes(folder: Path) -> list[str]:
    for name in CLASS_FILES:
        for cand in (folder / name, folder.parent / name):
            if cand.is_file():
                try:
                    text = cand.read_text(encoding="utf-8-sig")
                except UnicodeDecodeError:
                    raise ImportFormatError(f"{cand}: not UTF-8 text; save the class list as UTF-8") from None
                except OSError as exc:
                    raise ImportFormatError(f"{cand}: cannot read ({exc.strerror or exc})") from None
                names = [ln.strip() for ln in text.split("\n")]
                names = [n for n in names if n]
                if not names:
                    raise ImportFormatError(f"{cand}: the class list is empty")
                if len(set(names)) != len(names):
                    raise ImportFormatError(f"{cand}: a class name appears twice")
                for n in names:
                    why = bad_text(n) or ("is longer than 200 characters" if len(n) > MAX_NAME else None)
                    if why:
                        raise ImportFormatError(f"{cand}: the class name {n[:40]!r} {why}")
                return names
    raise ImportFormatError(f"{folder}: no classes.txt (one taxon name per line) found; it is needed to read YOLO labels")


def _parse_label(path: Path, n_classes: int, pr: _Problems):
    """-> list of (class, box_norm (x1,y1,x2,y2), polygon_norm | None, score | None)."""
    out = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        pr.add(f"{path.name}: cannot read ({exc})")
        return out
    for ln, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path.name} line {ln}"
        try:
            cls = int(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            pr.add(f"{where}: expected 'class cx cy w h' numbers, got {line.strip()!r}")
            continue
        if not 0 <= cls < n_classes:
            pr.add(f"{where}: class {cls} is not in classes.txt ({n_classes} classes)")
            continue
        if any(v != v or v in (float("inf"), float("-inf")) for v in vals):
            pr.add(f"{where}: not a finite number")
            continue
        score, poly = None, None
        if len(vals) in (4, 5):
            cx, cy, w, h = vals[:4]
            score = vals[4] if len(vals) == 5 else None
            if score is not None and not 0.0 <= score <= 1.0:
                pr.add(f"{where}: the score (sixth column) must be from 0 to 1, got {score:g}")
                continue
            if w <= 0 or h <= 0:
                pr.add(f"{where}: box has zero or negative size")
                continue
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            poly = vals
            xs, ys = vals[0::2], vals[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
            if box[2] <= box[0] or box[3] <= box[1]:
                pr.add(f"{where}: polygon has no area")
                continue
        else:
            pr.add(f"{where}: expected 'class cx cy w h' (optionally a score) or a polygon, got {len(vals)} numbers")
            continue
        if min(box) < -TOLERANCE or max(box) > 1 + TOLERANCE:
            pr.add(f"{where}: coordinates outside the image (YOLO values are fractions 0..1)")
            continue
        out.append((cls, box, poly, score))
    return out


def import_yolo(project, folder: str | os.PathLike, progress=None) -> YoloImportSummary:
    """Import a YOLO dataset folder into ``project`` (one transaction; see module docstring)."""
    from pollenstudio.core.imageio import file_sha256, is_image_file
    from pollenstudio.core.stack import import_info as image_info  # the rules of every import path

    folder = Path(folder)
    if not folder.is_dir():
        raise ImportFormatError(f"{folder}: not a folder")
    names = _read_classes(folder)
    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    lab_dir = folder / "labels" if (folder / "labels").is_dir() else folder
    # regular files only: a FIFO or device named like a label would block the import
    images = sorted(p for p in img_dir.rglob("*") if p.is_file() and is_image_file(p))
    labels = {p.relative_to(lab_dir).with_suffix("").as_posix(): p for p in lab_dir.rglob("*.txt")
              if p.name not in CLASS_FILES and p.is_file()}
    by_stem: dict[str, list[Path]] = {}
    for p in labels.values():
        by_stem.setdefault(p.stem, []).append(p)
    pr = _Problems(folder.name)
    summary = YoloImportSummary()
    entries = []
    used_labels = set()
    for n, img in enumerate(images):
        if progress is not None:
            progress.check()
            progress.update(n, len(images), img.name)
        key = img.relative_to(img_dir).with_suffix("").as_posix()
        lab = labels.get(key)
        if lab is None and len(by_stem.get(img.stem, [])) == 1:
            lab = by_stem[img.stem][0]
        try:
            info = image_info(img)
        except ImageReadError:
            summary.unreadable_images.append(str(img))
            continue
        rows = _parse_label(lab, len(names), pr) if lab is not None else []
        if lab is not None:
            used_labels.add(lab)
        entries.append((img, info, lab, rows))
    summary.orphan_labels = sorted(str(p) for p in labels.values() if p not in used_labels)
    pr.raise_if_any()

    with project.importing():
        before = {c.name for c in project.categories()}
        name_to_id = project.ensure_categories(names)
        summary.categories_added = [n for n in names if n not in before]
        image_ids: dict[int, int] = {}
        new_images = []
        for k, (img, info, lab, rows) in enumerate(entries):
            sha = file_sha256(img)
            empty_label = lab is not None and not rows
            old = project.find_image(path=img, sha256=sha)
            if old is not None:
                image_ids[k] = old.id
                summary.images_reused += 1
                if not project.image_path(old).is_file():  # the project lost it: this is where it went
                    project._relocate(old.id, img, sha, img.stat().st_size, info.width, info.height,
                                      info.bit_depth, info.channels)
                if empty_label and old.status.value == "new":
                    project._conn.execute("UPDATE images SET mark = 'reviewed' WHERE id = ?", (old.id,))
                    project._refresh_status([old.id])
            else:
                new_images.append({
                    "key": k, "path": project._rel(img), "sha256": sha, "width": info.width, "height": info.height,
                    "bit_depth": info.bit_depth, "channels": info.channels, "size_bytes": img.stat().st_size,
                    "mark": "reviewed" if empty_label else None, "planes": info.planes,
                })
        ids, _ = project.bulk_insert(new_images, [])
        image_ids.update({e["key"]: i for e, i in zip(new_images, ids)})
        summary.images_added = len(new_images)
        ann_rows = []
        for k, (img, info, lab, rows) in enumerate(entries):
            image_id = image_ids[k]
            have = {(a.box.xyxy(), a.category_id) for a in project.annotations(image_id)}
            W, H = info.width, info.height
            for cls, (x1, y1, x2, y2), poly, score in rows:
                box = Box(x1 * W, y1 * H, x2 * W, y2 * H).clipped(W, H)
                cid = name_to_id[names[cls]]
                if (box.xyxy(), cid) in have:
                    summary.annotations_duplicate += 1
                    continue
                have.add((box.xyxy(), cid))
                ann_rows.append({
                    "image_id": image_id, "box": box, "category_id": cid,
                    "polygon": [v * (W if i % 2 == 0 else H) for i, v in enumerate(poly)] if poly else None,
                    "score": score, "status": "proposed" if score is not None else "added",
                    "source": "model" if score is not None else "human",
                })
        project.bulk_insert([], ann_rows)
        summary.annotations_added = len(ann_rows)
    if progress is not None:
        progress.update(len(images), len(images), "done")
    return summary
