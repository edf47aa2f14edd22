"""Grain-size calibration: ranges from training data, resample factors, boxes mapped back exactly."""

import numpy as np
import pytest
from fixtures_models import IMGSZ, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.engine.dataset import Sample
from pollenstudio.engine.predict import Predictor
from pollenstudio.engine.scale import (
    TYPICAL_POLLEN_UM,
    CalibrationError,
    Resample,
    grain_size_range,
    resample_factor,
    typical_grain_px,
)


def _xyxy(box):
    return np.array([box.x1, box.y1, box.x2, box.y2])


def _sample(w, h, sizes):
    boxes = np.array([[10, 10, 10 + s, 10 + s] for s in sizes], np.float32).reshape(-1, 4)
    return Sample(path="x.png", width=w, height=h, boxes=boxes, classes=np.zeros(len(sizes), np.int64))


def test_grain_size_range_is_in_model_input_pixels():
    # a 1280x960 frame is letterboxed to 640 (halved); a 4000x3000 scan is tiled (native)
    lo, hi = grain_size_range([_sample(1280, 960, [100] * 10), _sample(4000, 3000, [60] * 10)], 640, 0, 100)
    assert (lo, hi) == (50.0, 60.0)
    assert grain_size_range([_sample(640, 480, [])], 640) is None


def test_resample_factor_and_typical_size():
    assert resample_factor([30, 120], 120.0) == pytest.approx(0.5)  # sqrt(30*120) = 60
    assert resample_factor([30, 120], 15.0) == pytest.approx(4.0)
    assert resample_factor([30, 120], 100000.0) == pytest.approx(1 / 16)  # clamped
    assert typical_grain_px(um_per_px=0.25) == pytest.approx(TYPICAL_POLLEN_UM / 0.25)
    assert typical_grain_px(grain_px=80, um_per_px=0.25) == 80
    assert typical_grain_px() is None
    for bad in (dict(grain_px=-3), dict(grain_px=float("nan")), dict(um_per_px=0)):
        with pytest.raises(CalibrationError):
            typical_grain_px(**bad)
    with pytest.raises(CalibrationError, match="does not record"):
        resample_factor(None, 50)


def test_resample_maps_boxes_back_exactly():
    r = Resample.by(1001, 777, 0.3)
    boxes = np.array([[10.0, 20.0, 200.0, 150.5], [0.0, 0.0, 300.3, 233.1]])
    back = r.to_source(boxes * [r.fx, r.fy, r.fx, r.fy])
    assert np.allclose(back, np.clip(boxes, 0, [1001, 777, 1001, 777]), atol=1e-9)


def test_checkpoint_records_its_grain_size_range(tmp_path, tiny_model_path):  # noqa: F811
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, meta = load_checkpoint(tiny_model_path)
    save_checkpoint(tmp_path / "m.safetensors", model, cfg, {"grain_size_px": [22.5, 61.0]})
    assert Predictor.from_checkpoint(tmp_path / "m.safetensors", device="cpu").grain_range == [22.5, 61.0]


def test_calibrated_detection_returns_boxes_in_original_pixels(tiny_model_path):  # noqa: F811
    """The same frame at twice the size, calibrated with a grain size twice the model's: the
    predictor halves it (exactly, 2x2 blocks averaged) and must return exactly twice the boxes."""
    grains = [(60, 70, 0, 48), (180, 90, 1, 52), (110, 190, 0, 56)]
    img, _, _ = render_scene(IMGSZ, IMGSZ, grains, seed=101)
    meta = {"grain_size_px": [40.0, 40.0]}
    plain = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, meta=meta)
    big = np.repeat(np.repeat(img, 2, 0), 2, 1)
    calibrated = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, meta=meta, grain_size=80.0)
    d1 = sorted(plain.predict(img), key=lambda d: d.box.x1)
    d2 = sorted(calibrated.predict(big), key=lambda d: d.box.x1)
    assert len(d1) == len(grains) and len(d2) == len(d1)
    for a, b in zip(d1, d2):
        assert np.allclose(_xyxy(b.box), 2 * _xyxy(a.box), atol=1e-3)
        assert b.score == pytest.approx(a.score, abs=1e-5)
    # per image: the uncalibrated predictor calibrates the images given a grain size
    res = list(plain.iter_predict([big, big], grain_sizes=[80.0, None]))
    got = np.array([_xyxy(d.box) for d in sorted(res[0].detections, key=lambda d: d.box.x1)])
    assert np.allclose(got, np.array([_xyxy(d.box) for d in d2]), atol=1e-3)


def test_a_model_without_a_recorded_range_refuses_calibration(tiny_model_path):  # noqa: F811
    with pytest.raises(CalibrationError, match="does not record"):
        Predictor.from_checkpoint(tiny_model_path, device="cpu", meta={}, grain_size=50)


def test_grain_range_is_read_from_the_checkpoint_header(tmp_path, tiny_model_path):  # noqa: F811
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
    from pollenstudio.engine.scale import checkpoint_grain_range

    model, cfg, _ = load_checkpoint(tiny_model_path)
    path = save_checkpoint(tmp_path / "m.safetensors", model, cfg, {"grain_size_px": [20.0, 80.0]})
    assert checkpoint_grain_range(path) == [20.0, 80.0]
    assert checkpoint_grain_range(tiny_model_path) is None
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 40)
    assert checkpoint_grain_range(tmp_path / "junk.safetensors") is None
