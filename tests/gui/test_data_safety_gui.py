"""Issue 31 in the app: an unknown $POLLENSTUDIO_BACKEND is said in the status bar (the app
still starts, on Automatic); opening an older project says where the copy for the older
version is kept."""

import sqlite3


def test_an_unknown_backend_in_the_environment_is_said_and_auto_used(qtbot, settings, monkeypatch):
    from pollenstudio.gui.main_window import MainWindow

    monkeypatch.setenv("POLLENSTUDIO_BACKEND", "bogus")
    win = MainWindow(settings)
    qtbot.addWidget(win)
    msg = win.statusBar().currentMessage()
    assert "POLLENSTUDIO_BACKEND" in msg and "'bogus'" in msg and "openvino" in msg
    assert win.backend_actions["auto"].isChecked() and win.models.predictors.backend == "auto"
    win.close()


def test_opening_an_older_project_names_the_copy_kept_for_its_version(qtbot, settings, tmp_path):
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project.schema import DB_NAME, MIGRATIONS
    from pollenstudio.project.store import BACKUP_DIR

    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    for sql in MIGRATIONS[:3]:
        conn.executescript(sql)
    conn.execute("INSERT INTO meta(key, value) VALUES ('app', 'pollenstudio-project')")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    assert win.open_project(str(folder))
    kept = folder / BACKUP_DIR / f"{DB_NAME}.schema3"
    assert kept.is_file()
    qtbot.waitUntil(lambda: str(kept) in win.statusBar().currentMessage(), timeout=3000)
    win.close()
