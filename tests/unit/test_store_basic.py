"""Project store: create/open, images, taxa, edits, review status, queue, model versions, runs."""

import sqlite3

import cv2
import numpy as np
import pytest

from pollenstudio.core.errors import ProjectError
from pollenstudio.core.types import AnnotationStatus, Box, Detection, ReviewStatus, Source
from pollenstudio.project import Project
from pollenstudio.project.schema import DB_NAME, MIGRATIONS, SCHEMA_VERSION


def _img(path, w=120, h=100, value=0):
    arr = np.full((h, w, 3), value, np.uint8)
    cv2.imwrite(str(path), arr)
    return path


@pytest.fixture
def proj(tmp_path, store):
    p = store.create(tmp_path / "proj")
    _img(tmp_path / "proj" / "a.png", value=1)
    _img(tmp_path / "proj" / "b.png", value=2)
    p.add_images([tmp_path / "proj" / "a.png", tmp_path / "proj" / "b.png"])
    yield p
    p.close()


def test_create_open_roundtrip_keeps_data(tmp_path, store):
    with store.create(tmp_path / "p", name="Lake core") as p:
        cid = p.add_category("Betula")
    with store.open(tmp_path / "p" / DB_NAME) as p:
        assert p.name == "Lake core"
        assert [c.name for c in p.categories()] == ["Betula"]
        assert p.categories()[0].id == cid
        assert p.integrity_check() == "ok"
        assert p.schema_version == SCHEMA_VERSION
        if store.backend == "sqlite":
            mode = p._q("PRAGMA journal_mode").fetchone()[0]
            assert mode == "wal"


def test_create_twice_is_refused(tmp_path, store):
    store.create(tmp_path / "p").close()
    with pytest.raises(ProjectError, match="already holds a project"):
        store.create(tmp_path / "p")


@pytest.mark.parametrize("content", [b"hello, not a database", b""])
def test_opening_a_non_project_file_is_a_clear_error_and_writes_nothing(tmp_path, content):
    f = tmp_path / "notes.pollen"
    f.write_bytes(content)
    with pytest.raises(ProjectError, match="not a PollenStudio project"):
        Project.open(f)
    assert f.read_bytes() == content
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.pollen"]


def test_opening_a_foreign_sqlite_db_is_refused_and_unchanged(tmp_path):
    f = tmp_path / "other.db"
    conn = sqlite3.connect(f)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    before = f.read_bytes()
    with pytest.raises(ProjectError, match="not a PollenStudio project"):
        Project.open(f)
    assert f.read_bytes() == before


def test_folder_without_project_and_missing_path(tmp_path):
    with pytest.raises(ProjectError, match="has no project"):
        Project.open(tmp_path)
    with pytest.raises(ProjectError, match="not found"):
        Project.open(tmp_path / "nope.pollen")


def test_newer_schema_is_refused(tmp_path):
    Project.create(tmp_path / "p").close()
    conn = sqlite3.connect(tmp_path / "p" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(ProjectError, match="newer PollenStudio"):
        Project.open(tmp_path / "p")


def test_v1_database_is_migrated_on_open(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO meta VALUES ('app', 'pollenstudio-project')")
    conn.execute("INSERT INTO images(path, width, height, added) VALUES ('x.png', 10, 10, 0)")
    conn.execute("INSERT INTO categories(name, color) VALUES ('Pinus', '#ffffff')")
    conn.execute(
        "INSERT INTO annotations(image_id, x1, y1, x2, y2, category_id, score, source, status, created, updated) "
        "VALUES (1, 1, 1, 5, 5, 1, 0.3, 'model', 'proposed', 0, 0)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Project.open(folder) as p:
        assert p.schema_version == SCHEMA_VERSION
        (ann,) = p.review_queue()
        assert ann.score == pytest.approx(0.3)
        p.accept(ann.id)
        assert p.can_undo()


def test_images_are_added_with_header_info_hash_and_relative_path(proj, tmp_path):
    recs = proj.images()
    assert [r.path for r in recs] == ["a.png", "b.png"]
    assert (recs[0].width, recs[0].height, recs[0].channels, recs[0].bit_depth) == (120, 100, 3, 8)
    assert len(recs[0].sha256) == 64
    assert proj.image_path(recs[0]) == (tmp_path / "proj" / "a.png").resolve()


def test_add_images_reports_bad_and_duplicate_files(proj, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not png")
    dup = _img(tmp_path / "copy_of_a.png", value=1)
    res = proj.add_images([bad, dup, tmp_path / "missing.png"])
    assert res.added == []
    assert res.duplicates == [str(dup)]
    assert len(res.errors) == 2 and "bad.png" in res.errors[0][1]
    assert proj.image_count() == 2


def test_relink_finds_moved_images_by_hash(proj, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (tmp_path / "proj" / "a.png").rename(moved / "renamed.png")
    assert [r.path for r in proj.missing_images()] == ["a.png"]
    found = proj.relink(tmp_path)
    assert found == {1: "../elsewhere/renamed.png"}
    assert proj.missing_images() == []
    assert proj.image_path(1).is_file()


def test_review_status_follows_decisions(proj):
    cid = proj.add_category("Betula")
    assert proj.image(1).status is ReviewStatus.NEW
    proj.write_proposals(1, [Detection(Box(10, 10, 30, 30), 0, "Betula", 0.8)])
    assert proj.image(1).status is ReviewStatus.IN_REVIEW
    (a,) = proj.annotations(1)
    proj.reject(a.id)
    assert proj.image(1).status is ReviewStatus.REVIEWED  # a decision, nothing undecided
    # an image with no grains: the user marks it reviewed explicitly
    assert proj.set_image_status(2, ReviewStatus.REVIEWED) is ReviewStatus.REVIEWED
    proj.undo()
    assert proj.image(2).status is ReviewStatus.NEW
    proj.add_annotation(2, Box(1, 1, 9, 9), cid)
    assert proj.image(2).status is ReviewStatus.REVIEWED
    assert proj.set_image_status(2, ReviewStatus.IN_REVIEW) is ReviewStatus.IN_REVIEW
    assert proj.status_counts()[ReviewStatus.REVIEWED] == 1


def test_edit_status_transitions(proj):
    cid = proj.add_category("Betula")
    other = proj.add_category("Pinus")
    proj.write_proposals(1, [Detection(Box(10, 10, 30, 30), 0, "Betula", 0.8), Detection(Box(50, 50, 80, 80), 0, "Betula", 0.6)])
    a, b = proj.annotations(1)
    assert proj.accept(a.id).status is AnnotationStatus.ACCEPTED
    assert proj.move_annotation(a.id, Box(11, 11, 31, 31)).status is AnnotationStatus.EDITED
    assert proj.relabel(b.id, other).status is AnnotationStatus.EDITED
    h = proj.add_annotation(1, Box(90, 10, 130, 40), cid, author="ana")
    ann = proj.annotation(h)
    assert (ann.status, ann.source, ann.author) == (AnnotationStatus.ADDED, Source.HUMAN, "ana")
    assert ann.box == Box(90, 10, 120, 40)  # clipped to the 120 px wide image
    assert proj.relabel(h, other).status is AnnotationStatus.ADDED
    proj.delete(h)
    assert all(x.id != h for x in proj.annotations(1))
    proj.delete(b.id)  # a model one is rejected, kept as provenance
    assert proj.annotation(b.id).status is AnnotationStatus.REJECTED
    with pytest.raises(ProjectError, match="no area"):
        proj.add_annotation(1, Box(200, 200, 300, 300), cid)
    with pytest.raises(ProjectError, match="does not exist"):
        proj.accept(9999)


def test_review_queue_orders_by_uncertainty_and_next_undecided_walks_it(proj):
    dets = [Detection(Box(i * 10, 0, i * 10 + 8, 8), 0, "Betula", s,
                      topk=(("Betula", s), ("Pinus", m))) for i, (s, m) in enumerate([(0.9, 0.05), (0.3, 0.25), (0.6, 0.1)])]
    proj.write_proposals(1, dets)
    proj.write_proposals(2, [Detection(Box(0, 0, 9, 9), 0, "Pinus", 0.45)])
    q = proj.review_queue()
    assert [a.score for a in q] == pytest.approx([0.3, 0.45, 0.6, 0.9])
    assert [a.score for a in proj.review_queue(min_score=0.5)] == pytest.approx([0.6, 0.9])
    margins = proj.review_queue(order="margin")
    assert margins[0].score == pytest.approx(0.3)  # margin 0.05
    n1 = proj.next_undecided()
    assert n1.id == q[0].id
    proj.accept(n1.id)  # anchor no longer undecided: still a valid cursor
    assert proj.next_undecided(after_annotation_id=n1.id).id == q[1].id
    assert proj.next_undecided(after_annotation_id=q[2].id, backwards=True).id == q[1].id
    assert proj.next_undecided(after_annotation_id=q[3].id) is None
    counts = proj.image_counts()
    assert (counts[1].objects, counts[1].undecided, counts[2].undecided) == (1, 2, 1)


def test_accept_all_is_one_undo_step(proj):
    proj.write_proposals(1, [Detection(Box(i * 10, 0, i * 10 + 8, 8), 0, "Betula", 0.5) for i in range(5)])
    ids = proj.accept_all(1)
    assert len(ids) == 5 and proj.image(1).status is ReviewStatus.REVIEWED
    ev = proj.undo()
    assert set(ev.annotation_ids) == set(ids) and ev.image_ids == (1,)
    assert all(a.status is AnnotationStatus.PROPOSED for a in proj.annotations(1))
    assert not proj.can_undo()


def test_category_edits_and_merge_are_undoable(proj):
    b = proj.add_category("Betula", hotkey="1")
    c = proj.add_category("Corylus", hotkey="1")  # takes the hotkey over
    assert proj.category(b).hotkey is None and proj.category(c).hotkey == "1"
    proj.rename_category(c, "Corylus avellana")
    proj.recolor_category(c, "#123456")
    h = proj.add_annotation(1, Box(1, 1, 9, 9), b)
    proj.merge_categories(b, c)
    assert proj.annotation(h).category_id == c
    assert [x.name for x in proj.categories()] == ["Corylus avellana"]
    proj.undo()
    assert proj.annotation(h).category_id == b and proj.category(b).name == "Betula"
    with pytest.raises(ProjectError, match="already exists"):
        proj.add_category("Betula")
    with pytest.raises(ProjectError, match="merge it"):
        proj.delete_category(b)


def test_subscribers_hear_commits(proj):
    events = []
    unsub = proj.subscribe(events.append)
    cid = proj.add_category("Betula")
    aid = proj.add_annotation(1, Box(1, 1, 9, 9), cid)
    proj.undo()
    kinds = [e.kind for e in events]
    assert kinds == ["add taxon", "add box", "undo"]
    assert events[1].annotation_ids == (aid,) and events[1].image_ids == (1,)
    unsub()
    proj.redo()
    assert len(events) == 3


def test_failed_edit_sends_no_event_and_changes_nothing(proj):
    events = []
    proj.subscribe(events.append)
    with pytest.raises(ProjectError):
        proj.add_annotation(1, Box(1, 1, 9, 9), 42)
    assert events == [] and proj.annotation_count() == 0 and not proj.can_undo()


def test_batch_groups_edits_and_rolls_back_on_error(proj):
    cid = proj.add_category("Betula")
    with proj.batch("two boxes"):
        proj.add_annotation(1, Box(1, 1, 9, 9), cid)
        proj.add_annotation(2, Box(1, 1, 9, 9), cid)
    assert proj.undo_label() == "two boxes"
    proj.undo()
    assert proj.annotation_count() == 0
    with pytest.raises(ProjectError):
        with proj.batch("broken"):
            proj.add_annotation(1, Box(1, 1, 9, 9), cid)
            proj.add_annotation(1, Box(1, 1, 9, 9), 999)
    assert proj.annotation_count() == 0


def test_model_versions_and_runs(proj, tmp_path):
    m1 = proj.add_model_version("v1", tmp_path / "proj" / "models" / "v1.safetensors", metrics={"map50": 0.5})
    m2 = proj.add_model_version("v2", tmp_path / "proj" / "models" / "v2.safetensors", parent_id=m1,
                                annotation_ids=[1, 2], config={"imgsz": 640}, activate=True)
    assert proj.active_model_version().id == m2
    proj.set_active_model_version(m1)
    assert [v.active for v in proj.model_versions()] == [True, False]
    assert proj.model_version(m2).annotation_ids == [1, 2]
    assert proj.model_version(m1).file == "models/v1.safetensors"
    run = proj.start_run("detect", {"conf": 0.25})
    assert proj.run(run).status == "running"
    proj.finish_run(run, "done", {"images": 2})
    r = proj.runs("detect")[0]
    assert (r.status, r.summary, r.params) == ("done", {"images": 2}, {"conf": 0.25})
    assert r.finished >= r.started


def test_reviewed_dataset_has_reviewed_images_and_only_objects(proj):
    proj.write_proposals(1, [Detection(Box(0, 0, 10, 10), 0, "Betula", 0.9), Detection(Box(50, 50, 60, 60), 0, "Betula", 0.2)])
    a, b = proj.annotations(1)
    proj.accept(a.id)
    proj.reject(b.id)
    proj.write_proposals(2, [Detection(Box(0, 0, 10, 10), 0, "Betula", 0.9)])  # still in review
    data = proj.reviewed_dataset()
    assert [(rec.id, [x.id for x in anns]) for rec, anns in data] == [(1, [a.id])]


def _indexes(p):
    from pollenstudio.project.dialect import indexes

    return sorted(indexes(p._conn, "annotations"))


def test_big_bulk_insert_rebuilds_indexes_and_a_failure_rolls_everything_back(tmp_path, monkeypatch, store):
    monkeypatch.setattr(Project, "BULK_INDEX_REBUILD", 1)
    with store.create(tmp_path / "p") as p:
        idx = _indexes(p)
        cid = p.add_category("Betula")
        anns = [{"image_key": 0, "box": Box(1, 1, 5, 5), "category_id": cid, "status": "proposed", "source": "model",
                 "score": 0.5}] * 3
        with p.importing():
            p.bulk_insert([{"key": 0, "path": "a.png", "width": 10, "height": 10}], anns)
        assert _indexes(p) == idx and len(p.review_queue()) == 3 and p.image(1).status is ReviewStatus.IN_REVIEW
        with pytest.raises(ProjectError, match="unknown source"):
            with p.importing():
                p.bulk_insert([{"key": 0, "path": "b.png", "width": 10, "height": 10}],
                              anns + [dict(anns[0], source="robot")])
        assert _indexes(p) == idx and p.image_count() == 1 and p.annotation_count() == 3


def test_worker_thread_writing_proposals_while_the_user_edits(proj):
    import threading

    cid = proj.add_category("Betula")
    errors = []

    def worker():
        try:
            for k in range(60):
                proj.write_proposals(2, [Detection(Box(k % 50, 0, k % 50 + 10, 10), 0, "Betula", 0.5)])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    for k in range(60):
        aid = proj.add_annotation(1, Box(k, 0, k + 5, 5), cid)
        proj.move_annotation(aid, Box(k, 1, k + 5, 6))
        if k % 3 == 0:
            proj.undo()
    t.join()
    assert errors == []
    assert proj.integrity_check() == "ok"
    boxes = [a.box for a in proj.annotations(1)]
    assert boxes == [Box(k, 0 if k % 3 == 0 else 1, k + 5, 5 if k % 3 == 0 else 6) for k in range(60)]
    assert len(proj.annotations(2)) == 1


def test_category_counts(proj):
    b = proj.add_category("Betula")
    proj.add_annotation(1, Box(1, 1, 9, 9), b)
    proj.write_proposals(2, [Detection(Box(0, 0, 10, 10), 0, "Pinus", 0.5), Detection(Box(20, 20, 30, 30), 0, "Pinus", 0.5)])
    pinus = proj.category_by_name("Pinus").id
    proj.reject(proj.annotations(2)[0].id)
    assert proj.category_counts() == {b: 1, pinus: 1}
    assert proj.category_counts(include_proposed=False) == {b: 1}


def test_taxon_hierarchy_refuses_cycles_and_survives_deletes(proj):
    fam = proj.add_category("Betulaceae")
    genus = proj.add_category("Betula")
    proj.set_category_parent(genus, fam)
    with pytest.raises(ProjectError, match="under itself"):
        proj.set_category_parent(fam, genus)
    proj.delete_category(fam)
    assert proj.category(genus).parent_id is None
    proj.undo()
    assert proj.category(genus).parent_id == fam


def test_cancelled_folder_import_keeps_the_images_read_so_far(tmp_path, store):
    from pollenstudio.core.errors import Cancelled
    from pollenstudio.core.progress import CancelToken

    (tmp_path / "imgs").mkdir()
    for i in range(5):
        _img(tmp_path / "imgs" / f"{i}.png", value=i)

    def on_update(done, total, msg):
        if done == 3:
            token.cancel()

    token = CancelToken(on_update)
    with store.create(tmp_path / "p") as p:
        with pytest.raises(Cancelled):
            p.add_folder(tmp_path / "imgs", progress=token)
        assert [r.path for r in p.images()] == ["../imgs/0.png", "../imgs/1.png", "../imgs/2.png", "../imgs/3.png"]
