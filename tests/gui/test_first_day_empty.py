"""Issue 28 item 13: empty states. `pollenstudio gui EMPTY_FOLDER` makes no silent project
on a blank canvas; a project without images says how to add some; the zoom of no image is
not shown; the Count dock shows no target without a project."""

import pytest
from PySide6.QtWidgets import QLabel


@pytest.fixture(autouse=True)
def _no_similar_grains_lookup(monkeypatch):
    from pollenstudio.gui import similar_grains

    monkeypatch.setattr(similar_grains.SimilarGrains, "request", lambda self, ann: None, raising=False)


def new_window(qtbot, settings):
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_gui_on_an_empty_folder_makes_no_project_and_says_why(qtbot, settings, tmp_path):
    from pollenstudio.project.schema import DB_NAME

    empty = tmp_path / "EMPTY_FOLDER"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    win = new_window(qtbot, settings)
    win.open_folder(str(empty))  # what `pollenstudio gui EMPTY_FOLDER` calls
    qtbot.wait(300)
    assert not (empty / DB_NAME).exists() and win.ctl.project is None
    assert win.stack.currentWidget() is win.welcome
    assert win.welcome.notice.isVisible()
    text = win.welcome.notice.text()
    assert "No images in" in text and "EMPTY_FOLDER" in text and "demo" in text
    assert "%" not in win.st_zoom.text()


def test_a_project_without_images_says_how_to_add_some(qtbot, settings, tmp_path):
    from pollenstudio.project import Project

    Project.create(tmp_path / "p").close()
    win = new_window(qtbot, settings)
    assert win.open_project(str(tmp_path / "p"))
    qtbot.wait(100)
    assert win.stack.currentWidget() is win.canvas
    win.canvas.zoom_by(2.0)
    win.resize(1200, 800)
    qtbot.wait(100)
    assert "%" not in win.st_zoom.text()  # it read "zoom 64600 %" of nothing
    hint = win.canvas.findChild(QLabel, "canvasHint")
    assert hint is not None and hint.isVisible() and "File > Import..." in hint.text()
    win.close()


def test_the_count_dock_shows_no_target_without_a_project(qtbot, settings, project_dir):
    win = new_window(qtbot, settings)
    panel = win.counts.panel
    assert not win.count_dock.isVisible()  # on the welcome page, like the other docks
    assert panel.target.text() != "1" and not panel.target.isEnabled()
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(project_dir))
    qtbot.waitUntil(lambda: panel.current is not None, timeout=5000)
    assert panel.target.isEnabled() and int(panel.target.text()) == panel.current.target_sum >= 1
    assert win.count_dock.isVisible()
    win.close_project()
    assert panel.target.text() != "1" and not panel.target.isEnabled()
    win.close()
