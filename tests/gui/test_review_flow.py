"""Review flow of issue #16, driven by real key events on the canvas; the store is checked
afterwards: image-by-image order, "image finished", "no grains here", confirmed counts
apart from what still waits for review."""

from fixtures_models import tiny_model_path  # noqa: F401
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from pollenstudio.core.types import AnnotationStatus, ReviewStatus


def key(win, k, mod=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(win.canvas.view, k, mod)


def undecided(proj, image_id, floor=0.0):
    return [a for a in proj.annotations(image_id) if a.status is AnnotationStatus.PROPOSED and (a.score or 0) >= floor]


def test_tab_accept_reject_stay_on_the_image_until_it_is_decided(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    win.queue.slider.setValue(0)
    assert ctl.review_mode == "image" and win.review_mode_actions["image"].isChecked()
    first = ctl.image_id
    todo = undecided(proj, first, ctl.threshold)
    assert len(todo) >= 3
    key(win, Qt.Key.Key_Tab)
    seen = []
    for i in range(len(todo)):
        a = ctl.selected_annotation()
        assert a is not None and a.image_id == first, "A / X never leave the image while it has proposals"
        seen.append(a.id)
        key(win, Qt.Key.Key_A if i % 2 == 0 else Qt.Key.Key_X)
    # within the image, least certain first
    assert [proj.annotation(i).score for i in seen] == sorted(proj.annotation(i).score for i in seen)
    assert ctl.image_id == first and ctl.selected is None  # stays: look for missed grains now
    assert not undecided(proj, first)
    # Tab now goes on to the next image in the list
    key(win, Qt.Key.Key_Tab)
    order = win.images.model.ids()
    assert ctl.image_id == order[order.index(first) + 1]
    assert ctl.selected_annotation().image_id == ctl.image_id


def test_enter_finishes_an_image_only_once_its_proposals_are_decided(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    win.queue.slider.setValue(0)
    first = ctl.image_id
    key(win, Qt.Key.Key_Return)  # proposals left: refused, nothing changes
    assert proj.image(first).status is ReviewStatus.IN_REVIEW and ctl.image_id == first
    proj.accept_all(first)
    key(win, Qt.Key.Key_Return)
    assert proj.image(first).status is ReviewStatus.REVIEWED
    assert ctl.image_id != first  # on to the next image to review, its first proposal selected
    assert ctl.selected_annotation() is not None and ctl.selected_annotation().image_id == ctl.image_id
    # one undo step takes the mark back
    proj.set_image_status(first, ReviewStatus.NEW)
    proj.undo()
    assert proj.image(first).status is ReviewStatus.REVIEWED


def test_zero_means_no_grains_here_in_one_undoable_step(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    first = ctl.image_id
    n = len(undecided(proj, first))
    assert n
    key(win, Qt.Key.Key_0)
    anns = proj.annotations(first)
    assert all(a.status is AnnotationStatus.REJECTED for a in anns) and len(anns) == n
    assert proj.image(first).status is ReviewStatus.REVIEWED
    assert ctl.image_id != first
    # the training set holds it as a negative image (no grains)
    ds = {rec.id: anns for rec, anns in proj.reviewed_dataset()}
    assert ds[first] == []
    with qtbot.waitSignal(ctl.imageShown, timeout=5000):
        ctl.show_image(first)
    key(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(undecided(proj, first)) == n and proj.image(first).status is ReviewStatus.IN_REVIEW
    # an image with confirmed grains is not "no grains": refused
    key(win, Qt.Key.Key_Tab)
    key(win, Qt.Key.Key_A)
    key(win, Qt.Key.Key_0)
    assert sum(a.status is AnnotationStatus.ACCEPTED for a in proj.annotations(first)) == 1


def test_counts_show_confirmed_grains_apart_from_proposals_to_review(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    win.queue.slider.setValue(0)
    key(win, Qt.Key.Key_Tab)
    a = ctl.selected_annotation()
    cid = a.category_id
    row = [r.category.id for r in win.taxa.rows()].index(cid)
    on_image = [b for b in ctl.annotations() if b.category_id == cid and b.status is AnnotationStatus.PROPOSED]
    assert win.taxa.table.item(row, 2).text() == f"0 + {len(on_image)}"
    key(win, Qt.Key.Key_A)
    left = len(on_image) - 1
    assert win.taxa.table.item(row, 2).text() == (f"1 + {left}" if left else "1")
    confirmed = proj.category_counts(include_proposed=False)[cid]
    todo = proj.category_counts()[cid] - confirmed
    assert confirmed == 1
    want = f"{confirmed} + {todo}" if todo else str(confirmed)
    qtbot.waitUntil(lambda: win.taxa.table.item(row, 3).text() == want, timeout=3000)
    assert "1 grain confirmed" in win.st_counts.text() and "to review on this image" in win.st_counts.text()


def _drag(win, start, end, steps=4):
    vp = win.canvas.view.viewport()
    c = win.canvas
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.image_to_widget(*start))
    for i in range(1, steps + 1):
        t = i / steps
        QTest.mouseMove(vp, c.image_to_widget(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.image_to_widget(*end))


def _empty_spot(anns, w, h, size=40):
    from pollenstudio.core.types import Box

    for y in range(5, h - size - 5, 10):
        for x in range(5, w - size - 5, 10):
            b = Box(x, y, x + size, y + size)
            if all(b.intersection(a.box) == 0 for a in anns):
                return b
    raise AssertionError("no empty spot")


def test_a_mis_drag_is_ignored_and_a_drawn_box_is_unidentified_until_named(window, qtbot):
    from pollenstudio.core.types import UNIDENTIFIED

    win, ctl = window, window.ctl
    proj = ctl.project
    img = ctl.image_record
    before = len(proj.annotations(img.id))
    spot = _empty_spot(ctl.annotations(), img.width, img.height)
    # a 3 x 3 px drag at fit zoom: a slip of the hand, not a grain
    key(win, Qt.Key.Key_B)
    _drag(win, (spot.x1, spot.y1), (spot.x1 + 3, spot.y1 + 3))
    assert len(proj.annotations(img.id)) == before
    assert "too small" in win.statusBar().currentMessage()
    # a real drag: the box is "unidentified", not taxon 1, and says so
    key(win, Qt.Key.Key_B)
    _drag(win, (spot.x1, spot.y1), (spot.x2, spot.y2))
    new = [a for a in proj.annotations(img.id) if a.status is AnnotationStatus.ADDED]
    assert len(new) == 1 and proj.category(new[0].category_id).name == UNIDENTIFIED
    assert "unidentified" in win.statusBar().currentMessage()
    assert UNIDENTIFIED not in [proj.category(c).name for c in ctl.hotkeys().values()]  # no digit of its own
    # naming it with a digit key
    quercus = ctl.hotkeys()["5"]
    key(win, Qt.Key.Key_5)
    assert proj.annotation(new[0].id).category_id == quercus
    # with the "last taxon" preference a drawn box takes Quercus, and the message names it
    win.act_draw_last.trigger()
    assert ctl.draw_taxon == "last" and win.settings.value("review/draw_taxon") == "last"
    spot2 = _empty_spot(ctl.annotations(), img.width, img.height)
    key(win, Qt.Key.Key_B)
    _drag(win, (spot2.x1, spot2.y1), (spot2.x2, spot2.y2))
    added = [a for a in proj.annotations(img.id) if a.status is AnnotationStatus.ADDED and a.id != new[0].id]
    assert len(added) == 1 and added[0].category_id == quercus
    assert "Quercus" in win.statusBar().currentMessage()
    # one undo removes the box (and nothing else)
    key(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert proj.annotation(new[0].id).category_id == quercus
    assert len([a for a in proj.annotations(img.id) if a.status is AnnotationStatus.ADDED]) == 1


def test_taxon_keys_and_colours_stay_the_same_across_projects(qtbot, settings, tmp_path):
    import cv2
    import numpy as np

    from PySide6.QtWidgets import QApplication

    from pollenstudio.core.types import Box, Detection
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    def make(folder, taxa):
        (folder / "images").mkdir(parents=True)
        cv2.imwrite(str(folder / "images" / "a.png"), np.full((200, 240, 3), 200, np.uint8))
        p = Project.create(folder)
        p.ensure_categories(taxa)
        p.add_images([folder / "images" / "a.png"])
        rec = p.images()[0]
        p.write_proposals(rec.id, [Detection(Box(50, 50, 90, 90), 0, taxa[0], 0.6)])
        p.close()

    make(tmp_path / "a", ["Betula", "Quercus", "Asteraceae"])
    make(tmp_path / "b", ["Pinus", "Asteraceae", "pollen", "Betula"])  # a model lists them differently
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()

    def open_(path):
        with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
            assert win.open_project(str(path))
        win.activateWindow()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
        win.canvas.view.setFocus()
        rows = win.taxa.rows()
        return {r.category.name: (r.category.hotkey, r.category.color) for r in rows}

    a = open_(tmp_path / "a")
    assert [a[n][0] for n in ("Betula", "Quercus", "Asteraceae")] == ["1", "2", "3"]
    b = open_(tmp_path / "b")
    for n in ("Betula", "Asteraceae"):
        assert b[n] == a[n], n  # same key, same colour
    assert b["Pinus"][0] == "4" and b["pollen"][0] is None  # new taxa join at the end; "pollen" has no key
    # the key reaches the store: 3 names the (Pinus) proposal Asteraceae in project b too
    key(win, Qt.Key.Key_Tab)
    aid = win.ctl.selected
    assert aid is not None
    key(win, Qt.Key.Key_3)
    p = win.ctl.project
    assert p.category(p.annotation(aid).category_id).name == "Asteraceae"
    # editable: Pinus takes key 1 in every project; the others keep their order
    win.ctl.set_taxon_key(p.category_by_name("Pinus").id, "1")
    keys = {r.category.name: r.category.hotkey for r in win.taxa.rows()}
    assert keys["Pinus"] == "1" and keys["Betula"] == "2" and keys["Asteraceae"] == "4"
    win.close()


def test_selection_is_brought_into_view_and_zoomed_when_too_small(window, qtbot):
    from pollenstudio.gui.canvas import COMFORT_MIN_PX

    win, ctl = window, window.ctl
    c = win.canvas
    win.queue.slider.setValue(0)
    # a whole scan at a low zoom: zoom out until a grain is a speck
    c.zoom_by(1 / 12)
    key(win, Qt.Key.Key_Tab)
    a = ctl.selected_annotation()
    assert a is not None
    side = max(a.box.width, a.box.height) * c.zoom()
    assert side >= COMFORT_MIN_PX, side  # zoomed to a size one can judge
    from PySide6.QtCore import QRectF

    # in view, centred where the image edge allows (the view stays on the image)
    assert c.vb.viewRect().contains(QRectF(a.box.x1, a.box.y1, a.box.width, a.box.height))
    # + zooms about the selection: it stays where it was on screen
    before = c.image_to_widget(*a.box.center)
    key(win, Qt.Key.Key_Plus)
    after = c.image_to_widget(*a.box.center)
    assert abs(before.x() - after.x()) <= 2 and abs(before.y() - after.y()) <= 2


def test_labels_toggle_and_rejected_boxes_on_demand(window, qtbot):
    win, ctl = window, window.ctl
    proj = ctl.project
    assert win.canvas.overlay.show_labels
    key(win, Qt.Key.Key_L)
    assert not win.canvas.overlay.show_labels and win.settings.value("view/labels") in (False, "false")
    key(win, Qt.Key.Key_L)
    assert win.canvas.overlay.show_labels
    win.queue.slider.setValue(0)
    key(win, Qt.Key.Key_Tab)
    rej = ctl.selected
    key(win, Qt.Key.Key_X)
    assert proj.annotation(rej).status is AnnotationStatus.REJECTED
    assert rej not in {v.key for v in win.canvas.overlay.views}  # hidden by default
    assert win.topk.rejected_list.count() == 1 and "Rejected on this image: 1" in win.topk.rejected_title.text()
    key(win, Qt.Key.Key_R)
    views = {v.key: v for v in win.canvas.overlay.views}
    assert views[rej].style == "rejected" and views[rej].caption.startswith("rejected ")
    key(win, Qt.Key.Key_R)
    assert rej not in {v.key for v in win.canvas.overlay.views}
    # the panel finds it: a click selects it (shown while selected), A takes the reject back
    item = win.topk.rejected_list.item(0)
    rect = win.topk.rejected_list.visualItemRect(item)
    QTest.mouseClick(win.topk.rejected_list.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     rect.center())
    assert ctl.selected == rej and rej in {v.key for v in win.canvas.overlay.views}
    win.canvas.view.setFocus()
    key(win, Qt.Key.Key_A)
    assert proj.annotation(rej).status is AnnotationStatus.ACCEPTED


def _scene_project(tmp_path, grains, seed=0):
    import cv2
    from fixtures_models import render_scene

    from pollenstudio.project import Project

    img, boxes, _ = render_scene(480, 360, grains, seed=seed)
    (tmp_path / "scene" / "images").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "scene" / "images" / "field.png"), img[..., ::-1].copy())
    p = Project.create(tmp_path / "scene")
    p.ensure_categories(["Betula", "Quercus"])
    p.add_images([tmp_path / "scene" / "images" / "field.png"])
    return p, boxes


def _click(win, x, y):
    vp = win.canvas.view.viewport()
    pt = win.canvas.image_to_widget(x, y)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pt)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pt)


def test_b_then_click_boxes_a_grain_model_candidate_first_else_its_outline(qtbot, settings, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QApplication

    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(tmp_path / "no-models"))  # no model: the outline is found

    from pollenstudio.core.types import UNIDENTIFIED, Box, Detection
    from pollenstudio.gui.main_window import MainWindow

    grains = [(120, 120, 0, 60), (330, 200, 1, 64)]
    p, boxes = _scene_project(tmp_path, grains)
    rec = p.images()[0]
    # the model saw the second grain, but under the review slider (0.12 < 0.25)
    p.write_proposals(rec.id, [Detection(Box(*map(float, boxes[1])), 1, "Quercus", 0.12)])
    low = p.annotations(rec.id)[0]
    p.close()
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(tmp_path / "scene"))
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.canvas.view.setFocus()
    ctl = win.ctl
    proj = ctl.project
    assert low.id not in {v.key for v in win.canvas.overlay.views}  # hidden by the slider
    # B, click the first grain (no proposal there): its outline becomes a box, unidentified
    key(win, Qt.Key.Key_B)
    _click(win, 125, 118)
    added = [a for a in proj.annotations(rec.id) if a.status is AnnotationStatus.ADDED]
    assert len(added) == 1 and added[0].box.iou(Box(*map(float, boxes[0]))) > 0.85
    assert proj.category(added[0].category_id).name == UNIDENTIFIED
    assert "found around the click" in win.statusBar().currentMessage()
    assert not win.models.model_available()
    # B, click the second grain: the model's candidate there is selected and shown, not a new box
    key(win, Qt.Key.Key_B)
    _click(win, 330, 200)
    assert ctl.selected == low.id and low.id in {v.key for v in win.canvas.overlay.views}
    assert "under the slider" in win.statusBar().currentMessage()
    key(win, Qt.Key.Key_A)
    assert proj.annotation(low.id).status is AnnotationStatus.ACCEPTED
    assert len(proj.annotations(rec.id)) == 2
    # B, click plain mount: nothing is added, the status bar says what to do
    key(win, Qt.Key.Key_B)
    _click(win, 440, 330)
    assert len(proj.annotations(rec.id)) == 2 and "No grain" in win.statusBar().currentMessage()
    win.close()


def test_b_then_click_asks_the_model_under_its_detection_threshold(qtbot, settings, tmp_path, tiny_model_path):
    """With a model and no stored proposal at the click, the model is run on a window around
    it at a low threshold (in a worker) and its box there is added."""
    from PySide6.QtWidgets import QApplication

    from pollenstudio.core.types import Box
    from pollenstudio.gui.main_window import MainWindow

    grains = [(120, 130, 0, 56), (340, 210, 1, 60)]
    p, boxes = _scene_project(tmp_path, grains, seed=4)
    p.close()
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(tmp_path / "scene"))
    win.models.choose_model(str(tiny_model_path))
    qtbot.waitUntil(lambda: win.models.model_name() is not None, timeout=10000)
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.canvas.view.setFocus()
    proj = win.ctl.project
    rec = proj.images()[0]
    assert proj.annotations(rec.id) == []  # nothing detected: the model is asked at the click
    key(win, Qt.Key.Key_B)
    _click(win, 340, 212)
    qtbot.waitUntil(lambda: len(proj.annotations(rec.id)) == 1, timeout=20000)
    a = proj.annotations(rec.id)[0]
    assert a.status is AnnotationStatus.ADDED and a.box.iou(Box(*map(float, boxes[1]))) > 0.7
    assert "model's candidate" in win.statusBar().currentMessage()
    win.close()


def test_labels_stay_inside_the_window_and_handles_leave_a_small_box_visible(window, qtbot):
    from PySide6.QtGui import QColor

    from pollenstudio.core.types import Box
    from pollenstudio.gui.box_items import BoxView, label_position

    # a box at the right edge: its label is pulled in, not clipped; at the top: inside
    assert label_position(790, 300, 120, 16, (800, 600)) == (680, 284)
    assert label_position(-20, 5, 120, 16, (800, 600)) == (0, 5)
    assert label_position(100, 599, 120, 16, (800, 600)) == (100, 583)
    # a selected box 8 px wide on screen: the white handles sit outside it
    c = window.canvas
    c.set_zoom(1.0, (160, 120))
    qtbot.wait(50)
    small = Box(150, 110, 158, 118)
    c.set_boxes([BoxView("tiny", small, "Quercus", "#00ff00", "decided", None)], "tiny")
    qtbot.wait(50)
    img = c.view.viewport().grab().toImage()
    tl, br = c.image_to_widget(small.x1, small.y1), c.image_to_widget(small.x2, small.y2)
    inside = [img.pixelColor(x, y) for x in range(tl.x() + 2, br.x() - 1) for y in range(tl.y() + 2, br.y() - 1)]
    assert inside and not any(p == QColor("#ffffff") for p in inside)  # no handle over the grain
    ring = [img.pixelColor(x, y) for x in range(tl.x() - 12, br.x() + 12) for y in (tl.y() - 7, br.y() + 6)]
    assert any(p == QColor("#ffffff") for p in ring)  # the handles are there, around it
