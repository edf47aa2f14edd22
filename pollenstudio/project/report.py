"""CSV count report: grains per image and per taxon.

One CSV, one row per (image, taxon) with ``scope = image``, then one row per taxon over the
whole project with ``scope = taxon``. Columns::

    scope, image, status, taxon, count, percent, mean_size_um, min_size_um, max_size_um,
    mean_long_um, mean_short_um


``percent`` is the share of the image's grains (image rows) or of all grains (taxon rows).
A grain's size is the mean of its box width and height - close to the diameter of a round
grain - times the image's micrometres per pixel; size columns are empty for uncalibrated
images (project rows use the calibrated images only). ``mean_long_um`` / ``mean_short_um``
are the means of each box's longer and shorter side in µm (polar / equatorial axes of a
grain lying in the plane). The per-sample count report is ``project.pollen_report``.
Reviewed-only (default) counts the grains of reviewed images; ``reviewed_only=False`` also
counts undecided proposals on every image (a model count, not a checked one).
"""

from __future__ import annotations

import os
from collections import defaultdict

from pollenstudio.core.types import OBJECT_STATUSES, AnnotationStatus

COLUMNS = ["scope", "image", "status", "taxon", "count", "percent", "mean_size_um", "min_size_um", "max_size_um",
           "mean_long_um", "mean_short_um"]


def _stats(sizes: list) -> tuple:
    """sizes: (mean of sides, long side, short side) µm per grain."""
    if not sizes:
        return ("", "", "", "", "")
    d = [s[0] for s in sizes]
    n = len(sizes)
    return (round(sum(d) / n, 3), round(min(d), 3), round(max(d), 3),
            round(sum(s[1] for s in sizes) / n, 3), round(sum(s[2] for s in sizes) / n, 3))


def count_rows(project, reviewed_only: bool = True) -> list[dict]:
    names = {c.id: c.name for c in project.categories()}
    # grains; with every image, the undecided proposals count too (rejected never do)
    keep = OBJECT_STATUSES if reviewed_only else OBJECT_STATUSES | {AnnotationStatus.PROPOSED}
    recs = project.images(status="reviewed") if reviewed_only else project.images()
    rows = []
    total_count: dict[int, int] = defaultdict(int)
    total_sizes: dict[int, list] = defaultdict(list)
    for rec in recs:
        per: dict[int, list] = defaultdict(list)
        for a in project.annotations(rec.id):
            if a.status in keep:
                w, h = a.box.width, a.box.height
                size = ((w + h) / 2.0 * rec.um_per_px, max(w, h) * rec.um_per_px, min(w, h) * rec.um_per_px) \
                    if rec.um_per_px else None
                per[a.category_id].append(size)
        n_img = sum(len(v) for v in per.values())
        for cid in sorted(per, key=lambda c: names[c]):
            sizes = [s for s in per[cid] if s is not None]
            total_count[cid] += len(per[cid])
            total_sizes[cid].extend(sizes)
            rows.append(dict(zip(COLUMNS, ("image", rec.path, rec.status.value, names[cid], len(per[cid]),
                                           round(100.0 * len(per[cid]) / n_img, 2), *_stats(sizes)))))
    grand = sum(total_count.values())
    for cid in sorted(total_count, key=lambda c: names[c]):
        rows.append(dict(zip(COLUMNS, ("taxon", "", "", names[cid], total_count[cid],
                                       round(100.0 * total_count[cid] / grand, 2), *_stats(total_sizes[cid])))))
    return rows


def _write_csv(out_path, what: str, columns, rows_of) -> tuple:
    """Check ``out_path``, build the rows (``rows_of()``) and write them with a header; a
    unique temp file + rename, so a full disk leaves the previous file as it was."""
    from pollenstudio.core.atomic import atomic_write, check_output_path
    from pollenstudio.core.csvsafe import write_rows

    out_path = check_output_path(out_path, what)
    rows = rows_of()
    with atomic_write(out_path, "w", newline="", encoding="utf-8") as f:
        write_rows(f, columns, rows)  # a name like "=HYPERLINK(..)" is written as text, not a formula
    return out_path, rows


def write_counts_csv(project, out_path: str | os.PathLike, reviewed_only: bool = True) -> dict:
    out_path, rows = _write_csv(out_path, "CSV report", COLUMNS, lambda: count_rows(project, reviewed_only))
    taxa = [r for r in rows if r["scope"] == "taxon"]
    return {"path": str(out_path), "images": len({r["image"] for r in rows if r["scope"] == "image"}),
            "taxa": len(taxa), "grains": sum(r["count"] for r in taxa), "reviewed_only": reviewed_only}


# ------------------------------------------------------------------ one row per grain (issue 20)
GRAIN_COLUMNS = ["image", "sample", "annotation_id", "taxon", "status", "source", "score",
                 "x1", "y1", "x2", "y2", "um_per_px", "box_long_px", "box_short_px", "box_long_um", "box_short_um",
                 "outline_points", "major_px", "minor_px", "area_px2", "major_um", "minor_um", "area_um2",
                 "pe_ratio"]


def grain_rows(project, reviewed_only: bool = True) -> list[dict]:
    """One row per grain: its box, the box's long and short sides, and when it has an
    outline (``Annotation.polygon``: measured in the GUI or by ``report --outlines``, or
    imported) the outline's ellipse axes, area and long/short ratio (P/E in equatorial
    view), measured by ``core.outline``; µm columns when the image has a scale, else empty.
    Taxa are written as stored (the grain model's class stays "pollen")."""
    from pollenstudio.core.outline import outline_size

    names = {c.id: c.name for c in project.categories()}
    keep = OBJECT_STATUSES if reviewed_only else OBJECT_STATUSES | {AnnotationStatus.PROPOSED}
    recs = project.images(status="reviewed") if reviewed_only else project.images()
    r2 = lambda v: round(v, 2)  # noqa: E731
    rows = []
    for rec in recs:
        u = rec.um_per_px
        for a in project.annotations(rec.id):
            if a.status not in keep:
                continue
            w, h = a.box.width, a.box.height
            long_, short = max(w, h), min(w, h)
            row = {"image": rec.path, "sample": rec.group or "", "annotation_id": a.id,
                   "taxon": names.get(a.category_id, f"taxon {a.category_id}"), "status": a.status.value,
                   "source": a.source.value, "score": "" if a.score is None else round(a.score, 4),
                   "x1": r2(a.box.x1), "y1": r2(a.box.y1), "x2": r2(a.box.x2), "y2": r2(a.box.y2),
                   "um_per_px": u or "", "box_long_px": r2(long_), "box_short_px": r2(short),
                   "box_long_um": r2(long_ * u) if u else "", "box_short_um": r2(short * u) if u else ""}
            shape = outline_size(a.polygon) if a.polygon else None
            if shape is not None:
                row.update(outline_points=len(a.polygon) // 2, major_px=r2(shape.major_px),
                           minor_px=r2(shape.minor_px), area_px2=r2(shape.area_px), pe_ratio=round(shape.ratio, 3))
                if u:
                    ma, mi, ar = shape.in_um(u)
                    row.update(major_um=r2(ma), minor_um=r2(mi), area_um2=r2(ar))
            rows.append({k: row.get(k, "") for k in GRAIN_COLUMNS})
    return rows


def write_grains_csv(project, out_path: str | os.PathLike, reviewed_only: bool = True) -> dict:
    """The per-grain CSV (``grain_rows``), written atomically."""
    out_path, rows = _write_csv(out_path, "per-grain CSV", GRAIN_COLUMNS, lambda: grain_rows(project, reviewed_only))
    return {"path": str(out_path), "grains": len(rows), "outlines": sum(1 for r in rows if r["outline_points"] != ""),
            "images": len({r["image"] for r in rows}), "reviewed_only": reviewed_only}
