"""A measured outline stays with its grain in the window (issue 20): stored through the
undoable edit path, drawn for the selected box, gone with Ctrl+Z and back with redo,
dropped when the box moves, and still there after reopening the project."""

import numpy as np
import pytest


def _curve_points(win) -> int:
    x, _y = win.counts.outline_curve.getData()
    return 0 if x is None else len(x)


def test_measured_outline_is_stored_drawn_undone_and_dropped_on_move(qtbot, window, tmp_path):
    from pollenstudio.gui.counting import measure_outline

    p = window.ctl.project
    props = [a for a in window.ctl.annotations() if a.status.value == "proposed"]
    a = max(props, key=lambda x: x.box.width * x.box.height)
    p.set_um_per_px(0.5, [window.ctl.image_id])
    window.ctl.select(a.id)
    assert measure_outline(window) is not None
    qtbot.waitUntil(lambda: p.annotation(a.id).polygon is not None and _curve_points(window) > 5, timeout=5000)
    stored = p.annotation(a.id).polygon
    assert p.undo_label() == "measure outline" and p.annotation(a.id).status.value == "proposed"
    # the curve on the canvas is the stored outline, closed
    x, y = window.counts.outline_curve.getData()
    assert np.allclose(np.c_[x, y][:-1].reshape(-1), stored) and (x[0], y[0]) == (x[-1], y[-1])
    assert "Outline: ellipse" in window.topk.label.text() and "µm" in window.topk.label.text()
    window.grab().save(str(tmp_path / "outline-stored.png"))
    # another box selected: its (absent) outline, then back
    other = next(b for b in props if b.id != a.id)
    window.ctl.select(other.id)
    qtbot.waitUntil(lambda: _curve_points(window) == 0, timeout=3000)
    window.ctl.select(a.id)
    qtbot.waitUntil(lambda: _curve_points(window) > 5, timeout=3000)
    window.actions["undo"].trigger()
    qtbot.waitUntil(lambda: _curve_points(window) == 0, timeout=3000)
    assert p.annotation(a.id).polygon is None and "Outline:" not in window.topk.label.text()
    window.actions["redo"].trigger()
    qtbot.waitUntil(lambda: _curve_points(window) > 5, timeout=3000)
    assert p.annotation(a.id).polygon == pytest.approx(stored)
    # moved: the outline no longer matches the image inside the box, and goes
    p.move_annotation(a.id, a.box.translated(6, 0))
    qtbot.waitUntil(lambda: _curve_points(window) == 0, timeout=3000)
    assert p.annotation(a.id).polygon is None
    window.actions["undo"].trigger()
    qtbot.waitUntil(lambda: _curve_points(window) > 5, timeout=3000)
    # reopened: still there
    folder = p.folder
    with qtbot.waitSignal(window.ctl.imageShown, timeout=5000):
        assert window.open_project(str(folder))
    assert window.ctl.project.annotation(a.id).polygon == pytest.approx(stored)
