"""How fast one reviewer's edit reaches another (issue 30), and what the reviewers' hooks
cost per edit. Two Project objects (two windows) on one project: A makes N edits (accept /
reject in turn, each one command); B learns of each through the change feed (SQLite; read
here every 2 ms, the app reads it every second) or LISTEN/NOTIFY (PostgreSQL). Prints p50 /
p95 of the edit's own time and of commit-to-seen.

    python bench/reviewer_refresh.py                       # SQLite, in a temp folder
    python bench/reviewer_refresh.py --url postgresql://USER@HOST:PORT/DB   # a server project
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from pollenstudio.core.types import Box, Detection
from pollenstudio.project import Project
from pollenstudio.project import reviewers as rv


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="PostgreSQL server URL (without ?project=); default: SQLite in a temp folder")
    ap.add_argument("--edits", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    target = str(tmp / "proj")
    if args.url:
        target = f"{args.url}{'&' if '?' in args.url else '?'}project=bench{uuid.uuid4().hex[:8]}"
    a = Project.create(target, image_root=tmp) if args.url else Project.create(target)
    with a.importing():
        a.bulk_insert([{"path": f"i{i}.png", "width": 1000, "height": 1000} for i in range(20)], [])
    for i in range(1, 21):
        a.write_proposals(i, [Detection(Box(10 * k, 10, 10 * k + 8, 18), 0, "Betula", 0.5) for k in range(30)])
    b = Project.open(target, image_root=tmp) if args.url else Project.open(target)
    rv.set_reviewer(a, "A")
    rv.set_reviewer(b, "B")
    rv.claim(a, 1)
    ids = [x.id for x in a.annotations(1)]
    seen: dict[int, float] = {}
    stop = threading.Event()

    def got(ch):
        for aid in ch.annotation_ids:
            seen.setdefault(aid, time.perf_counter())

    if a.server is not None:
        ready = threading.Event()
        t = threading.Thread(target=rv.listen, args=(b, got, stop, ready, 0.05), daemon=True)
        t.start()
        ready.wait(10)
    else:
        feed = rv.ChangeFeed(b)

        def poll():
            while not stop.is_set():
                for ch in feed.poll():
                    got(ch)
                time.sleep(0.002)

        t = threading.Thread(target=poll, daemon=True)
        t.start()
    edit_s, lag_s = [], []
    for n in range(args.edits):
        aid = ids[n % len(ids)]
        t0 = time.perf_counter()
        if n // len(ids) % 2 == 0:
            a.accept(aid)
        else:
            a.reject(aid)
        t1 = time.perf_counter()
        edit_s.append(t1 - t0)
        deadline = t1 + 5
        # from the start of the edit: the other window may see it before accept() returns
        while seen.get(aid, 0) < t0 and time.perf_counter() < deadline:
            time.sleep(0.0005)
        if seen.get(aid, 0) >= t0:
            lag_s.append(seen[aid] - t0)
        seen.pop(aid, None)
    stop.set()
    t.join(2)
    kind = "PostgreSQL" if a.server is not None else "SQLite"
    print(f"{kind}: {args.edits} edits, {len(lag_s)} seen by the other window")
    print(f"  edit (one command, claims checked, event published): p50 {1000 * statistics.median(edit_s):.2f} ms, "
          f"p95 {1000 * pct(edit_s, 0.95):.2f} ms")
    if lag_s:
        print(f"  edit started -> seen by the other Project: p50 {1000 * statistics.median(lag_s):.2f} ms, "
              f"p95 {1000 * pct(lag_s, 0.95):.2f} ms" + ("" if a.server is not None else
                                                        " (feed read every 2 ms here; the app reads it every 1 s)"))
    if a.server is not None:
        import psycopg

        with psycopg.connect(a.server.conninfo, autocommit=True) as c:
            c.execute(f'DROP SCHEMA "{a.server.project}" CASCADE')
    a.close()
    b.close()


if __name__ == "__main__":
    main()
