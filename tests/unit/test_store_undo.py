"""Undo/redo: every mixed edit sequence walks back to each earlier state exactly, and forward again."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollenstudio.core.types import AnnotationStatus, Box, Detection, ReviewStatus
from pollenstudio.core.errors import ProjectError
from pollenstudio.project import Project


def state(p):
    """Full snapshot of what a user can see: annotations, taxa, image statuses and marks."""
    c = p._conn
    return (
        c.execute("SELECT * FROM annotations ORDER BY id").fetchall(),
        c.execute("SELECT * FROM categories ORDER BY id").fetchall(),
        c.execute("SELECT id, status, mark FROM images ORDER BY id").fetchall(),
    )


def depth(p):
    return p._conn.execute("SELECT COUNT(*) FROM history WHERE undone = 0").fetchone()[0]


def make_project(folder, store):
    p = store.create(folder)
    with p.importing():
        # image 3 is a focal stack of 5 planes: its grains keep a plane (issue 19)
        p.bulk_insert([{"path": f"img{i}.png", "width": 100, "height": 80, "planes": 5 if i == 2 else 1}
                       for i in range(3)], [])
    for i in (1, 2):
        p.write_proposals(i, [Detection(Box(10 * k, 5 * k, 10 * k + 15, 5 * k + 12), 0, n, 0.2 + 0.1 * k)
                              for k, n in enumerate(["Betula", "Pinus", "Betula", "Alnus"])])
    p.clear_history()
    return p


op_st = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 3), st.integers(0, 80), st.integers(0, 60), st.integers(0, 5)),
    st.tuples(st.just("move"), st.integers(0, 99), st.integers(-5, 5), st.integers(-5, 5), st.integers(0, 5)),
    st.tuples(st.just("resize"), st.integers(0, 99), st.integers(1, 9), st.integers(1, 9), st.integers(0, 5)),
    st.tuples(st.just("relabel"), st.integers(0, 99), st.integers(0, 5), st.just(0), st.just(0)),
    st.tuples(st.sampled_from(["accept", "reject", "delete"]), st.integers(0, 99), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("accept_all"), st.integers(1, 3), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("mark"), st.integers(1, 3), st.integers(0, 2), st.just(0), st.just(0)),
    st.tuples(st.just("add_taxon"), st.integers(0, 999), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("merge"), st.integers(0, 5), st.integers(0, 5), st.just(0), st.just(0)),
    st.tuples(st.just("rename"), st.integers(0, 5), st.integers(0, 999), st.just(0), st.just(0)),
    st.tuples(st.just("reject_all"), st.integers(1, 3), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("recolor"), st.integers(0, 5), st.integers(0, 0xFFFFFF), st.just(0), st.just(0)),
    st.tuples(st.just("hotkey"), st.integers(0, 5), st.integers(0, 9), st.just(0), st.just(0)),
    st.tuples(st.just("parent"), st.integers(0, 5), st.integers(0, 6), st.just(0), st.just(0)),
    st.tuples(st.just("delete_taxon"), st.integers(0, 5), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("add_polygon"), st.integers(1, 3), st.integers(0, 70), st.integers(0, 50), st.integers(0, 5)),
    st.tuples(st.just("batch"), st.integers(0, 99), st.integers(0, 5), st.just(0), st.just(0)),
    st.tuples(st.just("outline"), st.integers(0, 99), st.integers(0, 3), st.integers(1, 6), st.just(0)),
    st.tuples(st.just("set_plane"), st.integers(0, 99), st.integers(0, 4), st.just(0), st.just(0)),
)

# every undoable edit of Project, by the op kind that exercises it (checked below, so a new
# edit method cannot be left out of the property tests unnoticed)
EDIT_KINDS = {
    "add_annotation": "add", "move_annotation": "move", "resize_annotation": "resize", "relabel": "relabel",
    "accept": "accept", "reject": "reject", "delete": "delete", "accept_all": "accept_all",
    "reject_all": "reject_all", "set_image_status": "mark", "add_category": "add_taxon",
    "merge_categories": "merge", "rename_category": "rename", "recolor_category": "recolor",
    "set_category_hotkey": "hotkey", "set_category_parent": "parent", "delete_category": "delete_taxon",
    "batch": "batch", "remove_images": "remove_images", "set_outline": "outline", "set_outlines": "outline",
    "set_annotation_plane": "set_plane",
}


def apply(p, op):
    kind, a, b, c, d = op
    anns = [x for r in p.images() for x in p.annotations(r.id)]
    cats = [x.id for x in p.categories()]
    pick = anns[a % len(anns)] if anns else None
    try:
        if kind == "add":
            p.add_annotation(a, Box(b, c, b + 10, c + 10), cats[d % len(cats)])
        elif kind == "move" and pick:
            p.move_annotation(pick.id, pick.box.translated(b, c))
        elif kind == "resize" and pick:
            p.resize_annotation(pick.id, Box(pick.box.x1, pick.box.y1, pick.box.x1 + b * 3, pick.box.y1 + c * 3))
        elif kind == "relabel" and pick:
            p.relabel(pick.id, cats[b % len(cats)])
        elif kind in ("accept", "reject", "delete") and pick:
            getattr(p, kind)(pick.id)
        elif kind == "accept_all":
            p.accept_all(a)
        elif kind == "mark":
            p.set_image_status(a, list(ReviewStatus)[b])
        elif kind == "add_taxon":
            p.add_category(f"Taxon {a}", hotkey=str(a % 9 + 1))
        elif kind == "merge":
            p.merge_categories(cats[a % len(cats)], cats[b % len(cats)])
        elif kind == "rename":
            p.rename_category(cats[a % len(cats)], f"Renamed {b}")
        elif kind == "reject_all":
            p.reject_all(a)
        elif kind == "recolor":
            p.recolor_category(cats[a % len(cats)], f"#{b:06x}")
        elif kind == "hotkey":
            p.set_category_hotkey(cats[a % len(cats)], None if b == 0 else str(b))
        elif kind == "parent":
            p.set_category_parent(cats[a % len(cats)], None if b >= len(cats) else cats[b])
        elif kind == "delete_taxon":
            p.delete_category(cats[a % len(cats)])  # refused while it labels grains
        elif kind == "add_polygon":
            p.add_annotation(a, Box(b, c, b + 20, c + 20), cats[d % len(cats)],
                             polygon=[b + 10, c, b + 20, c + 10, b + 10, c + 20, b, c + 10])
        elif kind == "outline" and pick:  # an outline around the box's centre, or none (b == 0)
            x, y = pick.box.center
            p.set_outline(pick.id, None if b == 0 else [x - c, y - c, x + c, y - c, x + c, y + c, x - b, y + c])
        elif kind == "set_plane" and pick:  # refused (ProjectError) on a single image's grain
            p.set_annotation_plane(pick.id, b)
        elif kind == "batch" and pick:  # several edits, one undo step
            with p.batch("accept and relabel"):
                p.accept(pick.id)
                p.relabel(pick.id, cats[b % len(cats)])
    except ProjectError:
        pass  # refused edits (box off the image, self-merge, name taken) change nothing


def reopen(p, store):
    folder = p.folder
    p.close()
    return store.open(folder)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(op_st, st.just(("reopen", 0, 0, 0, 0))), min_size=1, max_size=25),
       reopen_at=st.sets(st.integers(0, 60), max_size=6))
def test_undo_redo_walks_back_and_forth_through_every_state(tmp_path_factory, ops, reopen_at, store):
    """Any mix of edits, with the project closed and reopened between edits and at random
    points of the walk back (undo) and forth (redo): every earlier state comes back exactly."""
    p = make_project(tmp_path_factory.mktemp("u") / "p", store)
    states = [state(p)]
    for op in ops:
        if op[0] == "reopen":
            p = reopen(p, store)
            assert state(p) == states[-1]
            continue
        before_depth = depth(p)
        apply(p, op)
        if depth(p) > before_depth:
            states.append(state(p))
        else:
            assert state(p) == states[-1], f"{op} changed data without an undo step"
    step = 0
    for expected in reversed(states[:-1]):
        if step in reopen_at:
            p = reopen(p, store)
        step += 1
        assert p.undo() is not None
        assert state(p) == expected
    if step in reopen_at:
        p = reopen(p, store)
    assert not p.can_undo() and p.undo() is None
    for expected in states[1:]:
        step += 1
        if step in reopen_at:
            p = reopen(p, store)
        assert p.redo() is not None
        assert state(p) == expected
    p = reopen(p, store)
    assert state(p) == states[-1] and not p.can_redo()
    p.close()


def test_every_undoable_edit_of_project_is_listed():
    """A public Project method that opens an undo step (``_command``) must be in EDIT_KINDS,
    so the tests here exercise it across reopening."""
    import inspect

    undoable = set()
    for name, fn in vars(Project).items():
        if name.startswith("_") or not callable(fn):
            continue
        src = inspect.getsource(fn)
        if "self._command(" in src or "self._set_status_many(" in src:
            undoable.add(name)
    assert {"accept", "merge_categories", "batch"} <= undoable  # the scan finds them
    assert undoable <= set(EDIT_KINDS), sorted(undoable - set(EDIT_KINDS))


@pytest.mark.parametrize("method", sorted(EDIT_KINDS))
def test_each_edit_kind_undoes_and_redoes_across_reopening(tmp_path, method, store):
    """One edit of each kind; the project is closed and reopened before the undo and again
    before the redo (the app is often closed between an edit and the user's Ctrl+Z)."""
    p = make_project(tmp_path / "p", store)
    betula, pinus = p.category_by_name("Betula").id, p.category_by_name("Pinus").id
    (prop,) = p.review_queue(image_id=1, limit=1)
    human = p.add_annotation(3, Box(5, 5, 30, 30), betula)
    unused = p.add_category("Unused")
    p.clear_history()
    edits = {
        "add_annotation": lambda: p.add_annotation(2, Box(60, 40, 80, 60), pinus, polygon=[60, 40, 80, 40, 70, 60]),
        "move_annotation": lambda: p.move_annotation(prop.id, prop.box.translated(3, 2)),
        "resize_annotation": lambda: p.resize_annotation(human, Box(5, 5, 40, 35)),
        "relabel": lambda: p.relabel(prop.id, pinus if prop.category_id != pinus else betula),
        "accept": lambda: p.accept(prop.id),
        "reject": lambda: p.reject(prop.id),
        "delete": lambda: p.delete(human),
        "accept_all": lambda: p.accept_all(1),
        "reject_all": lambda: p.reject_all(2),
        "set_image_status": lambda: p.set_image_status(3, ReviewStatus.IN_REVIEW),
        "add_category": lambda: p.add_category("Corylus", color="#123456", hotkey="1"),
        "merge_categories": lambda: p.merge_categories(pinus, betula),
        "rename_category": lambda: p.rename_category(pinus, "Pinus sylvestris"),
        "recolor_category": lambda: p.recolor_category(betula, "#00ff00"),
        "set_category_hotkey": lambda: p.set_category_hotkey(pinus, "7"),
        "set_category_parent": lambda: p.set_category_parent(pinus, betula),
        "delete_category": lambda: p.delete_category(unused),
        "batch": lambda: _batch(p, prop.id, pinus),
        "remove_images": lambda: p.remove_images([1]),  # an image with proposals
        "set_outline": lambda: p.set_outline(prop.id, [20, 10, 30, 10, 30, 20, 20, 20]),
        "set_outlines": lambda: p.set_outlines({prop.id: [20, 10, 30, 10, 25, 20], human: [5, 5, 20, 5, 10, 25]}),
        "set_annotation_plane": lambda: p.set_annotation_plane(human, 3),  # image 3 is a 5-plane stack
    }
    before = state(p)
    edits[method]()
    after = state(p)
    assert after != before and depth(p) == 1, f"{method} made no single undo step"
    p = reopen(p, store)
    assert state(p) == after
    assert p.undo() is not None and state(p) == before
    p = reopen(p, store)
    assert state(p) == before and p.can_redo()
    assert p.redo() is not None and state(p) == after
    p = reopen(p, store)
    assert state(p) == after and not p.can_redo()
    p.close()


def _batch(p, ann_id, cat):
    with p.batch("accept and relabel"):
        p.accept(ann_id)
        p.relabel(ann_id, cat)


def test_new_edit_clears_redo_and_undo_survives_reopening(tmp_path, store):
    p = make_project(tmp_path / "p", store)
    (a,) = p.review_queue(limit=1)
    p.accept(a.id)
    p.undo()
    assert p.can_redo()
    p.reject(a.id)
    assert not p.can_redo() and p.undo_label() == "reject"
    p.close()
    with store.open(tmp_path / "p") as q:
        assert q.can_undo()
        ev = q.undo()
        assert ev.annotation_ids == (a.id,) and ev.image_ids == (a.image_id,)
        assert q.annotation(a.id).status is AnnotationStatus.PROPOSED


def test_undo_of_an_edit_whose_proposal_was_replaced_by_redetection(tmp_path, store):
    p = make_project(tmp_path / "p", store)
    (a,) = p.review_queue(image_id=1, limit=1)
    p.accept(a.id)
    p.undo()  # back to proposed ...
    p.write_proposals(1, [Detection(Box(50, 50, 70, 70), 0, "Betula", 0.9)])  # ... and replaced
    ev = p.redo()  # the accepted row is gone: redo must not resurrect it
    assert ev is not None and ev.annotation_ids == ()
    with pytest.raises(ProjectError):
        p.annotation(a.id)
    assert [x.box for x in p.annotations(1)] == [Box(50, 50, 70, 70)]


def test_undo_merge_after_redetection_keeps_new_proposals(tmp_path, store):
    p = make_project(tmp_path / "p", store)
    betula, pinus = p.category_by_name("Betula").id, p.category_by_name("Pinus").id
    p.merge_categories(pinus, betula)
    p.write_proposals(1, [Detection(Box(1, 1, 20, 20), 0, "Betula", 0.5)])
    p.undo()
    assert p.category(pinus).name == "Pinus"
    new = [x for x in p.annotations(1)]
    assert len(new) == 1 and new[0].category_id == betula  # model output of after the merge stays
    names = {c.id: c.name for c in p.categories()}
    assert [names[x.category_id] for x in p.annotations(2)] == ["Betula", "Pinus", "Betula", "Alnus"]


def test_undo_add_taxon_that_detection_now_uses_keeps_it(tmp_path, store):
    p = make_project(tmp_path / "p", store)
    cid = p.add_category("Corylus")
    p.write_proposals(3, [Detection(Box(1, 1, 20, 20), 0, "Corylus", 0.5)])
    p.undo()
    assert p.category(cid).name == "Corylus"  # still labels a proposal


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(op_st, st.tuples(st.just("redetect"), st.integers(1, 3), st.integers(0, 60),
                                                st.integers(0, 50), st.integers(0, 3))), min_size=1, max_size=25))
def test_undo_everything_with_redetections_in_between_leaves_no_decision(tmp_path_factory, ops, store):
    """Re-detection (not undoable) between edits must not break undo: undoing every step still
    brings back a project with no human decision in it, and redo never raises."""
    p = make_project(tmp_path_factory.mktemp("d") / "p", store)
    for op in ops:
        if op[0] == "redetect":
            _, img, x, y, n = op
            p.write_proposals(img, [Detection(Box(x + 9 * k, y, x + 9 * k + 12, y + 12), 0, "Betula", 0.5)
                                    for k in range(n)])
        else:
            apply(p, op)
    while p.can_undo():
        p.undo()
    assert p._conn.execute("SELECT COUNT(*) FROM annotations WHERE status != 'proposed'").fetchone()[0] == 0
    assert all(r.status is not ReviewStatus.REVIEWED for r in p.images())
    while p.can_redo():
        p.redo()
    assert p.integrity_check() == "ok"
    p.close()


def test_redo_add_taxon_after_detection_created_the_same_name(tmp_path, store):
    p = make_project(tmp_path / "p", store)
    p.add_category("Corylus")
    p.undo()
    p.write_proposals(3, [Detection(Box(1, 1, 20, 20), 0, "Corylus", 0.5)])
    assert p.redo() is not None  # no crash on the unique name
    assert [c.name for c in p.categories()].count("Corylus") == 1
    p.close()
