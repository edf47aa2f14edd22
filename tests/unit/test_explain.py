"""Edge-attention maps and Grad-CAM on the tiny over-fitted model: shapes, alignment, focus."""

import numpy as np
import pytest
from fixtures_models import IMGSZ, render_scene, tiny_model_path, tiny_predictor  # noqa: F401

from pollenstudio.core.errors import ModelMismatchError
from pollenstudio.core.types import Box
from pollenstudio.engine.explain import class_activation, edge_maps, grad_cam

GRAINS = [(70, 80, 0, 52), (190, 70, 1, 50), (120, 190, 0, 54)]


@pytest.fixture(scope="module")
def scene():
    img, boxes, classes = render_scene(IMGSZ, IMGSZ, GRAINS, seed=21)
    return img, boxes, classes




def _ring_and_background(shape, boxes, grain_index, width=4, clear=20):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    x1, y1, x2, y2 = boxes[grain_index]
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    dist = np.hypot(xx - cx, yy - cy)
    ring = np.abs(dist - r) <= width
    background = np.ones(shape, bool)
    for b in boxes:
        bb = Box(*map(float, b)).expanded(1.0)
        background &= ~((xx > bb.x1 - clear) & (xx < bb.x2 + clear) & (yy > bb.y1 - clear) & (yy < bb.y2 + clear))
    return ring, background


def test_edge_maps_are_image_shaped_nonzero_and_show_the_grain_rims(tiny_predictor, scene):
    img, boxes, _ = scene
    wide = np.concatenate([img, np.full((IMGSZ, 64, 3), img[0, 0], np.uint8)], 1)  # letterboxed input
    maps = edge_maps(tiny_predictor, wide)
    assert set(maps) == {"P3", "P4", "P5"}
    for name, m in maps.items():
        assert m.shape == wide.shape[:2] and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0 and m.max() > 0.5, name
    ring, background = _ring_and_background(wide.shape[:2], boxes, 0)
    for name in ("P3", "P4"):
        m = maps[name]
        assert m[ring].mean() > 2 * m[background].mean() + 0.05, name  # the rim is where the grain is
    assert maps["P5"][ring].mean() > maps["P5"][background].mean()


def test_edge_maps_need_a_model_with_edge_priors():
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.engine.predict import Predictor

    cfg = ModelConfig.tiny("base", nc=2, imgsz=64)
    pred = Predictor(build_model(cfg), cfg, device="cpu")
    with pytest.raises(ModelMismatchError, match="edge"):
        edge_maps(pred, np.zeros((64, 64, 3), np.uint8))


def _mass_inside(cam, box, factor=1.5):
    b = box.expanded(factor).clipped(cam.shape[1], cam.shape[0])
    inside = cam[int(b.y1) : int(np.ceil(b.y2)), int(b.x1) : int(np.ceil(b.x2))].sum()
    return inside / max(cam.sum(), 1e-12)


def test_grad_cam_focuses_on_the_selected_grain_and_follows_the_selection(tiny_predictor, scene):
    img, boxes, _ = scene
    dets = tiny_predictor.predict(img)
    assert len(dets) == len(GRAINS)
    cams = []
    for d in dets:
        cam = grad_cam(tiny_predictor, img, d)
        assert cam.shape == img.shape[:2] and cam.dtype == np.float32 and cam.max() == pytest.approx(1.0)
        assert _mass_inside(cam, d.box) > 0.5, (d.label, d.box)
        cams.append(cam)
    # two grains of the same taxon get different maps: it explains the box, not the taxon
    same = [i for i, d in enumerate(dets) if d.class_index == 0]
    a, b = cams[same[0]], cams[same[1]]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.5
    assert _mass_inside(a, dets[same[1]].box, 1.0) < 0.2


def test_grad_cam_level_and_method_are_selectable(tiny_predictor, scene):
    img, _, _ = scene
    d = tiny_predictor.predict(img)[0]
    own = grad_cam(tiny_predictor, img, d)
    other_level = (d.level + 1) % 3
    other = grad_cam(tiny_predictor, img, d, level=other_level)
    classic = grad_cam(tiny_predictor, img, d, method="gradcam")
    edge = grad_cam(tiny_predictor, img, d, layer="edge")  # what the edge priors contributed
    assert edge.max() > 0
    for m in (other, classic, edge):
        assert m.shape == img.shape[:2] and m.min() >= 0
    assert not np.allclose(own, other)
    with pytest.raises(ValueError):
        grad_cam(tiny_predictor, img, d, level=5)


def test_classic_grad_cam_is_the_channel_weighted_sum_not_hirescam(tiny_predictor, scene):
    """method="gradcam" is Selvaraju et al.'s map: ReLU(sum_c mean_xy(dS/dA_c) * A_c), one
    weight per channel; HiResCAM multiplies gradient and activation element-wise. The map is
    recomputed here from the same forward pass and compared; returning the HiResCAM map (or
    any other) for "gradcam" fails."""
    import torch

    from pollenstudio.engine import explain

    img, _, _ = scene
    d = tiny_predictor.predict(img)[0]
    h, w = img.shape[:2]
    p = explain._forward_with_grad(tiny_predictor, img, (0, 0, w, h), explain.intensity_range(img), "neck")
    level, yy, xx = explain._find_anchor(tiny_predictor, p, d)
    reg = 4 * tiny_predictor.cfg.reg_max
    score = p.outputs[level][0, reg + d.class_index, yy, xx]
    act = p.feats[level]
    (grad,) = torch.autograd.grad(score, act)
    weights = grad[0].mean(dim=(1, 2))  # (C,): one weight per channel
    ref = torch.einsum("c,chw->hw", weights, act[0]).clamp(min=0).detach().numpy()
    expected = explain._normalise(explain._paste(ref, p, (h, w)), 100.0)
    elementwise = (grad[0] * act[0]).sum(0).clamp(min=0).detach().numpy()
    hires_expected = explain._normalise(explain._paste(elementwise, p, (h, w)), 100.0)
    assert np.abs(expected - hires_expected).max() > 0.2  # the two methods differ on this grain

    classic = grad_cam(tiny_predictor, img, d, method="gradcam")
    hires = grad_cam(tiny_predictor, img, d, method="hirescam")
    np.testing.assert_allclose(classic, expected, atol=1e-3)
    np.testing.assert_allclose(hires, hires_expected, atol=1e-3)
    with pytest.raises(ValueError, match="method"):
        grad_cam(tiny_predictor, img, d, method="gradcam++")


@pytest.mark.slow
def test_grad_cam_on_a_tiled_image_lands_on_the_grain(tiny_predictor):
    size = 3 * IMGSZ
    img, boxes, _ = render_scene(size, size, [(400, 380, 1, 50), (120, 640, 0, 50)], seed=5)
    dets = tiny_predictor.predict(img)
    d = max(dets, key=lambda d: d.box.iou(Box(*map(float, boxes[0]))))
    cam = grad_cam(tiny_predictor, img, d)
    assert cam.shape == (size, size)
    assert _mass_inside(cam, d.box) > 0.5


def test_class_activation_covers_the_grains_of_that_taxon(tiny_predictor, scene):
    img, boxes, classes = scene
    cam = class_activation(tiny_predictor, img, class_index=0)
    assert cam.shape == img.shape[:2] and cam.max() > 0
    inside = sum(_mass_inside(cam, Box(*map(float, b))) for b, c in zip(boxes, classes) if c == 0)
    assert inside > 0.5


def test_edge_maps_of_a_tiled_image_show_no_tile_seams(tiny_predictor):
    """Empty background across tile borders stays as dark as background elsewhere: the GUI
    overlay shows grains, not the tile grid."""
    from pollenstudio.engine.explain import _windows

    w, h = 4 * IMGSZ, 3 * IMGSZ  # tiled: 5 x 4 tiles of 256 px
    img, boxes, _ = render_scene(w, h, [(320, 300, 0, 50), (704, 470, 1, 50)], seed=3)
    wins = _windows(tiny_predictor, w, h)
    assert len(wins) > 1
    xs = {x for win in wins for x in (win[0], win[2]) if 0 < x < w}
    ys = {y for win in wins for y in (win[1], win[3]) if 0 < y < h}
    yy, xx = np.mgrid[0:h, 0:w]
    usable = (xx >= 16) & (xx < w - 16) & (yy >= 16) & (yy < h - 16)  # image border aside
    for b in boxes:
        usable &= ~((xx > b[0] - 30) & (xx < b[2] + 30) & (yy > b[1] - 30) & (yy < b[3] + 30))
    seam = np.zeros((h, w), bool)
    near = np.zeros((h, w), bool)
    for x in xs:
        seam |= np.abs(xx - x + 0.5) <= 3
        near |= np.abs(xx - x) <= 40
    for y in ys:
        seam |= np.abs(yy - y + 0.5) <= 3
        near |= np.abs(yy - y) <= 40
    maps = edge_maps(tiny_predictor, img)
    ring, _ = _ring_and_background((h, w), boxes, 0)
    for name, m in maps.items():
        assert m.shape == (h, w) and 0.0 <= m.min() and m.max() <= 1.0
        background = m[usable & ~near].mean()
        along_seams = m[usable & seam].mean()
        assert along_seams < 2.0 * background + 0.01, (name, along_seams, background)
        assert along_seams < 0.25 * m[ring].mean(), name
