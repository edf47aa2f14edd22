"""Issue 28 items 6 and 7: a grain-size calibration belongs to a magnification (kept per image,
with the project's value for the images without their own), detection says when an image's
grains are far off the size it is calibrated to, and boxes far larger or smaller than the
typical grain lose their score."""

import sqlite3

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.errors import ProjectError
from pollenstudio.core.types import AnnotationStatus, Box
from pollenstudio.engine.scale import (
    SIZE_BAND,
    image_grain_px,
    size_band,
    size_mismatch,
    size_weights,
)
from pollenstudio.project import Project
from pollenstudio.project.schema import DB_NAME, MIGRATIONS, SCHEMA_VERSION


def _project(tmp_path, n=3, size=(64, 48)):
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((size[1], size[0], 3), 40 * i + 20, np.uint8))
    p = Project.create(folder)
    p.add_folder(folder)
    return p


# ---------------------------------------------------------------------------------- store
def test_grain_size_is_kept_per_image_with_the_projects_value_for_the_rest(tmp_path):
    p = _project(tmp_path)
    a, b, c = (r.id for r in p.images())
    p.set_grain_size_px(287, [a])
    p.set_grain_size_px(290)  # the project's: images without their own
    recs = {r.id: r for r in p.images()}
    assert recs[a].grain_px == 287 and recs[b].grain_px is None and p.grain_size_px == 290
    assert image_grain_px(recs[a], p.grain_size_px) == (287.0, "image")
    assert image_grain_px(recs[b], p.grain_size_px) == (290.0, "project")
    p.set_um_per_px(0.5, [c])
    assert image_grain_px(p.image(c), p.grain_size_px) == (60.0, "scale")  # 30 um grains at 0.5 um/px
    p.set_grain_size_px(None, [a])
    assert p.image(a).grain_px is None and image_grain_px(p.image(a), None) == (None, "none")

    # wrong values and unknown images are refused in words, and nothing is stored
    for bad in (1.0, float("nan"), 1e9, "big"):
        with pytest.raises(ProjectError, match="typical grain size"):
            p.set_grain_size_px(bad, [b])
    with pytest.raises(ProjectError, match="no image with id 999"):
        p.set_grain_size_px(100, [b, 999])
    assert p.image(b).grain_px is None
    p.close()


def test_an_older_project_is_upgraded_with_no_image_calibrated(tmp_path):
    p = _project(tmp_path, n=1)
    p.set_grain_size_px(123)
    p.close()
    db = tmp_path / "p" / DB_NAME
    conn = sqlite3.connect(db)
    # the file as schema 6 wrote it: without v7's column and without what v8 and later added
    # (v8: several reviewers), so every step from 7 on runs as it would on a user's file
    conn.execute("ALTER TABLE images DROP COLUMN grain_px")
    for stmt in ("DROP INDEX history_author", "ALTER TABLE history DROP COLUMN author", "DROP TABLE claims",
                 "DROP TABLE opinions", "DROP TABLE change_feed"):
        conn.execute(stmt)
    assert len(MIGRATIONS) == 8, "a newer schema step: undo it here too"
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    with Project.open(tmp_path / "p") as p:
        assert p.schema_version == SCHEMA_VERSION and p.upgraded_from[0] == 6
        rec = p.images()[0]
        assert rec.grain_px is None and image_grain_px(rec, p.grain_size_px) == (123.0, "project")


def test_removing_an_image_and_undo_keeps_its_calibration(tmp_path):
    p = _project(tmp_path, n=2)
    a = p.images()[0].id
    p.set_grain_size_px(55, [a])
    p.remove_images([a])
    p.undo()
    assert p.image(a).grain_px == 55
    p.close()


# ---------------------------------------------------------------------------------- rules
def test_size_weights_keep_the_band_and_fade_beyond_it():
    w = size_weights([287, 287 * 3, 287 / 3, 287 * 5, 287 / 5, 287 * 6, 1340], 287)
    assert np.allclose(w[:3], 1.0) and np.allclose(w[3:6], 0.0, atol=1e-9)
    assert 0 < w[6] < 0.2  # the 1523 x 1179 box on 287 px grains (1340 px): nearly nothing left
    assert np.all(np.diff(size_weights([300, 900, 1000, 1200, 1400], 287)) <= 0)  # the larger, the less


def test_size_band_widens_for_the_projects_reviewed_grains_never_narrows():
    assert size_band([1.0] * 50) == SIZE_BAND  # all grains typical: the default band
    assert size_band([4.0] * 5) == SIZE_BAND  # too few grains to say anything
    lo, hi = size_band([1.0] * 40 + [4.0] * 10)  # a lab whose slides hold large grains (Abies, Zea)
    assert lo == SIZE_BAND[0] and hi == pytest.approx(5.0)
    assert size_weights([4.0 * 100], 100, (lo, hi))[0] == 1.0


def test_size_mismatch_needs_a_real_difference():
    assert size_mismatch(287, [55, 60, 50]) == pytest.approx(55 / 287)
    assert size_mismatch(287, [250, 300, 320]) is None
    assert size_mismatch(60, [290]) == pytest.approx(290 / 60)
    assert size_mismatch(60, [290, 290], min_grains=3) is None
    assert size_mismatch(60, []) is None


# ---------------------------------------------------------------------------------- predictor
def test_a_calibrated_predictor_drops_boxes_far_off_the_typical_grain(tiny_model_path):
    """The boxes of one image as the model gives them (resampled pixels, x0.5): a typical grain,
    one 3.5x larger (kept, weaker) and one 6x larger (dropped, counted)."""
    from pollenstudio.engine.predict import Predictor, _ImageState
    from pollenstudio.engine.scale import Resample

    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", meta={"grain_size_px": [45.0, 55.0]})
    nc = len(pred.cfg.class_names)
    boxes = np.array([[10, 10, 60, 60], [100, 100, 275, 275], [0, 0, 300, 300]], np.float64)  # 50, 175, 300 px
    scores = np.array([0.6, 0.8, 0.9])
    part = (boxes, scores, np.zeros(3, np.int64), np.full((3, nc), 1.0 / nc), np.zeros(3, np.int64), np.zeros(3, np.int64))

    def finish(grain):
        s = _ImageState(index=0, name="x", width=1000, height=1000, expected=1, received=1,
                        resample=Resample.by(1000, 1000, 0.5), grain=grain)
        s.parts = [part]
        return pred._finish(s)

    res = finish(100.0)  # typical grain 100 px in the image = 50 px for the model
    got = sorted((round(d.box.width), round(d.score, 3)) for d in res.detections)
    w35 = float(size_weights([350.0], 100.0)[0])
    assert got == [(100, 0.6), (350, round(0.8 * w35, 3))] and 0.25 < 0.8 * w35 < 0.8
    assert res.size_dropped == 1
    uncal = pred._finish(_ImageState(index=0, name="x", width=1000, height=1000, expected=1, received=1,
                                     resample=Resample.by(1000, 1000, 0.5), parts=[part]))
    assert len(uncal.detections) == 3 and uncal.size_dropped == 0  # no typical size known: nothing judged


# ---------------------------------------------------------------------------------- detection
def _two_magnifications(tmp_path):
    """One image of grains about 100 px (twice the tiny model's size) and one of grains about
    50 px (the model's own): two magnifications in one project."""
    folder = tmp_path / "mags"
    folder.mkdir()
    grains = [(60, 70, 0, 50), (180, 90, 1, 52), (110, 190, 0, 50)]
    img, boxes, _ = render_scene(IMGSZ, IMGSZ, grains, seed=101)
    cv2.imwrite(str(folder / "big.png"), np.repeat(np.repeat(img, 2, 0), 2, 1)[:, :, ::-1])
    cv2.imwrite(str(folder / "small.png"), img[:, :, ::-1])
    p = Project.create(folder)
    p.add_folder(folder)
    return p, {r.path: r.id for r in p.images()}, boxes


def test_detection_calibrates_each_image_to_its_own_magnification(tmp_path, tiny_model_path):
    """The issue: calibrating on the large-grain field must not shrink the small-grain image
    (0 proposals, was 46). Its own calibration calibrates only it; the other image is detected
    as it is, and its grains are still found."""
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor

    model, cfg, _ = load_checkpoint(tiny_model_path)
    ranged = save_checkpoint(tmp_path / "ranged.safetensors", model, cfg, {"grain_size_px": [45.0, 55.0]})
    p, ids, boxes = _two_magnifications(tmp_path)
    pred = Predictor.from_project(p, str(ranged), device="cpu", conf=0.3)
    p.set_grain_size_px(100, [ids["big.png"]])
    s = detect_project(p, pred)
    assert s.calibration == "1 of 2 image(s) calibrated: 1 their own typical grain size"
    found = {path: sorted((a.box.x1, a.box.y1) for a in p.annotations(iid)) for path, iid in ids.items()}
    want = sorted((b[0], b[1]) for b in boxes)
    assert len(found["small.png"]) == 3 and np.allclose(found["small.png"], want, atol=8)
    assert len(found["big.png"]) == 3 and np.allclose(found["big.png"], [(2 * x, 2 * y) for x, y in want], atol=12)
    assert s.size_warnings == []
    p.close()


def test_detection_says_when_an_image_is_far_off_its_calibration(tmp_path, tiny_model_path):
    """The project's value set on the large-grain image reaches the small-grain one: its
    proposals so far measure half of it, and detection says so by name (CLI and GUI read
    ``size_warnings``)."""
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor

    model, cfg, _ = load_checkpoint(tiny_model_path)
    ranged = save_checkpoint(tmp_path / "ranged.safetensors", model, cfg, {"grain_size_px": [45.0, 55.0]})
    p, ids, _ = _two_magnifications(tmp_path)
    pred = Predictor.from_project(p, str(ranged), device="cpu", conf=0.3)
    first = detect_project(p, pred)  # not calibrated: the small image's grains are found (3 proposals)
    assert first.calibration == "none" and len(p.annotations(ids["small.png"])) == 3
    p.set_grain_size_px(250)  # the project's value, from a field of 250 px grains: 5x the small image's
    s = detect_project(p, pred)
    words = dict(s.size_warnings)["small.png"]
    assert "the project's typical grain size" in words and "another magnification" in words and "250 px" in words
    assert "small.png" in [w["image"] for w in s.to_dict()["size_warnings"]]
    # calibrated on its own: no more warning for it
    small = [a for a in p.annotations(ids["small.png"]) if a.status is AnnotationStatus.PROPOSED]
    for a in small:
        p.accept(a.id)
    p.set_grain_size_px(50, [ids["small.png"]])
    s = detect_project(p, pred, [ids["small.png"]])
    assert s.size_warnings == []
    p.close()


def test_reviewed_grains_widen_the_size_band(tmp_path):
    from pollenstudio.engine.detect_job import reviewed_size_band

    p = _project(tmp_path, n=1, size=(2000, 2000))
    iid = p.images()[0].id
    p.set_grain_size_px(100, [iid])
    cid = p.add_category("Abies")
    for k in range(12):  # large grains the lab confirmed: 4.5x the typical size
        p.add_annotation(iid, Box(10 + k * 100, 10, 10 + k * 100 + 450, 460), cid)
    p.set_image_status(iid, "reviewed")
    lo, hi = reviewed_size_band(p)
    assert lo == SIZE_BAND[0] and hi > 4.5 * 1.2
    p.close()

