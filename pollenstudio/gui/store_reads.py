"""Project-wide reads for the views, run in a worker on a read-only connection of its own
(SQLite, or a read-only session on the server for a server project).

Taxon counts over the whole project (~200 ms at 300,000 annotations) and the review
queue page (~50-100 ms) would stall the GUI thread if read there. The store uses WAL, so
a second, read-only connection reads the last committed state without blocking the
writer (or being blocked by it). Each job opens its own connection in its worker thread
and closes it when done: no connection is shared between threads.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pollenstudio.core.errors import ProjectError


@dataclass(frozen=True)
class QueueRead:
    """What the review queue panel shows: rows of (ann_id, image_id, category_id, score,
    margin), how many proposals pass the threshold, how many it hides, names of images
    the caller did not know yet, and the lowest undecided score (the slider's floor)."""

    rows: list[tuple]
    total: int
    hidden: int
    new_names: dict[int, str]
    lowest: float | None = None


@contextmanager
def reader(db_path: str | Path, folder: str | Path):
    """A ``Project`` on a read-only connection (read methods only; opened in this thread)."""
    from pollenstudio.project import Project
    from pollenstudio.project import dialect

    if dialect.is_server_url(str(db_path)):  # a server project: its URL, and this workstation's image root
        location = dialect.parse_server_url(str(db_path))
        proj = Project(Path(folder), dialect.connect_server(location, read_only=True), location=location)
    else:
        try:
            conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot read {db_path}: {exc}") from exc
        proj = Project(Path(folder), conn)
    try:
        yield proj
    finally:
        proj.close()


def category_counts_job(token, db_path: str, folder: str) -> tuple[dict[int, int], dict[int, int]]:
    """Worker job: per taxon over the project, (confirmed + undecided boxes, confirmed grains)."""
    with reader(db_path, folder) as p:
        token.check()
        total = dict(p.category_counts())
        token.check()
        return total, dict(p.category_counts(include_proposed=False))


def queue_job(token, db_path: str, folder: str, threshold: float, order: str, limit: int,
              known_names: frozenset[int]) -> QueueRead:
    """Worker job: the ``limit`` most uncertain proposals above ``threshold``, and counts."""
    with reader(db_path, folder) as p:
        anns = p.review_queue(min_score=threshold, limit=limit, order=order)
        token.check()
        new_names = {}
        for a in anns:
            if a.image_id not in known_names and a.image_id not in new_names:
                new_names[a.image_id] = p.image(a.image_id).path.rsplit("/", 1)[-1]
        rows = [
            (a.id, a.image_id, a.category_id, a.score,
             (a.topk[0][1] - a.topk[1][1]) if len(a.topk) >= 2 else None)
            for a in anns
        ]
        token.check()
        total = p.undecided_count(threshold)
        hidden = p.undecided_count(0.0) - total
        return QueueRead(rows, total, hidden, new_names, p.lowest_undecided_score())
