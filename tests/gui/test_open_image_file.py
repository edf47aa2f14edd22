"""Issue 29: `pollenstudio gui SLIDE.tif` (MainWindow.open_image_file) opens the project of
the file's folder on that image; a folder without a project gets one holding only it."""

import cv2
import numpy as np

from pollenstudio.gui.main_window import MainWindow


def _image(path, value):
    cv2.imwrite(str(path), np.full((48, 64, 3), value, np.uint8))
    return path


def test_an_image_file_opens_its_folders_project_on_that_image(qtbot, settings, tmp_path):
    _image(tmp_path / "a.png", 40)
    b = _image(tmp_path / "b.png", 90)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.ctl.imageShown, timeout=10000):
        win.open_image_file(str(b))
    proj = win.ctl.project
    assert [r.path for r in proj.images()] == ["b.png"]  # only the file asked for
    assert proj.image(win.ctl.image_id).path == "b.png"


def test_an_unreadable_file_is_said_and_opens_nothing(qtbot, settings, tmp_path, monkeypatch):
    bad = tmp_path / "scan.tif"
    bad.write_bytes(b"II*\x00 not a tiff")
    said = []
    monkeypatch.setattr("pollenstudio.gui.main_window.show_error", lambda parent, title, text: said.append(text))
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.open_image_file(str(bad))
    qtbot.waitUntil(lambda: bool(said), timeout=10000)
    assert "scan.tif" in said[0] and win.ctl.project is None
