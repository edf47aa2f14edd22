"""Fitted ellipse of a grain inside its box (issue 20): a drawn ellipse is measured back."""

import math

import cv2
import numpy as np
import pytest

from pollenstudio.core.types import Box
from pollenstudio.engine.shape import fit_outline


def slide(w=300, h=240, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (226, 218, 204), np.float32) + rng.normal(0, 3, (h, w, 3))
    return img


def test_ellipse_of_a_stained_grain_is_measured_back():
    img = slide()
    # a brown grain: full axes 80 x 50 px, tilted 30 degrees, centred at (150, 120)
    cv2.ellipse(img, (150, 120), (40, 25), 30, 0, 360, (150, 100, 70), -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = fit_outline(img, Box(105, 90, 195, 150))
    assert s is not None
    assert s.major_px == pytest.approx(80, rel=0.04) and s.minor_px == pytest.approx(50, rel=0.05)
    assert s.area_px == pytest.approx(math.pi * 40 * 25, rel=0.06)
    assert s.angle_deg == pytest.approx(30, abs=4)
    assert s.centre == pytest.approx((150, 120), abs=1.5)
    assert s.ratio == pytest.approx(1.6, rel=0.07)
    assert "µm" in s.describe(0.5) and f"{s.major_px * 0.5:.1f}" in s.describe(0.5)
    # 16-bit grey images work the same
    grey16 = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    assert fit_outline(grey16, Box(105, 90, 195, 150)).major_px == pytest.approx(80, rel=0.05)


def test_empty_slide_has_no_outline():
    img = np.clip(slide(seed=1), 0, 255).astype(np.uint8)
    assert fit_outline(img, Box(100, 80, 160, 140)) is None
    assert fit_outline(img, Box(0, 0, 3, 3)) is None


def test_hyaline_grain_is_found_by_its_exine():
    img = slide(seed=2)
    cv2.ellipse(img, (150, 120), (30, 30), 0, 0, 360, (190, 185, 175), 2)  # pale, only the wall shows
    s = fit_outline(np.clip(img, 0, 255).astype(np.uint8), Box(115, 85, 185, 155))
    assert s is not None and s.major_px == pytest.approx(61, abs=3) and s.ratio == pytest.approx(1.0, abs=0.05)
