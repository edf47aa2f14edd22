"""Issue 28 items 9 and 12, driven by real keys: the demo keeps out of the user's taxon
list, one row for a grain nobody named, T makes a new taxon, the Taxa panel's project
counts follow every key, and a COCO export carries the colours and keys the app shows."""

import json
import shutil
import threading

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QRunnable, QThreadPool, QTimer, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from pollenstudio.core.types import AnnotationStatus, Box, Detection
from pollenstudio.gui.taxon_panel import count_text


@pytest.fixture(autouse=True)
def _no_similar_grains_lookup(monkeypatch):
    """The Selected box panel's reference strip loads the model in the shared pool on every
    selection; these tests are about taxa, and its late replies outlived their windows."""
    from pollenstudio.gui import similar_grains

    monkeypatch.setattr(similar_grains.SimilarGrains, "request", lambda self, ann: None, raising=False)


def key(win, k, mod=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(win.canvas.view, k, mod)


def drag(win, start, end, steps=4):
    vp = win.canvas.view.viewport()
    c = win.canvas
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.image_to_widget(*start))
    for i in range(1, steps + 1):
        t = i / steps
        QTest.mouseMove(vp, c.image_to_widget(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c.image_to_widget(*end))


def make_project(folder, taxa, dets=None):
    from pollenstudio.project import Project

    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "a.png"), np.full((200, 240, 3), 200, np.uint8))
    p = Project.create(folder)
    p.ensure_categories(taxa)
    p.add_images([folder / "images" / "a.png"])
    rec = p.images()[0]
    p.write_proposals(rec.id, dets or [Detection(Box(50, 50, 90, 90), 0, taxa[0], 0.6)])
    p.close()
    return folder


def open_window(qtbot, settings):
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def open_(win, qtbot, path):
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(path))
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=3000)
    win.canvas.view.setFocus()
    return {r.category.name: r.category.hotkey for r in win.taxa.rows()}


def test_the_demo_keeps_its_taxa_out_of_the_users_list(qtbot, settings, template_project, tmp_path):
    from pollenstudio.engine.demo import MARKER

    demo = tmp_path / "demo"
    shutil.copytree(template_project, demo)
    (demo / MARKER).write_text(json.dumps({"images": 3}))
    win = open_window(qtbot, settings)
    keys = open_(win, qtbot, demo)
    # the demo's taxa still have digits (the ones its list leaves free) ...
    assert sorted(k for k in keys.values() if k) == [str(i) for i in range(1, 7)]
    assert win.ctl.user_taxa.names() == []  # ... but the user's own list learnt none of them
    win.queue.slider.setValue(0)
    key(win, Qt.Key.Key_Tab)
    aid = win.ctl.selected
    key(win, Qt.Key.Key_2)  # a digit works in the demo
    p = win.ctl.project
    assert p.category(p.annotation(aid).category_id).name == next(n for n, k in keys.items() if k == "2")

    # the user's own project: its taxa take 1, 2, 3 (the demo took 1-6 of every later project)
    mine = make_project(tmp_path / "mine", ["Betula", "Quercus", "Asteraceae"])
    keys = open_(win, qtbot, mine)
    assert [keys[n] for n in ("Betula", "Quercus", "Asteraceae")] == ["1", "2", "3"]
    win.close()


def test_pollen_and_unidentified_are_one_taxon_row(qtbot, settings, tmp_path):
    folder = make_project(tmp_path / "p", ["pollen"], [Detection(Box(20, 20, 60, 60), 0, "pollen", 0.8),
                                                       Detection(Box(120, 100, 170, 150), 0, "pollen", 0.7)])
    win = open_window(qtbot, settings)
    open_(win, qtbot, folder)
    ctl = win.ctl
    p = ctl.project
    key(win, Qt.Key.Key_B)  # a grain the model missed, drawn by hand
    drag(win, (180, 20), (225, 65))
    drawn = [a for a in p.annotations(ctl.image_id) if a.status is AnnotationStatus.ADDED]
    assert len(drawn) == 1
    # the drawn box is a grain nobody named, like the model's: the same taxon, not a second one
    assert p.category(drawn[0].category_id).name == "pollen"
    assert [c.name for c in p.categories()] == ["pollen"]
    # a project that has both already (drawn before the grain model ran) shows one row
    p.add_category("unidentified")
    qtbot.waitUntil(lambda: not ctl.reads_pending(), timeout=5000)
    qtbot.wait(900)
    qtbot.waitUntil(lambda: not ctl.reads_pending(), timeout=5000)
    rows = win.taxa.rows()
    shown = [win.taxa.table.item(i, 1).text() for i in range(win.taxa.table.rowCount())]
    assert shown == ["pollen (unidentified)"], shown
    assert rows[0].n_image == 3
    win.close()


def test_t_makes_a_new_taxon_and_names_the_box(window, qtbot):
    win, ctl = window, window.ctl
    p = ctl.project
    win.queue.slider.setValue(0)
    key(win, Qt.Key.Key_Tab)
    aid = ctl.selected
    assert aid is not None
    before = {c.name for c in p.categories()}
    seen = {}

    def type_new_name():
        dlg = QApplication.activeModalWidget()
        seen["dialog"] = dlg
        QTest.keyClicks(dlg.search, "Ambrosia")
        seen["rows"] = [dlg.list.item(i).text() for i in range(dlg.list.count()) if not dlg.list.item(i).isHidden()]
        QTest.keyClick(dlg.search, Qt.Key.Key_Return)
        if dlg.isVisible():  # Enter did nothing: close it, or exec() never returns
            seen["stuck"] = True
            dlg.reject()

    QTimer.singleShot(0, type_new_name)
    key(win, Qt.Key.Key_T)
    assert seen.get("dialog") is not None and not seen.get("stuck"), "Enter on a new name did nothing"
    assert seen["rows"] == ["+ New taxon \u201cAmbrosia\u201d"]  # not an empty list
    assert {c.name for c in p.categories()} == before | {"Ambrosia"}
    assert p.category(p.annotation(aid).category_id).name == "Ambrosia"
    assert p.annotation(aid).status is not AnnotationStatus.PROPOSED  # named = decided


def test_t_finds_the_unnamed_row_by_either_name(qtbot):
    from pollenstudio.core.types import Category
    from pollenstudio.gui.taxon_panel import TaxonPicker

    dlg = TaxonPicker([Category(1, "pollen", "#9e9e9e"), Category(2, "Betula", "#ff0000")], allow_new=True)
    qtbot.addWidget(dlg)
    QTest.keyClicks(dlg.search, "unidentified")  # "pollen (unidentified)": no third taxon
    QTest.keyClick(dlg.search, Qt.Key.Key_Return)
    assert dlg.chosen == 1 and dlg.new_name is None


class _Busy(QRunnable):
    """A job that holds a shared-pool thread, as a model load does (seconds)."""

    def __init__(self, release: threading.Event):
        super().__init__()
        self.release = release

    def run(self):
        self.release.wait(20)


def test_taxa_panel_project_counts_follow_every_key(window, qtbot):
    win, ctl = window, window.ctl
    p = ctl.project
    pool = QThreadPool.globalInstance()
    release = threading.Event()
    try:
        for _ in range(pool.maxThreadCount()):  # every shared thread busy loading a model
            pool.start(_Busy(release))

        def panel():
            return [win.taxa.table.item(i, 3).text() for i in range(win.taxa.table.rowCount())]

        def truth():
            tot, conf = p.category_counts(), p.category_counts(include_proposed=False)
            return [count_text(conf.get(r.category.id, 0), tot.get(r.category.id, 0) - conf.get(r.category.id, 0))
                    for r in win.taxa.rows()]

        win.queue.slider.setValue(0)
        key(win, Qt.Key.Key_Tab)
        for k in (Qt.Key.Key_A, Qt.Key.Key_X, Qt.Key.Key_1, Qt.Key.Key_A):
            key(win, k)
            qtbot.wait(20)
            assert panel() == truth(), k  # at once, not one action behind
        # and the project-wide re-read lands although the shared threads are still busy
        qtbot.waitUntil(lambda: ctl._counts_soon._timer.isActive() or ctl.reads_pending(), timeout=2000)
        qtbot.waitUntil(lambda: not ctl._counts_soon._timer.isActive() and not ctl.reads_pending(), timeout=4000)
        assert panel() == truth()
    finally:
        release.set()


def test_coco_export_has_the_colours_and_keys_the_app_shows(qtbot, settings, tmp_path):
    from pollenstudio.project import Project
    from pollenstudio.project.transfer import export_project

    a = make_project(tmp_path / "a", ["Betula", "Quercus"])
    b = make_project(tmp_path / "b", ["Pinus", "pollen", "Quercus"])  # Quercus: another palette colour here
    win = open_window(qtbot, settings)
    open_(win, qtbot, a)
    keys = open_(win, qtbot, b)
    ctl = win.ctl
    shown = {r.category.name: (r.category.color.lower(), r.category.hotkey) for r in win.taxa.rows()}
    assert keys["Quercus"] == "2" and keys["Pinus"] == "3"
    win.ctl.set_taxon_key(ctl.project.category_by_name("Pinus").id, "1")  # Taxa panel > Key
    shown = {r.category.name: (r.category.color.lower(), r.category.hotkey) for r in win.taxa.rows()}
    win.close_project()
    with Project.open(b) as p:  # the command line's export, outside the app
        export_project(p, "coco", tmp_path / "out.json", reviewed_only=False)
    cats = {c["name"]: (c["color"].lower(), c.get("hotkey")) for c in
            json.loads((tmp_path / "out.json").read_text())["categories"]}
    assert cats == shown
    with Project.open(a) as pa:  # Quercus keeps the colour it had where the user first met it
        assert cats["Quercus"][0] == pa.category_by_name("Quercus").color.lower()
    assert cats["Pinus"][1] == "1" and cats["Quercus"][1] == "3" and cats["pollen"][1] is None
    win.close()


def test_every_key_the_readme_names_is_a_shortcut_of_the_window(window):
    """The README's review keys, each bound to an action of the main window (Space and the
    wheel are the canvas's own)."""
    import re
    from pathlib import Path

    from PySide6.QtGui import QAction, QKeySequence

    root = Path(__file__).resolve().parents[2]  # the review keys are in the user guide the README links to
    text = "\n".join((root / f).read_text(encoding="utf-8") for f in ("README.md", "docs/user-guide.md"))
    start = text.index("Review keys (F1 lists them all)")
    keys = set(re.findall(r"\*\*([^*]+)\*\*", text[start:text.index("Taxon keys and colours come", start)]))
    wanted = set()
    for k in keys - {"Space", "Ctrl+wheel"}:
        wanted |= {"1-9": {str(d) for d in range(1, 10)}, "+/-": {"+", "-"}, "Page Down": {"PgDown"},
                   "Page Up": {"PgUp"}, "Enter": {"Return"}}.get(k, {k})
    bound = {s.toString() for a in window.findChildren(QAction) for s in a.shortcuts()}
    missing = {k for k in wanted if QKeySequence(k).toString() not in bound}
    assert not missing, f"the README promises keys no action has: {sorted(missing)}"
