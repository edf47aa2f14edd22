"""Proposal merge: model output never overwrites or resurrects a human decision."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollenstudio.core.types import Annotation, AnnotationStatus, Box, Detection, Source
from pollenstudio.project.merge import plan_merge


def det(x, y, s=0.5, label="Betula", size=20):
    return Detection(Box(x, y, x + size, y + size), 0, label, s)


@pytest.fixture
def proj(tmp_path, store):
    p = store.create(tmp_path / "p")
    with p.importing():
        p.bulk_insert([{"path": "a.png", "width": 400, "height": 300}], [])
    yield p
    p.close()


def test_plan_merge_rule_without_a_database():
    ann = lambda i, st_, x: Annotation(i, 1, Box(x, 0, x + 20, 20), 1, st_, Source.MODEL)  # noqa: E731
    existing = [ann(1, AnnotationStatus.ACCEPTED, 0), ann(2, AnnotationStatus.PROPOSED, 100), ann(3, AnnotationStatus.REJECTED, 200)]
    plan = plan_merge(existing, [det(1, 0), det(101, 0), det(199, 1), det(300, 0)], iou_threshold=0.5)
    assert [d.box.x1 for d in plan.keep] == [101, 300]
    assert [d.box.x1 for d in plan.skipped] == [1, 199]
    assert plan.replace_ids == [2]


def test_new_proposals_replace_old_undecided_ones(proj):
    r1 = proj.write_proposals(1, [det(10, 10), det(100, 100)])
    r2 = proj.write_proposals(1, [det(200, 200, 0.9)])
    assert r2.replaced == 2 and len(r2.written) == 1
    assert [a.box.x1 for a in proj.annotations(1)] == [200]
    assert all(i not in [a.id for a in proj.annotations(1)] for i in r1.written)


def test_categories_are_mapped_by_name_and_created(proj):
    proj.add_category("Betula")
    r = proj.write_proposals(1, [det(0, 0, label="Betula"), det(50, 50, label="Urtica")], model_version_id=None, run_id=7)
    assert [c.name for c in proj.categories()] == ["Betula", "Urtica"]
    assert r.categories_created == [proj.category_by_name("Urtica").id]
    assert proj.annotation(r.written[0]).extra == {"run_id": 7}


def test_topk_and_score_are_stored(proj):
    d = Detection(Box(1, 1, 30, 30), 0, "Betula", 0.55, topk=(("Betula", 0.55), ("Alnus", 0.4)))
    (aid,) = proj.write_proposals(1, [d]).written
    a = proj.annotation(aid)
    assert a.topk == (("Betula", 0.55), ("Alnus", 0.4)) and a.score == 0.55 and a.source is Source.MODEL


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(st.tuples(st.integers(0, 360), st.integers(0, 260), st.floats(0.05, 1.0)),
                                max_size=8), min_size=1, max_size=6),
       decisions=st.lists(st.sampled_from(["accept", "reject", "move", "relabel", "keep"]), min_size=1, max_size=8))
def test_human_decisions_survive_any_number_of_redetections(tmp_path_factory, rounds, decisions, store):
    with store.create(tmp_path_factory.mktemp("m") / "p") as p:
        with p.importing():
            p.bulk_insert([{"path": "a.png", "width": 400, "height": 300}], [])
        other = p.add_category("Alnus")
        first = p.write_proposals(1, [det(40 * i, 30 * i, 0.5) for i in range(len(decisions))])
        for aid, what in zip(first.written, decisions):
            if what == "accept":
                p.accept(aid)
            elif what == "reject":
                p.reject(aid)
            elif what == "move":
                p.move_annotation(aid, p.annotation(aid).box.translated(3, 3))
            elif what == "relabel":
                p.relabel(aid, other)
        p.add_annotation(1, Box(370, 270, 395, 295), other)
        decided = {a.id: a for a in p.annotations(1) if a.status.is_decided}
        for dets in rounds:
            # re-detections include boxes right on top of every decision
            again = [det(x, y, s) for x, y, s in dets] + [Detection(a.box, 0, "Betula", 0.99) for a in decided.values()]
            p.write_proposals(1, again)
            now = {a.id: a for a in p.annotations(1) if a.status.is_decided}
            assert now == decided
            for a in p.annotations(1):
                if a.status is AnnotationStatus.PROPOSED:
                    assert all(a.box.iou(d.box) <= 0.5 for d in decided.values())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0.5, 50), st.floats(0.5, 50)), min_size=1, max_size=6),
       st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(0.5, 50), st.floats(0.5, 50)), min_size=1, max_size=6))
def test_iou_matrix_agrees_with_box_iou(a, b):
    from pollenstudio.project.merge import iou_matrix

    ba = [Box.from_xywh(*t) for t in a]
    bb = [Box.from_xywh(*t) for t in b]
    m = iou_matrix([x.xyxy() for x in ba], [y.xyxy() for y in bb])
    assert m.ravel().tolist() == pytest.approx([x.iou(y) for x in ba for y in bb], abs=1e-9)
