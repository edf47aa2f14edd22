"""Opening the main window in GUI tests (``from gui_windows import open_main_window``;
tests/ is on the path as for ``fixtures_models``)."""

from __future__ import annotations


def open_main_window(qtbot, settings, project):
    """A shown main window with ``settings`` on ``project`` (a folder or a server URL),
    returned once the project's first image is shown; closed with the test (qtbot)."""
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(project))
    return win
