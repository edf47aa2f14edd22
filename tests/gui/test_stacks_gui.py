"""Focusing through a focal stack in the main window (issue 19): plane keys, Ctrl+wheel,
best focus, EDF, boxes staying put, Z (undoable), the help listing the keys."""

import json

import numpy as np
import pytest
from gui_windows import open_main_window
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent


@pytest.fixture(scope="module")
def stack_source(tmp_path_factory):
    from pollenstudio.engine.synthetic import SynthConfig
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset

    out = tmp_path_factory.mktemp("stacks")
    generate_stack_dataset(out, 2, 5, seed=3, cfg=SynthConfig(width=320, height=240))
    return out


@pytest.fixture
def stack_window(qtbot, settings, tmp_path, stack_source):
    from pollenstudio.project import Project
    from pollenstudio.project.coco import import_coco

    proj = Project.create(tmp_path / "p")
    import_coco(proj, stack_source / "annotations.json")
    proj.close()
    win = open_main_window(qtbot, settings, tmp_path / "p")
    qtbot.waitUntil(lambda: win.canvas.image is not None, timeout=5000)
    return win


def shown_pixels(win):
    return np.array(win.canvas.image.levels[0], copy=True)


def test_page_keys_and_ctrl_wheel_step_planes_and_boxes_stay_put(qtbot, stack_window):
    win = stack_window
    st = win.stacks
    assert win.stack_bar.isVisible() and st.view == 2  # the middle of 5 planes
    assert win.stack_bar.plane_label.text().strip() == "Plane 3 / 5"
    win.canvas.zoom_keys(2.0)
    rect = win.canvas.vb.viewRect()
    boxes = [v.box for v in win.canvas.overlay._views]
    assert boxes
    before = shown_pixels(win)
    win.actions["plane_next"].trigger()
    qtbot.waitUntil(lambda: st.view == 3 and not np.array_equal(shown_pixels(win), before), timeout=5000)
    with win.ctl.project.open_stack(win.ctl.image_record) as stack:
        assert np.array_equal(shown_pixels(win), stack.plane(3))
    assert win.canvas.vb.viewRect() == rect  # same zoom and pan
    assert [v.box for v in win.canvas.overlay._views] == boxes
    assert win.stack_bar.slider.value() == 4
    win.actions["plane_prev"].trigger()
    win.actions["plane_prev"].trigger()
    qtbot.waitUntil(lambda: st.view == 1, timeout=5000)
    # Ctrl+wheel down: one plane deeper; plain wheel zooms
    vp = win.canvas.view.viewport()
    ev = QWheelEvent(QPointF(50, 50), QPointF(vp.mapToGlobal(QPoint(50, 50))), QPoint(0, 0), QPoint(0, -120),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.ControlModifier, Qt.ScrollPhase.NoScrollPhase, False)
    win.canvas._wheel(ev)
    qtbot.waitUntil(lambda: st.view == 2, timeout=5000)
    assert win.canvas.vb.viewRect() == rect
    # a cached plane is a swap, not a read
    win.actions["plane_prev"].trigger()
    qtbot.waitUntil(lambda: st.view == 1, timeout=5000)
    assert st.timings[-1][0] == "step cached"


def test_edf_and_best_focus_views(qtbot, stack_window):
    from pollenstudio.core.stack import best_plane, edf_composite

    win = stack_window
    st = win.stacks
    rec = win.ctl.image_record
    win.actions["edf_view"].trigger()
    qtbot.waitUntil(lambda: st.view == "edf" and "EDF" in win.canvas.image.name, timeout=10000)
    with win.ctl.project.open_stack(rec) as stack:
        edf = edf_composite(stack.planes())
        best = best_plane(stack)
    assert np.array_equal(shown_pixels(win), edf)
    assert win.actions["edf_view"].isChecked() and "EDF" in win.stack_bar.plane_label.text()
    win.actions["best_focus"].trigger()
    qtbot.waitUntil(lambda: st.view == best, timeout=10000)
    assert "best focus" in win.stack_bar.plane_label.text() and not win.actions["edf_view"].isChecked()


def test_tab_focuses_a_grain_and_z_sets_its_plane_undoably(qtbot, stack_window, stack_source):
    win = stack_window
    st = win.stacks
    p = win.ctl.project
    anns = p.annotations(win.ctl.image_id)
    target = next(a for a in anns if a.plane != st.view)
    win.ctl.select(target.id, centre=True)  # what Tab / the queue do
    qtbot.waitUntil(lambda: st.view == target.plane, timeout=5000)
    assert f"plane {target.plane + 1} (shown)" in win.stack_bar.box_label.text()
    new = (target.plane + 1) % st.planes
    st.set_view(new)
    qtbot.waitUntil(lambda: st.view == new, timeout=5000)
    assert "Z: set" in win.stack_bar.box_label.text()
    win.actions["set_plane"].trigger()
    assert p.annotation(target.id).plane == new and p.annotation(target.id).status == target.status
    assert win.ctl.project.undo_label() == "set plane"
    win.actions["undo"].trigger()
    assert p.annotation(target.id).plane == target.plane
    win.actions["redo"].trigger()
    assert p.annotation(target.id).plane == new
    truth = json.loads((stack_source / "annotations.json").read_text())
    assert {a["plane"] for a in truth["annotations"]} >= {target.plane}


def test_a_box_drawn_on_a_plane_keeps_that_plane(qtbot, stack_window):
    from pollenstudio.core.types import Box

    win = stack_window
    win.stacks.set_view(4)
    qtbot.waitUntil(lambda: win.stacks.view == 4, timeout=5000)
    win.ctl.add(Box(10, 10, 40, 40))
    a = win.ctl.selected_annotation()
    assert a is not None and a.plane == 4


def test_help_lists_the_focus_keys():
    from pollenstudio.gui.help_dialog import shortcuts_html

    text = shortcuts_html()
    for words in ("Next focal plane", "PgDown", "PgUp", "All-in-focus view (EDF)", "Best focus",
                  "Set box plane to plane shown", "Ctrl + mouse wheel"):
        assert words in text, words


def test_import_dialog_groups_plane_files_by_the_pattern(qtbot, window, tmp_path):
    import cv2

    src = tmp_path / "planes"
    src.mkdir()
    for z in range(3):
        cv2.imwrite(str(src / f"field_z{z}.png"), np.full((60, 80, 3), 50 * z + 10, np.uint8))
    imp = window.import_dialog()
    imp.fmt.setCurrentIndex(2)
    assert imp.format() == "folder" and imp.stack_pattern.isEnabled()
    imp.stack_pattern.setText("*_z{z}.png")
    imp.path.setText(str(src))
    imp.run_button.click()
    qtbot.waitUntil(lambda: imp.summary is not None or imp.error is not None, timeout=20000)
    assert imp.error is None, imp.error
    assert "Added 1 image (1 focal stack of 3 planes)" in imp.result.text()
    (rec,) = [r for r in window.ctl.project.images() if r.is_stack]
    assert rec.planes == 3
    imp.fmt.setCurrentIndex(0)
    assert not imp.stack_pattern.isEnabled()
    exp = window.export_dialog()
    assert exp.planes_as_images.isEnabled() != exp.stack_view.isEnabled()  # one per format


def test_explanations_read_the_view_on_screen(qtbot, stack_window):
    """Edge maps and Grad-CAM jobs get the plane (or EDF view) shown, not the file's first page."""
    from pollenstudio.core.stack import edf_composite
    from pollenstudio.gui.stack_view import read_source

    win = stack_window
    rec = win.ctl.image_record
    win.stacks.set_view(1)
    qtbot.waitUntil(lambda: win.stacks.view == 1, timeout=5000)
    src = win.models._source(rec)
    assert isinstance(src, tuple) and src[2] == 1
    with win.ctl.project.open_stack(rec) as st:
        assert np.array_equal(read_source(src), st.plane(1))
        win.stacks.set_view("edf")
        qtbot.waitUntil(lambda: win.stacks.view == "edf", timeout=10000)
        assert np.array_equal(read_source(win.models._source(rec)), edf_composite(st.planes()))
