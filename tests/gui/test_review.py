"""Keyboard-and-mouse review on a generated project, driven by real Qt events; the store
must hold exactly what the user did, and undo/redo must walk it back and forth."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from pollenstudio.core.types import AnnotationStatus, Box, ReviewStatus


def snapshot(project):
    out = {}
    for rec in project.images():
        for a in project.annotations(rec.id):
            out[a.id] = (a.image_id, a.status.value, a.category_id, tuple(round(v, 1) for v in a.box.xyxy()))
    return out


def click(win, x, y, button=Qt.MouseButton.LeftButton):
    vp = win.canvas.view.viewport()
    p = win.canvas.image_to_widget(x, y)
    QTest.mousePress(vp, button, Qt.KeyboardModifier.NoModifier, p)
    QTest.mouseRelease(vp, button, Qt.KeyboardModifier.NoModifier, p)


def drag(win, start, end, steps=4):
    vp = win.canvas.view.viewport()
    c = win.canvas
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.image_to_widget(*start))
    for i in range(1, steps + 1):
        t = i / steps
        QTest.mouseMove(vp, c.image_to_widget(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.image_to_widget(*end))


def key(win, k, mod=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(win.canvas.view, k, mod)


def free_box(anns, others, w, h, room=25):
    """A proposal whose centre lies in no other box (so a click there selects it), with
    room to move and grow before it reaches the image edge (moves are clamped there)."""
    for a in anns:
        cx, cy = a.box.center
        if a.box.x2 + room > w or a.box.y2 + room > h:
            continue
        if not any(o.id != a.id and o.box.contains(cx, cy) for o in others):
            return a
    raise AssertionError("no isolated box in the fixture")


def empty_spot(anns, w, h, size=30):
    for y in range(5, h - size - 5, 10):
        for x in range(5, w - size - 5, 10):
            b = Box(x, y, x + size, y + size)
            if all(b.intersection(a.box) == 0 for a in anns):
                return b
    raise AssertionError("no empty spot")


def test_edit_session_with_real_events_then_undo_and_redo(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    start = snapshot(proj)
    img = ctl.image_record
    anns = [a for a in ctl.visible() if a.status is AnnotationStatus.PROPOSED]
    assert len(anns) >= 3

    # select by clicking a box
    target = free_box(anns, ctl.annotations(), img.width, img.height)
    cx, cy = target.box.center
    click(win, cx, cy)
    assert ctl.selected == target.id

    # move it by dragging its body
    drag(win, (cx, cy), (cx + 12, cy + 7))
    moved = proj.annotation(target.id)
    assert moved.status is AnnotationStatus.EDITED
    assert moved.box.x1 == pytest.approx(target.box.x1 + 12, abs=1.0)
    assert moved.box.y1 == pytest.approx(target.box.y1 + 7, abs=1.0)
    assert moved.box.width == pytest.approx(target.box.width, abs=0.05)

    # resize by the bottom-right handle (handles belong to the selected box)
    drag(win, (moved.box.x2, moved.box.y2), (moved.box.x2 + 9, moved.box.y2 + 6))
    resized = proj.annotation(target.id)
    assert resized.box.x1 == pytest.approx(moved.box.x1, abs=0.05)
    assert resized.box.x2 == pytest.approx(moved.box.x2 + 9, abs=1.0)
    assert resized.box.y2 == pytest.approx(moved.box.y2 + 6, abs=1.0)

    # nudge with arrows: 1 px, Shift = 10 px
    key(win, Qt.Key.Key_Right)
    key(win, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    nudged = proj.annotation(target.id)
    assert nudged.box.x1 == pytest.approx(resized.box.x1 + 1, abs=1e-6)
    assert nudged.box.y1 == pytest.approx(resized.box.y1 + 10, abs=1e-6)

    # draw a new box with B + drag on empty image
    spot = empty_spot(ctl.annotations(), img.width, img.height)
    key(win, Qt.Key.Key_B)
    drag(win, (spot.x1, spot.y1), (spot.x2, spot.y2))
    added = [a for a in proj.annotations(img.id) if a.status is AnnotationStatus.ADDED]
    assert len(added) == 1
    new = added[0]
    assert new.box.x1 == pytest.approx(spot.x1, abs=1.0) and new.box.y2 == pytest.approx(spot.y2, abs=1.0)
    assert ctl.selected == new.id

    # relabel it with hotkey 3
    key(win, Qt.Key.Key_3)
    cat3 = ctl.hotkeys()["3"]
    assert proj.annotation(new.id).category_id == cat3

    # accept one proposal, reject another (selected by clicking)
    rest = [a for a in anns if a.id != target.id]
    acc, rej = rest[0], rest[1]
    click(win, *free_point(acc, ctl.annotations()))
    assert ctl.selected == acc.id
    key(win, Qt.Key.Key_A)
    assert proj.annotation(acc.id).status is AnnotationStatus.ACCEPTED
    ctl.go_to(rej.id, rej.image_id)  # accepting advanced along the queue, maybe to another image
    key(win, Qt.Key.Key_X)
    assert proj.annotation(rej.id).status is AnnotationStatus.REJECTED

    # delete the drawn box with Delete
    ctl.go_to(new.id, new.image_id)
    key(win, Qt.Key.Key_Delete)
    assert all(a.id != new.id for a in proj.annotations(img.id))

    end = snapshot(proj)
    expected = dict(start)
    for aid, status, box in (
        (target.id, "edited", nudged.box),
        (acc.id, "accepted", acc.box),
        (rej.id, "rejected", rej.box),
    ):
        image_id, _s, cat, _b = start[aid]
        expected[aid] = (image_id, status, cat, tuple(round(v, 1) for v in box.xyxy()))
    assert end == expected  # exactly the edits made, nothing else touched

    # undo everything with Ctrl+Z, then redo with Ctrl+Shift+Z and Ctrl+Y
    n = 0
    while proj.can_undo():
        key(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        n += 1
        assert n < 50
    assert n == 9  # move, resize, 2 nudges, draw, relabel, accept, reject, delete
    assert snapshot(proj) == start
    m = 0
    while proj.can_redo():
        if m % 2:
            key(win, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
        else:
            key(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
        m += 1
        assert m < 50
    assert m == 9
    assert snapshot(proj) == end
    assert "unsaved" not in win.windowTitle().lower() and "*" not in win.windowTitle()


def free_point(a, anns):
    """A point inside ``a`` and in no other box."""
    for fx in (0.5, 0.3, 0.7, 0.15, 0.85):
        for fy in (0.5, 0.3, 0.7, 0.15, 0.85):
            x, y = a.box.x1 + a.box.width * fx, a.box.y1 + a.box.height * fy
            if not any(o.id != a.id and o.box.contains(x, y) for o in anns):
                return x, y
    raise AssertionError("box fully covered by others")


def test_small_box_inside_large_one_is_selectable_by_click(window):
    win, ctl = window, window.ctl
    img = ctl.image_record
    spot = empty_spot(ctl.annotations(), img.width, img.height, size=60)
    big = ctl.project.add_annotation(img.id, spot, ctl.categories()[0].id)
    small = ctl.project.add_annotation(img.id, Box(spot.x1 + 20, spot.y1 + 20, spot.x1 + 32, spot.y1 + 32), ctl.categories()[1].id)
    click(win, spot.x1 + 26, spot.y1 + 26)
    assert ctl.selected == small
    click(win, spot.x1 + 50, spot.y1 + 50)
    assert ctl.selected == big


def test_review_queue_goes_by_uncertainty_and_marks_images_reviewed(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    win.queue.slider.setValue(0)  # show every proposal
    win.review_mode_actions["queue"].trigger()  # the project-wide order (image by image is the default)
    assert ctl.review_mode == "queue"
    expected = [a.id for a in proj.review_queue(min_score=0.0, limit=1000)]
    scores = [proj.annotation(i).score for i in expected]
    assert scores == sorted(scores) and len(expected) >= 6
    key(win, Qt.Key.Key_Tab)
    visited = []
    decisions = {}
    for i in range(len(expected)):
        sel = ctl.selected
        assert sel is not None
        visited.append(sel)
        # the panel follows the current proposal and the canvas shows its image
        assert ctl.image_id == proj.annotation(sel).image_id
        rows = win.queue.view.selectionModel().selectedRows()
        assert rows and win.queue.model.item(rows[0].row()).ann_id == sel
        if i % 3 == 2:
            key(win, Qt.Key.Key_X)
            decisions[sel] = AnnotationStatus.REJECTED
        else:
            key(win, Qt.Key.Key_A)
            decisions[sel] = AnnotationStatus.ACCEPTED
    assert visited == expected
    assert ctl.selected is None
    for aid, st in decisions.items():
        assert proj.annotation(aid).status is st
    assert all(r.status is ReviewStatus.REVIEWED for r in proj.images())
    model = win.images.model
    assert all(model.row_data(i).status is ReviewStatus.REVIEWED for i in range(model.rowCount()))
    qtbot.waitUntil(lambda: win.queue.model.rowCount() == 0, timeout=2000)  # refresh is debounced
    assert "Nothing left" in win.queue.summary.text()


def test_threshold_slider_hides_low_proposals_live(window, qtbot):
    win, ctl = window, window.ctl
    win.queue.slider.setValue(0)
    n_all = sum(1 for v in win.canvas.overlay.views if v.style == "proposed")
    win.queue.slider.setValue(60)
    shown = [v for v in win.canvas.overlay.views if v.style == "proposed"]
    assert all(v.score >= 0.6 for v in shown)
    low = [a for a in ctl.annotations() if a.status is AnnotationStatus.PROPOSED and a.score < 0.6]
    assert len(shown) == n_all - len(low)
    qtbot.waitUntil(lambda: all(it.score >= 0.6 for it in win.queue.model.items()), timeout=2000)
    assert "below the threshold hidden" in win.queue.summary.text()
    # hidden is not rejected
    assert all(ctl.project.annotation(a.id).status is AnnotationStatus.PROPOSED for a in low)


def test_next_previous_image_and_title(window):
    win, ctl = window, window.ctl
    ids = [r.id for r in ctl.project.images()]
    assert ctl.image_id == ids[0]
    key(win, Qt.Key.Key_N)
    assert ctl.image_id == ids[1]
    key(win, Qt.Key.Key_N)
    key(win, Qt.Key.Key_N)  # past the end: stays
    assert ctl.image_id == ids[2]
    key(win, Qt.Key.Key_P)
    assert ctl.image_id == ids[1]
    assert ctl.project.name in win.windowTitle() and "slide02" in win.windowTitle()
    assert "320 x 240 px" in win.st_image.text() and "slide02" in win.st_image.toolTip()


def test_escape_cancels_a_drawing_in_progress(window):
    win, ctl = window, window.ctl
    img = ctl.image_record
    before = snapshot(ctl.project)
    spot = empty_spot(ctl.annotations(), img.width, img.height)
    key(win, Qt.Key.Key_B)
    vp = win.canvas.view.viewport()
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, win.canvas.image_to_widget(spot.x1, spot.y1))
    QTest.mouseMove(vp, win.canvas.image_to_widget(spot.x2, spot.y2))
    assert win.canvas.overlay._preview is not None  # the rubber band is drawn
    key(win, Qt.Key.Key_Escape)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, win.canvas.image_to_widget(spot.x2, spot.y2))
    assert snapshot(ctl.project) == before
    assert win.canvas.overlay._preview is None and not win.canvas.editor.draw_armed


def test_slider_starts_at_the_detection_threshold_and_reaches_every_proposal(window, qtbot):
    """What the slider promises is true: detection keeps nothing below DEFAULT_CONF, so the
    slider does not go below it, unless the project holds lower proposals (written by
    ``pollenstudio detect --conf``): then it reaches down to them and shows them."""
    from pollenstudio.core.types import DEFAULT_CONF, Detection
    from pollenstudio.gui.review_queue import slider_floor

    assert slider_floor(None) == DEFAULT_CONF and slider_floor(0.9) == DEFAULT_CONF
    assert slider_floor(0.127) == 0.12 and slider_floor(-1) == 0.0
    win, ctl = window, window.ctl
    win.queue.slider.setValue(0)
    assert win.queue.threshold() == DEFAULT_CONF == ctl.threshold
    assert all((a.score or 1) >= DEFAULT_CONF for a in ctl.annotations())  # every proposal shown
    # a proposal below the detection threshold, as `pollenstudio detect --conf 0.1` writes it
    img = ctl.image_record
    spot = empty_spot(ctl.annotations(), img.width, img.height, size=30)
    name = ctl.categories()[0].name
    ctl.project.write_proposals(img.id, [Detection(spot, 0, name, 0.123)], iou_threshold=0.0)
    low = next(a for a in ctl.annotations() if a.score == 0.123)
    assert low.id not in {v.key for v in win.canvas.overlay.views}  # hidden at the old floor
    qtbot.waitUntil(lambda: win.queue.slider.minimum() == 12, timeout=3000)
    win.queue.slider.setValue(0)
    assert ctl.threshold == 0.12
    assert low.id in {v.key for v in win.canvas.overlay.views}
    qtbot.waitUntil(lambda: low.id in [it.ann_id for it in win.queue.model.items()], timeout=3000)
