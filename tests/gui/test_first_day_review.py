"""Issue 28 item 10, small traps of a first review day, with real keys and clicks: B + click
on a grain cut by the image edge, a decision on a clicked box leaves the view still,
"decided, not finished" until Enter, the detection bar's words, plural forms, and a
project reopens on the image it was left on."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_models import render_scene
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from pollenstudio.core.types import AnnotationStatus, ReviewStatus


@pytest.fixture(autouse=True)
def _no_similar_grains_lookup(monkeypatch):
    """The reference strip loads the model in the shared pool on every selection: not what
    these tests are about, and its late replies outlived their windows."""
    from pollenstudio.gui import similar_grains

    monkeypatch.setattr(similar_grains.SimilarGrains, "request", lambda self, ann: None, raising=False)


def key(win, k, mod=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(win.canvas.view, k, mod)


def click(win, x, y):
    vp = win.canvas.view.viewport()
    p = win.canvas.image_to_widget(x, y)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)


def in_view(win, box):
    from PySide6.QtCore import QPointF

    return win.canvas.vb.viewRect().contains(QPointF(*box.center))


def open_window(qtbot, settings, folder):
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.ctl.imageShown, timeout=10000):
        assert win.open_project(str(folder))
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)  # shortcuts need it
    win.canvas.view.setFocus()
    return win


def test_b_click_on_a_grain_cut_by_the_image_edge_boxes_what_shows(qtbot, settings, tmp_path, monkeypatch):
    from pollenstudio.project import Project

    # a 2000 x 1600 field (the search crop never spans it) with a grain cut by the right edge
    img, _, _ = render_scene(2000, 1600, [(1990, 800, 0, 120), (600, 600, 1, 100)], seed=3)
    (tmp_path / "p").mkdir()
    cv2.imwrite(str(tmp_path / "p" / "field.png"), np.ascontiguousarray(img[..., ::-1]))
    p = Project.create(tmp_path / "p")
    p.add_images([tmp_path / "p" / "field.png"])
    p.close()
    win = open_window(qtbot, settings, tmp_path / "p")
    monkeypatch.setattr(win.models, "model_available", lambda: False)  # the outline, found here
    win.canvas.set_zoom(1.0, (1900, 800))
    key(win, Qt.Key.Key_B)
    click(win, 1985, 800)
    boxes = [a.box for a in win.ctl.project.annotations(win.ctl.image_id)]
    assert len(boxes) == 1, "no box: the grain at the edge was taken for the background"
    b = boxes[0]
    assert b.x2 == pytest.approx(2000, abs=2) and b.width >= 50 and b.height >= 100, b
    win.close()


def test_best_candidate_skips_a_sliver_at_the_image_edge():
    from pollenstudio.engine.segment import best_candidate_at

    boxes = np.array([[1995.0, 700, 2000, 900], [1930, 740, 2003, 860]])  # a 5 px sliver, the grain
    found = best_candidate_at(boxes, np.array([0.6, 0.3]), np.array([0, 0]), ["pollen"], 1997, 800, 2000, 1600)
    assert found is not None
    box, taxon, score = found
    assert (box.x1, box.x2, score) == (1930, 2000, 0.3)  # clipped to the image
    assert best_candidate_at(boxes[:1], np.array([0.6]), np.array([0]), ["pollen"], 1997, 800, 2000, 1600) is None


def test_a_digit_on_a_clicked_box_leaves_the_view_where_it_is(window, qtbot):
    win, ctl = window, window.ctl
    win.queue.slider.setValue(0)
    anns = [a for a in ctl.annotations() if a.status is AnnotationStatus.PROPOSED]
    assert len(anns) >= 3
    # zoomed in on one grain: the next proposal of the image is off screen
    target = anns[0]
    others = [a for a in anns[1:] if not target.box.expanded(1.5).contains(*a.box.center)]
    win.canvas.set_zoom(8.0, target.box.center)
    qtbot.wait(20)
    if any(in_view(win, a.box) for a in anns[1:]):
        pytest.skip("the fixture's grains lie too close together for this zoom")
    assert others
    click(win, *target.box.center)
    assert ctl.selected == target.id
    view = win.canvas.vb.viewRect()
    key(win, Qt.Key.Key_1)
    qtbot.wait(20)
    assert ctl.project.annotation(target.id).status is not AnnotationStatus.PROPOSED
    after = win.canvas.vb.viewRect()
    assert after == view, "the view panned after a decision on a clicked box"
    # nothing off screen is selected: the next digit cannot name a box one cannot see
    assert ctl.selected is None or in_view(win, ctl.selected_annotation().box)
    # the keyboard still leads the way it did: Tab brings the next proposal into view
    key(win, Qt.Key.Key_Tab)
    assert ctl.selected is not None and in_view(win, ctl.selected_annotation().box)
    key(win, Qt.Key.Key_A)
    a = ctl.selected_annotation()
    if a is not None:
        assert in_view(win, a.box)  # the keyboard flow centres the next one


def test_decided_images_say_not_finished_until_enter(window, qtbot):
    win, ctl = window, window.ctl
    p = ctl.project
    win.queue.slider.setValue(0)
    first = ctl.image_id
    msgs = []
    ctl.message.connect(msgs.append)
    key(win, Qt.Key.Key_Tab)
    while any(a.status is AnnotationStatus.PROPOSED for a in p.annotations(first)):
        key(win, Qt.Key.Key_A)
    assert p.image(first).status is ReviewStatus.REVIEWED  # decided: training data, by the rule ...
    assert "training data" in msgs[-1] and "Enter" in msgs[-1]  # ... said where it is applied
    row = win.images.model.row_data(win.images.model.row_of(first))
    from pollenstudio.gui.image_list import status_text

    assert status_text(row) == "decided, not finished"
    tip = win.images.model.data(win.images.model.index(win.images.model.row_of(first)), Qt.ItemDataRole.ToolTipRole)
    assert "training data" in tip
    key(win, Qt.Key.Key_Return)  # finished
    row = win.images.model.row_data(win.images.model.row_of(first))
    assert status_text(row) == "reviewed"


def test_the_detection_bar_counts_images_not_hundredths(window, qtbot):
    win = window
    win._detect_started(1)
    assert "100" not in win.st_progress.text()
    win._detect_progress(0, 1, "slide01.png: tile 3/12")
    text = win.st_progress.text()
    assert "100" not in text and "1 of 1" in text, text


def test_counts_are_said_in_the_right_number():
    from pollenstudio.core.words import plural

    assert [plural(1, "image"), plural(2, "image"), plural(0, "sample"), plural(1, "taxon"), plural(3, "taxon")] == [
        "1 image", "2 images", "0 samples", "1 taxon", "3 taxa"]


def test_no_count_says_1_images_or_1_samples_in_the_app():
    """Every user-facing f-string that puts a number before a countable noun goes through
    core.words.plural (or spells its own singular)."""
    import re

    root = Path(__file__).resolve().parents[2] / "pollenstudio"
    pat = re.compile(r"\{[^{}]+\} (images|samples|grains|proposals|taxa|files|planes|tiles|annotations|boxes|crops)\b")
    bad = []
    for f in sorted((root / "gui").glob("*.py")) + [root / "project" / "pollen_report.py"]:
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if pat.search(line) and "plural" not in line and "# always several" not in line:
                bad.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_a_project_reopens_on_the_image_it_was_left_on(window, qtbot, project_dir):
    win, ctl = window, window.ctl
    ids = win.images.model.ids()
    assert ctl.image_id == ids[0]
    with qtbot.waitSignal(ctl.imageShown, timeout=5000):
        key(win, Qt.Key.Key_N)
    left_on = ctl.image_id
    assert left_on != ids[0]
    win.close_project()
    with qtbot.waitSignal(ctl.imageShown, timeout=5000):
        assert win.open_project(str(project_dir))
    assert ctl.image_id == left_on
