"""Project store at scale: 10,000 images and 300,000 annotations.

Prints creation time and the latency of what the review UI does all the time (median and
worst of repeated calls). No image files are needed: rows go in through the bulk path the
importers use.

    python bench/store_scale.py [--images 10000] [--per-image 30] [--keep DIR]
    python bench/store_scale.py --url postgresql://USER@HOST/DB   # the same on a server project (issue 30)
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pollenstudio.core.types import Box, Detection
from pollenstudio.project import Project


def timed(fn, repeat: int = 200):
    ts = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts), max(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--per-image", type=int, default=30)
    ap.add_argument("--keep", help="build the project here and keep it")
    ap.add_argument("--url", help="build it on this PostgreSQL server (postgresql://USER@HOST/DB) instead of SQLite; "
                                  "a fresh project, dropped afterwards unless --keep")
    args = ap.parse_args()
    rng = random.Random(0)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pollen_bench_"))
    folder = base / "bench_project"
    if folder.exists():
        shutil.rmtree(folder)
    statuses = ["proposed"] * 6 + ["accepted", "edited", "rejected", "added"]

    t0 = time.perf_counter()
    target = folder
    if args.url:
        target = f"{args.url}{'&' if '?' in args.url else '?'}project=bench_{int(time.time())}"
    p = Project.create(target, image_root=folder) if args.url else Project.create(folder)
    cats = p.ensure_categories([f"Taxon {i:02d}" for i in range(20)])
    cat_ids = list(cats.values())
    images = [{"key": i, "path": f"slides/s{i // 100:03d}/img_{i:05d}.tif", "width": 2048, "height": 1536,
               "sha256": f"{i:064x}", "group": f"s{i // 100:03d}"} for i in range(args.images)]
    anns = []
    for i in range(args.images):
        for _ in range(args.per_image):
            x, y = rng.uniform(0, 1900), rng.uniform(0, 1400)
            st = rng.choice(statuses)
            model = st != "added"
            anns.append({"image_key": i, "box": Box(x, y, x + rng.uniform(20, 120), y + rng.uniform(20, 120)),
                         "category_id": rng.choice(cat_ids), "status": st, "source": "model" if model else "human",
                         "score": rng.random() if model else None})
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    with p.importing():
        p.bulk_insert(images, anns)
    t_insert = time.perf_counter() - t1
    print(f"created {p.image_count():,} images / {p.annotation_count():,} annotations: "
          f"{t_insert:.2f} s insert (+{t_gen:.2f} s generating rows in Python)")
    if args.url:
        db_mb = float(p._q("SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON "
                     "n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'").fetchone()[0]) / 1e6
    else:
        db_mb = sum(f.stat().st_size for f in folder.glob("project.pollen*")) / 1e6
    print(f"database size: {db_mb:.0f} MB")

    n = args.images
    ids = [rng.randint(1, n) for _ in range(200)]
    queue = p.review_queue(limit=100)
    mid = p.review_queue(limit=1, offset=p.undecided_count() // 2)[0].id
    rows = [
        ("annotations(one image)", lambda i: p.annotations(ids[i])),
        ("next_undecided() from start", lambda i: p.next_undecided()),
        ("next_undecided(after a mid-queue id)", lambda i: p.next_undecided(after_annotation_id=mid)),
        ("next_undecided(min_score=0.5)", lambda i: p.next_undecided(min_score=0.5)),
        ("review_queue first page (100)", lambda i: p.review_queue(limit=100)),
        ("review_queue order=margin (100)", lambda i: p.review_queue(limit=100, order="margin")),
        ("images page (offset 5000, 100 rows)", lambda i: p.images(offset=n // 2, limit=100)),
        ("image_counts for a page of 100 ids", lambda i: p.image_counts(range(1 + (i * 37) % (n - 100), 101 + (i * 37) % (n - 100)))),
        ("images(status=in_review) page", lambda i: p.images(limit=100, status="in_review")),
    ]
    print(f"{'operation':42s} {'median ms':>10s} {'max ms':>8s}")
    for name, fn in rows:
        med, worst = timed(fn)
        print(f"{name:42s} {med:10.2f} {worst:8.2f}")
    for name, fn, rep in [
        ("image_counts for ALL images (grouped)", lambda i: p.image_counts(), 5),
        ("status_counts", lambda i: p.status_counts(), 20),
        ("accept (edit + commit + status)", lambda i: p.accept(queue[i].id), 100),
        ("undo", lambda i: p.undo(), 100),
        ("write_proposals (30 detections)", lambda i: p.write_proposals(
            ids[i], [Detection(Box(k * 60, 10, k * 60 + 40, 50), 0, "Taxon 01", 0.5) for k in range(30)]), 50),
    ]:
        med, worst = timed(fn, rep)
        print(f"{name:42s} {med:10.2f} {worst:8.2f}")
    # "review this next": the image list reads every unreviewed image's value when it sorts
    from pollenstudio.engine.review_order import project_review_values

    med, worst = timed(lambda i: project_review_values(p), 3)
    print(f"{'review values, no stored doubt (imported)':42s} {med:10.2f} {worst:8.2f}")
    with p._tx() as conn:  # as detection stores them: one doubt per proposal
        conn.execute("UPDATE annotations SET doubt = 1.0 - ABS(score - 0.5) WHERE status = 'proposed'")
    med, worst = timed(lambda i: project_review_values(p), 3)
    print(f"{'review values, doubts stored by detection':42s} {med:10.2f} {worst:8.2f}")
    from pollenstudio.project.coco import export_coco
    from pollenstudio.project.report import write_counts_csv

    t3 = time.perf_counter()
    s = export_coco(p, base / "all.json", reviewed_only=False)
    print(f"export_coco --all ({s['annotations']:,} annotations): {time.perf_counter() - t3:.2f} s")
    t3 = time.perf_counter()
    write_counts_csv(p, base / "counts.csv", reviewed_only=False)
    print(f"CSV count report (all images): {time.perf_counter() - t3:.2f} s")
    p.close()
    t2 = time.perf_counter()
    Project.open(target).close()
    print(f"reopen: {(time.perf_counter() - t2) * 1000:.1f} ms")
    if args.url and not args.keep:
        import psycopg

        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{target.rsplit("=", 1)[1]}" CASCADE')
    if not args.keep:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
