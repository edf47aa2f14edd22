"""Issue 28 item 11: the overlays on a first day. The colours contrast with the slide
(chosen per image: blue to cyan over orange-brown stains), the edge overlay says what it
shows ("Edges the model sees: fine edges", not "edge map P3"), and the maps are computed
on what is needed - the part of the image on screen, a window around the selected grain -
with the bar saying what runs."""

import cv2
import numpy as np
import pytest
from fixtures_models import TAXA, render_scene, tiny_model_path  # noqa: F401
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

W, H = 1600, 1200  # a field much larger than the tiny model's 256 px input


@pytest.fixture(autouse=True)
def _no_similar_grains_lookup(monkeypatch):
    """The reference strip loads the model on every selection; not what these tests are about."""
    from pollenstudio.gui import similar_grains

    monkeypatch.setattr(similar_grains.SimilarGrains, "request", lambda self, ann: None, raising=False)


def stained_field(width=W, height=H):
    """Orange-brown stained grains on a lilac mount, like the real field of the issue."""
    img, boxes, _ = render_scene(width, height, [(300, 300, 0, 60), (900, 700, 1, 70), (1300, 400, 2, 64)], seed=11)
    img = img.astype(np.float32)
    lilac = np.array([222, 196, 232], np.float32)
    grain = img.mean(2, keepdims=True) < 160
    out = np.where(grain, np.array([176, 96, 40], np.float32) * (img.mean(2, keepdims=True) / 120.0),
                   lilac * (img.mean(2, keepdims=True) / 210.0))
    return np.clip(out, 0, 255).astype(np.uint8), boxes


@pytest.fixture
def field_window(qtbot, settings, tmp_path, tiny_model_path):  # noqa: F811
    from PySide6.QtWidgets import QApplication

    from pollenstudio.core.types import Box, Detection
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    img, boxes = stained_field()
    folder = tmp_path / "proj"
    folder.mkdir()
    cv2.imwrite(str(folder / "field.png"), np.ascontiguousarray(img[..., ::-1]))
    p = Project.create(folder)
    p.ensure_categories(TAXA)
    p.add_images([folder / "field.png"])
    rec = p.images()[0]
    p.write_proposals(rec.id, [Detection(Box(*map(float, b)), 0, TAXA[0], 0.8) for b in boxes])
    p.close()
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.ctl.imageShown, timeout=10000):
        assert win.open_project(str(folder))
    win.models.choose_model(str(tiny_model_path))
    qtbot.waitUntil(lambda: win.models.model_name() is not None, timeout=10000)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.canvas.view.setFocus()
    yield win
    win.models.jobs.cancel_all()
    win.ctl.jobs.cancel_all()
    win.close()


def test_the_colour_map_contrasts_with_the_slide():
    from pollenstudio.gui.overlay import choose_colormap, heat_lut

    img, _ = stained_field(400, 300)
    assert choose_colormap(img) == "cool"  # blue to cyan over orange-brown grains on lilac
    blue_stain = np.full((50, 50, 3), (70, 90, 200), np.uint8)
    assert choose_colormap(blue_stain) == "warm"
    assert choose_colormap(np.full((50, 50), 120, np.uint8)) == "warm"  # grey: dark to yellow
    cool, warm = heat_lut("cool"), heat_lut("warm")
    top = cool[-1, :3].astype(int)
    assert top[2] > top[0] + 40 and top[1] > top[0]  # the hottest colour is cyan, not orange-yellow
    assert warm[-1, 0] > warm[-1, 2]  # the warm map still ends in yellow


def _wait_layer(qtbot, win, kind):
    qtbot.waitUntil(lambda: win.overlay.exp is not None and win.overlay.exp.kind == kind, timeout=60000)
    return win.overlay.exp


def test_the_overlay_uses_the_contrasting_colours_and_the_bar_can_choose(qtbot, field_window):
    win = field_window
    assert win.canvas.heat_colormap == "cool" and win.overlay_bar.colormap == "cool"
    QTest.keyClick(win.canvas.view, Qt.Key.Key_E)
    exp = _wait_layer(qtbot, win, "edge")
    lut = win.canvas.heat.lut
    assert lut is not None and lut[-1][2] > lut[-1][0]  # drawn in cyan-blue
    bar = win.overlay_bar
    bar.colors.setCurrentIndex(bar.colors.findData("warm"))
    assert win.canvas.heat_colormap == "warm" and win.canvas.heat.lut[-1][0] > win.canvas.heat.lut[-1][2]
    assert win.overlay.exp is exp  # recoloured, not recomputed


def test_the_edge_overlay_says_what_it_shows_and_covers_the_view(qtbot, field_window):
    win = field_window
    bar = win.overlay_bar
    c = win.canvas
    c.set_zoom(1.0, (900, 700))  # one grain at 100 %: a fraction of the field on screen
    qtbot.wait(50)
    asked = []
    orig = win.models.explain
    win.models.explain = lambda *a, **k: asked.append(k) or orig(*a, **k)
    QTest.keyClick(win.canvas.view, Qt.Key.Key_E)
    state = bar.state.text()
    assert "computing edges of the view (" in state, state  # what runs, on what
    exp = _wait_layer(qtbot, win, "edge")
    assert asked and asked[0]["region"] is not None
    x0, y0, x1, y1 = exp.rect
    assert (x1 - x0) * (y1 - y0) < 0.6 * W * H  # not the whole field
    vis = c.visible_region(margin=0.0)
    assert x0 <= vis[0] and y0 <= vis[1] and x1 >= vis[2] and y1 >= vis[3]
    rect = c.heat.mapRectToParent(c.heat.boundingRect())
    assert (round(rect.left()), round(rect.top()), round(rect.right()), round(rect.bottom())) == (x0, y0, x1, y1)
    text = bar.state.text()
    assert "Edges the model sees: fine edges" in text and "P3" not in text and "edge map" not in text
    # panning away: the map follows the view once it settles
    c.set_zoom(1.0, (300, 300))
    qtbot.waitUntil(lambda: win.overlay.exp is not None and win.overlay.exp is not exp
                    and win.overlay.exp.rect[0] <= c.visible_region(0.0)[0], timeout=60000)


def test_gradcam_runs_on_the_grain_and_its_surroundings(qtbot, field_window):
    from pollenstudio.core.progress import CancelToken
    from pollenstudio.gui import model_jobs

    win = field_window
    ctl = win.ctl
    ctl.set_threshold(0.0)
    a = sorted(ctl.annotations(), key=lambda a: a.box.center[0])[1]  # the grain in the middle
    exp = model_jobs.gradcam_job(CancelToken(), ctl.project, win.models.predictors, ctl.image_id,
                                 str(ctl.project.image_path(ctl.image_record)), a)
    x0, y0, x1, y1 = exp.rect
    assert x0 <= a.box.x1 and y0 <= a.box.y1 and x1 >= a.box.x2 and y1 >= a.box.y2
    assert (x1 - x0) * (y1 - y0) <= 0.25 * W * H  # a window, not the 1600 x 1200 field
    assert exp.heat.shape == (y1 - y0, x1 - x0)
    yy, xx = np.unravel_index(np.argmax(exp.heat), exp.heat.shape)
    assert a.box.expanded(1.5).contains(x0 + xx, y0 + yy)  # hottest on its own grain
    # in the window: G says what runs, then draws the map over that window
    ctl.select(a.id)
    QTest.keyClick(win.canvas.view, Qt.Key.Key_G)
    assert "computing Grad-CAM around the grain" in win.overlay_bar.state.text()
    shown = _wait_layer(qtbot, win, "gradcam")
    rect = win.canvas.heat.mapRectToParent(win.canvas.heat.boundingRect())
    assert round(rect.width()) == shown.rect[2] - shown.rect[0]
