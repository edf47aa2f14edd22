"""Click-to-box without a model (engine.segment): the grain under a click on synthetic
scenes, nothing on empty mount, and the real field image when it is there."""

from pathlib import Path

import numpy as np
import pytest
from fixtures_models import render_scene

from pollenstudio.core.types import Box
from pollenstudio.engine.segment import box_around_point

FIELD = Path("/work/shared/data/fields/drgmhunt_AJ_LR180005.jpg")


def test_the_grain_under_a_click_is_boxed_on_a_synthetic_scene():
    grains = [(100, 100, 0, 50), (250, 150, 1, 60), (330, 250, 0, 40)]
    img, boxes, _ = render_scene(400, 300, grains, seed=3)
    for (cx, cy, _t, d), b in zip(grains, boxes):
        for dx, dy in ((0, 0), (d * 0.3, 0), (0, -d * 0.3)):  # centre, and off-centre on the grain
            got = box_around_point(img, cx + dx, cy + dy)
            assert got is not None and got.iou(Box(*map(float, b))) > 0.85, (b, got)
    assert box_around_point(img, 30, 280) is None  # plain mount: nothing to box
    assert box_around_point(img, -5, 10) is None


def test_16_bit_and_grey_images_work_too():
    img, boxes, _ = render_scene(300, 240, [(150, 120, 0, 56)], seed=5)
    grey16 = (img.astype(np.float32).mean(2) * 200).astype(np.uint16)
    got = box_around_point(grey16, 150, 120)
    assert got is not None and got.iou(Box(*map(float, boxes[0]))) > 0.8


@pytest.mark.skipif(not FIELD.is_file(), reason="the real field image is not on this machine")
def test_real_field_grain_is_boxed_from_a_click_on_it():
    import cv2

    img = cv2.imread(str(FIELD))[..., ::-1]
    # the large, open (C-shaped) grain in the lower middle of the field: a click on its
    # pale centre and one on its rim give the same box around the whole grain
    expected = Box(1410, 1540, 1727, 1898)  # read off the image by eye, +- a few px
    for pt in ((1560, 1700), (1480, 1650)):
        got = box_around_point(img, *pt)
        assert got is not None and got.iou(expected) > 0.85, (pt, got)
