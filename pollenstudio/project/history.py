"""Undo/redo as row snapshots.

A user command records, for every row it touched, the row before and after (``None`` =
row absent). Undo writes the "before" states back, redo the "after" states. The log is a
table in the project, so undo survives closing and reopening the project.

Rows can drift between a command and its undo: re-detection deletes undecided proposals
(``write_proposals`` is not a user command). Undo/redo therefore only restores a row whose
current state is still the one the command left (undo) or found (redo); a drifted row is
left as it is. Model output never resurrects, and undo never resurrects a proposal the
model has since replaced. Human decisions cannot drift: only user commands change them,
and those are undone in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pollenstudio.project.dialect import INTEGRITY_ERRORS

# Columns each table's snapshots hold. Images only carry the explicit review mark: their
# status is derived from annotations and recomputed after every change.
SNAPSHOT_COLUMNS: dict[str, tuple[str, ...]] = {
    "annotations": (
        "id", "image_id", "x1", "y1", "x2", "y2", "polygon", "category_id", "score", "topk", "margin",
        "source", "status", "model_version_id", "run_id", "author", "created", "updated", "plane",
    ),
    "categories": ("id", "name", "color", "hotkey", "parent_id"),
    "images": ("id", "mark"),
    # a whole image row, for removing an image from the project (undoable); its
    # annotations are recorded as their own rows in the same command
    "image_rows": (
        "id", "path", "sha256", "width", "height", "bit_depth", "channels", "um_per_px", "status", "group_name",
        "added", "mark", "size_bytes", "missing", "n_objects", "n_undecided", "n_rejected", "planes", "plane_files",
        "grain_px",
    ),
}
# pseudo-tables -> the table they live in
REAL_TABLE = {"image_rows": "images"}


@dataclass
class Command:
    """Row changes of one user command: {(table, id): [before, after]}."""

    label: str
    changes: dict[tuple[str, int], list] = field(default_factory=dict)

    def record(self, table: str, row_id: int, before: dict | None, after: dict | None) -> None:
        key = (table, row_id)
        if key in self.changes:
            self.changes[key][1] = after  # keep the first "before"
        else:
            self.changes[key] = [before, after]

    def effective(self) -> list[tuple[str, int, dict | None, dict | None]]:
        return [(t, i, b, a) for (t, i), (b, a) in self.changes.items() if b != a]

    def to_json(self) -> str:
        return json.dumps([[t, i, b, a] for t, i, b, a in self.effective()])

    @staticmethod
    def changes_from_json(text: str) -> list[tuple[str, int, dict | None, dict | None]]:
        return [(t, int(i), b, a) for t, i, b, a in json.loads(text)]


def snapshot(conn, table: str, row_id: int) -> dict | None:
    cols = SNAPSHOT_COLUMNS[table]
    table = REAL_TABLE.get(table, table)
    row = conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE id = ?", (row_id,)).fetchone()
    return None if row is None else dict(zip(cols, tuple(row)))


def write_state(conn, table: str, row_id: int, state: dict | None) -> None:
    """Make row ``row_id`` equal ``state`` (None deletes). Uses UPDATE for existing rows so
    that nothing else on the row (e.g. an image's path) is touched."""
    table = REAL_TABLE.get(table, table)
    exists = conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None
    if state is None:
        if exists:
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
        return
    cols = [c for c in state if c != "id"]
    if exists:
        conn.execute(
            f"UPDATE {table} SET {', '.join(c + ' = ?' for c in cols)} WHERE id = ?",
            [state[c] for c in cols] + [row_id],
        )
    else:
        allc = ["id"] + cols
        conn.execute(
            f"INSERT INTO {table} ({', '.join(allc)}) VALUES ({', '.join('?' * len(allc))})",
            [row_id] + [state[c] for c in cols],
        )


def _same_state(current: dict | None, expected: dict | None) -> bool:
    """Row equality for undo/redo. A command logged before a column was added (e.g. the
    annotation's plane, schema v5) has no such key: the columns it knew are compared."""
    if current is None or expected is None:
        return current is expected
    return all(current.get(k) == v for k, v in expected.items()) and all(
        current[k] in (None, _ADDED_DEFAULTS.get(k)) for k in current.keys() - expected.keys())


_ADDED_DEFAULTS = {"planes": 1}  # columns added later with a default other than NULL


def apply(conn, changes, undo: bool) -> list[tuple[str, int, dict | None, dict | None]]:
    """Restore the before (undo) or after (redo) states; return the changes applied."""
    order = list(reversed(changes)) if undo else list(changes)
    # Categories must exist before annotations point at them and vanish after they stop.
    def rank(ch):
        table, _, before, after = ch
        target = before if undo else after
        if table == "categories":
            return 0 if target is not None else 2
        return 1

    order.sort(key=rank)
    done = []
    for table, row_id, before, after in order:
        expected, target = (after, before) if undo else (before, after)
        if not _same_state(snapshot(conn, table, row_id), expected):
            continue  # drifted (see module docstring): leave it
        if table == "categories" and target is None:
            used = conn.execute("SELECT 1 FROM annotations WHERE category_id = ? LIMIT 1", (row_id,)).fetchone()
            if used:
                continue  # model output now uses this taxon; keep it
        # a savepoint, so that a refused row leaves the rest of the undo standing (PostgreSQL
        # aborts the whole transaction on an error without one)
        conn.execute("SAVEPOINT undo_row")
        try:
            write_state(conn, table, row_id, target)
        except INTEGRITY_ERRORS:
            conn.execute("ROLLBACK TO SAVEPOINT undo_row")
            conn.execute("RELEASE SAVEPOINT undo_row")
            continue  # e.g. redo of "add taxon X" after detection created its own X: keep theirs
        conn.execute("RELEASE SAVEPOINT undo_row")
        done.append((table, row_id, before, after))
    return done
