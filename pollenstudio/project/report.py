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

import csv
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


def write_counts_csv(project, out_path: str | os.PathLike, reviewed_only: bool = True) -> dict:
    from pollenstudio.core.atomic import atomic_write, check_output_path

    out_path = check_output_path(out_path, "CSV report")
    rows = count_rows(project, reviewed_only)
    # unique temp file + rename: a full disk leaves the previous report as it was
    with atomic_write(out_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    taxa = [r for r in rows if r["scope"] == "taxon"]
    return {"path": str(out_path), "images": len({r["image"] for r in rows if r["scope"] == "image"}),
            "taxa": len(taxa), "grains": sum(r["count"] for r in taxa), "reviewed_only": reviewed_only}
