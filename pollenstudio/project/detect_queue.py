"""The work queue of a detection spread over processes and machines (issue 30, item 4).

A *job* is one detection of a fixed list of images with fixed settings (model version,
thresholds, tiling, ...), kept in the project's own database, beside the proposals it
writes, so every worker on every machine sees the same queue and nothing but the database
has to be shared:

- ``detect_jobs``: one row per job (its settings as JSON, a key that says "the same job",
  open / done / abandoned);
- ``detect_queue``: one row per (job, image): ``pending``, ``claimed`` (by a worker, named
  ``host:pid``, until its lease runs out), ``done`` (with the run that wrote it) or
  ``failed`` (with the reason, e.g. an unreadable file).

Claiming is one short transaction: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``
(workers never wait for each other's rows and never get the same image), on SQLite the
store's ``BEGIN IMMEDIATE`` (one writer at a time, so the same). An image is marked done in
the *same transaction* as its proposals (:meth:`DetectQueue.mark_done` inside the store's
transaction around :meth:`Project.write_proposals`), so a worker killed at any instant has
either stored an image and marked it, or neither: nothing is lost and nothing is done twice.
Its other claims come back to the queue when its lease runs out, at once when the worker
was on this machine and its process is gone, or when the same worker identity starts again
(torchrun restarting it).

The tables are made on first use (``CREATE TABLE IF NOT EXISTS``), not by a schema
migration: they are working state of jobs, not part of what a project exports, and a
project never used this way does not get them. Written in the store's SQLite dialect; on
PostgreSQL ``project.dialect`` translates it as for the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pollenstudio.core.errors import ProjectError
from pollenstudio.project import dialect

LEASE_S = 120.0  # a claim not renewed for this long is free again (a worker on another machine died)
PENDING, CLAIMED, DONE, FAILED = "pending", "claimed", "done", "failed"

_TABLES = (
    """CREATE TABLE IF NOT EXISTS detect_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        created REAL NOT NULL,
        finished REAL
    )""",
    """CREATE TABLE IF NOT EXISTS detect_queue (
        job_id INTEGER NOT NULL,
        image_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        worker TEXT,
        lease REAL,
        run_id INTEGER,
        tries INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        done REAL,
        PRIMARY KEY (job_id, image_id)
    )""",
    "CREATE INDEX IF NOT EXISTS detect_queue_state ON detect_queue(job_id, state, image_id)",
    "CREATE INDEX IF NOT EXISTS detect_jobs_key ON detect_jobs(key, status)",
)


def worker_name(pid: int | None = None) -> str:
    """``host:pid``: who holds a claim (a later run on this machine can tell a dead one)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def job_key(params: dict) -> str:
    """The same settings give the same key: a rerun of an unfinished job continues it."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Job:
    id: int
    key: str
    params: dict
    status: str  # open | done | abandoned
    created: float
    finished: float | None


@dataclass(frozen=True)
class JobCounts:
    pending: int = 0
    claimed: int = 0
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.claimed + self.done + self.failed

    @property
    def open(self) -> int:
        """Images still to be detected (waiting or in a worker's hands)."""
        return self.pending + self.claimed


def _alive_here(worker: str | None) -> bool | None:
    """True/False for a worker of this machine whose process is alive/gone; None for a
    worker of another machine (only its lease can tell)."""
    if not worker or ":" not in worker:
        return None
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):
        return True  # another user's process, or a name we cannot read: assume alive
    try:  # a killed child its parent has not reaped yet is a zombie: gone all the same
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class DetectQueue:
    """The queue of one project (an open :class:`~pollenstudio.project.Project`). Every
    method is one short transaction of the project's own connection."""

    def __init__(self, project, lease_s: float = LEASE_S):
        self.project = project
        self.lease_s = float(lease_s)
        with project._lock:  # made once; two processes making them at the same instant is a race on a server
            have = bool(dialect.columns(project._conn, "detect_queue")) and bool(dialect.columns(project._conn,
                                                                                                "detect_jobs"))
        if not have:
            with project._tx() as conn:
                if dialect.is_server(conn):
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('pollenstudio.detect_queue'))")
                for stmt in _TABLES:
                    conn.execute(dialect.ddl(conn, stmt))

    # ------------------------------------------------------------------ jobs
    def _job(self, row) -> Job:
        return Job(int(row[0]), row[1], json.loads(row[2]), row[3], row[4], row[5])

    def job(self, job_id: int) -> Job:
        row = self.project._q("SELECT id, key, params, status, created, finished FROM detect_jobs WHERE id = ?",
                              (int(job_id),)).fetchone()
        if row is None:
            raise ProjectError(f"detection job {job_id} is not in this project")
        return self._job(row)

    def jobs(self) -> list[Job]:
        return [self._job(r) for r in self.project._q(
            "SELECT id, key, params, status, created, finished FROM detect_jobs ORDER BY id")]

    def open_job(self, params: dict, image_ids: Sequence[int], restart: bool = False) -> tuple[Job, bool]:
        """The open job with these settings, else a new one over ``image_ids``. Returns
        (job, resumed). ``restart``: an open job with these settings is abandoned (its
        images stay as they are) and a new one made. One transaction: two launchers racing
        get the same job."""
        key = job_key(params)
        with self.project._tx() as conn:
            if dialect.is_server(conn):  # the check-then-insert below must not interleave
                conn.execute("LOCK TABLE detect_jobs IN EXCLUSIVE MODE")
            row = conn.execute("SELECT id, key, params, status, created, finished FROM detect_jobs "
                               "WHERE key = ? AND status = 'open' ORDER BY id DESC LIMIT 1", (key,)).fetchone()
            if row is not None and not restart:
                return self._job(row), True
            if row is not None:
                conn.execute("UPDATE detect_jobs SET status = 'abandoned', finished = ? WHERE id = ?",
                             (time.time(), row[0]))
            now = time.time()
            new = conn.execute("INSERT INTO detect_jobs(key, params, status, created) VALUES (?, ?, 'open', ?) "
                               "RETURNING id", (key, json.dumps(params, sort_keys=True, default=str), now)).fetchone()
            job_id = int(new[0])
            ids = list(dict.fromkeys(int(i) for i in image_ids))
            conn.executemany("INSERT INTO detect_queue(job_id, image_id, state) VALUES (?, ?, 'pending')",
                             [(job_id, i) for i in ids])
        return self.job(job_id), False

    def counts(self, job_id: int) -> JobCounts:
        rows = self.project._q("SELECT state, COUNT(*) FROM detect_queue WHERE job_id = ? GROUP BY state",
                               (int(job_id),))
        got = {state: int(n) for state, n in rows}
        return JobCounts(got.get(PENDING, 0), got.get(CLAIMED, 0), got.get(DONE, 0), got.get(FAILED, 0))

    def items(self, job_id: int) -> list[tuple[int, str, str | None, int | None, int, str | None]]:
        """(image id, state, worker, run id, tries, error) of every image of the job."""
        return [tuple(r) for r in self.project._q(
            "SELECT image_id, state, worker, run_id, tries, error FROM detect_queue WHERE job_id = ? ORDER BY image_id",
            (int(job_id),))]

    def finish_if_complete(self, job_id: int) -> bool:
        """Mark the job done when no image is waiting or claimed; True when it is done."""
        with self.project._tx() as conn:
            left = conn.execute("SELECT COUNT(*) FROM detect_queue WHERE job_id = ? AND state IN ('pending', 'claimed')",
                                (int(job_id),)).fetchone()[0]
            if left:
                return False
            conn.execute("UPDATE detect_jobs SET status = 'done', finished = ? WHERE id = ? AND status = 'open'",
                         (time.time(), int(job_id)))
        return True

    # ------------------------------------------------------------------ claims
    def release_dead(self, job_id: int, worker: str | None = None) -> int:
        """Give back the claims of workers of this machine whose process is gone, and those
        of ``worker`` itself (a restarted worker with the same name). Returns how many."""
        me = worker or worker_name()
        rows = self.project._q("SELECT DISTINCT worker FROM detect_queue WHERE job_id = ? AND state = 'claimed'",
                               (int(job_id),))
        dead = [w for (w,) in rows if w == me or _alive_here(w) is False]
        if not dead:
            return 0
        n = 0
        with self.project._tx() as conn:
            for w in dead:
                n += conn.execute("UPDATE detect_queue SET state = 'pending', worker = NULL, lease = NULL "
                                  "WHERE job_id = ? AND state = 'claimed' AND worker = ?", (int(job_id), w)).rowcount
        return n

    def claim(self, job_id: int, n: int, worker: str | None = None) -> list[int]:
        """Up to ``n`` images of the job for ``worker``: waiting ones, or claims whose lease
        ran out. Never the same image to two workers."""
        me = worker or worker_name()
        now = time.time()
        with self.project._tx() as conn:
            sql = ("SELECT image_id FROM detect_queue WHERE job_id = ? AND (state = 'pending' OR "
                   "(state = 'claimed' AND lease < ?)) ORDER BY image_id LIMIT ?")
            if dialect.is_server(conn):
                sql += " FOR UPDATE SKIP LOCKED"
            ids = [int(r[0]) for r in conn.execute(sql, (int(job_id), now, int(n))).fetchall()]
            for k in range(0, len(ids), 500):
                chunk = ids[k : k + 500]
                conn.execute(f"UPDATE detect_queue SET state = 'claimed', worker = ?, lease = ?, tries = tries + 1 "
                             f"WHERE job_id = ? AND image_id IN ({','.join('?' * len(chunk))})",
                             (me, now + self.lease_s, int(job_id), *chunk))
        return ids

    def renew(self, job_id: int, worker: str | None = None) -> int:
        """Extend the lease of every claim of ``worker`` (the worker's heartbeat)."""
        me = worker or worker_name()
        with self.project._tx() as conn:
            return conn.execute("UPDATE detect_queue SET lease = ? WHERE job_id = ? AND state = 'claimed' AND worker = ?",
                                (time.time() + self.lease_s, int(job_id), me)).rowcount

    def mark_done(self, conn, job_id: int, image_id: int, run_id: int | None, worker: str | None = None) -> None:
        """In the caller's transaction (the one that stores the image's proposals): the
        image is done. Whoever claimed it, it is stored now; a worker whose lease ran out
        meanwhile finds it done and its own write replaces the same undecided proposals."""
        conn.execute("UPDATE detect_queue SET state = 'done', worker = ?, run_id = ?, done = ?, error = NULL "
                     "WHERE job_id = ? AND image_id = ?",
                     (worker or worker_name(), run_id, time.time(), int(job_id), int(image_id)))

    def settle(self, job_id: int, image_ids: Iterable[int], failed: dict[int, str] | None = None,
               worker: str | None = None) -> None:
        """After a batch: the images in ``failed`` are failed with their reason; the rest of
        ``image_ids`` still claimed by ``worker`` (not stored: a cancel, an error that took
        the batch back) wait again."""
        me = worker or worker_name()
        failed = failed or {}
        with self.project._tx() as conn:
            for iid, reason in failed.items():
                conn.execute("UPDATE detect_queue SET state = 'failed', error = ?, worker = ?, lease = NULL "
                             "WHERE job_id = ? AND image_id = ? AND state != 'done'",
                             (str(reason), me, int(job_id), int(iid)))
            rest = [int(i) for i in image_ids if int(i) not in failed]
            for k in range(0, len(rest), 500):
                chunk = rest[k : k + 500]
                conn.execute(f"UPDATE detect_queue SET state = 'pending', worker = NULL, lease = NULL "
                             f"WHERE job_id = ? AND state = 'claimed' AND worker = ? "
                             f"AND image_id IN ({','.join('?' * len(chunk))})", (int(job_id), me, *chunk))

    def reopen_failed(self, job_id: int) -> int:
        """A rerun tries the failed images again (a file may have come back)."""
        with self.project._tx() as conn:
            return conn.execute("UPDATE detect_queue SET state = 'pending', error = NULL, worker = NULL "
                                "WHERE job_id = ? AND state = 'failed'", (int(job_id),)).rowcount

    def undo_run(self, job_id: int, run_id: int) -> int:
        """The run's writes were taken back (``Project.take_back_proposals``): its images
        wait again."""
        with self.project._tx() as conn:
            return conn.execute("UPDATE detect_queue SET state = 'pending', run_id = NULL, worker = NULL, lease = NULL, "
                                "done = NULL WHERE job_id = ? AND run_id = ? AND state = 'done'",
                                (int(job_id), int(run_id))).rowcount

    def done_since(self, job_id: int, since: float) -> int:
        """Images of the job stored at or after ``since`` (time.time()): what one launch did."""
        return int(self.project._q("SELECT COUNT(*) FROM detect_queue WHERE job_id = ? AND state = 'done' AND done >= ?",
                                   (int(job_id), float(since))).fetchone()[0])

    def live_claims(self, job_id: int) -> int:
        """Claims held by workers that may still be working (lease not run out)."""
        return int(self.project._q("SELECT COUNT(*) FROM detect_queue WHERE job_id = ? AND state = 'claimed' "
                                   "AND lease >= ?", (int(job_id), time.time())).fetchone()[0])
