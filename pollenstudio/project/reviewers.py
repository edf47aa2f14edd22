"""Several reviewers on one project (issue 30): who decided, who is reviewing which image,
what the others changed, and edits that crossed in words.

- **Who**: every human edit stores its reviewer in ``annotations.author`` and every undo
  step in ``history.author``; the name is ``$POLLENSTUDIO_USER``, else the name set in the
  app, else the OS login (:func:`reviewer_name`). Undo and redo walk the reviewer's own steps
  only.
- **Claims**: the image a reviewer has open is claimed (table ``claims``: image, reviewer,
  session, since, heartbeat). Another session's edits on a claimed image are refused in
  words until it takes the image over (:func:`claim` with ``takeover``). A claim whose
  heartbeat is older than :data:`CLAIM_TTL_S` has expired: a crashed client never locks an
  image for ever. A session is one open Project object (one window), so the same person in
  two windows is told about the other window too.
- **Changes of others**: every committed event is published in the same transaction: on
  SQLite as a row of ``change_feed`` that :class:`ChangeFeed` reads when ``PRAGMA
  data_version`` says another connection committed; on PostgreSQL as ``NOTIFY`` (payload:
  image ids, kind, label, reviewer, session), which :func:`listen` receives on a connection
  of its own.
- **Conflicts**: an edit made on an annotation another reviewer changed after this window
  read it (``updated`` differs from the version the window shows: :func:`expect_versions`)
  is refused with :class:`EditConflict`, whose message says who changed it and when; the
  window then shows their version. Nothing is overwritten silently.

No Qt here: the GUI runs :meth:`ChangeFeed.poll` on a timer and :func:`listen` on a thread.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from pollenstudio.core.errors import InvalidNameError, ProjectError
from pollenstudio.core.names import check_name
from pollenstudio.core.types import WITHDRAWN_BY_MODEL

USER_ENV = "POLLENSTUDIO_USER"
CLAIM_TTL_S = 60.0  # a claim without a heartbeat for this long has expired
HEARTBEAT_S = 15.0  # how often a window renews its claim
FEED_KEEP_S = 600.0  # change_feed rows older than this are trimmed
POLL_S = 0.5  # how often a window asks whether others changed something (SQLite)
NOTIFY_LIMIT = 7000  # bytes: PostgreSQL refuses NOTIFY payloads of 8000 or more


# ---------------------------------------------------------------------- who
def reviewer_name(configured: str | None = None) -> str:
    """The name decisions are recorded under: ``$POLLENSTUDIO_USER``, else ``configured``
    (the app's setting), else the OS login name. A name that breaks the naming rule
    (control characters, over 200 characters) raises ``InvalidNameError`` naming where it
    came from."""
    for where, value in ((f"the environment variable {USER_ENV}", os.environ.get(USER_ENV)),
                         ("the reviewer name set in PollenStudio", configured)):
        if value is not None and value.strip():
            try:
                return check_name(value.strip(), "reviewer name")
            except InvalidNameError as exc:
                raise InvalidNameError(f"{exc} (from {where})") from None
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def attach(project, reviewer: str | None = None) -> None:
    """Give a freshly opened Project its reviewer and session (called by Project.__init__)."""
    project.reviewer = reviewer if reviewer is not None else reviewer_name()
    project.session = uuid.uuid4().hex[:16]
    project._expected = {}  # annotation id -> the ``updated`` this window shows (expect_versions)


def set_reviewer(project, name: str) -> None:
    """Record this window's later decisions under ``name`` (checked like every name)."""
    project.reviewer = check_name(str(name).strip(), "reviewer name")


def _is_server(conn) -> bool:
    return getattr(conn, "dialect", "sqlite") == "postgresql"


def _clock(conn) -> float:
    """Seconds since the epoch by the database's clock on a server (workstations' clocks may
    differ; claims and conflict ages compare times written by different machines), else here."""
    if _is_server(conn):
        return float(conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])
    return time.time()


def _age(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 2:
        return "just now"
    if s < 90:
        return f"{s} s ago"
    if s < 90 * 60:
        return f"{round(s / 60)} min ago"
    return f"at {time.strftime('%H:%M', time.localtime(time.time() - s))}"


# ---------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    image_id: int
    reviewer: str
    session: str
    since: float
    heartbeat: float

    def describe(self) -> str:
        """'Being reviewed by Anna since 10:42' (local time of this machine)."""
        return f"Being reviewed by {self.reviewer} since {time.strftime('%H:%M', time.localtime(self.since))}"


def _claim_row(r) -> Claim:
    return Claim(int(r[0]), r[1], r[2], float(r[3]), float(r[4]))


def _read_clock(project) -> float:
    with project._lock:
        return _clock(project._conn)


def claim_of(project, image_id: int) -> Claim | None:
    """The live claim on an image (None: nobody, or the claim expired)."""
    now = _read_clock(project)
    r = project._q("SELECT image_id, reviewer, session, since, heartbeat FROM claims WHERE image_id = ?",
                   (int(image_id),)).fetchone()
    if r is None or float(r[4]) < now - CLAIM_TTL_S:
        return None
    return _claim_row(r)


def active_claims(project) -> dict[int, Claim]:
    """{image id: live claim} of every image someone is reviewing now."""
    now = _read_clock(project)
    rows = project._q("SELECT image_id, reviewer, session, since, heartbeat FROM claims WHERE heartbeat >= ?",
                      (now - CLAIM_TTL_S,)).fetchall()
    return {int(r[0]): _claim_row(r) for r in rows}


def claim(project, image_id: int, takeover: bool = False) -> Claim:
    """Claim an image for this session (its earlier claim is released: one image at a time).
    Returns the claim now on the image: this session's, or, when another session holds a
    live claim and ``takeover`` is False, theirs (nothing changed). With ``takeover`` their
    claim is replaced and they are told through the change feed."""
    image_id = int(image_id)
    with project._tx() as conn:
        now = _clock(conn)
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise ProjectError(f"no image with id {image_id} in this project")
        r = conn.execute("SELECT image_id, reviewer, session, since, heartbeat FROM claims WHERE image_id = ?",
                         (image_id,)).fetchone()
        held = r is not None and float(r[4]) >= now - CLAIM_TTL_S and r[2] != project.session
        if held and not takeover:
            return _claim_row(r)
        if r is not None and r[2] == project.session:
            since = float(r[3])
        else:
            since = now
        conn.execute("DELETE FROM claims WHERE session = ? AND image_id != ?", (project.session, image_id))
        conn.execute("DELETE FROM claims WHERE image_id = ?", (image_id,))
        conn.execute("INSERT INTO claims(image_id, reviewer, session, since, heartbeat) VALUES (?, ?, ?, ?, ?)",
                     (image_id, project.reviewer, project.session, since, now))
        if held:  # tell the one whose claim this was
            _publish_one(project, conn, {"i": [image_id], "k": "claim", "l": f"taken over from {r[1]}",
                                         "a": project.reviewer, "s": project.session, "t": r[2]}, now)
    return Claim(image_id, project.reviewer, project.session, since, now)


def heartbeat(project) -> list[int]:
    """Renew this session's claims; returns the images it still holds (one taken over by
    someone else is missing)."""
    with project._tx() as conn:
        now = _clock(conn)
        conn.execute("UPDATE claims SET heartbeat = ? WHERE session = ?", (now, project.session))
        rows = conn.execute("SELECT image_id FROM claims WHERE session = ?", (project.session,)).fetchall()
    return [int(r[0]) for r in rows]


def release(project, image_id: int | None = None) -> None:
    """Give up this session's claim (of one image, or all)."""
    if getattr(project, "_conn", None) is None:
        return
    with project._tx() as conn:
        if image_id is None:
            conn.execute("DELETE FROM claims WHERE session = ?", (project.session,))
        else:
            conn.execute("DELETE FROM claims WHERE session = ? AND image_id = ?", (project.session, int(image_id)))


def check_claims(project, conn, image_ids: Iterable[int]) -> None:
    """Store hook, inside a user command's transaction: refuse it (``ProjectError``, the
    transaction rolls back) when another session holds a live claim on an image it changes."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return
    now = _clock(conn)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        r = conn.execute(
            "SELECT c.image_id, c.reviewer, c.session, c.since, c.heartbeat, im.path FROM claims c "
            f"JOIN images im ON im.id = c.image_id WHERE c.image_id IN ({','.join('?' * len(chunk))}) "
            "AND c.session != ? AND c.heartbeat >= ? ORDER BY c.image_id LIMIT 1",
            (*chunk, project.session, now - CLAIM_TTL_S)).fetchone()
        if r is not None:
            c = _claim_row(r)
            raise ProjectError(f"{os.path.basename(r[5])}: {c.describe()}; nothing was changed. Take the image "
                               "over (Review > Take over this image) to edit it")


# ---------------------------------------------------------------------- conflicts
class EditConflict(ProjectError):
    """An edit refused because another reviewer changed the annotation after this window
    read it. ``annotation_id``, ``image_id``, ``author`` (theirs), ``age_s``."""

    def __init__(self, message: str, annotation_id: int, image_id: int, author: str, age_s: float):
        super().__init__(message)
        self.annotation_id, self.image_id, self.author, self.age_s = annotation_id, image_id, author, age_s


_WHAT = {"move box": "move", "relabel": "new name", "accept": "accept", "reject": "reject",
         "delete box": "delete", "set plane": "plane change", "measure outline": "outline",
         "remove outline": "outline removal"}


def conflict_words(author: str, age_s: float, label: str) -> str:
    """'Anna changed this grain 12 s ago: your move was not applied; the box now shows
    Anna's version'."""
    what = _WHAT.get(label, label)
    return (f"{author} changed this grain {_age(age_s)}: your {what} was not applied; the box now shows "
            f"{author}'s version")


@contextmanager
def expect_versions(project, annotations: Iterable):
    """Edits inside the block are checked against the ``updated`` times of ``annotations``
    (what the window shows): one another reviewer changed since is refused with
    :class:`EditConflict`. Edits of annotations not listed are not checked."""
    seen = {int(a.id): float(a.updated) for a in annotations}
    old = project._expected
    project._expected = {**old, **seen}
    try:
        yield
    finally:
        project._expected = old


def before_change(project, conn, ann_id: int, label: str) -> None:
    """Store hook, first thing of a user command changing annotation ``ann_id``: on a server
    lock the row (``FOR UPDATE``: a concurrent writer waits, and the snapshot read next sees
    the last committed version, so nobody's change is written over with a stale row), then
    refuse the change when it crossed another reviewer's (see :func:`expect_versions`)."""
    if _is_server(conn):
        # the image row first, then the annotation: the order a detection's write_proposals
        # takes them (UPDATE images, then DELETE annotations), so the two never deadlock
        conn.execute("SELECT id FROM images WHERE id = (SELECT image_id FROM annotations WHERE id = ?) FOR UPDATE",
                     (int(ann_id),))
        r = conn.execute("SELECT image_id, updated, author FROM annotations WHERE id = ? FOR UPDATE",
                         (int(ann_id),)).fetchone()
    else:
        r = conn.execute("SELECT image_id, updated, author FROM annotations WHERE id = ?", (int(ann_id),)).fetchone()
    expected = project._expected.get(int(ann_id))
    if r is None or expected is None or float(r[1]) == expected:
        return
    author = r[2] or ""
    if author in ("", project.reviewer, WITHDRAWN_BY_MODEL):
        return  # a change of this reviewer's own (another of their steps) or a model's
    age = _clock(conn) - float(r[1])
    raise EditConflict(conflict_words(author, age, label), int(ann_id), int(r[0]), author, age)


def stamp(project, before: dict, after: dict) -> None:
    """Store hook: a human change of an annotation row records the reviewer (a proposal the
    classifier withdrew stays marked as such while it stays rejected)."""
    if before.get("author") == WITHDRAWN_BY_MODEL and after.get("status") == "rejected":
        return
    after["author"] = project.reviewer


def undo_conflicts(project, conn, changes, done, undo: bool) -> tuple[str, ...]:
    """Words for the annotation rows an undo (redo) left alone because another reviewer
    changed them since."""
    applied = {(t, i) for t, i, _, _ in done}
    out = []
    now = _clock(conn)
    for table, row_id, _, _ in changes:
        if table != "annotations" or (table, row_id) in applied:
            continue
        r = conn.execute("SELECT author, updated FROM annotations WHERE id = ?", (row_id,)).fetchone()
        if r is None or not r[0] or r[0] in (project.reviewer, WITHDRAWN_BY_MODEL):
            continue
        word = "undo" if undo else "redo"
        out.append(f"{r[0]} changed grain {row_id} ({_age(now - float(r[1]))}): your {word} left it as {r[0]} has it")
    return tuple(out)


# ---------------------------------------------------------------------- publishing changes
def channel(project) -> str:
    """The NOTIFY channel of a server project (its schema name is letters, digits and _)."""
    return f"pollenstudio_{project.server.project}".lower()[:63]


def _payload(ev, project) -> dict:
    return {"i": list(ev.image_ids), "n": list(ev.annotation_ids), "c": list(ev.category_ids), "k": ev.kind,
            "l": ev.label, "a": project.reviewer, "s": project.session}


def _publish_one(project, conn, data: dict, now: float) -> None:
    if _is_server(conn):
        text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) > NOTIFY_LIMIT:  # too many ids: say "reload everything"
            text = json.dumps({**data, "i": [], "n": [], "c": [], "k": "import"}, separators=(",", ":"))
        conn.execute("SELECT pg_notify(?, ?)", (channel(project), text))
        return
    cur = conn.execute(
        "INSERT INTO change_feed(image_ids, ann_ids, cat_ids, kind, label, author, session, target, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (json.dumps(data["i"]), json.dumps(data.get("n", [])), json.dumps(data.get("c", [])), data["k"],
         data["l"], data["a"], data["s"], data.get("t"), now))
    if cur.lastrowid and cur.lastrowid % 200 == 0:
        conn.execute("DELETE FROM change_feed WHERE at < ?", (now - FEED_KEEP_S,))


def publish(project, conn, events) -> None:
    """Store hook, just before COMMIT: publish this transaction's events to the other
    sessions (SQLite: change_feed rows; PostgreSQL: NOTIFY, delivered only if it commits)."""
    if not events:
        return
    now = _clock(conn)
    for ev in events:
        _publish_one(project, conn, _payload(ev, project), now)


@dataclass(frozen=True)
class RemoteChange:
    """A change another session committed."""

    kind: str
    label: str
    image_ids: tuple[int, ...]
    annotation_ids: tuple[int, ...]
    category_ids: tuple[int, ...]
    author: str
    session: str
    target: str | None = None  # kind "claim": the session whose claim was taken over
    lost: bool = False  # the feed was trimmed past this window's last read: reload everything


def _remote(data: Mapping) -> RemoteChange:
    return RemoteChange(str(data.get("k", "")), str(data.get("l", "")), tuple(int(i) for i in data.get("i", [])),
                        tuple(int(i) for i in data.get("n", [])), tuple(int(i) for i in data.get("c", [])),
                        str(data.get("a", "")), str(data.get("s", "")), data.get("t"))


class ChangeFeed:
    """What other sessions changed on an SQLite project since the last :meth:`poll`. A poll
    costs one ``PRAGMA data_version`` (microseconds) when nobody else committed."""

    def __init__(self, project):
        self.project = project
        with project._lock:
            conn = project._conn
            self._version = conn.execute("PRAGMA data_version").fetchone()[0]
            self._last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM change_feed").fetchone()[0]

    def poll(self) -> list[RemoteChange]:
        p = self.project
        with p._lock:
            conn = p._conn
            if conn is None:
                return []
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return []
            self._version = version
            first = conn.execute("SELECT MIN(seq) FROM change_feed").fetchone()[0]
            rows = conn.execute("SELECT seq, image_ids, ann_ids, cat_ids, kind, label, author, session, target "
                                "FROM change_feed WHERE seq > ? ORDER BY seq", (self._last,)).fetchall()
        out = []
        if first is not None and first > self._last + 1 and self._last > 0:
            out.append(RemoteChange("import", "changes of others", (), (), (), "", "", lost=True))
        for seq, imgs, anns, cats, kind, label, author, session, target in rows:
            self._last = max(self._last, int(seq))
            if session == p.session:
                continue
            out.append(_remote({"i": json.loads(imgs or "[]"), "n": json.loads(anns or "[]"),
                                "c": json.loads(cats or "[]"), "k": kind, "l": label, "a": author, "s": session,
                                "t": target}))
        return out


def listen(project, on_change: Callable[[RemoteChange], None], stop: threading.Event,
           ready: threading.Event | None = None, wait_s: float = 0.5) -> None:
    """PostgreSQL: receive other sessions' changes by LISTEN on a connection of its own and
    call ``on_change`` for each (on this thread) until ``stop`` is set. Blocks: run it on a
    thread. ``ready`` is set once listening."""
    import psycopg

    raw = psycopg.connect(project.server.conninfo, autocommit=True, application_name="pollenstudio-listen")
    try:
        raw.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel(project))))
        if ready is not None:
            ready.set()
        while not stop.is_set():
            for note in raw.notifies(timeout=wait_s):
                try:
                    data = json.loads(note.payload)
                except ValueError:
                    continue
                if data.get("s") != project.session:
                    on_change(_remote(data))
                if stop.is_set():
                    break
    finally:
        raw.close()
