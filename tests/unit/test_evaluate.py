"""mAP and the operating-point figures match values worked out by hand."""

import numpy as np
import pytest

from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, box_iou, evaluate_detections

NAMES = ["Betula", "Poaceae"]


def _truth():
    return [
        ImageTruth(np.array([[10, 10, 50, 50], [100, 100, 140, 140]], float), np.array([0, 0]), 200, 200),
        ImageTruth(np.array([[20, 30, 60, 90]], float), np.array([1]), 200, 200),
    ]


def test_ground_truth_against_itself_scores_one():
    truths = _truth()
    preds = [ImagePreds(t.boxes, np.full(len(t.boxes), 0.9), t.classes) for t in truths]
    r = evaluate_detections(truths, preds, NAMES)
    assert r.map50 == pytest.approx(1.0)
    assert r.map50_95 == pytest.approx(1.0)
    assert r.precision == 1.0 and r.recall == 1.0
    assert [row["ap50"] for row in r.per_class] == [pytest.approx(1.0)] * 2
    np.testing.assert_array_equal(r.confusion, np.diag([2, 1, 0]))


def _shift_for_iou(w, target):
    """Horizontal shift d of a w x w box giving IoU target: (w-d)/(w+d) = target."""
    return w * (1 - target) / (1 + target)


def test_known_perturbed_case_matches_hand_computation():
    truths = _truth()
    d = _shift_for_iou(40, 0.62)  # IoU 0.62: a match at .50, .55, .60, not from .65 on
    b_shifted = np.array([100 + d, 100, 140 + d, 140])
    assert box_iou(b_shifted[None], truths[0].boxes[1:2])[0, 0] == pytest.approx(0.62)
    preds = [
        # image 1: exact hit (0.9) and the shifted box (0.8)
        ImagePreds(np.array([[10, 10, 50, 50], b_shifted]), np.array([0.9, 0.8]), np.array([0, 0])),
        # image 2: the Poaceae grain is found but called Betula (0.7); Poaceae is never predicted
        ImagePreds(np.array([[20, 30, 60, 90]], float), np.array([0.7]), np.array([0])),
    ]
    r = evaluate_detections(truths, preds, NAMES, conf=0.25)

    # Betula, by hand (101-point interpolated AP, 2 grains):
    #  IoU thr .50/.55/.60: ranks 0.9 TP, 0.8 TP, 0.7 FP -> precision 1 up to recall 1 -> AP 1
    #  IoU thr .65 ... .95 (7 of them): 0.9 TP, then two FP -> precision 1 up to recall 0.5,
    #  nothing beyond -> recall points 0.00..0.50 (51 of 101) -> AP 51/101
    ap_betula_50_95 = (3 * 1.0 + 7 * 51 / 101) / 10
    # Poaceae: one grain, never predicted -> AP 0 at every threshold
    assert r.per_class[0]["ap50"] == pytest.approx(1.0)
    assert r.per_class[0]["ap50_95"] == pytest.approx(ap_betula_50_95)
    assert r.per_class[1]["ap50"] == pytest.approx(0.0)
    assert r.map50 == pytest.approx(0.5)
    assert r.map50_95 == pytest.approx(ap_betula_50_95 / 2)

    # operating point: 3 detections, 2 correct (class and IoU >= .5), 3 grains
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(2 / 3)
    # confusion: rows truth (Betula, Poaceae, background), cols prediction
    np.testing.assert_array_equal(r.confusion, [[2, 0, 0], [1, 0, 0], [0, 0, 0]])

    # raising the operating threshold above 0.75 drops the misclassification and the shifted box
    r2 = evaluate_detections(truths, preds, NAMES, conf=0.85)
    assert r2.precision == 1.0 and r2.recall == pytest.approx(1 / 3)
    np.testing.assert_array_equal(r2.confusion, [[1, 0, 1], [0, 0, 1], [0, 0, 0]])
    assert r2.map50 == pytest.approx(r.map50)  # mAP uses every score, not the operating point


def test_false_alarm_goes_to_background_row_and_no_predictions_give_zero():
    truths = _truth()
    preds = [
        ImagePreds(np.array([[150, 10, 190, 40]], float), np.array([0.6]), np.array([1])),  # nothing there
        ImagePreds(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)),
    ]
    r = evaluate_detections(truths, preds, NAMES)
    assert r.map50 == 0.0 and r.precision == 0.0 and r.recall == 0.0
    assert r.confusion[2, 1] == 1 and r.confusion[0, 2] == 2 and r.confusion[1, 2] == 1
    empty = [ImagePreds(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 2
    r0 = evaluate_detections(truths, empty, NAMES)
    assert r0.map50 == 0.0 and r0.map50_95 == 0.0 and r0.n_preds == 0


def test_taxon_without_ground_truth_is_left_out_of_the_mean():
    truths = [ImageTruth(np.array([[0, 0, 10, 10]], float), np.array([0]), 20, 20)]
    preds = [ImagePreds(np.array([[0, 0, 10, 10]], float), np.array([0.9]), np.array([0]))]
    r = evaluate_detections(truths, preds, ["A", "B", "C"])
    assert r.map50 == pytest.approx(1.0)
    assert r.per_class[1]["ap50"] is None
    text = r.table()
    assert "mAP@.5 1.0000" in text and "A" in text
    d = r.to_dict()
    assert d["map50"] == pytest.approx(1.0) and "map50_95" in d


def test_model_classes_are_matched_to_ground_truth_by_name(monkeypatch):
    """A model trained with another taxon order (or extra taxa) is scored by taxon name."""
    from types import SimpleNamespace

    import pollenstudio.engine.evaluate as ev

    truths = _truth()
    samples = [SimpleNamespace(path=f"im{i}.png", boxes=t.boxes, classes=t.classes, width=200, height=200)
               for i, t in enumerate(truths)]
    # the model's class 0 is Poaceae, 1 is Olea (unknown to the file), 2 is Betula
    model_cls = {0: 2, 1: 0}  # ground-truth index -> model index
    fake = [ImagePreds(t.boxes, np.full(len(t.boxes), 0.9), np.array([model_cls[int(c)] for c in t.classes]))
            for t in truths]
    monkeypatch.setattr(ev, "predict_samples", lambda *a, **k: [ImagePreds(p.boxes, p.scores, p.classes.copy()) for p in fake])
    cfg = SimpleNamespace(class_names=["Poaceae", "Olea", "Betula"])
    r = ev.evaluate_model(None, cfg, samples, NAMES)
    assert r.map50 == pytest.approx(1.0) and r.precision == 1.0
    assert r.class_names == ["Betula", "Poaceae", "Olea"] and r.per_class[2]["ap50"] is None
    # a model with no taxon in common is scored on finding grains (issue 28), never refused
    r = ev.evaluate_model(None, SimpleNamespace(class_names=["Olea"]), samples, NAMES)
    assert r.class_agnostic and r.class_names == [ev.AGNOSTIC_CLASS] and r.map50 == pytest.approx(1.0)


def test_a_model_without_the_projects_taxa_is_scored_class_agnostically(monkeypatch):
    """Issue 28: the one-class grain model ("pollen") on a taxon-labelled project failed with
    "no taxon in common", so a lab could never see how well its default model finds grains.
    It is scored on finding: every grain (unnamed ones too) and every detection one class."""
    from types import SimpleNamespace

    import pollenstudio.engine.evaluate as ev

    truths = _truth()
    truths[0] = ImageTruth(np.vstack([truths[0].boxes, [[150, 150, 190, 190]]]), np.append(truths[0].classes, -1))
    samples = [SimpleNamespace(path=f"im{i}.png", boxes=t.boxes, classes=t.classes, width=200, height=200)
               for i, t in enumerate(truths)]
    n_grains = sum(len(t.boxes) for t in truths)
    # the grain model finds every grain but one, and calls one speck of debris a grain
    found = [ImagePreds(t.boxes[1:] if i == 0 else t.boxes, np.full(len(t.boxes) - (i == 0), 0.9),
                        np.zeros(len(t.boxes) - (i == 0), np.int64)) for i, t in enumerate(truths)]
    found[1] = ImagePreds(np.vstack([found[1].boxes, [[0, 0, 10, 10]]]), np.append(found[1].scores, 0.8),
                          np.append(found[1].classes, 0))
    asked = {}

    def fake_predict(*a, **k):
        asked.update(k)
        return [ImagePreds(p.boxes.copy(), p.scores.copy(), p.classes.copy()) for p in found]

    monkeypatch.setattr(ev, "predict_samples", fake_predict)
    r = ev.evaluate_model(None, SimpleNamespace(class_names=["pollen"]), samples, NAMES)
    assert r.class_agnostic and r.class_names == [ev.AGNOSTIC_CLASS]
    assert r.n_truth == n_grains  # the unnamed grain is a grain to find
    assert r.recall == pytest.approx((n_grains - 1) / n_grains)
    assert r.precision == pytest.approx((n_grains - 1) / n_grains)  # one false alarm
    assert asked.get("one_box_per_grain") is True  # boxes of several taxa on one grain are one finding
    d = r.to_dict()
    assert d["class_agnostic"] is True and "class-agnostic (finding only)" in r.table()
    # a model with the project's taxa is scored by taxon as before
    r = ev.evaluate_model(None, SimpleNamespace(class_names=list(NAMES)), samples, NAMES)
    assert not r.class_agnostic and r.to_dict()["class_agnostic"] is False and "class-agnostic" not in r.table()


def test_a_held_out_score_on_too_few_images_or_grains_is_not_a_score():
    """Issue 28: a new version "scored" mAP@.5 0.005 on one validation image. Below 2 images
    or 10 grains the figure is replaced by the reason."""
    from pollenstudio.engine.evaluate import MIN_SCORE_GRAINS, MIN_SCORE_IMAGES, too_few_to_score

    assert (MIN_SCORE_IMAGES, MIN_SCORE_GRAINS) == (2, 10)
    one = too_few_to_score({"map50": 0.005, "n_images": 1, "n_truth": 11})
    assert one.startswith("too few reviewed images to score: 1 validation image with 11 grains")
    assert "2 images and 10 grains" in one
    assert too_few_to_score({"map50": 0.5, "n_images": 3, "n_truth": 9}).startswith("too few")
    assert too_few_to_score({"map50": 0.5, "n_images": 2, "n_truth": 10}) is None
    assert too_few_to_score({"map50": 0.91}) is None and too_few_to_score({}) is None  # a model card's figure
    # what evaluate_detections reports carries its size
    r = evaluate_detections(_truth(), [ImagePreds(t.boxes, np.ones(len(t.boxes)), t.classes) for t in _truth()], NAMES)
    assert too_few_to_score(r.to_dict()).startswith("too few reviewed images to score: 2 validation images with 3")
