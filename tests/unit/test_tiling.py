"""Geometry of model inputs: intensity scaling, letterbox, tile plans, merging across tiles."""

import numpy as np
import pytest

from pollenstudio.engine.tiling import (
    PAD_VALUE,
    intensity_range,
    join_fragments,
    letterbox,
    merge_tile_detections,
    plan_tiles,
    resolve_tile_size,
    to_model_uint8,
)


def test_12bit_camera_in_16bit_container_uses_the_full_8bit_range():
    rng = np.random.default_rng(0)
    img = rng.integers(200, 4000, size=(300, 400), dtype=np.uint16)  # 12-bit camera
    out = to_model_uint8(img)
    assert out.shape == (300, 400, 3) and out.dtype == np.uint8
    assert out.max() >= 250 and out.min() <= 5  # not left dark by dividing by 65535
    # the grey image becomes three identical channels
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_one_hot_pixel_does_not_darken_a_16bit_image():
    img = np.full((200, 200), 3000, np.uint16)
    img[50:150, 50:150] = 1000
    img[0, 0] = 65535  # a saturated reflection
    out = to_model_uint8(img)
    assert out[100, 100, 0] < 30 and out[10, 10, 0] > 225


def test_16bit_scaling_clips_instead_of_wrapping():
    img = np.linspace(0, 65535, 100 * 100).astype(np.uint16).reshape(100, 100)
    out = to_model_uint8(img, rng=(1000.0, 2000.0))[..., 0]
    assert out[0, 0] == 0 and out[-1, -1] == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone: no wrap-around


def test_8bit_rgb_passes_through_unchanged():
    img = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert intensity_range(img) is None
    assert np.array_equal(to_model_uint8(img), img)


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (100, 100), (1000, 300)])
def test_letterbox_round_trips_boxes(shape):
    h, w = shape
    img = np.zeros((h, w, 3), np.uint8)
    out, info = letterbox(img, 256)
    assert out.shape == (256, 256, 3)
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.5, w * 0.5, h * 0.75]])
    back = info.to_source(info.to_model(boxes))
    assert np.allclose(back, boxes, atol=1e-6)
    # the image content fills the longer side; the rest is padding
    x0, y0, x1, y1 = info.content
    assert max(x1 - x0, y1 - y0) == 256
    if h != w:
        assert (out == PAD_VALUE).all(axis=2).any()


def test_letterbox_maps_image_content_to_where_boxes_say():
    img = np.zeros((300, 600, 3), np.uint8)
    img[100:200, 300:400] = 255  # a white square
    out, info = letterbox(img, 320)
    bx = info.to_model(np.array([[300, 100, 400, 200]]))[0]
    inside = out[int(bx[1]) + 2 : int(bx[3]) - 2, int(bx[0]) + 2 : int(bx[2]) - 2]
    assert inside.min() > 200
    heat = np.zeros((320, 320), np.float32)
    heat[int(bx[1]) : int(bx[3]), int(bx[0]) : int(bx[2])] = 1
    back = info.map_to_source(heat)
    assert back.shape == (300, 600)
    assert back[150, 350] > 0.9 and back[50, 50] == 0


def test_tile_plan_covers_the_image_with_the_requested_overlap():
    tiles = plan_tiles(1000, 700, 256, 64)
    cover = np.zeros((700, 1000), int)
    for t in tiles:
        assert t.width == 256 and t.height == 256
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert cover.min() >= 1
    xs = sorted({t.x0 for t in tiles})
    assert all(b - a <= 256 - 64 for a, b in zip(xs, xs[1:]))  # overlap >= 64
    assert tiles[0].inner_left is False and tiles[0].inner_right is True
    assert tiles[-1].inner_right is False and tiles[-1].inner_bottom is False


def test_every_grain_no_larger_than_the_overlap_lies_whole_in_some_tile():
    tiles = plan_tiles(900, 900, 256, 64)
    rng = np.random.default_rng(3)
    for _ in range(500):
        s = rng.uniform(5, 64)
        x, y = rng.uniform(0, 900 - s, 2)
        assert any(t.x0 <= x and x + s <= t.x1 and t.y0 <= y and y + s <= t.y1 for t in tiles)


def test_small_image_is_one_tile_and_auto_tiles_only_large_images():
    assert len(plan_tiles(200, 100, 256, 64)) == 1
    assert resolve_tile_size("auto", 1280, 960, 640) is None  # a camera frame: letterbox
    assert resolve_tile_size("auto", 4000, 3000, 640) == 640  # a slide scan: tiles
    assert resolve_tile_size("off", 20000, 20000, 640) is None
    assert resolve_tile_size("512", 2000, 2000, 640) == 512
    with pytest.raises(ValueError):
        resolve_tile_size("huge", 100, 100, 640)


def test_grain_cut_by_a_tile_border_is_kept_once_from_the_tile_that_saw_it_whole():
    tiles = plan_tiles(448, 256, 256, 64)  # two tiles: x 0..256 and 192..448
    assert [(t.x0, t.x1) for t in tiles] == [(0, 256), (192, 448)]
    grain = [230.0, 100.0, 280.0, 150.0]  # whole in tile 1, cut by tile 0's right side
    boxes = np.array([[230, 100, 256, 150], grain, [20, 20, 60, 60]], float)
    scores = np.array([0.95, 0.80, 0.9])  # the cut half even scores higher
    keep = merge_tile_detections(boxes, scores, np.array([0, 1, 0]), tiles)
    kept = boxes[keep].tolist()
    assert grain in kept and [230, 100, 256, 150] not in kept and len(kept) == 2


def test_the_same_grain_seen_whole_by_two_tiles_is_kept_once():
    tiles = plan_tiles(448, 256, 256, 64)
    boxes = np.array([[200, 50, 240, 90], [201, 51, 241, 91]], float)
    keep = merge_tile_detections(boxes, np.array([0.7, 0.9]), np.array([0, 1]), tiles)
    assert keep.tolist() == [1]


def test_overlapping_grains_within_one_tile_are_not_merged():
    tiles = plan_tiles(448, 256, 256, 64)
    boxes = np.array([[20, 20, 80, 80], [40, 40, 100, 100]], float)
    keep = merge_tile_detections(boxes, np.array([0.9, 0.8]), np.array([0, 0]), tiles)
    assert sorted(keep.tolist()) == [0, 1]


def test_a_grain_larger_than_the_overlap_is_joined_from_its_pieces():
    tiles = plan_tiles(448, 448, 256, 64)  # 2x2 tiles: 0..256 and 192..448 on each axis
    # a 200 px grain across the vertical border, seen as two cut pieces (no tile sees it whole)
    pieces = np.array([[150, 100, 256, 300], [192, 102, 350, 298]], float)
    boxes, keep = join_fragments(pieces, np.array([0.6, 0.8]), np.array([0, 1]), tiles)
    assert keep.tolist() == [False, True] and boxes[1].tolist() == [150, 100, 350, 300]
    # across the corner: four pieces, one grain
    corner = np.array([[150, 150, 256, 256], [192, 150, 330, 256], [150, 192, 256, 330], [192, 192, 330, 330]], float)
    boxes, keep = join_fragments(corner, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 2, 3]), tiles)
    assert keep.tolist() == [True, False, False, False] and boxes[0].tolist() == [150, 150, 330, 330]
    # two different grains cut by the same border but not lined up: left alone
    apart = np.array([[200, 40, 256, 100], [192, 90, 260, 160]], float)
    boxes, keep = join_fragments(apart, np.array([0.9, 0.8]), np.array([0, 1]), tiles)
    assert keep.all() and np.array_equal(boxes, apart)
    # a grain a tile saw whole is never joined to a cut piece of its neighbour
    whole = np.array([[200, 100, 250, 150], [192, 100, 250, 150]], float)
    _, keep = join_fragments(whole, np.array([0.9, 0.8]), np.array([0, 1]), tiles)
    assert keep.all()
