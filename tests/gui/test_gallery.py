"""Taxon gallery (Review > Taxon gallery, Ctrl+G): crops of every grain of a taxon, keyboard
and multi-select relabel / accept / reject, Enter opens the grain on its image; crops are
cached on disk. Driven by real key events; the store is checked afterwards."""

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtTest import QTest

from pollenstudio.core.types import AnnotationStatus


def _open(win, qtbot, cid):
    from PySide6.QtWidgets import QApplication

    if QApplication.activeWindow() is not win:  # back from a closed gallery: Ctrl+G is the main window's
        win.activateWindow()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    QTest.keyClick(win.canvas.view, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    dlg = win._gallery
    assert dlg.isVisible()
    dlg.show_taxon(cid)
    qtbot.waitExposed(dlg)
    qtbot.waitUntil(lambda: QApplication.activeWindow() is dlg, timeout=3000)  # keys go to the gallery
    qtbot.waitUntil(lambda: not dlg.loading(), timeout=5000)  # rows are read in a worker
    return dlg


@pytest.fixture
def crowded_window(qtbot, settings, tmp_path):
    """A main window on 4 generated images of 8-10 grains each (a taxon has several grains)."""
    from PySide6.QtWidgets import QApplication

    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.gui.sample_project import make_review_project

    make_review_project(tmp_path / "crowded", n_images=4, seed=5, width=320, height=240, n_grains=(8, 10)).close()
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(tmp_path / "crowded"))
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.canvas.view.setFocus()
    yield win
    win.close()


def test_gallery_lists_a_taxon_and_relabels_accepts_rejects_with_keys(crowded_window, qtbot):
    win = crowded_window
    ctl = win.ctl
    p = ctl.project
    counts = p.category_counts()
    cid = max(counts, key=counts.get)  # the taxon with the most grains
    dlg = _open(win, qtbot, cid)
    rows = [dlg.model.row_data(i) for i in range(dlg.model.total())]
    assert len(rows) == counts[cid] >= 6 and all(r.category_id == cid for r in rows)
    scores = [r.score for r in rows]
    assert scores == sorted(scores)  # least certain first
    # crops are cut in the background and kept on disk
    qtbot.waitUntil(lambda: dlg.model.crops_cached() == len(rows), timeout=10000)
    assert len(list((p.folder / "cache" / "crops").glob("*.jpg"))) == len(rows)

    # select the first two (click, Shift+click) and press 2: both get the taxon with key 2
    v = dlg.view
    v.setFocus()
    QTest.mouseClick(v.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     v.visualRect(dlg.model.index(0)).center())
    QTest.mouseClick(v.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier,
                     v.visualRect(dlg.model.index(1)).center())
    assert dlg.selected_ids() == [rows[0].ann_id, rows[1].ann_id]
    two = ctl.hotkeys()["2"]
    assert two != cid
    QTest.keyClick(v, Qt.Key.Key_2)
    for r in rows[:2]:
        a = p.annotation(r.ann_id)
        assert a.category_id == two and a.status is AnnotationStatus.EDITED
    assert dlg.model.row_data(0).category_id == two  # the grid shows it at once
    # one undo step for the whole selection
    label = p.undo_label()
    assert "relabel 2 grains" in label

    # the third: A accepts, the fourth: X rejects (keyboard selection)
    v.selectionModel().setCurrentIndex(dlg.model.index(2), QItemSelectionModel.SelectionFlag.ClearAndSelect)
    QTest.keyClick(v, Qt.Key.Key_A)
    assert p.annotation(rows[2].ann_id).status is AnnotationStatus.ACCEPTED
    QTest.keyClick(v, Qt.Key.Key_Right, Qt.KeyboardModifier.NoModifier)
    QTest.keyClick(v, Qt.Key.Key_X)
    assert p.annotation(rows[3].ann_id).status is AnnotationStatus.REJECTED
    # the two relabelled (now edited, shown until the next filter) and the accepted one are confirmed
    assert dlg.summary.text() == f"{len(rows)} grains: 3 confirmed, {len(rows) - 4} to review, 1 rejected"

    # filters: only what is still to review, most certain first
    dlg.status.setCurrentText("To review")
    dlg.sort.setCurrentText("Most certain first")
    qtbot.waitUntil(lambda: not dlg.loading(), timeout=5000)
    left = [dlg.model.row_data(i) for i in range(dlg.model.total())]
    assert {r.ann_id for r in left} == {r.ann_id for r in rows[4:]}
    assert [r.score for r in left] == sorted((r.score for r in left), reverse=True)

    # Enter opens the grain on its image in the main window, selected
    target = left[-1]
    v.selectionModel().setCurrentIndex(dlg.model.index(len(left) - 1), QItemSelectionModel.SelectionFlag.ClearAndSelect)
    QTest.keyClick(v, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: ctl.image_id == target.image_id and ctl.selected == target.ann_id, timeout=5000)
    dlg.close()


def test_gallery_follows_edits_made_in_the_main_window(window, qtbot):
    win, ctl = window, window.ctl
    p = ctl.project
    win.queue.slider.setValue(0)
    QTest.keyClick(win.canvas.view, Qt.Key.Key_Tab)
    a = ctl.selected_annotation()
    dlg = win.open_gallery()
    qtbot.waitUntil(lambda: not dlg.loading(), timeout=5000)
    assert dlg.taxon.currentData() == a.category_id  # the selected box's taxon
    from PySide6.QtWidgets import QApplication

    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.canvas.view.setFocus()
    QTest.keyClick(win.canvas.view, Qt.Key.Key_A)
    assert p.annotation(a.id).status is AnnotationStatus.ACCEPTED
    row = dlg.model.row_data(dlg.model._pos[a.id])
    assert row.status == "accepted"
    dlg.close()


def _statuses(p):
    return {a.id: a.status for rec in p.images() for a in p.annotations(rec.id)}


def test_escape_and_close_shut_the_gallery_without_rejecting_anything(crowded_window, qtbot):
    """Issue 28: Escape / the close button / Alt+F4 went to QDialog.reject, which the gallery
    had overridden to reject every selected grain (42 confirmed grains went with one Escape)
    and which then left the gallery open; with nothing selected it would not close."""
    win = crowded_window
    p = win.ctl.project
    counts = p.category_counts()
    cid = max(counts, key=counts.get)
    before = _statuses(p)
    undo_before = p.undo_label()

    # Escape with every grain selected (Ctrl+A): nothing is rejected, the gallery closes
    dlg = _open(win, qtbot, cid)
    QTest.keyClick(dlg.view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert len(dlg.selected_ids()) == dlg.model.total() >= 6
    QTest.keyClick(dlg.view, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not dlg.isVisible(), timeout=2000)
    assert _statuses(p) == before and p.undo_label() == undo_before

    # again, the key sent to the dialog itself, with a selection of some
    dlg = _open(win, qtbot, cid)
    assert dlg is win._gallery
    QTest.keyClick(dlg.view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not dlg.isVisible(), timeout=2000)
    assert _statuses(p) == before

    # nothing selected: Escape still closes it
    dlg = _open(win, qtbot, cid)
    dlg.view.clearSelection()
    assert dlg.selected_ids() == []
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not dlg.isVisible(), timeout=2000)

    # the window's close button / Alt+F4 (a close event), with a selection
    dlg = _open(win, qtbot, cid)
    QTest.keyClick(dlg.view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert dlg.close()
    assert not dlg.isVisible()
    assert _statuses(p) == before and p.undo_label() == undo_before

    # X still rejects the selection (the action, renamed, is not QDialog.reject)
    dlg = _open(win, qtbot, cid)
    dlg.view.selectionModel().setCurrentIndex(dlg.model.index(0), QItemSelectionModel.SelectionFlag.ClearAndSelect)
    QTest.keyClick(dlg.view, Qt.Key.Key_X)
    assert p.annotation(dlg.model.row_data(0).ann_id).status is AnnotationStatus.REJECTED
    dlg.close()


def test_gallery_is_a_window_of_its_own(crowded_window, qtbot):
    """Minimising the gallery minimised the app: it was the main window's transient dialog."""
    win = crowded_window
    p = win.ctl.project
    counts = p.category_counts()
    dlg = _open(win, qtbot, max(counts, key=counts.get))
    flags = dlg.windowFlags()
    assert flags & Qt.WindowType.WindowMinimizeButtonHint
    assert (flags & Qt.WindowType.WindowType_Mask) == Qt.WindowType.Window
    assert dlg.windowHandle().transientParent() is None
    dlg.showMinimized()
    qtbot.wait(50)
    assert not win.isMinimized()
    # a window of its own, it still goes with the main window (the app must not stay open for it)
    dlg.showNormal()
    win.close()
    assert not dlg.isVisible()
