"""Blank-tile skipping: tiles holding nothing but mounting medium are not run, and no tile
with any part of a grain is ever skipped (grains of every size and contrast the generator
makes, at every difficulty)."""

import numpy as np
import pytest
from fixtures_models import IMGSZ, render_scene, tiny_model_path  # noqa: F401
from tile_checks import grain_pixels_in_skipped_tiles

from pollenstudio.engine.predict import Predictor
from pollenstudio.engine.synthetic import DIFFICULTIES, SynthConfig, generate_image
from pollenstudio.engine.tiling import blank_tiles, content_map, intensity_range, plan_tiles


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize("sizes", [(6.0, 12.0), (12.0, 30.0), (30.0, 72.0)])
def test_no_tile_with_a_grain_is_skipped(difficulty, sizes):
    tiles = plan_tiles(1280, 896, 256, 64)
    skipped = []
    for clutter, seed in ((0.0, 1), (None, 2)):  # plain medium, and the preset's debris
        cfg = SynthConfig(width=1280, height=896, difficulty=difficulty, grain_size=sizes, n_grains=(5, 8), clutter=clutter)
        img, objs = generate_image(seed, cfg, return_masks=True)
        assert objs
        blank = blank_tiles(tiles, content_map(img))
        assert grain_pixels_in_skipped_tiles(objs, tiles, blank) == 0
        skipped.append(blank.mean())
    assert skipped[0] >= 0.4  # on plain medium most tiles are skipped: the test is not vacuous


def test_faint_small_grain_alone_keeps_its_tile():
    """The weakest case the generator has: one 6 px grain on the hard preset, lowest contrast."""
    tiles = plan_tiles(1024, 1024, 256, 64)
    for seed, (cx, cy) in enumerate(((130.0, 130.0), (600.0, 420.0), (900.0, 901.0))):
        cfg = SynthConfig(width=1024, height=1024, difficulty="hard", contrast=0.6, n_grains=(0, 0), clutter=0.0,
                          forced_grains=((cx, cy, seed % 6, 6.0),))
        img, objs = generate_image(seed, cfg, return_masks=True)
        blank = blank_tiles(tiles, content_map(img))
        assert len(objs) == 1 and grain_pixels_in_skipped_tiles(objs, tiles, blank) == 0
        holding = [i for i, t in enumerate(tiles) if t.x0 <= cx < t.x1 and t.y0 <= cy < t.y1]
        assert not blank[holding].any()
        assert blank.sum() >= len(tiles) - 6  # and the empty rest is skipped


def test_16bit_scan_is_judged_on_the_models_scaling():
    cfg = SynthConfig(width=1024, height=768, difficulty="default", n_grains=(4, 6), clutter=0.0)
    img, objs = generate_image(3, cfg, return_masks=True)
    img16 = (img.astype(np.uint16) * 16 + 1000).astype(np.uint16)  # a 12-bit camera in 16 bits
    tiles = plan_tiles(1024, 768, 256, 64)
    b8 = blank_tiles(tiles, content_map(img))
    b16 = blank_tiles(tiles, content_map(img16, intensity_range(img16)))
    assert grain_pixels_in_skipped_tiles(objs, tiles, b16) == 0
    assert b16.sum() >= 0.5 * b8.sum() > 0


def _scan():
    grains = [(150.0, 140.0, 0, 44.0), (700.0, 380.0, 1, 50.0), (1000.0, 650.0, 0, 40.0)]
    img, boxes, _ = render_scene(4 * IMGSZ + 100, 3 * IMGSZ, grains, seed=5)
    return img, boxes


def test_skipping_changes_no_detection_and_is_reported(tiny_model_path):  # noqa: F811
    img, boxes = _scan()
    on = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)
    off = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, skip_blank=False)
    r_on, r_off = next(iter(on.iter_predict([img]))), next(iter(off.iter_predict([img])))
    assert r_off.skipped == 0 and r_on.tiles == r_off.tiles
    assert r_on.skipped >= r_on.tiles // 2
    assert len(r_on.detections) == len(r_off.detections) >= len(boxes)
    for a, b in zip(r_on.detections, r_off.detections):
        assert a.label == b.label and abs(a.score - b.score) < 1e-5
        assert np.allclose(a.box.xyxy(), b.box.xyxy(), atol=1e-3)


def test_skipping_composes_with_grain_size_calibration(tiny_model_path):  # noqa: F811
    """Calibrated (resampled) images are tested for blank tiles after resampling."""
    img, boxes = _scan()
    big = np.ascontiguousarray(np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))  # grains twice as large
    meta = {"grain_size_px": [44.0, 44.0]}
    on = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, meta=meta, grain_size=88.0)
    off = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, meta=meta, grain_size=88.0, skip_blank=False)
    r_on, r_off = next(iter(on.iter_predict([big]))), next(iter(off.iter_predict([big])))
    assert r_on.skipped > 0 and r_on.tiles == r_off.tiles
    got_on = sorted(tuple(np.round(d.box.xyxy(), 2)) for d in r_on.detections)
    got_off = sorted(tuple(np.round(d.box.xyxy(), 2)) for d in r_off.detections)
    assert got_on == got_off and len(got_on) >= len(boxes)


def test_an_all_blank_scan_runs_no_tile(tiny_model_path):  # noqa: F811
    img, _ = generate_image(0, SynthConfig(width=1200, height=900, n_grains=(0, 0), clutter=0.0))
    tiles = plan_tiles(1200, 900, 256, 64)
    assert blank_tiles(tiles, content_map(img)).all()
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3)
    res = list(pred.iter_predict([img, img]))
    assert [r.skipped for r in res] == [r.tiles for r in res] == [len(tiles)] * 2
    assert all(r.error is None and r.detections == [] for r in res)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_speck_filter_never_drops_a_grain_of_the_smallest_size_it_keeps(difficulty):
    """With ``min_extent`` (the predictor passes 0.8 x its model's smallest trained grain),
    grains at least that large still keep their tiles, among the preset's debris."""
    tiles = plan_tiles(1280, 896, 256, 64)
    for seed in (3, 4):
        cfg = SynthConfig(width=1280, height=896, difficulty=difficulty, grain_size=(8.0, 12.0), n_grains=(5, 8))
        img, objs = generate_image(seed, cfg, return_masks=True)
        assert objs
        blank = blank_tiles(tiles, content_map(img, min_extent=8.0))
        assert grain_pixels_in_skipped_tiles(objs, tiles, blank) == 0


def test_dust_specks_alone_no_longer_keep_tiles():
    """A grain-free mount with dark specks of dust (3 px): without the filter most tiles
    count as content; with it (12 px: the grain model's 0.8 x 14.5 px) nearly none does."""
    rng = np.random.default_rng(0)
    img, _ = generate_image(5, SynthConfig(width=2048, height=2048, n_grains=(0, 0), clutter=0.0))
    img = img.copy()
    for x, y in rng.uniform(20, 2028, (120, 2)).astype(int):  # dark dust, 3 px
        r = 1
        img[y - r:y + r + 1, x - r:x + r + 1] = (60, 50, 40)
    tiles = plan_tiles(2048, 2048, 256, 64)
    plain = blank_tiles(tiles, content_map(img))
    filtered = blank_tiles(tiles, content_map(img, min_extent=12.0))
    assert plain.mean() < 0.5  # the specks defeat the plain test ...
    assert filtered.mean() > 0.95  # ... and not the filtered one


def test_predictor_ignores_specks_only_with_a_recorded_grain_range(tiny_model_path):  # noqa: F811
    plain = Predictor.from_checkpoint(tiny_model_path, device="cpu")
    assert plain.grain_range is None and plain.speck_px is None
    ranged = Predictor.from_checkpoint(tiny_model_path, device="cpu", meta={"grain_size_px": [14.0, 170.0]})
    assert ranged.speck_px == pytest.approx(11.2)


def test_speck_filter_in_the_predictor_skips_dusty_tiles_and_keeps_every_detection(tiny_model_path):  # noqa: F811
    img, boxes = _scan()
    img = img.copy()
    rng = np.random.default_rng(4)
    h, w = img.shape[:2]
    for x, y in rng.uniform(10, (w - 10, h - 10), (60, 2)).astype(int):  # dark dust, 3 px, all over the scan
        img[y - 1:y + 2, x - 1:x + 2] = (40, 35, 30)
    meta = {"grain_size_px": [40.0, 60.0]}  # the scan's grains are 40-50 px: specks are far smaller
    on = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, meta=meta)
    blind = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)  # no range: no filter
    off = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, meta=meta, skip_blank=False)
    r_on, r_blind, r_off = (next(iter(p.iter_predict([img]))) for p in (on, blind, off))
    assert r_on.skipped > r_blind.skipped  # the specks no longer keep their tiles
    got_on = sorted(tuple(np.round(d.box.xyxy(), 3)) + (d.label,) for d in r_on.detections)
    got_off = sorted(tuple(np.round(d.box.xyxy(), 3)) + (d.label,) for d in r_off.detections)
    assert got_on == got_off and len(got_on) >= len(boxes)
