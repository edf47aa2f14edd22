"""Predictor on a tiny over-fitted model: coordinates, tiles, 16-bit input, bad files, cancel,
device choice."""

import threading

import numpy as np
import pytest
import torch
from fixtures_models import IMGSZ, TAXA, render_scene, tiny_model_path, tiny_predictor  # noqa: F401

from pollenstudio.core.errors import Cancelled
from pollenstudio.core.progress import CancelToken
from pollenstudio.core.types import Box
from pollenstudio.engine.predict import DeviceUnavailableError, Predictor, describe_device, select_device
from pollenstudio.engine.tiling import plan_tiles




def _match(dets, boxes, classes, min_iou=0.5):
    """For each ground-truth box: the detections of its class overlapping it with IoU > min_iou."""
    out = []
    for b, c in zip(boxes, classes):
        gt = Box(*map(float, b))
        out.append([d for d in dets if d.box.iou(gt) > min_iou and c in (None, d.class_index)])
    return out


def test_detects_grains_of_a_letterboxed_image_in_original_pixels(tiny_predictor):
    grains = [(60, 70, 0, 48), (180, 90, 1, 52), (110, 190, 0, 56)]
    img, boxes, classes = render_scene(IMGSZ, IMGSZ, grains, seed=101)
    # a non-square frame: pad to 384x256 so the predictor has to letterbox and map back
    wide = np.concatenate([img, np.full((IMGSZ, 128, 3), img[0, 0], np.uint8)], 1)
    dets = tiny_predictor.predict(wide)
    matches = _match(dets, boxes, classes)
    assert all(len(m) == 1 for m in matches), [(d.box, d.label, d.score) for d in dets]
    assert len(dets) == len(grains)
    d = matches[1][0]
    assert d.label == TAXA[1] and d.topk[0][0] == TAXA[1] and len(d.topk) == len(TAXA)
    assert d.level in (0, 1, 2) and 0.3 <= d.score <= 1.0


@pytest.mark.slow
def test_tiled_image_three_times_the_input_detects_each_grain_once(tiny_predictor):
    size = 3 * IMGSZ
    tiles = plan_tiles(size, size, IMGSZ, int(IMGSZ * tiny_predictor.overlap))
    border_x = tiles[0].x1  # right side of the first tile: a grain centred on it is cut there
    border_y = tiles[0].y1
    grains = [
        (border_x, 100, 0, 54),  # across a vertical tile border
        (420, border_y, 1, 50),  # across a horizontal tile border
        (border_x + 2, border_y - 1, 1, 52),  # across a tile corner
        (80, 640, 0, 46),
        (660, 120, 1, 48),
        (600, 600, 0, 58),
        (430, 700, 0, 44),
    ]
    img, boxes, classes = render_scene(size, size, grains, seed=7)
    assert tiny_predictor.tile == "auto"
    res = tiny_predictor.predict_many([img])[0]
    assert res.tiles == len(tiles) > 1
    matches = _match(res.detections, boxes, classes)
    assert all(len(m) == 1 for m in matches), [(d.box, d.label, round(d.score, 2)) for d in res.detections]
    assert len(res.detections) == len(grains)  # no half-grain duplicates from cut tiles
    for b, m in zip(boxes, matches):  # at the right place in whole-image pixels
        assert np.allclose(m[0].box.center, ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2), atol=6)
    # the border grain: nothing else overlaps it at all
    border = Box(*map(float, boxes[0]))
    assert sum(d.box.intersection(border) > 0 for d in res.detections) == 1


def test_16bit_tiff_is_detected_and_a_corrupt_file_is_reported_by_name(tiny_predictor, tmp_path):
    import tifffile

    grains = [(70, 80, 0, 50), (170, 170, 1, 54)]
    img, boxes, classes = render_scene(IMGSZ, IMGSZ, grains, seed=11)
    tifffile.imwrite(tmp_path / "a_16bit.tif", img.astype(np.uint16) * 16 + 40)  # 12-bit camera
    grey = (img.astype(np.float32).mean(2) * 200).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c_grey16.tif", grey)
    (tmp_path / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    paths = [tmp_path / "a_16bit.tif", tmp_path / "b_broken.png", tmp_path / "c_grey16.tif"]
    results = tiny_predictor.predict_many(paths)
    assert [r.name for r in results] == ["a_16bit.tif", "b_broken.png", "c_grey16.tif"]
    assert results[1].error and "b_broken.png" in results[1].error and not results[1].detections
    assert results[0].error is None and results[2].error is None
    # one box per grain (boxes of other taxa on the same grain are folded into the best one,
    # issue #16), and the grain's true taxon is on it: as its label or among its alternatives
    matches = _match(results[0].detections, boxes, [None] * len(boxes))
    assert all(len(m) == 1 for m in matches) and len(results[0].detections) == len(grains)
    assert all(TAXA[c] in dict(m[0].topk) for m, c in zip(matches, classes))
    # grey 16-bit reaches the model (as three equal channels) without error; the tiny model
    # was trained on colour only, so its detections there are not judged
    assert results[2].width == IMGSZ and results[2].tiles == 1


def test_cancel_from_another_thread_stops_within_one_batch(tiny_predictor):
    img, _, _ = render_scene(IMGSZ, IMGSZ, [(100, 100, 0, 50)], seed=3)
    images = [img] * 50
    token = CancelToken()
    seen = []
    state = {}
    started = threading.Event()

    def worker():
        try:
            for r in tiny_predictor.iter_predict(images, token):
                seen.append(r.index)
                started.set()
        except Cancelled:
            state["cancelled"] = True

    t = threading.Thread(target=worker)
    t.start()
    assert started.wait(60)
    token.cancel()
    at_cancel = len(seen)
    t.join(60)
    assert state.get("cancelled") is True
    assert len(seen) - at_cancel <= tiny_predictor.batch  # at most the batch in flight
    assert len(seen) < 50
    assert seen == list(range(len(seen)))  # complete results, in order


def test_device_selection_falls_back_to_cpu_here():
    dev = select_device("auto")
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert dev.type == "cpu"
        assert describe_device(dev).startswith("CPU, ")
        with pytest.raises(DeviceUnavailableError, match="CUDA"):
            select_device("cuda")
    assert select_device("cpu").type == "cpu"
    with pytest.raises(DeviceUnavailableError):
        select_device("tpu")


def test_missing_default_model_says_what_to_do(tmp_path, monkeypatch):
    from pollenstudio.core.errors import CheckpointError

    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(tmp_path))
    with pytest.raises(CheckpointError, match="[Tt]rain"):
        Predictor.from_default()


@pytest.mark.cuda
def test_half_precision_on_cuda_gives_the_same_detections(tiny_model_path):
    grains = [(60, 70, 0, 48), (180, 90, 1, 52), (110, 190, 0, 56)]
    img, boxes, classes = render_scene(IMGSZ, IMGSZ, grains, seed=101)
    p32 = Predictor.from_checkpoint(tiny_model_path, device="cuda", half=False, conf=0.3)
    p16 = Predictor.from_checkpoint(tiny_model_path, device="cuda", conf=0.3)
    assert p16.half and "CUDA" in p16.device_description
    d32, d16 = p32.predict(img), p16.predict(img)
    assert len(d16) == len(d32) == len(grains)
    for a, b in zip(sorted(d32, key=lambda d: d.box.x1), sorted(d16, key=lambda d: d.box.x1)):
        assert a.class_index == b.class_index and a.box.iou(b.box) > 0.95
