"""Review flow of issue #16, driven by real key events on the canvas; the store is checked
afterwards: image-by-image order, "image finished", "no grains here", confirmed counts
apart from what still waits for review."""

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
