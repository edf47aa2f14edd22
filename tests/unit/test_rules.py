"""One spelling of each rule: what counts as a grain, and the detection threshold."""

from pollenstudio.core.types import DEFAULT_CONF, OBJECT_STATUSES, AnnotationStatus, Box, Detection, sql_in


def test_object_statuses_is_the_is_object_rule_and_its_sql():
    assert {s for s in AnnotationStatus if s.is_object} == set(OBJECT_STATUSES)
    assert sql_in(OBJECT_STATUSES) == "('accepted', 'edited', 'added')"
    assert AnnotationStatus.REJECTED not in OBJECT_STATUSES and AnnotationStatus.PROPOSED not in OBJECT_STATUSES


def test_store_counts_grains_by_the_same_rule(tmp_path):
    import cv2
    import numpy as np

    from pollenstudio.project import Project
    from pollenstudio.project.report import count_rows

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((100, 100, 3), np.uint8))
    with Project.create(tmp_path) as p:
        p.add_folder(tmp_path)
        img = p.images()[0].id
        dets = [Detection(Box(5 + 20 * i, 5, 15 + 20 * i, 15), 0, "Betula", 0.5) for i in range(4)]
        written = p.write_proposals(img, dets).written
        cid = p.annotation(written[0]).category_id
        p.accept(written[0])
        p.move_annotation(written[1], Box(45, 40, 60, 55))  # edited
        p.reject(written[2])  # written[3] stays proposed
        p.add_annotation(img, Box(70, 70, 90, 90), cid)
        objects = [a for a in p.annotations(img) if a.status in OBJECT_STATUSES]
        assert len(objects) == 3
        assert p.image_counts()[img].objects == 3
        assert p.category_counts(include_proposed=False) == {cid: 3}
        assert p.category_counts(include_proposed=True) == {cid: 4}
        p.reject(written[3])
        assert [len(anns) for _rec, anns in p.reviewed_dataset()] == [3]
        assert sum(r["count"] for r in count_rows(p) if r["scope"] == "image") == 3


def test_default_conf_is_the_default_of_every_detection_entry_point():
    import inspect

    from pollenstudio.detector.postprocess import postprocess
    from pollenstudio.engine.evaluate import evaluate_detections
    from pollenstudio.engine.predict import Predictor

    assert DEFAULT_CONF == 0.25
    # GUI detection uses the Predictor's default: the review slider starts there
    assert inspect.signature(Predictor.__init__).parameters["conf"].default == DEFAULT_CONF
    assert inspect.signature(postprocess).parameters["conf"].default == DEFAULT_CONF
    assert inspect.signature(evaluate_detections).parameters["conf"].default == DEFAULT_CONF
