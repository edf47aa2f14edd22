"""Issue 17: damaged project files, rolling backups, read-only projects, removing images
(undoable) and finding moved images again (relink)."""

import os
import shutil
import sqlite3

import cv2
import numpy as np
import pytest

from pollenstudio.core.errors import DamagedProjectError, ProjectError
from pollenstudio.core.types import Box, Detection
from pollenstudio.project import Project
from pollenstudio.project.relink import find_missing_files, relink_project
from pollenstudio.project.store import BACKUP_DIR, backup_paths


def _img(path, w=64, h=48, value=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), value, np.uint8))
    return path


def _project(tmp_path, n_ann=2000):
    p = Project.create(tmp_path / "p")
    for i in range(3):
        _img(tmp_path / "p" / f"i{i}.png", 64, 48, 10 + i)
    p.add_folder(tmp_path / "p")
    cid = p.add_category("Olea")
    with p.importing():
        p.bulk_insert([], [{"image_id": 1 + i % 3, "box": Box(1, 1, 9 + i % 7, 9), "category_id": cid,
                            "status": "added", "source": "human"} for i in range(n_ann)])
    p.close()
    return tmp_path / "p"


def _corrupt(db, page_size=4096):
    """Overwrite a page in the middle of the file (not the header) with garbage."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # the schema's own pages stay whole (a schema of more than a page has leaves anywhere in
    # the file): the damage is in the data, which is what a project meets while working
    schema = {r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'sqlite_schema'")}
    conn.close()
    data = bytearray(db.read_bytes())
    n_pages = len(data) // page_size
    assert n_pages >= 6
    for page in range(n_pages // 3, 2 * n_pages // 3):
        if page + 1 in schema:  # dbstat numbers pages from 1
            continue
        data[page * page_size:(page + 1) * page_size] = b"\xa5" * page_size
    db.write_bytes(bytes(data))


def test_a_damaged_project_is_reported_in_words_and_not_written(tmp_path):
    """F11: a corrupted page gave sqlite3.DatabaseError tracebacks, once even a run of
    "0/0 images" written into the damaged file."""
    folder = _project(tmp_path)
    Project.open(folder).close()  # makes the automatic backup
    db = folder / "project.pollen"
    _corrupt(db)
    damaged = db.read_bytes()
    with pytest.raises(DamagedProjectError) as err:
        Project.open(folder)
    msg = str(err.value)
    assert "damaged" in msg and "integrity check" in msg
    assert str(folder / BACKUP_DIR / "project.pollen.1") in msg  # says how to recover
    assert db.read_bytes() == damaged
    assert not (folder / "project.pollen-wal").exists() or (folder / "project.pollen-wal").stat().st_size == 0
    # and the backup really recovers the project
    shutil.copy(folder / BACKUP_DIR / "project.pollen.1", db)
    with Project.open(folder) as p:
        assert p.annotation_count() == 2000 and p.integrity_check() == "ok"


def test_damage_met_while_working_stops_all_writes(tmp_path):
    folder = _project(tmp_path)
    p = Project.open(folder)
    p._damaged = "database disk image is malformed"  # as _db_error sets it on a bad page
    with pytest.raises(DamagedProjectError, match="will not write"):
        p.add_category("Pinus")
    p.close()


def test_database_errors_while_working_become_damaged_project_errors(tmp_path, monkeypatch):
    """Damage that appears after the open-time check: no raw sqlite3.DatabaseError, and no
    write afterwards."""
    folder = _project(tmp_path)
    _corrupt(folder / "project.pollen")
    monkeypatch.setattr(Project, "_check_is_project", staticmethod(lambda db: None))
    monkeypatch.setattr(Project, "backup", lambda self: None)
    p = Project.open(folder)
    damaged = (folder / "project.pollen").read_bytes()
    with pytest.raises(DamagedProjectError):
        list(p.iter_annotations())
    with pytest.raises(DamagedProjectError):
        p.add_category("Pinus")
    p.close()
    assert (folder / "project.pollen").read_bytes() == damaged


def test_rolling_backup_keeps_a_few_generations(tmp_path):
    folder = _project(tmp_path, n_ann=10)
    db = folder / "project.pollen"
    for k in range(5):
        with Project.open(folder) as p:
            p.add_category(f"T{k}")
        os.utime(db, (os.path.getmtime(db) + 10 * (k + 1),) * 2)  # a later change
    backups = backup_paths(db)
    assert [b.name for b in backups] == ["project.pollen.1", "project.pollen.2", "project.pollen.3"]
    conn = sqlite3.connect(backups[0])
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # opening an unchanged project does not push a good backup out
    newest = backups[0].read_bytes()
    with Project.open(folder):
        pass
    assert backup_paths(db)[0].read_bytes() == newest or len(backup_paths(db)) == 3


def test_read_only_project_is_called_read_only(tmp_path, monkeypatch):
    """Smaller: a read-only project was called "not a PollenStudio project"."""
    folder = _project(tmp_path, n_ann=1)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if mode == os.W_OK else real(p, mode))
    with pytest.raises(ProjectError, match="read-only"):
        Project.open(folder)


# ------------------------------------------------------------------------- remove
def test_remove_images_is_one_undoable_step_with_annotations(tmp_path):
    folder = _project(tmp_path, n_ann=0)
    p = Project.open(folder)
    cid = p.categories()[0].id
    a1 = p.add_annotation(1, Box(1, 1, 10, 10), cid)
    p.write_proposals(2, [Detection(Box(5, 5, 20, 20), 0, "Olea", 0.6)])
    before_imgs = [(r.id, r.path, r.status) for r in p.images()]
    before_anns = [(a.id, a.box, a.status) for r in p.images() for a in p.annotations(r.id)]
    assert p.remove_images([1, 2]) == 2
    assert [r.id for r in p.images()] == [3] and p.annotation_count() == 0
    assert (folder / "i0.png").exists()  # files stay on disk
    ev = p.undo()
    assert set(ev.image_ids) >= {1, 2}
    assert [(r.id, r.path, r.status) for r in p.images()] == before_imgs
    assert [(a.id, a.box, a.status) for r in p.images() for a in p.annotations(r.id)] == before_anns
    assert p.annotation(a1).status.value == "added"
    p.redo()
    assert [r.id for r in p.images()] == [3]
    p.undo()
    p.close()
    with Project.open(folder) as p:  # undo survives reopening
        assert p.image_count() == 3
    with pytest.raises(ProjectError):
        Project.open(folder).remove_images([99])


# ------------------------------------------------------------------------- relink
def test_relink_finds_moved_and_renamed_files_by_content_then_by_name(tmp_path):
    """F5: moved or renamed images are found again; the report says how."""
    folder = _project(tmp_path, n_ann=0)
    p = Project.open(folder)
    new = tmp_path / "moved"
    new.mkdir()
    os.rename(folder / "i0.png", new / "renamed.png")  # moved and renamed: by content
    os.rename(folder / "i1.png", new / "i1.png")
    # i2 replaced by another picture of the same size and name, elsewhere: by name
    os.unlink(folder / "i2.png")
    _img(new / "sub" / "i2.png", 64, 48, 99)
    assert len(p.missing_images()) == 3
    dry = find_missing_files(p, [new])
    assert len(p.missing_images()) == 3  # a dry run changes nothing
    assert {(f.image_id, f.how) for f in dry.found} == {(1, "hash"), (2, "hash"), (3, "name")}
    report = relink_project(p, [new])
    assert report.applied and report.still_missing == []
    assert p.missing_images() == []
    assert p.image_path(1) == (new / "renamed.png").resolve()
    assert "by content" in report.text()
    p.close()


def test_relink_reports_what_is_still_missing_and_refuses_bad_folders(tmp_path):
    folder = _project(tmp_path, n_ann=0)
    p = Project.open(folder)
    os.unlink(folder / "i0.png")
    _img(tmp_path / "other" / "i0.png", 10, 10, 3)  # same name, other size: not it
    report = relink_project(p, [tmp_path / "other"])
    assert report.found == [] and [i for i, _ in report.still_missing] == [1]
    with pytest.raises(ProjectError, match="not found"):
        relink_project(p, [tmp_path / "nope"])
    p.close()


def test_a_constraint_error_is_not_mistaken_for_damage(tmp_path):
    folder = _project(tmp_path, n_ann=1)
    p = Project.open(folder)
    with pytest.raises(sqlite3.IntegrityError):
        with p._tx() as conn:
            conn.execute("INSERT INTO categories(name, color) VALUES ('Olea', '#000000')")
    p.add_category("Pinus")  # still writable
    assert [c.name for c in p.categories()] == ["Olea", "Pinus"]
    p.close()
