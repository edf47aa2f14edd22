"""Robustness of the window: errors in slots, bad files, help, remembered layout, welcome."""

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from pollenstudio.gui.app import ErrorReporter


def _visible_boxes():
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


@pytest.mark.qt_no_exception_capture
def test_exception_in_a_slot_is_reported_and_the_app_keeps_running(window, qtbot):
    reporter = ErrorReporter().install()
    try:
        def broken():
            raise RuntimeError("boom in a slot")

        window.ctl.boxesChanged.connect(broken)
        window.ctl.select(None)  # emits boxesChanged -> broken slot raises
        QTimer.singleShot(0, broken)
        qtbot.waitUntil(lambda: reporter.count >= 2, timeout=2000)
        window.ctl.boxesChanged.disconnect(broken)
        assert "boom in a slot" in reporter.last_message
        assert "saved" in reporter.last_message  # tells the user their work is safe
        assert len(_visible_boxes()) == 1  # one dialog, not one per error
        # the window still works afterwards
        first = window.ctl.image_id
        window.ctl.step_image(1)
        assert window.ctl.image_id != first
    finally:
        reporter.uninstall()
        for b in _visible_boxes():
            b.close()


def test_corrupt_image_gets_a_dialog_naming_the_file(window, qtbot):
    proj = window.ctl.project
    rec = proj.images()[1]
    path = proj.image_path(rec)
    path.write_bytes(b"this is not a png")
    window.ctl.show_image(rec.id)
    qtbot.waitUntil(lambda: bool(_visible_boxes()), timeout=2000)
    box = _visible_boxes()[0]
    assert path.name in box.text()
    box.close()
    assert window.canvas.image is None  # no stale pixels of the previous image under new boxes
    window.ctl.step_image(1)  # and the app carries on
    assert window.canvas.image is not None


def test_opening_a_non_project_shows_an_error_and_keeps_the_welcome_page(qtbot, settings, tmp_path):
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "project.pollen").write_bytes(b"garbage")
    assert not win.open_project(str(bad))
    boxes = _visible_boxes()
    assert boxes and "not a PollenStudio project" in boxes[0].text()
    for b in boxes:
        b.close()
    assert win.stack.currentWidget() is win.welcome


def test_f1_lists_the_shortcuts(window, qtbot):
    from PySide6.QtCore import Qt

    QTest.keyClick(window.canvas.view, Qt.Key.Key_F1)
    dlg = window._help
    assert dlg.isVisible()
    text = dlg.text.toPlainText()
    for needle in ("Accept proposal", "Ctrl+Z", "Ctrl+Shift+Z", "1 ... 9", "Space", "Draw new box", "Edges the model sees"):
        assert needle in text
    dlg.close()


def test_edge_and_gradcam_keys_are_toggles(window):
    for name in ("edge_map", "gradcam"):
        a = window.actions[name]
        assert a.isEnabled() and a.isCheckable() and "not available" not in a.statusTip()


def test_window_layout_and_recent_projects_are_remembered(qtbot, settings, project_dir):
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    assert (win.width(), win.height()) == (1400, 900)
    win.open_project(str(project_dir))
    win.resize(790, 650)  # the offscreen screen is 800 px wide; restoreGeometry clamps to it
    win.queue_dock.hide()
    win.close()
    settings.sync()
    win2 = MainWindow(settings)
    qtbot.addWidget(win2)
    win2.show()
    # (the offscreen platform pins restored widths to its 800 px screen, so check the height)
    assert win2.height() == 650 and win2.width() < 1400
    assert win2.recent_projects()[0] == str(project_dir)
    assert win2.welcome.recent.count() == 1
    win2.open_project(win2.recent_projects()[0])
    assert not win2.queue_dock.isVisible()  # dock layout restored in review mode
    win2.close()


def test_demo_button_waits_for_the_demo(qtbot, settings, project_dir, monkeypatch):
    """The click returns at once while the demo is prepared in a worker (with a progress
    dialog); the project opens when it is ready. Cancel stops it: nothing opens, no error."""
    import threading

    from PySide6.QtCore import Qt

    from pollenstudio.gui import main_window
    from pollenstudio.gui.main_window import MainWindow

    release = threading.Event()
    started = threading.Event()
    calls = []

    def slow_demo(progress):
        calls.append(threading.current_thread() is threading.main_thread())
        started.set()
        for _ in range(500):  # at most 10 s, so a GUI that wrongly waits here fails instead of hanging
            if release.wait(0.02):
                break
            progress.check()  # raises Cancelled once the user cancels
        progress.check()
        return project_dir

    monkeypatch.setattr(main_window, "demo_hook", lambda: slow_demo)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    assert win.stack.currentWidget() is win.welcome and win.welcome.open_demo.isEnabled()
    qtbot.mouseClick(win.welcome.open_demo, Qt.MouseButton.LeftButton)
    assert win.ctl.project is None  # the click did not wait for the demo
    qtbot.waitUntil(started.is_set, timeout=5000)
    assert calls == [False]  # prepared off the GUI thread
    assert win._demo_dialog is not None and not win._demo_dialog.wasCanceled()
    qtbot.wait(50)
    assert win.ctl.project is None and win.stack.currentWidget() is win.welcome  # still waiting
    with qtbot.waitSignal(win.ctl.imageShown, timeout=10000):
        release.set()
    assert win.ctl.project.folder == project_dir.resolve()
    assert win.stack.currentWidget() is win.canvas

    # a second window: cancel while the demo is being prepared
    release.clear()
    started.clear()
    win2 = MainWindow(settings)
    qtbot.addWidget(win2)
    win2.show()
    win2.open_demo()
    qtbot.waitUntil(started.is_set, timeout=5000)
    qtbot.waitUntil(win2._demo_dialog.isVisible, timeout=5000)  # shown after its minimum duration
    (cancel,) = [b for b in win2._demo_dialog.findChildren(QPushButton) if b.text() == "Cancel"]
    qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    release.set()
    qtbot.wait(300)  # give a (wrongly) finishing job time to deliver its result
    assert win2.ctl.project is None and win2.stack.currentWidget() is win2.welcome
    assert not _visible_boxes()  # a cancel is not an error
    win2.close()
    win.close()


def test_gui_command_opens_the_project_given_on_the_command_line(qtbot, project_dir, monkeypatch, tmp_path):
    import argparse
    import sys

    from PySide6.QtCore import QSettings

    from pollenstudio.commands import gui
    from pollenstudio.gui import app as app_mod
    from pollenstudio.gui.main_window import MainWindow

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    monkeypatch.setattr(app_mod, "_REPORTER", None)
    # running the real event loop (and quitting it) would disturb the other tests' loop
    monkeypatch.setattr(QApplication, "exec", lambda self=None: 0)
    from pollenstudio.gui import main_window

    # the window `gui.run` makes reads QSettings(): give it one in tmp_path through the
    # module (undone after the test), never through Qt's process-wide default path/format
    monkeypatch.setattr(main_window, "QSettings",
                        lambda: QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    before = set(QApplication.topLevelWidgets())
    assert gui.run(argparse.Namespace(project=str(project_dir))) == 0
    wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w not in before]
    assert len(wins) == 1 and wins[0].isVisible()
    assert "proj" in wins[0].windowTitle() and "slide01" in wins[0].windowTitle()
    assert wins[0].settings.fileName() == str(tmp_path / "settings.ini")
    wins[0].close()


def test_open_image_folder_creates_a_project_and_reports_bad_files(qtbot, settings, tmp_path):
    import cv2
    import numpy as np

    from pollenstudio.gui.main_window import MainWindow

    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"field{i}.png"), np.full((60, 80, 3), 40 * i, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    win.open_folder(str(folder))  # reading headers runs in a worker
    qtbot.waitUntil(lambda: win.ctl.project is not None and win.ctl.image_id is not None, timeout=10000)
    assert win.images.model.total() == 3
    assert win.stack.currentWidget() is win.canvas
    assert win.recent_projects()[0] == str(folder)
    qtbot.waitUntil(lambda: bool(_visible_boxes()), timeout=2000)
    box = _visible_boxes()[0]
    assert "broken.jpg" in box.text() and "skipped" in box.windowTitle().lower()
    box.close()
    win.close()
