"""Move a whole project between a folder (SQLite) and a lab's PostgreSQL server (issue 30).

``push(folder, url)`` copies a SQLite project to a new project on the server;
``pull(url, folder)`` copies a server project into a new SQLite project. Every table of the
project is copied row by row with its ids (taxa, images, annotations with their scores,
top-k, outlines and planes, model versions, runs, the undo history, count settings, and
whatever later schema versions add), in one transaction on the receiving side: a copy that
fails part-way leaves nothing behind. The source is never changed.

Image files do not move: stored paths are relative to the project's folder (SQLite) or
image root (server). ``push`` records the folder as the server project's image root (each
workstation maps it to its own mount: ``store.IMAGE_ROOT_ENV``); ``pull`` into a folder
other than the image root rewrites relative paths so they still name the same files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.errors import ProjectError
from pollenstudio.project import dialect as dia
from pollenstudio.project.store import Project

CHUNK = 5000  # rows read and written at a time (a 300,000-annotation project in bounded memory)


@dataclass
class CopyReport:
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    rebased: int = 0  # stored paths rewritten for the new folder

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "rows": self.rows, "rebased_paths": self.rebased}


def push(folder: str | os.PathLike, url: str, progress=None) -> CopyReport:
    """Copy the SQLite project in ``folder`` to a new project at ``url`` (postgresql://...)."""
    if not dia.is_server_url(url):
        raise ProjectError(f"{url!r} is not a PostgreSQL URL: postgresql://HOST/DATABASE?project=NAME")
    with Project.open(folder) as src:
        if src.server is not None:
            raise ProjectError(f"{src.location} is already on a server; pull it into a folder instead")
        dst = Project.create(url, name=src.name, image_root=src.folder)
        return _copy_into(src, dst, progress, drop_on_failure=True)


def pull(url: str, folder: str | os.PathLike, image_root: str | os.PathLike | None = None,
         progress=None) -> CopyReport:
    """Copy the server project at ``url`` into a new SQLite project in ``folder``."""
    if not dia.is_server_url(url):
        raise ProjectError(f"{url!r} is not a PostgreSQL URL: postgresql://HOST/DATABASE?project=NAME")
    with Project.open(url, image_root=image_root) as src:
        dst = Project.create(folder, name=src.name)
        return _copy_into(src, dst, progress, drop_on_failure=True)


def _rebase(stored: str | None, old_root: Path, new_root: Path) -> str | None:
    if stored is None or Path(stored).is_absolute() or old_root == new_root:
        return stored
    target = os.path.normpath(old_root / stored)
    try:
        return Path(os.path.relpath(target, new_root)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(target).as_posix()


def _rebase_row(table: str, cols: list[str], row: tuple, old: Path, new: Path) -> tuple[tuple, int]:
    """A row with its stored paths rewritten from root ``old`` to ``new``; and how many."""
    if old == new:
        return row, 0
    row = list(row)
    n = 0

    def fix(name):
        nonlocal n
        i = cols.index(name)
        if name == "plane_files" and row[i]:
            files = json.loads(row[i])
            new_files = [_rebase(f, old, new) for f in files]
            n += sum(a != b for a, b in zip(files, new_files))
            row[i] = json.dumps(new_files)
        elif row[i] is not None:
            value = _rebase(row[i], old, new)
            n += value != row[i]
            row[i] = value

    if table == "images":
        fix("path")
        if "plane_files" in cols:
            fix("plane_files")
    elif table == "model_versions":
        fix("file")
    elif table == "history":  # a removed image's row, kept for its undo, holds its paths too
        i = cols.index("changes")
        changes = json.loads(row[i])
        for ch in changes:
            if ch[0] == "image_rows":
                for state in ch[2:4]:
                    if state:
                        for key in ("path", "plane_files"):
                            if state.get(key):
                                if key == "plane_files":
                                    state[key] = json.dumps([_rebase(f, old, new) for f in json.loads(state[key])])
                                else:
                                    state[key] = _rebase(state[key], old, new)
                                n += 1
        row[i] = json.dumps(changes)
    return tuple(row), n


def _copy_into(src: Project, dst: Project, progress, drop_on_failure: bool) -> CopyReport:
    report = CopyReport(src.location, dst.location)
    try:
        src_tables, dst_tables = dia.tables(src._conn), set(dia.tables(dst._conn))
        if src.schema_version != dst.schema_version or set(src_tables) != dst_tables:
            raise ProjectError(f"{src.location} and {dst.location} have different tables; open both with the same "
                               "PollenStudio")
        with src._lock:
            counters = dia.id_counters(src._conn)
        with dst._tx() as conn:
            conn.execute("DELETE FROM meta")  # the new project's own name/created rows: the source's replace them
            for n, table in enumerate(src_tables):
                cols = dia.columns(src._conn, table)
                if set(cols) != set(dia.columns(conn, table)):
                    raise ProjectError(f"table {table} differs between {src.location} and {dst.location}")
                if progress is not None:
                    progress.check()
                    progress.update(n, len(src_tables), table)
                keyed = "id" in cols  # keyset pages (an OFFSET walks every skipped row again)
                copied = offset = 0
                last = None
                while True:
                    if keyed:
                        rows = src._q(f"SELECT {', '.join(cols)} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                                      (-1 if last is None else last, CHUNK)).fetchall()
                    else:
                        rows = src._q(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {cols[0]} LIMIT ? OFFSET ?",
                                      (CHUNK, offset)).fetchall()
                    if not rows:
                        break
                    if keyed:
                        last = rows[-1][cols.index("id")]
                    fixed = []
                    for row in rows:
                        row, k = _rebase_row(table, cols, tuple(row), src.folder, dst.folder)
                        report.rebased += k
                        fixed.append(row)
                    copied += dia.copy_rows(conn, table, cols, fixed)
                    offset += len(rows)
                report.rows[table] = copied
            # where the images are, as the machine that moved it sees them (server projects)
            conn.execute("DELETE FROM meta WHERE key = 'image_root'")
            if dst.server is not None:
                conn.execute("INSERT INTO meta(key, value) VALUES ('image_root', ?)", (str(dst.folder),))
            dia.set_id_counters(conn, counters)
        if progress is not None:
            progress.update(len(src_tables), len(src_tables), "done")
    except BaseException:
        _discard(dst) if drop_on_failure else dst.close()
        raise
    dst.close()
    return report


def _discard(dst: Project) -> None:
    """Remove a project this copy made and could not fill: nothing half-copied stays."""
    try:
        if dst.server is not None:
            dst._conn.execute(f'DROP SCHEMA IF EXISTS "{dst.server.project}" CASCADE')
            dst.close()
        else:
            dst.close()
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{dst.db_path}{suffix}").unlink(missing_ok=True)
    except (OSError, ProjectError):
        pass
