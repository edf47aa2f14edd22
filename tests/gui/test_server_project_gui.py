"""The main window on a project of a lab's PostgreSQL server (issue 30): remembered by its
URL, offered on the welcome page by name and server, reopened from there."""

import uuid

import cv2
import numpy as np


def test_a_server_project_in_recent_projects_shows_its_name_and_server(qtbot, settings):
    from pollenstudio.gui.main_window import MainWindow

    url = "postgresql://anna@pollen.lab:5433/pollen?project=lake_core_7"
    settings.setValue("recent", [url, "postgresql://x/y?project=Not-A-Name", "/no/such/folder"])
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    assert win.welcome.recent.count() == 1  # the malformed entry and the vanished folder are not offered
    item = win.welcome.recent.item(0)
    assert item.text() == "lake_core_7\non pollen.lab:5433, database pollen"
    assert item.data(256) == url  # what opens it: the URL itself, not a path made of it
    assert [a.text() for a in win.recent_menu.actions()] == [url]


def test_open_a_server_project_and_reopen_it_from_the_welcome_page(qtbot, settings, tmp_path, pg_url):
    import psycopg

    from pollenstudio.core.types import Box, Detection
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((120, 160, 3), 90 + i, np.uint8))
    name = f"t{uuid.uuid4().hex[:16]}"
    url = f"{pg_url}?project={name}"
    try:
        with Project.create(url, image_root=tmp_path) as p:
            p.add_folder(tmp_path)
            p.write_proposals(1, [Detection(Box(10, 10, 40, 40), 0, "Betula", 0.6)])
        win = MainWindow(settings)
        qtbot.addWidget(win)
        win.show()
        assert win.open_project(url)
        assert win.ctl.project.server is not None and win.ctl.project.image_count() == 2
        # the queue is read by a worker on a read-only server session of its own (store_reads)
        qtbot.waitUntil(lambda: win.queue.summary.text() == "1 proposal to review on 1 image", timeout=10000)
        win.close()
        win2 = MainWindow(settings)
        qtbot.addWidget(win2)
        win2.show()
        assert win2.recent_projects()[0] == url
        item = win2.welcome.recent.item(0)
        win2.welcome.recent.itemClicked.emit(item)
        qtbot.waitUntil(lambda: win2.ctl.project is not None)
        assert win2.ctl.project.location == url and win2.ctl.project.name == name
        win2.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

