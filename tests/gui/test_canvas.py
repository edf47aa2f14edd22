"""Canvas display: levels for 16-bit, the pyramid for large images, zoom/pan keys."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from pollenstudio.gui.canvas import Canvas
from pollenstudio.gui.pyramid import DisplayImage, adjust_levels, auto_levels, to_display


def test_12_bit_camera_in_16_bit_file_is_not_shown_black():
    rng = np.random.default_rng(0)
    img = rng.integers(200, 4000, (300, 400), dtype=np.uint16)
    lo, hi = auto_levels(img)
    assert 150 < lo < 400 and 3800 < hi < 4100
    out = to_display(img, (lo, hi))
    assert out.dtype == np.uint8 and out.max() == 255 and out.mean() > 100


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("levels", [(0, 255), (10.4, 200), (-50, 300), (1000, 3000.7), (-100, 20000)])
def test_display_mapping_clips_below_and_above_the_levels(dtype, levels):
    rng = np.random.default_rng(1)
    a = rng.integers(0, np.iinfo(dtype).max + 1, (40, 50, 3)).astype(dtype)
    ref = np.clip((a.astype(np.float64) - levels[0]) * 255 / (levels[1] - levels[0]), 0, 255)
    out = to_display(a, levels)
    assert out.dtype == np.uint8 and out.shape == a.shape
    # within one display level (plus one grey level of the source for a fractional low level)
    assert np.abs(out - ref).max() <= 1.0 + 255 / (levels[1] - levels[0])  # no |x| folding of darks


def test_brightness_and_contrast_move_levels_the_expected_way():
    base = (1000.0, 3000.0)
    lo, hi = adjust_levels(base, brightness=0.25, contrast=1.0)
    assert (lo, hi) == (500.0, 2500.0)  # brighter: the same pixel maps higher
    lo, hi = adjust_levels(base, brightness=0.0, contrast=2.0)
    assert (lo, hi) == (1500.0, 2500.0)  # steeper around the same centre


def test_pyramid_levels_and_crop_cover_the_asked_window():
    img = np.zeros((5000, 3000, 3), np.uint8)
    img[1000:1010, 2000:2010] = 255
    d = DisplayImage.from_array(img)
    assert [lv.shape[:2] for lv in d.levels] == [(5000, 3000), (2500, 1500), (1250, 750)]
    assert d.level_for(4.0) == 0 and d.level_for(1.0) == 0 and d.level_for(0.5) == 1 and d.level_for(0.01) == 2
    arr, (x, y, w, h) = d.crop(1, 1999, 999, 2013, 1013)
    assert x <= 1999 and y <= 999 and x + w >= 2013 and y + h >= 1013
    assert arr.max() == 255  # the bright square survives area downsampling


def test_sixteen_bit_image_opens_with_auto_levels_on_canvas(qtbot):
    c = Canvas()
    qtbot.addWidget(c)
    c.resize(400, 300)
    c.show()
    img = (np.arange(200 * 300, dtype=np.uint32).reshape(200, 300) % 4096).astype(np.uint16)
    c.set_image(DisplayImage.from_array(img, "x.tif"))
    shown = c.overview.image
    assert shown.dtype == np.uint8 and shown.max() >= 250
    c.set_brightness_contrast(0.0, 2.0)
    assert c.overview.image.max() == 255 and (c.overview.image == 0).mean() > 0.2


def test_large_image_shows_full_resolution_only_where_zoomed(qtbot):
    c = Canvas()
    qtbot.addWidget(c)
    c.resize(600, 400)
    c.show()
    qtbot.waitExposed(c)
    img = np.zeros((6000, 6000, 3), np.uint8)
    img[3000:3001, 3000:3001] = (255, 0, 0)  # one red pixel
    c.set_image(DisplayImage.from_array(img))
    qtbot.wait(20)
    assert not c.detail.isVisible()  # whole image: the overview level suffices
    c.set_zoom(16.0, (3000.5, 3000.5))
    qtbot.waitUntil(lambda: c._detail_key is not None and c._detail_key[0] == 0, timeout=2000)
    level, x0, y0, x1, y1 = c._detail_key
    assert c.detail.image.shape[0] * c.detail.image.shape[1] < 600 * 400  # only the window is cut
    assert x0 <= 3000 <= x1 and y0 <= 3000 <= y1
    # the red pixel is exactly one image pixel wide on screen: 16 screen px at zoom 16
    frame = c.view.grab().toImage()
    p = c.image_to_widget(3000.5, 3000.5)
    dpr = frame.devicePixelRatio()
    red = [x for x in range(frame.width()) if frame.pixelColor(x, int(p.y() * dpr)).red() > 200
           and frame.pixelColor(x, int(p.y() * dpr)).green() < 50]
    assert 14 <= len(red) <= 18  # crisp: no smoothing smear


def test_keys_zoom_fit_and_space_pan(window, qtbot):
    c = window.canvas
    z0 = c.zoom()
    QTest.keyClick(c.view, Qt.Key.Key_Plus)
    assert c.zoom() == pytest.approx(z0 * 1.5, rel=0.02)
    QTest.keyClick(c.view, Qt.Key.Key_Minus)
    QTest.keyClick(c.view, Qt.Key.Key_Minus)
    assert c.zoom() < z0
    QTest.keyClick(c.view, Qt.Key.Key_F)
    assert c.zoom() == pytest.approx(z0, rel=0.02)
    # hold Space and drag over a box: the view pans and the box does not move
    ann = window.ctl.visible()[0]
    before = ann.box
    cx, cy = ann.box.center
    vp = c.view.viewport()
    centre0 = c.vb.viewRect().center()
    QTest.keyPress(c.view, Qt.Key.Key_Space)
    p0 = c.image_to_widget(cx, cy)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p0)
    QTest.mouseMove(vp, p0 + type(p0)(40, 20))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p0 + type(p0)(40, 20))
    QTest.keyRelease(c.view, Qt.Key.Key_Space)
    centre1 = c.vb.viewRect().center()
    assert centre1.x() < centre0.x() - 5 and centre1.y() < centre0.y() - 2  # content follows the hand
    assert window.ctl.project.annotation(ann.id).box == before


def test_wheel_zooms_at_the_pointer(window):
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent

    c = window.canvas
    target = (100.0, 80.0)
    pos = QPointF(c.image_to_widget(*target))
    z0 = c.zoom()
    ev = QWheelEvent(pos, c.view.viewport().mapToGlobal(pos), QPoint(0, 0), QPoint(0, 240),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    c.view.wheelEvent(ev)
    assert c.zoom() == pytest.approx(z0 * 1.25**2, rel=0.02)
    x, y = c.widget_to_image(pos)
    assert x == pytest.approx(target[0], abs=1.0) and y == pytest.approx(target[1], abs=1.0)
