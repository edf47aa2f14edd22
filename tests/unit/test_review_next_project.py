"""Review this next on a project: what detection stores gives the pure rule's order, the
same for a fixed model and images, and after the project is reopened."""

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.imageio import read_image
from pollenstudio.engine.detect_job import detect_project
from pollenstudio.engine.predict import Predictor
from pollenstudio.engine.review_order import (
    ImageProposals,
    flip_back,
    project_review_values,
    review_order,
    review_value,
)
from pollenstudio.project import Project


def _scenes(folder, n=5, seed=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        grains = random_grains(rng, IMGSZ, IMGSZ, 1 + i % 3, margin=8)
        img, _, _ = render_scene(IMGSZ, IMGSZ, grains, seed=seed * 1000 + i)
        # some noise so the model is unsure of some grains
        noise = np.random.default_rng(i).normal(0, 12 * (i % 3), img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), img[:, :, ::-1])


def _project(folder, model):
    _scenes(folder)
    proj = Project.create(folder)
    proj.add_folder(folder)
    proj.add_model_version("tiny", model, activate=True)
    return proj


def _ordered(proj):
    values = project_review_values(proj)
    return sorted(values, key=lambda i: (-values[i], i)), values


def test_stored_doubts_give_the_rules_values_and_the_order_survives_reopen(tmp_path, tiny_model_path):
    proj = _project(tmp_path / "a", tiny_model_path)
    pred = Predictor.from_project(proj, device="cpu", conf=0.1, batch=4)
    s = detect_project(proj, pred, flip_pass=True)
    assert s.done == 5 and proj.run(s.run_id).params["flip_pass"] is True
    # the rule computed from the detections themselves (image pass + flipped pass)
    items = []
    for rec in proj.images():
        img = read_image(proj.image_path(rec))
        dets = pred.predict(img)
        flipped = flip_back(pred.predict(np.ascontiguousarray(img[:, ::-1])), img.shape[1])
        items.append(ImageProposals(rec.id, dets, flipped))
    assert any(p.detections for p in items)
    expected = {p.image_id: review_value(p) for p in items}
    order, values = _ordered(proj)
    assert values == pytest.approx(expected, rel=1e-4)  # batched vs one-by-one: float rounding
    assert order == review_order(items)
    assert len(set(np.round(list(values.values()), 6))) > 1  # the images are told apart
    folder = proj.folder
    proj.close()
    with Project.open(folder) as again:
        assert _ordered(again) == (order, values)


def test_same_model_and_images_give_the_same_order(tmp_path, tiny_model_path):
    orders = []
    for name in ("one", "two"):
        proj = _project(tmp_path / name, tiny_model_path)
        detect_project(proj, Predictor.from_project(proj, device="cpu", conf=0.1, batch=4), flip_pass=True)
        orders.append([(proj.image(i).path, round(v, 9)) for i, v in
                       sorted(project_review_values(proj).items(), key=lambda kv: (-kv[1], kv[0]))])
        proj.close()
    assert orders[0] == orders[1]


def test_reviewed_grains_make_a_taxon_less_urgent_and_reviewed_images_leave_the_order(tmp_path, tiny_model_path):
    proj = _project(tmp_path / "c", tiny_model_path)
    detect_project(proj, Predictor.from_project(proj, device="cpu", conf=0.1, batch=4))  # no flipped pass
    before = project_review_values(proj)
    first = max(before, key=lambda i: (before[i], -i))
    anns = [a for a in proj.annotations(first)]
    assert anns
    for a in anns:
        proj.accept(a.id)
    assert proj.image(first).status.value == "reviewed"
    after = project_review_values(proj)
    assert first not in after
    # every other image's proposals of the taxa just reviewed are worth less now, none more
    assert all(after[i] <= before[i] + 1e-12 for i in after)
    assert any(after[i] < before[i] - 1e-9 for i in after if before[i] > 0)


def test_proposals_without_a_stored_doubt_are_scored_from_score_and_topk(tmp_path):
    from pollenstudio.core.types import Box, Detection

    folder = tmp_path / "d"
    _scenes(folder, n=2)
    proj = Project.create(folder)
    proj.add_folder(folder)
    a, b = [r.id for r in proj.images()]
    d = Detection(box=Box(10, 10, 40, 40), class_index=0, label="Alnus", score=0.5,
                  topk=(("Alnus", 0.5), ("Betula", 0.45)))
    proj.write_proposals(a, [d])  # as an import or an older project would: no doubt
    proj.write_proposals(b, [d], doubts=[0.25])
    values = project_review_values(proj)
    assert values[a] == pytest.approx(review_value(ImageProposals(a, [d])))
    assert values[b] == pytest.approx(0.25 * 2.0)  # rarity 1 with no Alnus reviewed
    with pytest.raises(ValueError):
        proj.write_proposals(b, [d], doubts=[0.1, 0.2])
    proj.close()


def test_the_reads_behind_the_order_use_their_indexes_and_leave_the_queue_on_its_own(tmp_path):
    from pollenstudio.core.types import OBJECT_STATUSES, sql_in

    proj = Project.create(tmp_path / "e")

    def plan(sql, params=()):
        return " ".join(str(r[-1]) for r in proj._q("EXPLAIN QUERY PLAN " + sql, params))

    # the reviewed grains per taxon (rarity) read from the partial index over grains
    st = sql_in(OBJECT_STATUSES)
    assert "ann_objects" in plan(f"SELECT category_id, COUNT(*) FROM annotations WHERE status IN {st} "
                                 "GROUP BY category_id")
    assert "ann_review" in plan("SELECT image_id, SUM(doubt) FROM annotations INDEXED BY ann_review "
                                "WHERE status = 'proposed' AND doubt IS NOT NULL GROUP BY image_id")
    # the review queue keeps its score index (an index led by status once took it: 160 ms)
    assert "ann_queue_score" in plan("SELECT id FROM annotations WHERE status = 'proposed' AND score >= ? "
                                     "ORDER BY score, id LIMIT 1", (0.0,))
    proj.close()
