"""Schema of a project and its migrations, for both stores.

The schema version lives in ``PRAGMA user_version`` (SQLite) or the table
``pollenstudio_schema`` of the project's schema (PostgreSQL). ``MIGRATIONS[i]`` brings a
database from version ``i`` to ``i + 1``; a new database runs them all. The statements are
written in SQLite's dialect; ``dialect.translate_ddl`` makes them PostgreSQL's (identity
keys, 64-bit integers, double floats), so both backends have one schema and one migration
path. Never edit a released migration: append a new one.
"""

from __future__ import annotations

from pollenstudio.project import dialect

DB_NAME = "project.pollen"
APP_ID = "pollenstudio-project"

# v0 -> v1: the original tables.
_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    sha256 TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bit_depth INTEGER NOT NULL DEFAULT 8,
    channels INTEGER NOT NULL DEFAULT 3,
    um_per_px REAL,
    status TEXT NOT NULL DEFAULT 'new',
    group_name TEXT,
    added REAL NOT NULL
);
CREATE TABLE categories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    color TEXT NOT NULL,
    hotkey TEXT,
    parent_id INTEGER
);
CREATE TABLE annotations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    polygon TEXT,
    category_id INTEGER NOT NULL,
    score REAL,
    topk TEXT,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    model_version_id INTEGER,
    author TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    file TEXT,
    metrics TEXT,
    config TEXT,
    parent_id INTEGER,
    active INTEGER NOT NULL DEFAULT 0,
    annotation_ids TEXT,
    summary TEXT,
    created REAL NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT,
    status TEXT NOT NULL,
    summary TEXT,
    started REAL NOT NULL,
    finished REAL
);
CREATE INDEX ann_image ON annotations(image_id, status);
CREATE INDEX ann_category ON annotations(category_id);
CREATE INDEX images_path ON images(path);
"""

# v1 -> v2: persisted undo history, explicit review marks, file sizes (fast relink),
# top-2 margin and run id on proposals, and the indexes the review queue needs.
_V2 = """
ALTER TABLE images ADD COLUMN mark TEXT;
ALTER TABLE images ADD COLUMN size_bytes INTEGER;
ALTER TABLE images ADD COLUMN missing INTEGER NOT NULL DEFAULT 0;
ALTER TABLE annotations ADD COLUMN margin REAL;
ALTER TABLE annotations ADD COLUMN run_id INTEGER;
UPDATE annotations SET margin = score;
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL,
    changes TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX history_undone ON history(undone, id);
CREATE INDEX ann_queue_score ON annotations(score, id) WHERE status = 'proposed';
CREATE INDEX ann_queue_margin ON annotations(margin, id) WHERE status = 'proposed';
CREATE INDEX images_status ON images(status, id);
CREATE INDEX images_sha ON images(sha256);
"""

# v2 -> v3: per-image counts kept on the image row, so the image list of a 10,000-image
# project shows objects / undecided without grouping 300,000 annotations.
_V3 = """
ALTER TABLE images ADD COLUMN n_objects INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN n_undecided INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN n_rejected INTEGER NOT NULL DEFAULT 0;
UPDATE images SET
    n_objects = (SELECT COUNT(*) FROM annotations a WHERE a.image_id = images.id
                 AND a.status IN ('accepted', 'edited', 'added')),
    n_undecided = (SELECT COUNT(*) FROM annotations a WHERE a.image_id = images.id AND a.status = 'proposed'),
    n_rejected = (SELECT COUNT(*) FROM annotations a WHERE a.image_id = images.id AND a.status = 'rejected')
"""

# v3 -> v4 (issue 20, counting): a taxon's role in a count (pollen, in the pollen sum, when
# it has no row here; "spore", "marker", "indeterminate", "excluded" are counted on their
# own) and per-sample count settings (target sum, exotic marker, sampled volume) as JSON.
# Both are tables of their own, so the undo history of categories is untouched.
_V4 = """
CREATE TABLE taxon_roles (category_id INTEGER PRIMARY KEY, role TEXT NOT NULL);
CREATE TABLE samples (name TEXT PRIMARY KEY, settings TEXT NOT NULL)
"""

# v4 -> v5 (issue 19, focal stacks): an image may be a focal stack of ``planes`` planes,
# read from its one file (multi-page / OME-TIFF) or from ``plane_files`` (a JSON list of
# plane file paths, stored like ``path``, for folders or name patterns of planes); an
# annotation keeps the plane (0-based) its grain is sharpest in, NULL for single images.
_V5 = """
ALTER TABLE images ADD COLUMN planes INTEGER NOT NULL DEFAULT 1;
ALTER TABLE images ADD COLUMN plane_files TEXT;
ALTER TABLE annotations ADD COLUMN plane INTEGER
"""

# v5 -> v6 (issue 18, "review this next"): what a proposal is expected to teach, fixed when
# detection writes it (score entropy + naming doubt + disagreement with the pass on the
# horizontally flipped image; see engine/review_order.py), and per image how many grains the
# flipped pass found that the image pass did not (NULL: no flipped pass was run). The
# taxon-rarity factor is applied when the list is sorted, from the counts of that moment.
# The partial covering index lets the weighted sum per image be read from the index alone
# (0.06 s instead of 0.2-0.5 s at 300,000 annotations). Partial, over undecided proposals
# only, with no status column: an index led by status took the review queue's queries off
# their score/margin indexes (0.01 ms -> 160 ms, bench/store_scale.py). ``ann_objects``: the
# reviewed grains per taxon (rarity; the taxon panel) in 10 ms instead of 800 ms; its WHERE
# is the text ``sql_in(OBJECT_STATUSES)`` gives, which SQLite needs to match exactly
# (tests/unit/test_review_next_project.py checks that the count uses it).
_V6 = """
ALTER TABLE annotations ADD COLUMN doubt REAL;
ALTER TABLE images ADD COLUMN flip_unmatched INTEGER;
CREATE INDEX ann_review ON annotations(image_id, category_id, doubt) WHERE status = 'proposed';
CREATE INDEX ann_objects ON annotations(category_id) WHERE status IN ('accepted', 'edited', 'added')
"""

# v6 -> v7 (issue 28, calibration per magnification): an image's own typical grain diameter
# in pixels (the grain-size calibration of the objective it was taken with), set for the
# image, its sample or a selection; NULL: the project's typical grain size (meta
# ``grain_size_px``, "every image without its own") applies, if any.
_V7 = """
ALTER TABLE images ADD COLUMN grain_px REAL
"""

# v7 -> v8 (issue 30, several reviewers; project/reviewers.py, project/opinions.py): who
# made each undo step (undo walks one's own steps), the image each window is reviewing
# (claims expire when their heartbeat stops), other reviewers' names confirmed or disputed
# (a second opinion: the taxon the first reviewer had, and the second reviewer's), and the
# feed an SQLite project's windows read to see each other's edits (a server project sends
# NOTIFY instead and leaves it empty).
_V8 = """
ALTER TABLE history ADD COLUMN author TEXT;
CREATE INDEX history_author ON history(author, undone, id);
CREATE TABLE claims (
    image_id INTEGER PRIMARY KEY,
    reviewer TEXT NOT NULL,
    session TEXT NOT NULL,
    since REAL NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE INDEX claims_session ON claims(session);
CREATE TABLE opinions (
    annotation_id INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    category_id INTEGER NOT NULL,
    first_category_id INTEGER NOT NULL,
    first_author TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (annotation_id, reviewer)
);
CREATE TABLE change_feed (
    seq INTEGER PRIMARY KEY,
    image_ids TEXT NOT NULL,
    ann_ids TEXT,
    cat_ids TEXT,
    kind TEXT NOT NULL,
    label TEXT,
    author TEXT,
    session TEXT NOT NULL,
    target TEXT,
    at REAL NOT NULL
)
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn) -> int:
    """Run the missing migrations, each in its own transaction; return the old version.
    ``conn``: an ``sqlite3.Connection`` or a ``dialect.PgConnection``."""
    old = dialect.user_version(conn)
    for version in range(old, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            dialect.lock_for_migration(conn)
            if dialect.user_version(conn) > version:  # another workstation upgraded it meanwhile
                conn.execute("COMMIT")
                continue
            for stmt in _statements(MIGRATIONS[version]):
                conn.execute(dialect.ddl(conn, stmt))
            dialect.set_user_version(conn, version + 1)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return old


def _statements(sql: str) -> list[str]:
    # executescript would COMMIT on its own; split so a migration is one transaction.
    return [s.strip() for s in sql.split(";") if s.strip()]
