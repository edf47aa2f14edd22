"""The project store: one SQLite file (``project.pollen``) beside the images it lists, or a
project on a lab's PostgreSQL server (``postgresql://HOST/DB?project=NAME``; issue 30,
``project.dialect`` says how the one body of SQL here runs on both).

Server projects: the images stay on the lab's file server; paths are stored relative to the
project's image root, which each workstation maps to its own mount (``image_root`` given to
:meth:`Project.open`, else the environment variable ``POLLENSTUDIO_IMAGE_ROOT``, else the
root recorded when the project was created or pushed). The durability and backup notes below
are SQLite's; the server keeps its own (WAL, ``pg_dump``: docs/lab-server.md).

Durability: the database runs in WAL mode with ``synchronous=NORMAL`` and every user edit
is one transaction committed before the method returns. A committed transaction is in the
WAL file (in the OS page cache at worst), so killing the process at any instant - SIGKILL,
a crash, closing the laptop lid - loses at most the edit in flight and never corrupts the
file. A power cut may additionally lose the last few commits (never corrupt them); we
accept that trade for edits that do not wait on the disk.

Review status of an image (derived, recomputed after every change):
- ``in_review``: it has an undecided proposal, or the user marked it "not finished";
- ``reviewed``: no undecided proposal and at least one decision (accepted, edited,
  rejected, added) or an explicit "reviewed" mark (e.g. an image with no grains);
- ``new``: otherwise.

Threading: one connection guarded by a lock, so a worker thread may write proposals while
the GUI thread edits. Subscribers are called after the commit, on the thread that made the
change; the GUI adapts them to Qt signals.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.atomic import is_disk_full
from pollenstudio.core.errors import DamagedProjectError, ImageReadError, ProjectError
from pollenstudio.core.names import check_name
from pollenstudio.core.types import (
    Annotation,
    AnnotationStatus,
    Box,
    Category,
    Detection,
    ImageRecord,
    WITHDRAWN_BY_MODEL,
    OBJECT_STATUSES,
    ReviewStatus,
    Source,
    sql_in,
)
from pollenstudio.project import dialect as dia
from pollenstudio.project import history as hist
from pollenstudio.project import reviewers as rv
from pollenstudio.project.merge import plan_merge
from pollenstudio.project.schema import APP_ID, DB_NAME, SCHEMA_VERSION, migrate

PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000",
)
_ANN_COLS = (
    "id, image_id, x1, y1, x2, y2, polygon, category_id, score, topk, source, status, "
    "model_version_id, author, created, updated, run_id, plane"
)
_OBJECTS_SQL = sql_in(OBJECT_STATUSES)  # "what counts as a grain", for WHERE status IN ...
_MINE = "(author = ? OR author IS NULL)"  # undo steps of this reviewer (steps before schema 8 have none)
_IMG_COLS = ("id, path, width, height, bit_depth, channels, um_per_px, status, group_name, sha256, planes, plane_files, "
             "grain_px")
_SQLITE_MAGIC = b"SQLite format 3\x00"
BACKUP_DIR = ".pollen-backups"  # beside project.pollen: project.pollen.1 (newest) .. .N
BACKUP_GENERATIONS = 3
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt", "disk image")
_FULL_BELOW = 1 << 20  # bytes free: an I/O error on a disk this full is the full disk
_log = logging.getLogger(__name__)
IMAGE_ROOT_ENV = "POLLENSTUDIO_IMAGE_ROOT"  # this workstation's mount of server projects' image root


def _sqlite_reason(exc: BaseException, db: Path) -> str:
    """An SQLite or OS error in words; a full disk (SQLITE_FULL, ENOSPC, or an I/O error on a
    disk with no space left) is called so: the project file itself is fine."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    full = is_disk_full(exc)
    if not full and ("disk I/O error" in text or "unable to open" in text):
        try:
            full = shutil.disk_usage(db.parent).free < _FULL_BELOW
        except OSError:
            pass
    if full:
        return f"the disk is full ({text}); the project file is not damaged: free some space and try again"
    if "disk I/O error" in text:
        return f"{text}: the disk may be full, failing or disconnected; the project file itself may well be fine"
    return text


def backup_paths(db: Path) -> list[Path]:
    """The automatic backups of a project file that exist, newest first."""
    folder = db.parent / BACKUP_DIR
    return [p for p in (folder / f"{db.name}.{i}" for i in range(1, BACKUP_GENERATIONS + 1)) if p.is_file()]


def damage_message(db: Path, verdict: str) -> str:
    """What to tell the user about a damaged project file, and how to recover it."""
    verdict = " ".join(str(verdict).split())[:300]
    backups = backup_paths(db)
    if backups:
        newest = backups[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(newest.stat().st_mtime))
        how = (f"To recover, close PollenStudio, keep the damaged file aside (rename it), and copy the automatic "
               f"backup {newest} (taken {when}) to {db}; edits made after that are lost. Older backups: "
               + (", ".join(str(b) for b in backups[1:]) or "none") + ".")
    else:
        how = (f"There is no automatic backup in {db.parent / BACKUP_DIR}. Keep a copy of the file; the sqlite3 "
               "tool's '.recover' command may rescue most of it.")
    return (f"the project file {db} is damaged (SQLite integrity check: {verdict}). PollenStudio will not write "
            f"to it. {how}")


@dataclass(frozen=True)
class ChangeEvent:
    """What changed, for views to refresh. ``kind``: the command name, or "undo"/"redo",
    "proposals", "images", "categories", "model_versions", "runs", "import"."""

    kind: str
    label: str = ""
    image_ids: tuple[int, ...] = ()
    annotation_ids: tuple[int, ...] = ()
    category_ids: tuple[int, ...] = ()
    conflicts: tuple[str, ...] = ()  # undo/redo: rows left alone because another reviewer changed them


@dataclass(frozen=True)
class ImageCounts:
    objects: int = 0  # accepted + edited + added
    undecided: int = 0  # proposed
    rejected: int = 0
    finished: bool = False  # a person marked it finished (Enter / 0), not only decided its proposals


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    file: str | None
    metrics: dict
    config: dict
    parent_id: int | None
    active: bool
    annotation_ids: list[int]
    summary: dict
    created: float


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    params: dict
    status: str
    summary: dict
    started: float
    finished: float | None


@dataclass
class AddImagesResult:
    added: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # already in the project (same content)
    relinked: list[int] = field(default_factory=list)  # images whose missing files these are (same content)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass(frozen=True)
class ProposalResult:
    written: list[int]
    skipped: int  # matched a human decision
    replaced: int  # older undecided proposals removed
    categories_created: list[int]


def _now() -> float:
    return time.time()


def _host() -> str:
    import socket

    return socket.gethostname()


def _loads(text, default):
    return default if text is None else json.loads(text)


class Project:
    """A PollenStudio project. Open with :meth:`create` or :meth:`open`; use as a context
    manager or call :meth:`close`."""

    # ------------------------------------------------------------------ lifecycle
    def __init__(self, folder: Path, conn, location: dia.ServerLocation | None = None):
        self.folder = Path(folder).resolve()  # relative paths must not depend on a later chdir
        # a server project: ``folder`` is this workstation's image root, ``db_path`` its URL
        self.server = location
        self.db_path = folder / DB_NAME if location is None else location.url
        self._conn = conn
        self._lock = threading.RLock()
        self._cmd: hist.Command | None = None
        self._batch_depth = 0
        self._subscribers: list[Callable[[ChangeEvent], None]] = []
        self._pending: list[ChangeEvent] = []
        self._damaged: str = ""  # set when a damaged page was met: no more writes
        self.upgraded_from: tuple[int, Path] | None = None  # (old schema, copy kept) when open() upgraded it
        rv.attach(self)  # reviewer name and session (several reviewers: project/reviewers.py)

    @property
    def location(self) -> str:
        """What opens this project again: its folder, or its server URL (password not shown)."""
        return str(self.folder) if self.server is None else self.server.shown

    @classmethod
    def create(cls, folder: str | os.PathLike, name: str | None = None,
               image_root: str | os.PathLike | None = None) -> "Project":
        """Make a new project in ``folder`` (created if needed), or on a PostgreSQL server
        when ``folder`` is a ``postgresql://HOST/DB?project=NAME`` URL (``image_root``: where
        its images are, default ``POLLENSTUDIO_IMAGE_ROOT`` or the current folder)."""
        if dia.is_server_url(folder):
            return cls._create_server(str(folder), name, image_root)
        if str(folder).strip() == "" or "\x00" in str(folder):
            raise ProjectError(f"{str(folder)!r} is not a folder name; choose a folder for the project")
        folder = Path(folder)
        db = folder / DB_NAME
        if db.exists():
            raise ProjectError(f"{folder} already holds a project; open it instead")
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"{folder} is a file, not a folder; choose a folder for the project")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create the project folder {folder}: {exc.strerror or exc}") from None
        try:
            conn = cls._connect(db)
            try:
                migrate(conn)
                with conn:
                    conn.executemany(
                        "INSERT INTO meta(key, value) VALUES (?, ?)",
                        [("app", APP_ID), ("name", name or folder.name), ("created", str(_now()))],
                    )
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            for suffix in ("", "-wal", "-shm", "-journal"):
                try:
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                except OSError:
                    pass
            raise ProjectError(f"cannot create a project in {folder}: {exc}") from None
        return cls(folder, conn)

    @classmethod
    def open(cls, path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> "Project":
        """Open a project folder or its ``project.pollen`` file, or a project on a
        PostgreSQL server (a ``postgresql://`` URL; ``image_root``: see the module doc).
        Nothing is written to a file that turns out not to be a project."""
        if dia.is_server_url(path):
            return cls._open_server(str(path), image_root)
        if str(path).strip() == "" or "\x00" in str(path):
            raise ProjectError(f"{str(path)!r} is not a project folder or file name")
        p = Path(path)
        if p.is_dir():
            db = p / DB_NAME
            if not db.exists():
                raise ProjectError(f"{p} has no project ({DB_NAME} not found); create one or import images into it")
        else:
            db = p
            if not db.exists():
                raise ProjectError(f"project not found: {p}")
        cls._check_is_project(db)
        try:
            conn = cls._connect(db)
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot open {db}: {_sqlite_reason(exc, db)}") from None
        kept = None
        try:
            old = conn.execute("PRAGMA user_version").fetchone()[0]
            if 0 < old < SCHEMA_VERSION:
                kept = cls._keep_before_upgrade(conn, db, old)  # first the copy, then the upgrade
            migrate(conn)
        except ProjectError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and any(w in str(exc) for w in _DAMAGE_WORDS):
                raise DamagedProjectError(damage_message(db, str(exc))) from None
            copy = f"; the project as it was is kept in {kept}" if kept else ""
            raise ProjectError(f"{db}: could not upgrade the project ({_sqlite_reason(exc, db)}){copy}") from None
        proj = cls(db.parent, conn)
        proj.upgraded_from = (old, kept) if kept else None
        if kept:
            _log.warning("upgraded %s from schema %d to %d; a copy that the older PollenStudio opens is kept in %s",
                         db, old, SCHEMA_VERSION, kept)
        proj._trim_history()
        proj._close_dead_runs()
        proj.backup()
        return proj

    # ------------------------------------------------------------------ server projects
    @staticmethod
    def _server_root(conn, given) -> Path:
        """This workstation's image root of a server project (see the module doc)."""
        if given is not None and str(given).strip():
            return Path(given)
        if os.environ.get(IMAGE_ROOT_ENV, "").strip():
            return Path(os.environ[IMAGE_ROOT_ENV])
        row = conn.execute("SELECT value FROM meta WHERE key = 'image_root'").fetchone()
        return Path(row[0]) if row and row[0] else Path.cwd()

    @staticmethod
    def _server_projects(conn) -> list[str]:
        return [r[0] for r in conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = ? ORDER BY 1", (dia.VERSION_TABLE,))]

    @classmethod
    def _create_server(cls, url: str, name: str | None, image_root) -> "Project":
        loc = dia.parse_server_url(url)
        conn = dia.connect_server(loc)
        made = False
        try:
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (loc.project,)).fetchone():
                raise ProjectError(f"{loc} already holds a project named {loc.project!r}; open it instead, or "
                                   "choose another name")
            conn.execute(f'CREATE SCHEMA "{loc.project}"')  # the name is checked: letters, digits, _
            made = True
            migrate(conn)
            root = cls._server_root(conn, image_root).resolve()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                             [("app", APP_ID), ("name", name or loc.project), ("created", str(_now())),
                              ("image_root", str(root))])
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if made:  # no half-made project left on the server
                    conn.execute(f'DROP SCHEMA "{loc.project}" CASCADE')
            except ProjectError:
                pass
            conn.close()
            raise
        return cls(root, conn, location=loc)

    @classmethod
    def _open_server(cls, url: str, image_root) -> "Project":
        loc = dia.parse_server_url(url)
        conn = dia.connect_server(loc)
        try:
            if loc.project not in cls._server_projects(conn):
                others = [n for n in cls._server_projects(conn)]
                there = ("its projects: " + ", ".join(others)) if others else "it holds no project yet"
                raise ProjectError(
                    f"the server has no project {loc.project!r} in this database ({there}); check the name after "
                    "?project=, or move a project there with 'pollenstudio server push FOLDER URL'")
            version = dia.user_version(conn)
            row = conn.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
            if not row or row[0] != APP_ID:
                raise ProjectError(f"{loc}: the schema {loc.project!r} is not a PollenStudio project")
            if version > SCHEMA_VERSION:
                raise ProjectError(
                    f"{loc} was written by a newer PollenStudio (schema {version}, this version reads up to "
                    f"{SCHEMA_VERSION}); update PollenStudio on this workstation to open it")
            if version < SCHEMA_VERSION:
                _log.warning("upgrading %s from schema %d to %d (every workstation needs this PollenStudio "
                             "or newer from now on)", loc, version, SCHEMA_VERSION)
            migrate(conn)
            root = cls._server_root(conn, image_root)
        except BaseException:
            conn.close()
            raise
        proj = cls(root, conn, location=loc)
        proj._trim_history()
        proj._close_dead_runs()
        return proj

    @staticmethod
    def _keep_before_upgrade(conn: sqlite3.Connection, db: Path, version: int) -> Path:
        """Before an upgrade (schema migration) of an older project, keep a copy that the
        PollenStudio which wrote it can still open: ``.pollen-backups/project.pollen.schemaN``
        (N = its schema version; an earlier copy of that version is never overwritten). If no
        copy can be made (a full disk), the project is not upgraded: ProjectError in words."""
        folder = db.parent / BACKUP_DIR
        dest = folder / f"{db.name}.schema{version}"
        k = 2
        while dest.exists():
            dest = folder / f"{db.name}.schema{version}.{k}"
            k += 1
        tmp = folder / f".{dest.name}.{os.getpid()}.tmp"
        try:
            folder.mkdir(exist_ok=True)
            dst = sqlite3.connect(str(tmp))
            try:
                conn.backup(dst)  # consistent, WAL included
            finally:
                dst.close()
            os.replace(tmp, dest)
        except (OSError, sqlite3.Error) as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise ProjectError(
                f"{db} was written by an older PollenStudio (schema {version}) and needs an upgrade to schema "
                f"{SCHEMA_VERSION}, but a copy for the older version could not be kept first "
                f"({_sqlite_reason(exc, db)}); nothing was changed. Free some space and open it again."
            ) from None
        return dest

    def _close_dead_runs(self) -> None:
        """A run still "running" whose process on this machine is gone was killed: record
        it as "interrupted" instead of running forever."""
        dead = []
        for rid, summary in self._q("SELECT id, summary FROM runs WHERE status = 'running'"):
            try:
                owner = json.loads(summary) if summary else {}
                pid = int(owner.get("pid", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            if pid <= 0 or owner.get("host") != _host() or pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead.append(rid)
            except OSError:
                continue
        if dead:
            with self._tx() as conn:
                conn.executemany("UPDATE runs SET status = 'interrupted', finished = ? WHERE id = ?",
                                 [(_now(), rid) for rid in dead])

    def backup(self, generations: int = BACKUP_GENERATIONS) -> Path | None:
        """Rolling backup of the project file (SQLite's online backup: a consistent copy
        even while the file is in use) into ``.pollen-backups/project.pollen.1``, the older
        ones shifted to .2 .. .N. Skipped when nothing changed since the newest backup.
        A backup that cannot be written (full disk) is skipped, never fatal: returns None.
        A server project has none here (the server's own backups: docs/lab-server.md)."""
        if self.server is not None:
            return None
        folder = self.folder / BACKUP_DIR
        db = self.db_path
        newest = folder / f"{db.name}.1"
        try:
            changed = max(p.stat().st_mtime for p in (db, Path(f"{db}-wal")) if p.exists())
            if newest.is_file() and newest.stat().st_mtime >= changed:
                return newest
            folder.mkdir(exist_ok=True)
            tmp = folder / f".{db.name}.{os.getpid()}.tmp"
            dst = sqlite3.connect(str(tmp))
            try:
                with self._lock:
                    self._conn.backup(dst)
            finally:
                dst.close()
            for i in range(generations - 1, 0, -1):
                older = folder / f"{db.name}.{i}"
                if older.is_file():
                    os.replace(older, folder / f"{db.name}.{i + 1}")
            os.replace(tmp, newest)
            return newest
        except (OSError, sqlite3.Error):
            try:
                (folder / f".{db.name}.{os.getpid()}.tmp").unlink(missing_ok=True)
            except OSError:
                pass
            return None

    @staticmethod
    def _check_is_project(db: Path) -> None:
        try:
            with open(db, "rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise ProjectError(f"cannot read {db}: {exc.strerror}") from exc
        if head != _SQLITE_MAGIC:
            raise ProjectError(f"{db} is not a PollenStudio project (not an SQLite database)")
        if not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
            raise ProjectError(f"{db} is read-only: PollenStudio saves every edit into the project, so it needs to "
                               "write there; copy the project folder somewhere you can write, or change its "
                               "permissions")
        try:
            ro = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise ProjectError(f"cannot open {db}: {_sqlite_reason(exc, db)}") from None
        try:
            version = ro.execute("PRAGMA user_version").fetchone()[0]
            app = ro.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
            # a damaged page must be found before anything reads half a table or writes
            verdict = "; ".join(r[0] for r in ro.execute("PRAGMA quick_check(20)").fetchall())
        except sqlite3.DatabaseError as exc:
            if any(w in str(exc) for w in _DAMAGE_WORDS):
                raise DamagedProjectError(damage_message(db, str(exc))) from None
            if isinstance(exc, sqlite3.OperationalError) and (is_disk_full(exc) or "disk I/O error" in str(exc)):
                # a full (or failing) disk, not a foreign file: never invite giving up on the project
                raise ProjectError(f"cannot open {db}: {_sqlite_reason(exc, db)}") from None
            raise ProjectError(f"{db} is not a PollenStudio project ({exc})") from exc
        finally:
            ro.close()
        if verdict != "ok":
            raise DamagedProjectError(damage_message(db, verdict))
        if not app or app[0] != APP_ID:
            raise ProjectError(f"{db} is an SQLite database but not a PollenStudio project")
        if version > SCHEMA_VERSION:
            raise ProjectError(
                f"{db} was written by a newer PollenStudio (schema {version}, this version reads up to "
                f"{SCHEMA_VERSION}); update PollenStudio to open it"
            )

    @staticmethod
    def _connect(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MB: bulk imports keep their indexes in memory
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def name(self) -> str:
        row = self._q("SELECT value FROM meta WHERE key = 'name'").fetchone()
        return row[0] if row else self.folder.name

    @property
    def grain_size_px(self) -> float | None:
        """The project's typical grain diameter in pixels: the grain-size calibration of every
        image without one of its own (None: none). An image's own (``ImageRecord.grain_px``)
        or µm/px is more specific (``engine.scale.image_grain_px``)."""
        row = self._q("SELECT value FROM meta WHERE key = 'grain_size_px'").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def set_grain_size_px(self, px: float | None, image_ids: Iterable[int] | None = None) -> None:
        """Set (or clear with None) a typical grain diameter in pixels: of the images
        ``image_ids`` (their own calibration, e.g. the images of one sample or objective), or
        with ``image_ids`` None the project's, for every image without its own. Not undoable
        (like the pixel scale); nothing is stored when a value or an image id is wrong."""
        if px is not None:
            try:
                px = float(px)
            except (TypeError, ValueError):
                raise ProjectError(f"typical grain size must be a number of pixels, got {px!r}") from None
            if not (px == px and 2.0 <= px <= 20000.0):
                raise ProjectError(f"typical grain size must be 2..20000 pixels, got {px}")
        ids = None if image_ids is None else sorted({int(i) for i in image_ids})
        with self._tx() as conn:
            if ids is not None:
                known = {r[0] for r in conn.execute("SELECT id FROM images")}
                unknown = [i for i in ids if i not in known]
                if unknown:
                    raise ProjectError(f"no image with id {unknown[0]} in this project")
                conn.executemany("UPDATE images SET grain_px = ? WHERE id = ?", [(px, i) for i in ids])
            elif px is None:
                conn.execute("DELETE FROM meta WHERE key = 'grain_size_px'")
            else:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('grain_size_px', ?)", (str(px),))
        self._notify(ChangeEvent("images", "calibration", tuple(ids or ())))

    @property
    def schema_version(self) -> int:
        with self._lock:
            return dia.user_version(self._conn)

    def get_meta(self, key: str) -> str | None:
        """A value of the project's key/value table (None when absent)."""
        row = self._q("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (None: remove) a key of the project's key/value table. Not undoable."""
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def integrity_check(self) -> str:
        if self.server is not None:
            return dia.quick_check(self._conn)
        return self._q("PRAGMA integrity_check").fetchone()[0]

    # ------------------------------------------------------------------ plumbing
    def _q(self, sql: str, params=()) -> "_Rows":
        """Run a query and fetch all rows under the lock: another thread's transaction is
        never seen half done, and the shared connection is never used by two threads."""
        with self._lock:
            if self._conn is None:
                raise ProjectError("the project is closed")
            try:
                return _Rows(self._conn.execute(sql, params).fetchall())
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc) from None

    def _db_error(self, exc: sqlite3.DatabaseError) -> Exception:
        """A damaged page found while working: stop writing and say how to recover."""
        text = str(exc)
        if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return exc  # our own mistake or a constraint, not damage: raised as it is
        if any(w in text for w in _DAMAGE_WORDS) or type(exc) is sqlite3.DatabaseError:
            self._damaged = text
            try:
                verdict = "; ".join(r[0] for r in self._conn.execute("PRAGMA quick_check(20)").fetchall())
            except sqlite3.Error as exc2:
                verdict = str(exc2)
            return DamagedProjectError(damage_message(self.db_path, f"{text}; {verdict}"))
        if "readonly" in text or "read-only" in text:
            return ProjectError(f"{self.db_path} is read-only ({text}); nothing was saved")
        if is_disk_full(exc) or "disk I/O error" in text:
            return ProjectError(f"{self.db_path}: this change was not saved: {_sqlite_reason(exc, self.db_path)}")
        if "locked" in text or "busy" in text:
            return ProjectError(f"{self.db_path} is busy: another program is writing to it ({text}); try again")
        return ProjectError(f"{self.db_path}: {text}")

    @contextmanager
    def _tx(self):
        """One write transaction (nested calls join the outer one)."""
        with self._lock:
            if self._conn is None:
                raise ProjectError("the project is closed")
            if self._conn.in_transaction:
                yield self._conn
                return
            if self._damaged:
                raise DamagedProjectError(damage_message(self.db_path, self._damaged))
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc) from None
            try:
                yield self._conn
                rv.publish(self, self._conn, self._pending)  # others see it once it commits
                self._conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except (sqlite3.Error, dia.ServerError):
                    pass
                self._pending.clear()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._db_error(exc) from None
                raise
        self._flush_events()

    @contextmanager
    def _command(self, label: str):
        """A user command: one transaction, one undo step (or part of an open batch)."""
        with self._lock:
            if self._cmd is not None:
                yield self._cmd
                return
            cmd = hist.Command(label)
            self._cmd = cmd
            try:
                with self._tx() as conn:
                    yield cmd
                    self._finish_command(conn, cmd)
            finally:
                self._cmd = None

    def _finish_command(self, conn, cmd: hist.Command) -> None:
        changes = cmd.effective()
        if not changes:
            return
        images = self._images_of_changes(conn, changes)
        rv.check_claims(self, conn, images)  # another window is reviewing one of them: refused
        conn.execute(f"DELETE FROM history WHERE undone = 1 AND {_MINE}", (self.reviewer,))
        conn.execute(
            "INSERT INTO history(label, changes, undone, created, author) VALUES (?, ?, 0, ?, ?)",
            (cmd.label, cmd.to_json(), _now(), self.reviewer),
        )
        self._refresh_status(images)
        # removing images: views reload their image lists instead of refreshing rows that are gone
        kind = "images" if any(t == "image_rows" for t, _, _, _ in changes) else cmd.label
        self._pending.append(self._event(kind, changes, images, label=cmd.label))

    @staticmethod
    def _images_of_changes(conn, changes) -> list[int]:
        ids = set()
        for table, row_id, before, after in changes:
            if table == "annotations":
                for s in (before, after):
                    if s is not None:
                        ids.add(s["image_id"])
            elif table in ("images", "image_rows"):
                ids.add(row_id)
        return sorted(ids)

    @staticmethod
    def _event(kind: str, changes, images, label: str = "") -> ChangeEvent:
        return ChangeEvent(
            kind=kind,
            label=label or kind,
            image_ids=tuple(images),
            annotation_ids=tuple(sorted(i for t, i, _, _ in changes if t == "annotations")),
            category_ids=tuple(sorted(i for t, i, _, _ in changes if t == "categories")),
        )

    def _set_row(self, table: str, row_id: int, state: dict | None) -> None:
        conn = self._conn
        before = hist.snapshot(conn, table, row_id)
        hist.write_state(conn, table, row_id, state)
        self._cmd.record(table, row_id, before, hist.snapshot(conn, table, row_id))

    def _update_ann(self, ann_id: int, **cols) -> None:
        rv.before_change(self, self._conn, ann_id, self._cmd.label)  # crossed another reviewer's edit: refused
        before = hist.snapshot(self._conn, "annotations", ann_id)
        if before is None:
            raise ProjectError(f"annotation {ann_id} does not exist (deleted or undone?)")
        after = dict(before)
        after.update(cols)
        if after != before:
            after["updated"] = _now()
            rv.stamp(self, before, after)  # who decided
            self._set_row("annotations", ann_id, after)

    def _refresh_status(self, image_ids: Iterable[int] | None = None) -> None:
        """Recompute the per-image counts and the derived review status (see module doc)."""
        sql = (
            "UPDATE images SET "
            "n_objects = (SELECT COUNT(*) FROM annotations a WHERE a.image_id = images.id "
            f"  AND a.status IN {_OBJECTS_SQL}), "
            "n_undecided = (SELECT COUNT(*) FROM annotations a WHERE a.image_id = images.id AND a.status = 'proposed'), "
            "n_rejected = (SELECT COUNT(*) FROM annotations a WHERE a.image_id = images.id AND a.status = 'rejected' "
            f"  AND COALESCE(a.author, '') != '{WITHDRAWN_BY_MODEL}')"
        )
        status_sql = (
            "UPDATE images SET status = CASE "
            "WHEN n_undecided > 0 OR mark = 'open' THEN 'in_review' "
            "WHEN mark = 'reviewed' OR n_objects + n_rejected > 0 THEN 'reviewed' "
            "ELSE 'new' END"
        )
        if image_ids is None:
            self._conn.execute(sql)
            self._conn.execute(status_sql)
            return
        ids = list(image_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            where = f" WHERE id IN ({','.join('?' * len(chunk))})"
            self._conn.execute(sql + where, chunk)
            self._conn.execute(status_sql + where, chunk)

    def subscribe(self, callback: Callable[[ChangeEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every committed change; returns an unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _flush_events(self) -> None:
        events, self._pending = self._pending, []
        for ev in events:
            for cb in list(self._subscribers):
                cb(ev)

    def deliver(self, ev: ChangeEvent) -> None:
        """Hand subscribers a change another reviewer committed (``project.reviewers``:
        the change feed or NOTIFY), as if it had been made here."""
        self._notify(ev)

    def _notify(self, ev: ChangeEvent) -> None:
        """Queue an event for after the current transaction (or send now if none)."""
        self._pending.append(ev)
        if self._conn is not None and not self._conn.in_transaction:
            self._flush_events()

    # ------------------------------------------------------------------ paths
    def _rel(self, path: str | os.PathLike) -> str:
        """Store paths relative to the project folder where possible, with '/'."""
        p = Path(os.path.abspath(path))
        try:
            return Path(os.path.relpath(p, self.folder.resolve())).as_posix()
        except ValueError:  # other drive on Windows
            return p.as_posix()

    def resolve_path(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else (self.folder / p).resolve()

    def image_path(self, image: int | ImageRecord) -> Path:
        """Absolute path of an image file (it may be missing: see :meth:`relink`)."""
        rec = image if isinstance(image, ImageRecord) else self.image(image)
        return self.resolve_path(rec.path)

    def plane_paths(self, image: int | ImageRecord) -> list[Path] | None:
        """Absolute paths of a stack's plane files, or None when its planes are in one file
        (a multi-page / OME-TIFF) or it is a single image."""
        rec = image if isinstance(image, ImageRecord) else self.image(image)
        return [self.resolve_path(f) for f in rec.plane_files] if rec.plane_files else None

    def open_stack(self, image: int | ImageRecord):
        """The image's planes, read lazily (``core.stack.FocalStack``; close it, or use it as
        a context manager). A single image is a stack of one plane."""
        from pollenstudio.core.stack import FocalStack

        rec = image if isinstance(image, ImageRecord) else self.image(image)
        return FocalStack.open(self.image_path(rec), self.plane_paths(rec))

    def read_plane(self, image: int | ImageRecord, plane: int | str | None = None):
        """Pixels of one plane of an image (``plane`` an index, "best" or "edf"); None: the
        image itself, or a stack's middle plane."""
        rec = image if isinstance(image, ImageRecord) else self.image(image)
        if not rec.is_stack and plane in (None, 0, "best", "edf"):
            from pollenstudio.core.imageio import read_image

            return read_image(self.image_path(rec))
        with self.open_stack(rec) as st:
            return st.view(st.n_planes // 2 if plane is None else plane)

    # ------------------------------------------------------------------ images
    @staticmethod
    def _image_from_row(r) -> ImageRecord:
        return ImageRecord(
            id=r[0], path=r[1], width=r[2], height=r[3], bit_depth=r[4], channels=r[5],
            um_per_px=r[6], status=ReviewStatus(r[7]), group=r[8], sha256=r[9], planes=r[10] or 1,
            plane_files=tuple(_loads(r[11], [])) or None, grain_px=r[12],
        )

    def add_images(self, paths: Iterable[str | os.PathLike], progress=None,
                   group: str | Callable[[Path], str | None] | None = None,
                   um_per_px: float | None = None) -> AddImagesResult:
        """Register image files (header read + sha256, no decoding). Unreadable files and
        files already in the project are reported, not fatal. Commits every 200 files and
        on cancel (``progress.check()`` raises ``Cancelled`` after the files read so far are
        committed). Not undoable. ``group`` (the sample / slide) is a name or a function of
        the file's path; without ``um_per_px`` a TIFF's own scale (OME PhysicalSizeX or
        resolution tags, ``core.pixelscale``) is used when it states a plausible one.

        Focal stacks (issue 19): a multi-page or OME-TIFF with several focal planes is one
        image with its plane count; an item that is a list of files is one stack of those
        plane files (in plane order; its first file is the image's path, its content hash the
        hash of every plane's hash)."""
        from pollenstudio.core.imageio import file_sha256
        from pollenstudio.core.pixelscale import um_per_px_from_file
        from pollenstudio.core.stack import import_info, stack_hash

        paths = [[Path(f) for f in p] if isinstance(p, (list, tuple)) else Path(p) for p in paths]
        res = AddImagesResult()
        known = {r[0] for r in self._q("SELECT sha256 FROM images WHERE sha256 IS NOT NULL")}
        lost = None  # content hash -> image whose file(s) are missing: a re-import finds them
        batch: list[tuple] = []

        def flush():
            if not batch:
                return
            with self._tx() as conn:
                for row in batch:
                    cur = conn.execute(
                        "INSERT INTO images(path, sha256, width, height, bit_depth, channels, um_per_px, status, "
                        "group_name, added, size_bytes, planes, plane_files) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?)",
                        row,
                    )
                    res.added.append(cur.lastrowid)
                self._notify(ChangeEvent("images", "add images", tuple(res.added[-len(batch):])))
            batch.clear()

        for n, item in enumerate(paths):
            files = item if isinstance(item, list) else None
            p = files[0] if files else item
            if progress is not None:
                if progress.cancelled:
                    flush()  # keep what was read before the cancel
                progress.check()
                progress.update(n, len(paths), p.name)
            try:
                info = import_info(p, files)  # the rules of every import path (core.stack)
                sha = stack_hash(files) if files else file_sha256(p)
            except ImageReadError as exc:
                res.errors.append((str(p), str(exc)))
                continue
            except OSError as exc:
                res.errors.append((str(p), f"{p.name}: cannot read ({exc.strerror})"))
                continue
            if sha in known:
                if lost is None:
                    lost = {r.sha256: r for r in self.missing_images() if r.sha256}
                rec = lost.pop(sha, None)
                if rec is not None and (rec.planes or 1) == info.planes and bool(rec.plane_files) == bool(files):
                    # the same picture (every plane's content) whose files the project lost: this is
                    # where they went; point the image there instead of calling it a duplicate
                    flush()
                    with self._tx():
                        self._relocate(rec.id, p, sha, p.stat().st_size, info.width, info.height, info.bit_depth,
                                       info.channels, plane_files=files)
                    res.relinked.append(rec.id)
                    continue
                res.duplicates.append(str(p))
                continue
            known.add(sha)
            scale = um_per_px if um_per_px is not None else um_per_px_from_file(p)
            batch.append((self._rel(p), sha, info.width, info.height, info.bit_depth, info.channels, scale,
                          group(p) if callable(group) else group, _now(), p.stat().st_size, info.planes,
                          json.dumps([self._rel(f) for f in files]) if files else None))
            if len(batch) >= 200:
                flush()
        flush()
        if progress is not None:
            progress.update(len(paths), len(paths), "done")
        return res

    def add_folder(self, folder: str | os.PathLike, recursive: bool = True, progress=None,
                   um_per_px: float | None = None, stack_pattern: str | None = None) -> AddImagesResult:
        """Add every image file under ``folder`` (sorted; the project's own files skipped).
        An image in a subfolder belongs to the sample (slide) named by that subfolder's path
        below ``folder`` (``slide-3/img1.tif`` -> sample ``slide-3``); images directly in
        ``folder`` get none. ``stack_pattern`` (e.g. ``*_z{z}.png``) groups plane files into
        focal stacks (``core.stack.group_plane_files``); a stack's sample is that of its
        first plane's folder."""
        from pollenstudio.core.imageio import is_image_file

        folder = Path(folder)
        it = folder.rglob("*") if recursive else folder.glob("*")
        files = sorted(p for p in it if p.is_file() and is_image_file(p))

        def sample_of(p: Path) -> str | None:
            try:
                rel = p.parent.relative_to(folder)
            except ValueError:
                return None
            return rel.as_posix() if rel.parts else None

        items: list = files
        if stack_pattern is not None:
            from pollenstudio.core.stack import StackPatternError, group_plane_files

            stacks, singles = group_plane_files(files, stack_pattern)
            if not stacks:
                # every plane would become an image of its own and each grain be counted once per plane
                shown = ", ".join(p.name for p in files[:3]) + (" ..." if len(files) > 3 else "")
                raise StackPatternError(
                    f"the stack pattern {stack_pattern!r} groups no plane files into a focal stack in {folder}"
                    + (f" (its files are named like {shown})" if files else " (it holds no image files)")
                    + "; nothing imported. Give a pattern that matches the plane files, e.g. '*_z{z}.png' for "
                    "a_z0.png, a_z1.png ..., or leave the pattern out to import every file as an image of its own")
            items = sorted(stacks + singles, key=lambda it: it[0] if isinstance(it, list) else it)
        return self.add_images(items, progress=progress, um_per_px=um_per_px, group=sample_of)

    def has_stacks(self) -> bool:
        """True when some image of the project is a focal stack."""
        return self._q("SELECT 1 FROM images WHERE planes > 1 LIMIT 1").fetchone() is not None

    def image(self, image_id: int) -> ImageRecord:
        r = self._q(f"SELECT {_IMG_COLS} FROM images WHERE id = ?", (image_id,)).fetchone()
        if r is None:
            raise ProjectError(f"image {image_id} is not in the project")
        return self._image_from_row(r)

    _ORDERS = {"id": "id", "path": "path", "status": "status, id", "name": "path",
               "undecided": "n_undecided DESC, id"}

    def images(self, offset: int = 0, limit: int | None = None, status: ReviewStatus | str | None = None,
               order: str = "id") -> list[ImageRecord]:
        """A page of images, optionally of one review status; order "id" | "path" | "status" |
        "undecided" (most undecided proposals first)."""
        if order not in self._ORDERS:
            raise ValueError(f"order must be one of {sorted(self._ORDERS)}")
        where, params = "", []
        if status is not None:
            where, params = "WHERE status = ?", [ReviewStatus(status).value]
        page = "LIMIT -1 OFFSET ?" if limit is None else "LIMIT ? OFFSET ?"
        sql = f"SELECT {_IMG_COLS} FROM images {where} ORDER BY {self._ORDERS[order]} {page}"
        rows = self._q(sql, params + ([offset] if limit is None else [limit, offset])).fetchall()
        return [self._image_from_row(r) for r in rows]

    def image_count(self, status: ReviewStatus | str | None = None) -> int:
        if status is None:
            return self._q("SELECT COUNT(*) FROM images").fetchone()[0]
        return self._q("SELECT COUNT(*) FROM images WHERE status = ?", (ReviewStatus(status).value,)).fetchone()[0]

    def status_counts(self) -> dict[ReviewStatus, int]:
        out = {s: 0 for s in ReviewStatus}
        for st, n in self._q("SELECT status, COUNT(*) FROM images GROUP BY status"):
            out[ReviewStatus(st)] = n
        return out

    def image_counts(self, image_ids: Iterable[int] | None = None) -> dict[int, ImageCounts]:
        """Objects / undecided / rejected per image (kept on the image rows: one indexed
        read, ~10 ms for 10,000 images)."""
        sql = "SELECT id, n_objects, n_undecided, n_rejected, COALESCE(mark, '') = 'reviewed' FROM images"
        if image_ids is None:
            return {r[0]: ImageCounts(r[1], r[2], r[3], bool(r[4])) for r in self._q(sql)}
        ids = list(image_ids)
        out = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in self._q(sql + f" WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[r[0]] = ImageCounts(r[1], r[2], r[3], bool(r[4]))
        return out

    def category_counts(self, include_proposed: bool = True) -> dict[int, int]:
        """Grains per taxon over the project (rejected never count; undecided proposals
        count unless ``include_proposed`` is False). One grouped query."""
        st = sql_in(OBJECT_STATUSES | {AnnotationStatus.PROPOSED}) if include_proposed else _OBJECTS_SQL
        return {r[0]: r[1] for r in self._q(
            f"SELECT category_id, COUNT(*) FROM annotations WHERE status IN {st} GROUP BY category_id")}

    def set_image_status(self, image_id: int, status: ReviewStatus | str) -> ReviewStatus:
        """Explicit mark, one undoable command: REVIEWED marks the image finished (e.g. it
        has no grains); IN_REVIEW marks it not finished; NEW clears the mark. Undecided
        proposals always keep an image in review. Returns the resulting status."""
        status = ReviewStatus(status)
        mark = {ReviewStatus.REVIEWED: "reviewed", ReviewStatus.IN_REVIEW: "open", ReviewStatus.NEW: None}[status]
        self.image(image_id)
        with self._command("set image status"):
            self._set_row("images", image_id, {"id": image_id, "mark": mark})
        return self.image(image_id).status

    def set_image_group(self, image_id: int, group: str | None) -> None:
        """Slide / sample id (train/val splits keep a group together). Not undoable."""
        group = check_name(group, "sample name") if group is not None and str(group).strip() else None
        with self._tx() as conn:
            conn.execute("UPDATE images SET group_name = ? WHERE id = ?", (group, image_id))
        self._notify(ChangeEvent("images", "set group", (image_id,)))

    def set_um_per_px(self, um_per_px: float | None, image_ids: Iterable[int] | None = None) -> None:
        """Calibration for size reports. Not undoable."""
        if um_per_px is not None and not um_per_px > 0:
            raise ProjectError(f"micrometres per pixel must be positive, got {um_per_px}")
        with self._tx() as conn:
            if image_ids is None:
                conn.execute("UPDATE images SET um_per_px = ?", (um_per_px,))
            else:
                conn.executemany("UPDATE images SET um_per_px = ? WHERE id = ?", [(um_per_px, i) for i in image_ids])
        self._notify(ChangeEvent("images", "calibration"))

    # ------------------------------------------------------------------ counting (issue 20)
    def set_images_group(self, image_ids: Iterable[int], group: str | None) -> None:
        """Put images into a sample (slide); None or "" takes them out. Not undoable, like
        ``set_image_group``."""
        if group is not None and not isinstance(group, str):
            raise ProjectError(f"a sample name is text, got {type(group).__name__}")
        group = check_name(group, "sample name") if (group or "").strip() else None
        ids = list(image_ids)
        with self._tx() as conn:
            conn.executemany("UPDATE images SET group_name = ? WHERE id = ?", [(group, i) for i in ids])
        self._notify(ChangeEvent("images", "set sample", tuple(ids)))

    def taxon_roles(self) -> dict[int, str]:
        """{category id: role} for taxa that are not plain pollen (``core.types.TAXON_ROLES``);
        a taxon not listed is pollen and counts in the pollen sum."""
        return {r[0]: r[1] for r in self._q("SELECT category_id, role FROM taxon_roles")}

    def set_taxon_role(self, category_id: int, role: str) -> None:
        """A taxon's role in counts: "pollen" (in the sum) or spore / marker / indeterminate /
        excluded (counted on their own). Not undoable (a setting, not an edit of grains)."""
        from pollenstudio.core.types import SUM_ROLE, TAXON_ROLES

        if role not in TAXON_ROLES:
            raise ProjectError(f"a taxon's role is one of {', '.join(TAXON_ROLES)}; got {role!r}")
        self.category(category_id)
        with self._tx() as conn:
            if role == SUM_ROLE:
                conn.execute("DELETE FROM taxon_roles WHERE category_id = ?", (category_id,))
            else:
                conn.execute("INSERT OR REPLACE INTO taxon_roles(category_id, role) VALUES (?, ?)", (category_id, role))
        self._notify(ChangeEvent("categories", "taxon role", (), (), (category_id,)))

    def sample_settings(self) -> dict[str, dict]:
        """{sample name: settings} as stored by ``set_sample_settings`` ("" = the project's
        defaults, e.g. its target sum)."""
        return {r[0]: _loads(r[1], {}) for r in self._q("SELECT name, settings FROM samples")}

    def set_sample_settings(self, name: str, settings: dict | None) -> None:
        """Store a sample's count settings (checked by ``project.counting.check_settings``;
        bad values raise ``ScaleError`` and change nothing); None or {} clears them."""
        from pollenstudio.project.counting import check_settings

        clean = check_settings(settings or {})
        with self._tx() as conn:
            if clean:
                conn.execute("INSERT OR REPLACE INTO samples(name, settings) VALUES (?, ?)", (name, json.dumps(clean)))
            else:
                conn.execute("DELETE FROM samples WHERE name = ?", (name,))
        self._notify(ChangeEvent("images", "sample settings"))

    def grain_table(self, statuses: Iterable[AnnotationStatus | str] | None = None,
                    reviewed_only: bool = False) -> list[tuple]:
        """One row per grain for counts: (image id, sample or None, category id, box width
        px, box height px, image µm/px or None, model version id or None, annotation id).
        Confirmed grains (``OBJECT_STATUSES``) unless ``statuses``; one query."""
        st = _OBJECTS_SQL if statuses is None else sql_in({AnnotationStatus(x) for x in statuses})
        rev = " AND i.status = 'reviewed'" if reviewed_only else ""
        return self._q(
            "SELECT a.image_id, i.group_name, a.category_id, a.x2 - a.x1, a.y2 - a.y1, i.um_per_px, "
            f"a.model_version_id, a.id FROM annotations a JOIN images i ON i.id = a.image_id WHERE a.status IN {st}{rev}"
        ).fetchall()

    def missing_images(self) -> list[ImageRecord]:
        """Images whose file is not where the project expects it (a stack of plane files:
        any of its planes)."""
        return [r for r in self.images()
                if not self.image_path(r).is_file() or any(not f.is_file() for f in self.plane_paths(r) or [])]

    def relink(self, folder: str | os.PathLike, progress=None) -> dict[int, str]:
        """Find moved image files under ``folder`` and point the images at them; returns
        {image id: new stored path}. The rules of ``project.relink`` (by content, then by
        name and pixel size; a stack of plane files by the content of all its planes)."""
        from pollenstudio.project.relink import relink_project

        report = relink_project(self, [folder], progress)
        return {f.image_id: self.image(f.image_id).path for f in report.found
                if self.image_path(f.image_id) == Path(f.new_path)}

    def file_problem(self, image: int | ImageRecord) -> str | None:
        """Why the file of an image is not the picture the project registered, or None.
        Missing file; other pixel size; other content (checked by SHA-256 whenever the
        file's size changed or it was modified after it was added). Boxes drawn on one
        picture must never be applied to another that took its name."""
        from pollenstudio.core.imageio import file_sha256
        from pollenstudio.core.stack import stack_info as image_info

        rec = image if isinstance(image, ImageRecord) else self.image(image)
        p = self.image_path(rec)
        if not p.is_file():
            where = self.folder if self.server is None else f'"{self.location}"'
            hint = "" if self.server is None else f" (or set {IMAGE_ROOT_ENV} to where this machine mounts {self.folder})"
            return (f"{rec.path}: file not found; if it was moved or renamed, run 'pollenstudio relink "
                    f"{where} SEARCH_DIR' (or File > Find missing images...){hint}")
        row = self._q("SELECT size_bytes, added FROM images WHERE id = ?", (rec.id,)).fetchone()
        size, added = (row or (None, None))
        try:
            st = p.stat()
            if rec.width and rec.height:
                info = image_info(p)
                if (info.width, info.height) != (rec.width, rec.height):
                    return (f"{rec.path}: the file is now {info.width}x{info.height} pixels, the project registered "
                            f"{rec.width}x{rec.height}; it was replaced by another picture")
            changed = (size is not None and st.st_size != size) or (added is not None and st.st_mtime > added)
            for f in self.plane_paths(rec) or []:
                if not f.is_file():
                    return f"{rec.path}: plane file {f.name} of the stack not found ({f})"
            if rec.sha256 and changed and not rec.plane_files and file_sha256(p) != rec.sha256:
                return (f"{rec.path}: the file's content changed since it was added (another picture under the "
                        "same name?); remove the image from the project or put the original back")
        except ImageReadError as exc:
            return str(exc)
        except OSError as exc:
            return f"{rec.path}: cannot read ({exc.strerror or exc})"
        return None

    def missing_by_name(self) -> dict[str, list[ImageRecord]]:
        """Images whose file is missing, by lower-case file name (for importers and relink
        to recognise a moved file instead of adding it a second time)."""
        out: dict[str, list[ImageRecord]] = {}
        for rec in self.missing_images():
            out.setdefault(Path(rec.path).name.lower(), []).append(rec)
        return out

    def _relocate(self, image_id: int, path: str | os.PathLike, sha256: str | None, size_bytes: int | None,
                  width: int, height: int, bit_depth: int = 8, channels: int = 3,
                  plane_files: Sequence[str | os.PathLike] | None = None) -> None:
        """Point a (missing) image at its file found elsewhere, in the caller's transaction.
        A stack of plane files moves as a whole: ``plane_files`` (every plane, in order) is
        required for it and must have its plane count; ``path`` is then the first plane."""
        row = self._conn.execute("SELECT planes, plane_files FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(f"image {image_id} is not in the project")
        if row[1] and not plane_files:
            raise ProjectError(f"image {image_id} is a focal stack of plane files: it moves with all its planes")
        if plane_files and len(plane_files) != (row[0] or 1):
            raise ProjectError(f"image {image_id} has {row[0] or 1} planes, not {len(plane_files)}")
        files = json.dumps([self._rel(f) for f in plane_files]) if plane_files else row[1]
        self._conn.execute(
            "UPDATE images SET path = ?, sha256 = ?, size_bytes = ?, missing = 0, width = ?, height = ?, "
            "bit_depth = ?, channels = ?, plane_files = ? WHERE id = ?",
            (self._rel(path), sha256, size_bytes, width, height, bit_depth, channels, files, image_id))
        self._notify(ChangeEvent("images", "relink", (image_id,)))

    def remove_images(self, image_ids: Iterable[int], label: str = "remove images") -> int:
        """Remove images from the project (the files stay on disk): one undoable command
        that also removes their annotations; undo brings back the images with every
        annotation as it was. Returns the number removed. Unknown ids are an error."""
        ids = sorted(set(int(i) for i in image_ids))
        for i in ids:
            self.image(i)  # raises ProjectError for an unknown id, before anything changes
        if not ids:
            return 0
        with self._command(label):
            for image_id in ids:
                for (aid,) in self._conn.execute("SELECT id FROM annotations WHERE image_id = ?",
                                                 (image_id,)).fetchall():
                    self._set_row("annotations", aid, None)
                self._set_row("image_rows", image_id, None)
        return len(ids)

    @staticmethod
    def _same_size(rec: ImageRecord, p: Path) -> bool:
        """A file found by name only is the image when its size matches (else boxes would not fit)."""
        from pollenstudio.core.stack import stack_info as image_info

        if not rec.width or not rec.height:
            return True
        try:
            info = image_info(p)
        except ImageReadError:
            return False
        return (info.width, info.height) == (rec.width, rec.height)

    # ------------------------------------------------------------------ categories
    @staticmethod
    def _cat_from_row(r) -> Category:
        return Category(id=r[0], name=r[1], color=r[2], hotkey=r[3], parent_id=r[4])

    def categories(self) -> list[Category]:
        return [self._cat_from_row(r) for r in self._q("SELECT id, name, color, hotkey, parent_id FROM categories ORDER BY id")]

    def category(self, category_id: int) -> Category:
        r = self._q("SELECT id, name, color, hotkey, parent_id FROM categories WHERE id = ?", (category_id,)).fetchone()
        if r is None:
            raise ProjectError(f"taxon {category_id} is not in the project")
        return self._cat_from_row(r)

    def category_by_name(self, name: str) -> Category | None:
        r = self._q("SELECT id, name, color, hotkey, parent_id FROM categories WHERE name = ?", (name,)).fetchone()
        return None if r is None else self._cat_from_row(r)

    def _next_color(self) -> str:
        n = self._conn.execute("SELECT COUNT(*) FROM categories").fetchone()[0]
        return PALETTE[n % len(PALETTE)]

    def _insert_category(self, name: str, color: str | None = None, hotkey: str | None = None,
                         parent_id: int | None = None) -> int:
        cur = self._conn.execute(
            "INSERT INTO categories(name, color, hotkey, parent_id) VALUES (?, ?, ?, ?)",
            (name, color or self._next_color(), hotkey, parent_id),
        )
        return cur.lastrowid

    @staticmethod
    def _check_name(name: str) -> str:
        # one rule for every way a name comes in (core.names): no line break (it would split
        # the name in YOLO's classes.txt and shift every index), control or direction character
        return check_name(name, "taxon name")

    def add_category(self, name: str, color: str | None = None, hotkey: str | None = None,
                     parent_id: int | None = None) -> int:
        """New taxon (undoable). Names are unique; a hotkey moves from its old owner."""
        name = self._check_name(name)
        if self.category_by_name(name) is not None:
            raise ProjectError(f"a taxon named {name!r} already exists")
        with self._command("add taxon") as cmd:
            if hotkey is not None:
                self._clear_hotkey(hotkey)
            cid = self._insert_category(name, color, hotkey, parent_id)
            cmd.record("categories", cid, None, hist.snapshot(self._conn, "categories", cid))
        return cid

    def _clear_hotkey(self, hotkey: str) -> None:
        for (cid,) in self._conn.execute("SELECT id FROM categories WHERE hotkey = ?", (hotkey,)).fetchall():
            row = hist.snapshot(self._conn, "categories", cid)
            self._set_row("categories", cid, {**row, "hotkey": None})

    def _update_cat(self, category_id: int, **cols) -> None:
        row = hist.snapshot(self._conn, "categories", category_id)
        if row is None:
            raise ProjectError(f"taxon {category_id} is not in the project")
        self._set_row("categories", category_id, {**row, **cols})

    def rename_category(self, category_id: int, name: str) -> None:
        name = self._check_name(name)
        other = self.category_by_name(name)
        if other is not None and other.id != category_id:
            raise ProjectError(f"a taxon named {name!r} already exists; merge the two instead")
        with self._command("rename taxon"):
            self._update_cat(category_id, name=name)

    def recolor_category(self, category_id: int, color: str) -> None:
        if not (isinstance(color, str) and len(color) == 7 and color[0] == "#"):
            raise ProjectError(f"colour must look like '#rrggbb', got {color!r}")
        int(color[1:], 16)
        with self._command("recolour taxon"):
            self._update_cat(category_id, color=color)

    def set_category_hotkey(self, category_id: int, hotkey: str | None) -> None:
        with self._command("set taxon hotkey"):
            if hotkey is not None:
                self._clear_hotkey(hotkey)
            self._update_cat(category_id, hotkey=hotkey)

    def set_category_looks(self, looks: Mapping[int, tuple[str, str | None]]) -> int:
        """Colour (``"#rrggbb"``) and digit key (``"1"``-``"9"`` or None) per taxon id, as
        an app shows them (its user's taxon list), so exports carry what people saw. Not a
        review decision: not undoable, no history entry, no change event. Rows that already
        match are not written; unknown ids and malformed values are skipped. Returns how
        many taxa changed."""
        want = {}
        for cid, (color, hotkey) in looks.items():
            ok_color = isinstance(color, str) and len(color) == 7 and color[0] == "#" and all(
                ch in "0123456789abcdefABCDEF" for ch in color[1:])
            ok_key = hotkey is None or (isinstance(hotkey, str) and len(hotkey) == 1 and hotkey in "123456789")
            if ok_color and ok_key:
                want[int(cid)] = (color.lower(), hotkey)
        have = {r[0]: (r[1], r[2]) for r in self._q("SELECT id, color, hotkey FROM categories")}
        todo = {cid: v for cid, v in want.items() if cid in have and have[cid] != v}
        if not todo:
            return 0
        with self._tx() as conn:
            keys = {v[1] for v in todo.values() if v[1] is not None}
            if keys:  # a key moves: its old owner (not in this call) lets go of it first
                conn.execute(f"UPDATE categories SET hotkey = NULL WHERE hotkey IN ({','.join('?' * len(keys))})",
                             tuple(keys))
            conn.executemany("UPDATE categories SET color = ?, hotkey = ? WHERE id = ?",
                             [(c, k, cid) for cid, (c, k) in todo.items()])
        return len(todo)

    def set_category_parent(self, category_id: int, parent_id: int | None) -> None:
        seen, up = set(), parent_id
        while up is not None and up not in seen:  # walk up: the new parent must not descend from it
            if up == category_id:
                raise ProjectError("a taxon cannot be placed under itself or one of its own sub-taxa")
            seen.add(up)
            up = self.category(up).parent_id
        with self._command("set taxon parent"):
            self._update_cat(category_id, parent_id=parent_id)

    def merge_categories(self, src_id: int, dst_id: int) -> list[int]:
        """Relabel every annotation of ``src`` to ``dst`` and remove ``src``; one undoable
        command. Statuses are kept (a merge fixes the taxon list, not one grain)."""
        if src_id == dst_id:
            raise ProjectError("cannot merge a taxon into itself")
        self.category(src_id)
        self.category(dst_id)
        with self._command("merge taxa"):
            ids = [r[0] for r in self._conn.execute("SELECT id FROM annotations WHERE category_id = ?", (src_id,))]
            now = _now()
            for aid in ids:
                row = hist.snapshot(self._conn, "annotations", aid)
                self._set_row("annotations", aid, {**row, "category_id": dst_id, "updated": now,
                                                   "author": self.reviewer})
            for (child,) in self._conn.execute("SELECT id FROM categories WHERE parent_id = ?", (src_id,)).fetchall():
                self._update_cat(child, parent_id=dst_id)
            self._set_row("categories", src_id, None)
        return ids

    def delete_category(self, category_id: int) -> None:
        """Remove an unused taxon (undoable); a used one must be merged into another."""
        n = self._q("SELECT COUNT(*) FROM annotations WHERE category_id = ?", (category_id,)).fetchone()[0]
        if n:
            raise ProjectError(f"taxon {self.category(category_id).name!r} labels {n} grains; merge it into another taxon")
        self.category(category_id)
        with self._command("delete taxon"):
            for (child,) in self._conn.execute("SELECT id FROM categories WHERE parent_id = ?", (category_id,)).fetchall():
                self._update_cat(child, parent_id=None)
            self._set_row("categories", category_id, None)

    def ensure_categories(self, names: Iterable[str]) -> dict[str, int]:
        """Map taxon names to ids, creating missing ones (not undoable: used by detection
        and import, which add model/label taxa, not user edits)."""
        out = {}
        with self._tx():
            for name in names:
                try:
                    c = self.category_by_name(name)
                except (UnicodeEncodeError, ValueError):
                    c = None  # not storable text (a lone surrogate): refused in words just below
                if c is not None:
                    out[name] = c.id
                elif self.server is None:
                    out[name] = self._insert_category(self._check_name(name))
                else:
                    # several detection workers may create one taxon at once: the second
                    # insert waits for the first and then does nothing, and reads its id
                    self._conn.execute("INSERT OR IGNORE INTO categories(name, color) VALUES (?, ?)",
                                       (self._check_name(name), self._next_color()))
                    out[name] = self.category_by_name(name).id
        return out

    # ------------------------------------------------------------------ annotations
    @staticmethod
    def _ann_from_row(r) -> Annotation:
        poly = _loads(r[6], None)
        topk = _loads(r[9], [])
        return Annotation(
            id=r[0], image_id=r[1], box=Box(r[2], r[3], r[4], r[5]), category_id=r[7],
            status=AnnotationStatus(r[11]), source=Source(r[10]), score=r[8], model_version=r[12],
            author=r[13], polygon=tuple(poly) if poly is not None else None,
            topk=tuple((str(n), float(p)) for n, p in topk), created=r[14], updated=r[15],
            extra={"run_id": r[16]} if r[16] is not None else {}, plane=r[17],
        )

    def annotation(self, ann_id: int) -> Annotation:
        r = self._q(f"SELECT {_ANN_COLS} FROM annotations WHERE id = ?", (ann_id,)).fetchone()
        if r is None:
            raise ProjectError(f"annotation {ann_id} does not exist (deleted or undone?)")
        return self._ann_from_row(r)

    def annotations(self, image_id: int, include_rejected: bool = True) -> list[Annotation]:
        """All annotations of one image (uses the (image_id, status) index)."""
        sql = f"SELECT {_ANN_COLS} FROM annotations WHERE image_id = ?"
        if not include_rejected:
            sql += " AND status != 'rejected'"
        return [self._ann_from_row(r) for r in self._q(sql + " ORDER BY id", (image_id,))]

    def iter_annotations(self, statuses: Iterable[AnnotationStatus | str] | None = None) -> Iterator[Annotation]:
        sql = f"SELECT {_ANN_COLS} FROM annotations"
        params: list = []
        if statuses is not None:
            st = [AnnotationStatus(s).value for s in statuses]
            sql += f" WHERE status IN ({','.join('?' * len(st))})"
            params = st
        rows = self._q(sql + " ORDER BY image_id, id", params).fetchall()
        return (self._ann_from_row(r) for r in rows)

    def grain_rows(self, category_id: int | None = None, statuses: Iterable[AnnotationStatus | str] | None = None,
                   min_score: float = 0.0, order: str = "score") -> list[tuple]:
        """Light rows for a gallery of grains, one query: (id, image_id, x1, y1, x2, y2,
        category_id, score, status). Boxes drawn by hand have no score and count as 1.0.
        order: "score" (least certain first), "-score" (most certain first), "image"."""
        where, params = ["COALESCE(score, 1.0) >= ?"], [float(min_score)]
        if category_id is not None:
            where.append("category_id = ?")
            params.append(int(category_id))
        if statuses is not None:
            where.append(f"status IN {sql_in(statuses)}")
        by = {"score": "COALESCE(score, 1.0), id", "-score": "COALESCE(score, 1.0) DESC, id",
              "image": "image_id, id"}[order]
        return self._q(
            f"SELECT id, image_id, x1, y1, x2, y2, category_id, score, status FROM annotations "
            f"WHERE {' AND '.join(where)} ORDER BY {by}", params).fetchall()

    def annotation_count(self, status: AnnotationStatus | str | None = None) -> int:
        if status is None:
            return self._q("SELECT COUNT(*) FROM annotations").fetchone()[0]
        return self._q("SELECT COUNT(*) FROM annotations WHERE status = ?", (AnnotationStatus(status).value,)).fetchone()[0]

    def _check_box(self, image_id: int, box: Box) -> Box:
        img = self.image(image_id)
        box = box.normalized()
        if img.width and img.height:
            box = box.clipped(img.width, img.height)
        if not box.is_valid():
            raise ProjectError(f"the box {box.xyxy()} has no area inside image {img.path} ({img.width}x{img.height})")
        return box

    def _check_category(self, category_id: int) -> None:
        self.category(category_id)

    def add_annotation(self, image_id: int, box: Box, category_id: int, author: str | None = None,
                       polygon: Iterable[float] | None = None, plane: int | None = None) -> int:
        """A grain drawn by a human (status added). Boxes, and polygons with them, are clipped
        to the image. On a focal stack ``plane`` is the plane it was drawn on (0-based)."""
        box = self._check_box(image_id, box)
        plane = self._check_plane(image_id, plane)
        self._check_category(category_id)
        poly = None
        if polygon is not None:
            img = self.image(image_id)
            vals = [float(v) for v in polygon]
            if img.width and img.height:  # the box was clipped: its outline goes with it
                vals = [min(max(v, 0.0), float(img.width if i % 2 == 0 else img.height)) for i, v in enumerate(vals)]
            poly = json.dumps(vals)
        with self._command("add box") as cmd:
            now = _now()
            cur = self._conn.execute(
                "INSERT INTO annotations(image_id, x1, y1, x2, y2, polygon, category_id, score, topk, margin, source, "
                "status, model_version_id, run_id, author, created, updated, plane) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 'human', 'added', NULL, NULL, ?, ?, ?, ?)",
                (image_id, box.x1, box.y1, box.x2, box.y2, poly, category_id, author or self.reviewer, now, now,
                 plane),
            )
            aid = cur.lastrowid
            cmd.record("annotations", aid, None, hist.snapshot(self._conn, "annotations", aid))
        return aid

    def _check_plane(self, image_id: int, plane: int | None) -> int | None:
        if plane is None:
            return None
        img = self.image(image_id)
        if isinstance(plane, bool) or not isinstance(plane, (int,)) or not 0 <= plane < img.planes:
            raise ProjectError(f"plane {plane!r} does not exist on {img.path}: it has {img.planes} plane(s), "
                               f"numbered 0 to {img.planes - 1}")
        return None if img.planes == 1 else int(plane)

    def set_annotation_plane(self, ann_id: int, plane: int) -> Annotation:
        """The focal plane of a grain (one undoable step); its status is unchanged: the plane
        says where the grain is sharpest, not what it is."""
        old = self.annotation(ann_id)
        plane = self._check_plane(old.image_id, plane)
        if plane != old.plane:
            with self._command("set plane"):
                self._update_ann(ann_id, plane=plane)
        return self.annotation(ann_id)

    def move_annotation(self, ann_id: int, box: Box) -> Annotation:
        """Move or resize a box (one undoable step: the GUI commits on mouse release).
        A model proposal or accepted box becomes edited. Its outline (``polygon``) is
        dropped: an outline traces the image inside the old box, and stretching it with
        the box would give sizes the image does not show (measure it again; undo brings
        box and outline back together)."""
        old = self.annotation(ann_id)
        box = self._check_box(old.image_id, box)
        cols = {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}
        if old.polygon is not None and box != old.box:
            cols["polygon"] = None
        if old.source is Source.MODEL and old.status in (AnnotationStatus.PROPOSED, AnnotationStatus.ACCEPTED):
            cols["status"] = AnnotationStatus.EDITED.value
        with self._command("move box"):
            self._update_ann(ann_id, **cols)
        return self.annotation(ann_id)

    resize_annotation = move_annotation

    def set_outlines(self, outlines: dict[int, Iterable[float] | None], label: str = "measure outline") -> list[int]:
        """Store grains' outlines (flat polygons in image pixels, e.g. fitted by
        ``engine.shape``; None removes one) in ``annotations.polygon``: one undoable step
        for all of them. The status is left alone (measuring is not a review decision).
        Every outline is checked first (``core.outline.check_outline``, inside its image):
        a bad one raises ``ProjectError`` and nothing is stored. Returns the ids changed."""
        from pollenstudio.core.outline import check_outline

        clean: dict[int, str | None] = {}
        for aid, poly in outlines.items():
            a = self.annotation(int(aid))
            if poly is None:
                clean[a.id] = None
                continue
            vals = check_outline(poly)
            img = self.image(a.image_id)
            if img.width and img.height:
                xs, ys = vals[0::2], vals[1::2]
                if min(xs) < -1 or min(ys) < -1 or max(xs) > img.width + 1 or max(ys) > img.height + 1:
                    raise ProjectError(f"the outline of annotation {a.id} goes outside its image "
                                       f"({img.width}x{img.height})")
            clean[a.id] = json.dumps(vals)
        changed = []
        with self._command(label):
            for aid, text in clean.items():
                before = hist.snapshot(self._conn, "annotations", aid)
                if before["polygon"] != text:
                    self._update_ann(aid, polygon=text)
                    changed.append(aid)
        return changed

    def set_outline(self, ann_id: int, polygon: Iterable[float] | None) -> Annotation:
        """One grain's outline (see ``set_outlines``); None removes it."""
        self.set_outlines({ann_id: polygon}, "measure outline" if polygon is not None else "remove outline")
        return self.annotation(ann_id)

    def outlines(self, ann_ids: Iterable[int] | None = None) -> dict[int, tuple[float, ...]]:
        """{annotation id: outline} of the confirmed grains that have one (or of ``ann_ids``)."""
        if ann_ids is None:
            rows = self._q(f"SELECT id, polygon FROM annotations WHERE polygon IS NOT NULL AND status IN {_OBJECTS_SQL}")
        else:
            ids = [int(i) for i in ann_ids]
            rows = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows += self._q(f"SELECT id, polygon FROM annotations WHERE polygon IS NOT NULL AND id IN "
                                f"({','.join('?' * len(chunk))})", chunk).fetchall()
        out = {}
        for aid, text in rows:
            poly = _loads(text, None)
            if poly:
                out[aid] = tuple(float(v) for v in poly)
        return out

    def relabel(self, ann_id: int, category_id: int) -> Annotation:
        """Assign another taxon; a model annotation becomes edited (even a rejected one:
        giving it a taxon says it is a grain)."""
        old = self.annotation(ann_id)
        self._check_category(category_id)
        cols: dict = {"category_id": category_id}
        if old.source is Source.MODEL and old.category_id != category_id:
            cols["status"] = AnnotationStatus.EDITED.value
        with self._command("relabel"):
            self._update_ann(ann_id, **cols)
        return self.annotation(ann_id)

    def accept(self, ann_id: int) -> Annotation:
        """proposed or rejected -> accepted; already decided objects are left as they are."""
        old = self.annotation(ann_id)
        if old.status in (AnnotationStatus.PROPOSED, AnnotationStatus.REJECTED) and old.source is Source.MODEL:
            with self._command("accept"):
                self._update_ann(ann_id, status=AnnotationStatus.ACCEPTED.value)
        return self.annotation(ann_id)

    def reject(self, ann_id: int) -> Annotation | None:
        """A model annotation becomes rejected (kept, so re-detection will not bring it
        back); a human-added box is deleted (returns None)."""
        old = self.annotation(ann_id)
        if old.source is Source.HUMAN:
            self.delete(ann_id)
            return None
        if old.status is not AnnotationStatus.REJECTED:
            with self._command("reject"):
                self._update_ann(ann_id, status=AnnotationStatus.REJECTED.value)
        return self.annotation(ann_id)

    def delete(self, ann_id: int) -> None:
        """Delete key: removes a human-added box; a model annotation is rejected instead,
        so its provenance stays and the model cannot propose it again."""
        old = self.annotation(ann_id)
        if old.source is Source.MODEL:
            self.reject(ann_id)
            return
        with self._command("delete box"):
            rv.before_change(self, self._conn, ann_id, "delete box")
            self._set_row("annotations", ann_id, None)

    def _set_status_many(self, label: str, ann_ids: list[int], status: AnnotationStatus) -> list[int]:
        with self._command(label):
            for aid in ann_ids:
                self._update_ann(aid, status=status.value)
        return ann_ids

    def accept_all(self, image_id: int, min_score: float = 0.0) -> list[int]:
        """Accept every undecided proposal of an image scoring >= min_score (one command)."""
        ids = [r[0] for r in self._q(
            "SELECT id FROM annotations WHERE image_id = ? AND status = 'proposed' AND score >= ? ORDER BY id",
            (image_id, min_score))]
        return self._set_status_many("accept all", ids, AnnotationStatus.ACCEPTED)

    def reject_all(self, image_id: int, max_score: float = 1.0) -> list[int]:
        """Reject every undecided proposal of an image scoring <= max_score (one command)."""
        ids = [r[0] for r in self._q(
            "SELECT id FROM annotations WHERE image_id = ? AND status = 'proposed' AND score <= ? ORDER BY id",
            (image_id, max_score))]
        return self._set_status_many("reject all", ids, AnnotationStatus.REJECTED)

    @contextmanager
    def batch(self, label: str):
        """Group several edits into one undo step and one transaction::

            with project.batch("accept selection"):
                for i in ids: project.accept(i)
        """
        with self._command(label) as cmd:
            yield cmd

    # ------------------------------------------------------------------ undo / redo
    def can_undo(self) -> bool:
        return self._q(f"SELECT 1 FROM history WHERE undone = 0 AND {_MINE} LIMIT 1",
                       (self.reviewer,)).fetchone() is not None

    def can_redo(self) -> bool:
        return self._q(f"SELECT 1 FROM history WHERE undone = 1 AND {_MINE} LIMIT 1",
                       (self.reviewer,)).fetchone() is not None

    def undo_label(self) -> str | None:
        r = self._q(f"SELECT label FROM history WHERE undone = 0 AND {_MINE} ORDER BY id DESC LIMIT 1",
                    (self.reviewer,)).fetchone()
        return r[0] if r else None

    def redo_label(self) -> str | None:
        r = self._q(f"SELECT label FROM history WHERE undone = 1 AND {_MINE} ORDER BY id ASC LIMIT 1",
                    (self.reviewer,)).fetchone()
        return r[0] if r else None

    def undo(self) -> ChangeEvent | None:
        """Undo the last user command; returns what changed (None when nothing to undo)."""
        return self._undo_redo(undo=True)

    def redo(self) -> ChangeEvent | None:
        return self._undo_redo(undo=False)

    def _undo_redo(self, undo: bool) -> ChangeEvent | None:
        with self._lock:
            if self._cmd is not None:
                raise ProjectError("cannot undo inside a batch of edits")
            with self._tx() as conn:
                # a reviewer undoes their own steps only (steps from before schema 8 have no author)
                sql = (f"SELECT id, label, changes FROM history WHERE undone = 0 AND {_MINE} ORDER BY id DESC LIMIT 1"
                       if undo else
                       f"SELECT id, label, changes FROM history WHERE undone = 1 AND {_MINE} ORDER BY id ASC LIMIT 1")
                row = conn.execute(sql, (self.reviewer,)).fetchone()
                if row is None:
                    return None
                hid, label, text = row
                changes = hist.Command.changes_from_json(text)
                done = hist.apply(conn, changes, undo=undo)
                crossed = rv.undo_conflicts(self, conn, changes, done, undo)
                conn.execute("UPDATE history SET undone = ? WHERE id = ?", (1 if undo else 0, hid))
                images = self._images_of_changes(conn, changes)
                self._refresh_status(images)
                kind = "undo" if undo else "redo"
                if any(t == "image_rows" for t, _, _, _ in done):
                    kind = "images"  # images came back or went again: views reload their lists
                ev = dataclasses.replace(self._event(kind, done, images, label=label), conflicts=crossed)
                self._pending.append(ev)
            return ev

    def _trim_history(self, keep: int = 10000) -> None:
        """History from earlier sessions is kept (undo survives reopening) up to ``keep`` steps."""
        n = self._q("SELECT COUNT(*) FROM history").fetchone()[0]
        if n > keep:
            with self._tx() as conn:
                conn.execute(
                    "DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY id ASC LIMIT ?)", (n - keep,)
                )

    def clear_history(self) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM history")

    # ------------------------------------------------------------------ proposals
    def write_proposals(self, image_id: int, detections: list[Detection], model_version_id: int | None = None,
                        run_id: int | None = None, iou_threshold: float = 0.5, doubts: Sequence[float] | None = None,
                        flip_unmatched: int | None = None, journal: bool = False) -> ProposalResult:
        """Store a model's detections for one image (one transaction). Detections matching a
        human decision (IoU > iou_threshold) are skipped; older undecided proposals of the
        image are replaced. Taxa are mapped by name (missing ones created). Not a user
        command: it is not undoable and leaves the undo history alone (see history.py).

        ``doubts`` (one per detection) and ``flip_unmatched`` are what "review this next"
        keeps (``engine.review_order``); ``flip_unmatched`` None: no flipped pass was run.
        ``journal`` (with ``run_id``): keep what this write replaces, so that
        :meth:`take_back_proposals` can undo every write of a run that fails part-way."""
        img = self.image(image_id)
        if doubts is not None and len(doubts) != len(detections):
            raise ValueError(f"{len(doubts)} doubts for {len(detections)} detections")
        doubt_of = {id(d): float(v) for d, v in zip(detections, doubts)} if doubts is not None else {}
        if journal and run_id is None:
            raise ValueError("a journaled write needs the run it belongs to")
        with self._tx() as conn:
            if journal:
                self._journal(conn, run_id, image_id)
            conn.execute("UPDATE images SET flip_unmatched = ? WHERE id = ?", (flip_unmatched, image_id))
            existing = self.annotations(image_id)
            # proposals the classifier withdrew last time are replaced like undecided ones
            withdrawn = [a.id for a in existing if a.author == WITHDRAWN_BY_MODEL and a.status is AnnotationStatus.REJECTED]
            existing = [a for a in existing if a.id not in set(withdrawn)]
            if withdrawn:
                if journal:
                    self._journal(conn, run_id, image_id, withdrawn)
                conn.execute(f"DELETE FROM annotations WHERE id IN ({','.join('?' * len(withdrawn))})", withdrawn)
            plan = plan_merge(existing, list(detections), iou_threshold)
            before_cats = {c.name for c in self.categories()}
            cat_ids = self.ensure_categories(dict.fromkeys(d.label for d in plan.keep))
            created = [cid for name, cid in cat_ids.items() if name not in before_cats]
            if journal:
                self._journal(conn, run_id, image_id, plan.replace_ids)
            for chunk in range(0, len(plan.replace_ids), 500):
                ids = plan.replace_ids[chunk : chunk + 500]
                conn.execute(f"DELETE FROM annotations WHERE id IN ({','.join('?' * len(ids))})", ids)
            now = _now()
            written = []
            for d in plan.keep:
                box = d.box.normalized()
                if img.width and img.height:
                    box = box.clipped(img.width, img.height)
                if not box.is_valid():
                    continue
                topk = [[str(n), float(p)] for n, p in d.topk]
                margin = (topk[0][1] - topk[1][1]) if len(topk) >= 2 else float(d.score)
                plane = getattr(d, "plane", None)
                plane = int(plane) if plane is not None and img.planes > 1 and 0 <= plane < img.planes else None
                gone = bool(getattr(d, "withdrawn", False))
                cur = conn.execute(
                    "INSERT INTO annotations(image_id, x1, y1, x2, y2, polygon, category_id, score, topk, margin, "
                    "source, status, model_version_id, run_id, author, created, updated, plane, doubt) "
                    "VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, 'model', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image_id, box.x1, box.y1, box.x2, box.y2, cat_ids[d.label], float(d.score),
                     json.dumps(topk) if topk else None, margin, "rejected" if gone else "proposed", model_version_id,
                     run_id, WITHDRAWN_BY_MODEL if gone else None, now, now, plane,
                     None if gone else doubt_of.get(id(d))),
                )
                written.append(cur.lastrowid)
            self._refresh_status([image_id])
            self._notify(ChangeEvent("proposals", "detection", (image_id,), tuple(withdrawn + plan.replace_ids + written),
                                     tuple(created)))
        return ProposalResult(written, len(plan.skipped), len(plan.replace_ids), created)

    # ------------------------------------------------------------------ all or nothing
    # A detection run writes image by image (each image one transaction, so the GUI shows
    # proposals as they land and a cancel keeps the images finished). When the run fails
    # part-way, its writes are taken back: what they replaced is kept meanwhile in TEMP
    # tables of this connection (gone with it; a killed process leaves finished images).
    def _journal(self, conn, run_id: int, image_id: int, ann_ids: Sequence[int] = ()) -> None:
        """Keep, for run ``run_id``, the image's flip count (first value only) and the
        annotation rows ``ann_ids`` it is about to delete (rows written by the run itself
        excepted: taking the run back removes those anyway)."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS proposal_journal AS "
                     "SELECT *, 0 AS journal_run FROM main.annotations WHERE 1 = 0")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS flip_journal "
                     "(journal_run INTEGER, image_id INTEGER, value INTEGER, PRIMARY KEY (journal_run, image_id))")
        conn.execute("INSERT OR IGNORE INTO temp.flip_journal SELECT ?, id, flip_unmatched FROM main.images "
                     "WHERE id = ?", (run_id, image_id))
        ids = list(ann_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            conn.execute(f"INSERT INTO temp.proposal_journal SELECT *, ? FROM main.annotations WHERE id IN "
                         f"({','.join('?' * len(chunk))}) AND run_id IS NOT ?", (run_id, *chunk, run_id))

    def _has_journal(self, conn) -> bool:
        return dia.has_temp_table(conn, "flip_journal")

    def take_back_proposals(self, run_id: int, category_ids: Iterable[int] = ()) -> int:
        """Undo the journaled writes of run ``run_id`` (``write_proposals(journal=True)``) in
        one transaction: its proposals that nobody touched since are removed (a grain a
        person accepted, edited or rejected meanwhile is a decision and stays), the
        proposals they replaced come back, each image's flip count is restored, and of the
        taxa ``category_ids`` (those the run created) every one no grain, role or child taxon
        uses is removed. Returns how many proposals were removed."""
        cats = list(dict.fromkeys(int(c) for c in category_ids))
        with self._tx() as conn:
            journaled = self._has_journal(conn)
            images = {r[0] for r in conn.execute(
                "SELECT DISTINCT image_id FROM annotations WHERE run_id = ? AND source = 'model'", (run_id,))}
            removed = [r[0] for r in conn.execute(
                "SELECT id FROM annotations WHERE run_id = ? AND source = 'model' AND updated = created", (run_id,))]
            for k in range(0, len(removed), 500):
                chunk = removed[k : k + 500]
                conn.execute(f"DELETE FROM annotations WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            restored: list[int] = []
            if journaled:
                cols = ", ".join(dia.columns(conn, "annotations"))
                restored = [r[0] for r in conn.execute(
                    "SELECT id FROM temp.proposal_journal WHERE journal_run = ?", (run_id,))]
                conn.execute(f"INSERT OR IGNORE INTO main.annotations ({cols}) SELECT {cols} FROM temp.proposal_journal "
                             "WHERE journal_run = ?", (run_id,))
                for image_id, value in conn.execute(
                        "SELECT image_id, value FROM temp.flip_journal WHERE journal_run = ?", (run_id,)).fetchall():
                    conn.execute("UPDATE images SET flip_unmatched = ? WHERE id = ?", (value, image_id))
                    images.add(image_id)
                conn.execute("DELETE FROM temp.proposal_journal WHERE journal_run = ?", (run_id,))
                conn.execute("DELETE FROM temp.flip_journal WHERE journal_run = ?", (run_id,))
            gone = []
            for cid in cats:
                cur = conn.execute(
                    "DELETE FROM categories WHERE id = ? AND NOT EXISTS (SELECT 1 FROM annotations WHERE category_id = ?) "
                    "AND NOT EXISTS (SELECT 1 FROM taxon_roles WHERE category_id = ?) "
                    "AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.parent_id = ?)", (cid, cid, cid, cid))
                if cur.rowcount:
                    gone.append(cid)
            self._refresh_status(sorted(images))
            self._notify(ChangeEvent("proposals", "detection taken back", tuple(sorted(images)),
                                     tuple(removed + restored), tuple(gone)))
        return len(removed)

    def forget_proposal_journal(self, run_id: int) -> None:
        """The run's writes stand (it finished or was cancelled): drop what was kept to take them back."""
        with self._lock:
            if self._conn is None:
                return
        with self._tx() as conn:
            if self._has_journal(conn):
                conn.execute("DELETE FROM temp.proposal_journal WHERE journal_run = ?", (run_id,))
                conn.execute("DELETE FROM temp.flip_journal WHERE journal_run = ?", (run_id,))

    def weighted_doubts(self, weights: Mapping[int, float]) -> dict[int, float]:
        """"Review this next": per image, the sum over its undecided proposals that carry a
        doubt of ``doubt * weights[category]`` (weight 1 for a category not given). One
        grouped query on the partial covering index ``ann_review``: ~0.06 s at 300,000 annotations."""
        items = sorted((int(c), float(w)) for c, w in weights.items())
        factor = ("CASE category_id " + " ".join("WHEN ? THEN ?" for _ in items) + " ELSE 1.0 END") if items else "1.0"
        params = [v for pair in items for v in pair]
        return {r[0]: float(r[1]) for r in self._q(
            f"SELECT image_id, SUM(doubt * {factor}) FROM annotations INDEXED BY ann_review "
            "WHERE status = 'proposed' AND doubt IS NOT NULL GROUP BY image_id", params)}

    def undecided_without_doubt(self) -> list[tuple[int, int, float, float, int]]:
        """Undecided proposals stored without a doubt (imported, or detected before doubts
        were kept): (image id, category id, score, top-2 margin, number of top-k taxa); a
        missing score or margin reads 0."""
        base = "FROM annotations INDEXED BY ann_review WHERE status = 'proposed' AND doubt IS NULL"
        try:
            return self._q(f"SELECT image_id, category_id, COALESCE(score, 0.0), COALESCE(margin, 0.0), "
                           f"COALESCE(json_array_length(topk), 0) {base}")
        except ProjectError:  # an SQLite without JSON functions
            return [(r[0], r[1], r[2], r[3], len(_loads(r[4], []))) for r in self._q(
                f"SELECT image_id, category_id, COALESCE(score, 0.0), COALESCE(margin, 0.0), topk {base}")]

    def flip_unmatched_counts(self) -> dict[int, int]:
        """Per image, grains the flipped detection pass found that the image pass did not."""
        return {r[0]: r[1] for r in self._q("SELECT id, flip_unmatched FROM images WHERE flip_unmatched > 0")}

    def unreviewed_ids(self) -> list[int]:
        """Ids of the images not yet reviewed, in project order."""
        return [r[0] for r in self._q("SELECT id FROM images WHERE status != 'reviewed' ORDER BY id")]

    # ------------------------------------------------------------------ review queue
    _QUEUE_KEYS = {"score": "score", "margin": "margin"}

    def review_queue(self, min_score: float = 0.0, limit: int = 100, offset: int = 0, order: str = "score",
                     image_id: int | None = None) -> list[Annotation]:
        """Undecided proposals across the project, most uncertain first: lowest score
        (order="score") or smallest top-1 minus top-2 probability (order="margin")."""
        key = self._QUEUE_KEYS[order]
        sql = f"SELECT {_ANN_COLS} FROM annotations WHERE status = 'proposed' AND score >= ?"
        params: list = [min_score]
        if image_id is not None:
            sql += " AND image_id = ?"
            params.append(image_id)
        sql += f" ORDER BY {key}, id LIMIT ? OFFSET ?"
        return [self._ann_from_row(r) for r in self._q(sql, params + [limit, offset])]

    def undecided_count(self, min_score: float = 0.0) -> int:
        return self._q("SELECT COUNT(*) FROM annotations WHERE status = 'proposed' AND score >= ?",
                       (min_score,)).fetchone()[0]

    def lowest_undecided_score(self) -> float | None:
        """Score of the least confident undecided proposal (None: none left)."""
        return self._q("SELECT MIN(score) FROM annotations WHERE status = 'proposed'").fetchone()[0]

    def next_undecided(self, after_annotation_id: int | None = None, min_score: float = 0.0, order: str = "score",
                       image_id: int | None = None, backwards: bool = False) -> Annotation | None:
        """The proposal after (or before, ``backwards``) ``after_annotation_id`` in queue
        order. The anchor may already be decided (the user just accepted it)."""
        key = self._QUEUE_KEYS[order]
        anchor = None
        if after_annotation_id is not None:
            anchor = self._q(f"SELECT {key}, id FROM annotations WHERE id = ?", (after_annotation_id,)).fetchone()
            if anchor is not None and anchor[0] is None:
                anchor = None
        conds, params = ["status = 'proposed'"], []
        if anchor is None:
            conds.append("score >= ?")
            params.append(min_score)
        elif backwards:
            conds += ["score >= ?", f"{key} <= ?", f"({key}, id) < (?, ?)"]
            params += [min_score, anchor[0], anchor[0], anchor[1]]
        else:
            # One lower bound, so SQLite's range scan of the queue index starts at the anchor
            # (with two bounds it may pick min_score and walk half the queue).
            if key == "score":
                conds.append("score >= ?")
                params.append(max(min_score, anchor[0]))
            else:
                conds += ["score >= ?", f"{key} >= ?"]
                params += [min_score, anchor[0]]
            conds.append(f"({key}, id) > (?, ?)")
            params += [anchor[0], anchor[1]]
        if image_id is not None:
            conds.append("image_id = ?")
            params.append(image_id)
        direction = "DESC" if backwards else "ASC"
        sql = (f"SELECT {_ANN_COLS} FROM annotations WHERE {' AND '.join(conds)} "
               f"ORDER BY {key} {direction}, id {direction} LIMIT 1")
        r = self._q(sql, params).fetchone()
        return None if r is None else self._ann_from_row(r)

    # ------------------------------------------------------------------ training data
    def reviewed_dataset(self) -> list[tuple[ImageRecord, list[Annotation]]]:
        """What training learns from: every reviewed image with its grains (accepted,
        edited, added). Reviewed images without grains are kept as negatives; rejected
        proposals are not objects; images still in review are left out."""
        imgs = self.images(status=ReviewStatus.REVIEWED)
        by_image: dict[int, list[Annotation]] = {r.id: [] for r in imgs}
        rows = self._q(
            f"SELECT {_ANN_COLS} FROM annotations WHERE status IN {_OBJECTS_SQL} "
            "AND image_id IN (SELECT id FROM images WHERE status = 'reviewed') ORDER BY image_id, id"
        ).fetchall()
        for r in rows:
            by_image[r[1]].append(self._ann_from_row(r))
        return [(rec, by_image[rec.id]) for rec in imgs]

    # ------------------------------------------------------------------ model versions
    @staticmethod
    def _mv_from_row(r) -> ModelVersion:
        return ModelVersion(
            id=r[0], name=r[1], file=r[2], metrics=_loads(r[3], {}), config=_loads(r[4], {}), parent_id=r[5],
            active=bool(r[6]), annotation_ids=_loads(r[7], []), summary=_loads(r[8], {}), created=r[9],
        )

    _MV_COLS = "id, name, file, metrics, config, parent_id, active, annotation_ids, summary, created"

    def add_model_version(self, name: str, file: str | os.PathLike | None, metrics: dict | None = None,
                          config: dict | None = None, parent_id: int | None = None,
                          annotation_ids: Iterable[int] | None = None, summary: dict | None = None,
                          activate: bool = False) -> int:
        """Register a checkpoint (path stored relative to the project where possible)."""
        name = check_name(name, "model version name")
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO model_versions(name, file, metrics, config, parent_id, active, annotation_ids, summary, "
                "created) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (name, self._rel(file) if file is not None else None, json.dumps(metrics or {}),
                 json.dumps(config or {}), parent_id, json.dumps(list(annotation_ids or [])),
                 json.dumps(summary or {}), _now()),
            )
            mid = cur.lastrowid
            if activate:
                self.set_active_model_version(mid)
            self._notify(ChangeEvent("model_versions", "add model version"))
        return mid

    def rename_model_version(self, mv_id: int, name: str) -> None:
        """A readable name for a version (not undoable, like other model-version records).
        Names are unique: a model reference by name must not be ambiguous."""
        name = check_name(name, "model version name")
        self.model_version(mv_id)
        clash = self._q("SELECT id FROM model_versions WHERE name = ? AND id != ?", (name, mv_id)).fetchone()
        if clash is not None:
            raise ProjectError(f"another model version is already named {name!r}")
        with self._tx() as conn:
            conn.execute("UPDATE model_versions SET name = ? WHERE id = ?", (name, mv_id))
            self._notify(ChangeEvent("model_versions", "rename model version"))

    def unique_model_version_name(self, name: str) -> str:
        """``name``, or ``name (2)``, ``name (3)``... when a version already has it."""
        taken = {r[0] for r in self._q("SELECT name FROM model_versions")}
        if name not in taken:
            return name
        k = 2
        while f"{name} ({k})" in taken:
            k += 1
        return f"{name} ({k})"

    def reviewed_breakdown(self) -> tuple[int, int]:
        """(reviewed images marked finished by a person, reviewed images whose proposals are
        all decided without such a mark): what training reads."""
        rows = dict(self._q(
            "SELECT COALESCE(mark, '') = 'reviewed' AS m, COUNT(*) FROM images WHERE status = 'reviewed' GROUP BY m"
        ).fetchall())
        return int(rows.get(1, 0)), int(rows.get(0, 0))

    def model_versions(self) -> list[ModelVersion]:
        return [self._mv_from_row(r) for r in self._q(f"SELECT {self._MV_COLS} FROM model_versions ORDER BY id")]

    def model_version(self, mv_id: int) -> ModelVersion:
        r = self._q(f"SELECT {self._MV_COLS} FROM model_versions WHERE id = ?", (mv_id,)).fetchone()
        if r is None:
            raise ProjectError(f"model version {mv_id} is not in the project")
        return self._mv_from_row(r)

    def model_file(self, mv: int | ModelVersion) -> Path | None:
        mv = mv if isinstance(mv, ModelVersion) else self.model_version(mv)
        return None if mv.file is None else self.resolve_path(mv.file)

    def active_model_version(self) -> ModelVersion | None:
        r = self._q(f"SELECT {self._MV_COLS} FROM model_versions WHERE active = 1").fetchone()
        return None if r is None else self._mv_from_row(r)

    def set_active_model_version(self, mv_id: int | None) -> None:
        """Make one version active (exactly one, or none with None)."""
        if mv_id is not None:
            self.model_version(mv_id)
        with self._tx() as conn:
            conn.execute("UPDATE model_versions SET active = 0 WHERE active = 1")
            if mv_id is not None:
                conn.execute("UPDATE model_versions SET active = 1 WHERE id = ?", (mv_id,))
            self._notify(ChangeEvent("model_versions", "activate"))

    # ------------------------------------------------------------------ runs
    def start_run(self, kind: str, params: dict | None = None) -> int:
        """Record a job (detect, train, import, ...) as running; returns its id."""
        with self._tx() as conn:
            # who runs it, so that a later open can tell a run whose process was killed
            owner = json.dumps({"pid": os.getpid(), "host": _host()})
            cur = conn.execute("INSERT INTO runs(kind, params, status, summary, started) VALUES (?, ?, 'running', ?, ?)",
                               (kind, json.dumps(params or {}, default=str), owner, _now()))
            self._notify(ChangeEvent("runs", kind))
        return cur.lastrowid

    def finish_run(self, run_id: int, status: str = "done", summary: dict | None = None) -> None:
        """status: done | failed | cancelled."""
        with self._tx() as conn:
            cur = conn.execute("UPDATE runs SET status = ?, summary = ?, finished = ? WHERE id = ?",
                               (status, json.dumps(summary or {}, default=str), _now(), run_id))
            if cur.rowcount == 0:
                raise ProjectError(f"run {run_id} is not in the project")
            self._notify(ChangeEvent("runs", status))

    def runs(self, kind: str | None = None) -> list[Run]:
        sql = "SELECT id, kind, params, status, summary, started, finished FROM runs"
        params: list = []
        if kind is not None:
            sql += " WHERE kind = ?"
            params = [kind]
        return [Run(r[0], r[1], _loads(r[2], {}), r[3], _loads(r[4], {}), r[5], r[6])
                for r in self._q(sql + " ORDER BY id", params)]

    def run(self, run_id: int) -> Run:
        for r in self.runs():
            if r.id == run_id:
                return r
        raise ProjectError(f"run {run_id} is not in the project")

    # ------------------------------------------------------------------ bulk (import, bench)
    BULK_INDEX_REBUILD = 50_000  # rows above which bulk_insert rebuilds the annotation indexes

    def bulk_insert(self, images: list[dict], annotations: list[dict]) -> tuple[list[int], list[int]]:
        """Insert prepared rows in the caller's transaction (see ``importing``). Image dicts
        use ImageRecord-like keys plus ``key`` (any hashable); annotation dicts refer to
        images by ``image_key`` or ``image_id``. No validation, no undo: for importers and
        benchmarks that validated everything first."""
        conn = self._conn
        now = _now()
        key_to_id: dict = {}
        img_ids = []
        for im in images:
            cur = conn.execute(
                "INSERT INTO images(path, sha256, width, height, bit_depth, channels, um_per_px, status, group_name, "
                "added, size_bytes, missing, mark, planes, plane_files) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, ?, ?, ?, ?, ?)",
                (im["path"], im.get("sha256"), im.get("width", 0), im.get("height", 0), im.get("bit_depth", 8),
                 im.get("channels", 3), im.get("um_per_px"), im.get("group"), now, im.get("size_bytes"),
                 int(im.get("missing", 0)), im.get("mark"), int(im.get("planes") or 1),
                 json.dumps(list(im["plane_files"])) if im.get("plane_files") else None),
            )
            key_to_id[im.get("key", cur.lastrowid)] = cur.lastrowid
            img_ids.append(cur.lastrowid)
        rows = []
        sources = {x.value for x in Source}
        statuses = {x.value for x in AnnotationStatus}
        for a in annotations:
            image_id = key_to_id[a["image_key"]] if "image_key" in a else a["image_id"]
            source, status = str(a.get("source", "human")), str(a.get("status", "added"))
            if source not in sources or status not in statuses:
                raise ProjectError(f"bulk insert: unknown source {source!r} or status {status!r}")
            topk = a.get("topk") or None
            score = a.get("score")
            margin = None
            if score is not None:
                margin = (topk[0][1] - topk[1][1]) if topk and len(topk) >= 2 else score
            poly = a.get("polygon")
            rows.append((
                image_id, *a["box"].xyxy(), json.dumps(list(poly)) if poly is not None else None, a["category_id"],
                score, json.dumps([list(t) for t in topk]) if topk else None, margin,
                source, status,
                a.get("model_version_id"), a.get("run_id"), a.get("author"), a.get("created") or now,
                a.get("updated") or a.get("created") or now, a.get("plane"),
            ))
        # Building the indexes once after a big insert is about twice as fast as updating
        # them row by row; DROP/CREATE INDEX are transactional, so a failure rolls back too.
        indexes = []
        if len(rows) > self.BULK_INDEX_REBUILD:
            indexes = dia.indexes(conn, "annotations")
            for name, _ in indexes:
                conn.execute(f"DROP INDEX {name}")
        ann_ids = dia.insert_ids(
            conn, "annotations",
            "INSERT INTO annotations(image_id, x1, y1, x2, y2, polygon, category_id, score, topk, margin, source, "
            "status, model_version_id, run_id, author, created, updated, plane) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for _, sql in indexes:
            conn.execute(sql)
        touched = set(img_ids) | {r[0] for r in rows}
        self._refresh_status(sorted(touched) if len(touched) < 5000 else None)
        self._notify(ChangeEvent("import", "import", tuple(sorted(touched))))
        return img_ids, ann_ids

    @contextmanager
    def importing(self):
        """One transaction for an importer: everything or nothing."""
        with self._tx() as conn:
            yield conn

    def find_image(self, path: str | os.PathLike | None = None, sha256: str | None = None) -> ImageRecord | None:
        """An image already in the project with this file (same stored path) or content."""
        if path is not None:
            r = self._q(f"SELECT {_IMG_COLS} FROM images WHERE path = ?", (self._rel(path),)).fetchone()
            if r is not None:
                return self._image_from_row(r)
        if sha256 is not None:
            r = self._q(f"SELECT {_IMG_COLS} FROM images WHERE sha256 = ?", (sha256,)).fetchone()
            if r is not None:
                return self._image_from_row(r)
        return None


class _Rows(list):
    """Fetched rows with the cursor methods the store uses."""

    def fetchone(self):
        return self[0] if self else None

    def fetchall(self):
        return list(self)

