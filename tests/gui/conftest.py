"""Fixtures for GUI tests: a tiny generated project (made once, copied per test) and a
main window on it with settings in tmp_path, so tests never touch the user's settings."""

import gc
import shutil

import pytest
from gui_windows import open_main_window


@pytest.fixture(autouse=True)
def _one_app_lifetime_per_test():
    """The app freezes its long-lived objects out of garbage collection (gcguard) for the
    rest of its life; a test is one such life, so what it froze becomes collectable again."""
    yield
    gc.unfreeze()


def _qsettings_defaults():
    from PySide6.QtCore import QSettings

    probe = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "pollenstudio-tests", "probe")
    return QSettings.defaultFormat(), probe.fileName()


@pytest.fixture(autouse=True)
def _no_global_qsettings_change():
    """A test may not change Qt's process-wide settings format or path (QSettings.setPath /
    setDefaultFormat): every later test, and the user's settings, would see the change."""
    before = _qsettings_defaults()
    yield
    assert _qsettings_defaults() == before, "the test changed QSettings' global default format or path"


@pytest.fixture(scope="session")
def template_project(tmp_path_factory):
    from pollenstudio.gui.sample_project import make_review_project

    folder = tmp_path_factory.mktemp("template") / "proj"
    proj = make_review_project(folder, n_images=3, seed=1, width=320, height=240, n_grains=(3, 4))
    proj.close()
    return folder


@pytest.fixture
def project_dir(template_project, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(template_project, dst)
    return dst


@pytest.fixture
def window_on_copy(qtbot, settings, tmp_path):
    """Factory: a shown main window on a copy of a template project with ``model_path`` as
    its active model (for the tests that detect or train)."""

    def make(template, model_path):
        dst = tmp_path / "proj"
        shutil.copytree(template, dst)
        win = open_main_window(qtbot, settings, dst)
        win.models.choose_model(str(model_path))
        qtbot.waitUntil(lambda: win.models.model_name() is not None, timeout=10000)
        return win

    return make


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, settings, project_dir):
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(project_dir))
    win.canvas.fit()
    # taxon counts and the queue page are read in a worker: start every test from them
    qtbot.waitUntil(lambda: not win.ctl.reads_pending() and win.ctl._project_counts is not None, timeout=5000)
    qtbot.wait(10)
    win.canvas.view.setFocus()
    yield win
    win.close()
