"""Several reviewers on one project (issue 30): authorship, claims, others' edits reaching a
second Project, own-only undo, conflicts in words, and authorship through COCO. Runs on
SQLite, and on PostgreSQL with ``--store=postgresql`` (POLLENSTUDIO_TEST_PG)."""

import json
import re
import threading
import time

import pytest

from pollenstudio.core.errors import ProjectError
from pollenstudio.core.types import AnnotationStatus, Box, Detection
from pollenstudio.project import reviewers as rv
from pollenstudio.project.coco import export_coco, import_coco


def two_reviewers(tmp_path, store):
    """Anna and Ben with the same project open (two Project objects: two windows)."""
    folder = tmp_path / "proj"
    a = store.create(folder)
    with a.importing():
        a.bulk_insert([{"path": f"img{i}.png", "width": 200, "height": 150} for i in range(3)], [])
    for i in (1, 2):
        a.write_proposals(i, [Detection(Box(10 + 40 * k, 10, 40 + 40 * k, 40), 0, n, 0.5 + 0.1 * k)
                              for k, n in enumerate(["Betula", "Pinus", "Alnus"])])
    b = store.open(folder)
    rv.set_reviewer(a, "Anna")
    rv.set_reviewer(b, "Ben")
    return a, b


def props(p, image_id):
    return [x for x in p.annotations(image_id) if x.status is AnnotationStatus.PROPOSED]


def test_reviewer_name_from_environment_else_setting_else_login(monkeypatch):
    monkeypatch.setenv(rv.USER_ENV, "  Anna Nowak ")
    assert rv.reviewer_name("ignored") == "Anna Nowak"
    monkeypatch.setenv(rv.USER_ENV, "bad\nname")
    with pytest.raises(ProjectError, match=rv.USER_ENV):
        rv.reviewer_name()
    monkeypatch.delenv(rv.USER_ENV)
    assert rv.reviewer_name("Ben") == "Ben"
    import getpass

    assert rv.reviewer_name(None) == getpass.getuser()


def test_every_human_decision_records_who_and_when(tmp_path, store, monkeypatch):
    monkeypatch.setenv(rv.USER_ENV, "Anna")
    folder = tmp_path / "p"
    p = store.create(folder)
    assert p.reviewer == "Anna"
    with p.importing():
        p.bulk_insert([{"path": "a.png", "width": 100, "height": 100}], [])
    p.write_proposals(1, [Detection(Box(1, 1, 20, 20), 0, "Betula", 0.9), Detection(Box(30, 30, 50, 50), 0, "Pinus", 0.8),
                          Detection(Box(60, 60, 80, 80), 0, "Pinus", 0.7)])
    anns = p.annotations(1)
    assert all(a.author is None for a in anns)  # the model decided nothing
    t0 = time.time()
    p.accept(anns[0].id)
    p.relabel(anns[1].id, anns[0].category_id)
    p.move_annotation(anns[2].id, Box(61, 61, 81, 81))
    added = p.add_annotation(1, Box(5, 60, 25, 80), anns[0].category_id)
    monkeypatch.setenv(rv.USER_ENV, "Ben")
    q = store.open(folder)
    q.reject(anns[2].id)
    after = {a.id: a for a in p.annotations(1)}
    assert [after[i].author for i in (anns[0].id, anns[1].id, added)] == ["Anna", "Anna", "Anna"]
    assert after[anns[2].id].author == "Ben" and after[anns[2].id].status is AnnotationStatus.REJECTED
    assert all(after[i].updated >= t0 - 1 for i in after)
    # the undo history says whose steps they are
    rows = p._q("SELECT author, label FROM history ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("Anna", "accept"), ("Anna", "relabel"), ("Anna", "move box"),
                                        ("Anna", "add box"), ("Ben", "reject")]
    q.close()
    p.close()


def test_coco_carries_author_and_times_back_and_forth(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    g1, g2, _ = props(a, 1)
    a.accept(g1.id)
    b.relabel(g2.id, g1.category_id)
    a.set_image_status(1, "reviewed")
    out = tmp_path / "out" / "coco.json"
    export_coco(a, out, reviewed_only=False)
    doc = json.loads(out.read_text())
    by_author = {e.get("author"): e for e in doc["annotations"]}
    assert set(by_author) == {"Anna", "Ben", None}
    assert by_author["Ben"]["updated"].endswith("Z") and "T" in by_author["Ben"]["updated"]
    src = {x.author: x for x in a.annotations(1) if x.author}
    c = store.create(tmp_path / "copy")
    import_coco(c, out)  # the image files are not there: registered as missing, with their grains
    got = {x.author: x for x in c.annotations(c.images()[0].id) if x.author}
    assert set(got) == {"Anna", "Ben"}
    for who in ("Anna", "Ben"):
        assert got[who].updated == pytest.approx(src[who].updated, abs=1e-3)
        assert got[who].created == pytest.approx(src[who].created, abs=1e-3)
    # the copy exports the same who-and-when
    out2 = tmp_path / "out2" / "coco.json"
    export_coco(c, out2, reviewed_only=False)
    again = {e.get("author"): (e["created"], e["updated"]) for e in json.loads(out2.read_text())["annotations"]}
    assert again["Anna"] == (by_author["Anna"]["created"], by_author["Anna"]["updated"])
    assert again["Ben"] == (by_author["Ben"]["created"], by_author["Ben"]["updated"])
    for p in (a, b, c):
        p.close()


def test_claimed_image_is_read_only_for_others_until_taken_over(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    mine = rv.claim(a, 1)
    assert mine.session == a.session and mine.reviewer == "Anna"
    theirs = rv.claim(b, 1)  # refused: Anna holds it
    assert theirs.session == a.session
    assert theirs.describe().startswith("Being reviewed by Anna since ")
    assert rv.claim_of(b, 1).reviewer == "Anna"
    g = props(b, 1)[0]
    with pytest.raises(ProjectError, match="Being reviewed by Anna since"):
        b.accept(g.id)
    assert b.annotation(g.id).status is AnnotationStatus.PROPOSED  # nothing changed
    b.accept(props(b, 2)[0].id)  # another image is free
    a.accept(g.id)  # the holder edits as usual
    feed = rv.ChangeFeed(a) if a.server is None else None
    taken = rv.claim(b, 1, takeover=True)
    assert taken.session == b.session and rv.claim_of(a, 1).reviewer == "Ben"
    assert rv.heartbeat(a) == []  # Anna learns she lost it
    if feed is not None:
        told = [c for c in feed.poll() if c.kind == "claim"]
        assert told and told[0].target == a.session and told[0].image_ids == (1,) and told[0].author == "Ben"
    with pytest.raises(ProjectError, match="Being reviewed by Ben"):
        a.reject(props(a, 1)[0].id)
    rv.release(b)
    assert rv.claim_of(a, 1) is None
    a.close()
    b.close()


def test_claim_expires_when_its_heartbeat_stops(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    rv.claim(a, 2)
    assert rv.heartbeat(a) == [2]
    # Anna's window crashed: no heartbeat for longer than the claim lives
    with a._tx() as conn:
        conn.execute("UPDATE claims SET heartbeat = heartbeat - ?, since = since - ?",
                     (rv.CLAIM_TTL_S + 5, rv.CLAIM_TTL_S + 5))
    assert rv.claim_of(b, 2) is None and rv.active_claims(b) == {}
    b.accept(props(b, 2)[0].id)  # not refused
    assert rv.claim(b, 2).session == b.session  # no takeover question needed
    a.close()
    b.close()


def test_one_claim_per_window(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    rv.claim(a, 1)
    rv.claim(a, 2)  # moving on releases the image before
    assert sorted(rv.active_claims(b)) == [2]
    with pytest.raises(ProjectError, match="no image with id 99"):
        rv.claim(a, 99)
    a.close()
    b.close()


def test_edits_reach_a_second_project_object(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    got: list = []
    g = props(b, 2)[1]
    if a.server is None:
        feed = rv.ChangeFeed(a)
        assert feed.poll() == []
        a.accept(props(a, 1)[0].id)  # Anna's own edit is not reported back to her
        assert feed.poll() == []
        b.relabel(g.id, props(b, 2)[0].category_id)
        got = feed.poll()
    else:
        stop, ready = threading.Event(), threading.Event()
        t = threading.Thread(target=rv.listen, args=(a, got.append, stop, ready), daemon=True)
        t.start()
        assert ready.wait(10)
        a.accept(props(a, 1)[0].id)
        b.relabel(g.id, props(b, 2)[0].category_id)
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            time.sleep(0.02)
        stop.set()
        t.join(5)
    assert len(got) == 1
    ch = got[0]
    assert (ch.image_ids, ch.annotation_ids, ch.author, ch.label) == ((2,), (g.id,), "Ben", "relabel")
    assert a.annotation(g.id).author == "Ben"  # and Anna's reads see it
    a.close()
    b.close()


def test_feed_poll_costs_nothing_when_nobody_wrote(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    if a.server is not None:
        pytest.skip("the change feed is SQLite's; a server project sends NOTIFY (test above)")
    feed = rv.ChangeFeed(a)
    t = time.perf_counter()
    for _ in range(1000):
        assert feed.poll() == []
    assert (time.perf_counter() - t) / 1000 < 0.002  # well under a millisecond a poll
    a.close()
    b.close()


def test_undo_walks_only_ones_own_steps(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    ga, gb = props(a, 1)[0], props(b, 2)[0]
    a.accept(ga.id)
    b.reject(gb.id)
    assert a.undo_label() == "accept" and b.undo_label() == "reject"
    ev = a.undo()  # Anna's accept, not Ben's later reject
    assert ev.annotation_ids == (ga.id,) and ev.conflicts == ()
    assert a.annotation(ga.id).status is AnnotationStatus.PROPOSED
    assert a.annotation(gb.id).status is AnnotationStatus.REJECTED
    assert not a.can_undo() and a.can_redo() and b.can_undo() and not b.can_redo()
    b.accept(props(b, 2)[1].id)  # Ben's new step leaves Anna's redo alone
    assert a.redo_label() == "accept"
    a.redo()
    assert a.annotation(ga.id).status is AnnotationStatus.ACCEPTED
    b.undo()
    b.undo()
    assert b.annotation(gb.id).status is AnnotationStatus.PROPOSED
    assert a.annotation(ga.id).status is AnnotationStatus.ACCEPTED  # Ben never undid Anna's
    a.close()
    b.close()


def test_undo_of_a_grain_someone_changed_since_says_so(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    g = props(a, 1)[0]
    a.move_annotation(g.id, Box(12, 12, 42, 42))
    b.move_annotation(g.id, Box(14, 14, 44, 44))
    ev = a.undo()
    assert b.annotation(g.id).box == Box(14, 14, 44, 44)  # Ben's move stands
    assert len(ev.conflicts) == 1 and ev.conflicts[0].startswith(f"Ben changed grain {g.id} (")
    assert "your undo left it as Ben has it" in ev.conflicts[0]
    a.close()
    b.close()


def test_crossing_edits_are_refused_in_words_never_lost(tmp_path, store):
    a, b = two_reviewers(tmp_path, store)
    shown = a.annotations(1)  # what Anna's window shows
    g = props(a, 1)[0]
    b.move_annotation(g.id, Box(15, 15, 45, 45))  # Ben moves it meanwhile
    with pytest.raises(rv.EditConflict) as err:
        with rv.expect_versions(a, shown):
            a.move_annotation(g.id, Box(11, 11, 41, 41))
    msg = str(err.value)
    assert re.fullmatch(r"Ben changed this grain (just now|\d+ s ago): your move was not applied; the box now "
                        r"shows Ben's version", msg), msg
    assert err.value.author == "Ben" and err.value.image_id == 1
    assert a.annotation(g.id).box == Box(15, 15, 45, 45)  # his version, untouched
    assert a.undo_label() is None  # nothing of Anna's was recorded
    with pytest.raises(rv.EditConflict, match="your delete was not applied"):
        h = a.add_annotation(1, Box(100, 100, 130, 130), g.category_id)
        old = a.annotations(1)
        b.move_annotation(h, Box(101, 101, 131, 131))
        with rv.expect_versions(a, old):
            a.delete(h)
    # with the window's view re-read, Anna's edit goes through
    with rv.expect_versions(a, a.annotations(1)):
        a.move_annotation(g.id, Box(11, 11, 41, 41))
    assert a.annotation(g.id).box == Box(11, 11, 41, 41) and a.annotation(g.id).author == "Anna"
    # one's own later change is no conflict (one reviewer in one window never sees one)
    stale = a.annotations(1)
    a.accept(props(a, 1)[0].id)
    with rv.expect_versions(a, stale):
        a.relabel(props(a, 1)[0].id if props(a, 1) else g.id, g.category_id)
    a.close()
    b.close()
