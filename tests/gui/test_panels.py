"""Image list paging/filtering/thumbnails, taxon panel and picker, job runner."""

import threading
import time

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from pollenstudio.core.types import ReviewStatus
from pollenstudio.gui.image_list import PAGE, ImageListModel, ImageListPanel, ImageRow
from pollenstudio.gui.taxon_panel import TaxonPicker
from pollenstudio.gui.workers import JobRunner


def _rows(n, path="/nonexistent.png"):
    st = [ReviewStatus.NEW, ReviewStatus.IN_REVIEW, ReviewStatus.REVIEWED]
    return [ImageRow(i, f"img{i:05d}.png", path, 640, 480, st[i % 3], n_proposed=(i % 3 == 1) * 3) for i in range(1, n + 1)]


def test_ten_thousand_images_are_paged_in(qtbot):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    panel.resize(300, 600)
    panel.show()
    t = time.perf_counter()
    panel.set_rows(_rows(10_000))
    qtbot.wait(1)
    assert time.perf_counter() - t < 5  # generous: a stall here would be seconds
    m = panel.model
    assert m.rowCount() == PAGE and m.total() == 10_000
    m.fetchMore()
    assert m.rowCount() == 2 * PAGE
    # jumping to an image far down loads the pages up to it and selects it
    panel.show_current(9_999)
    assert m.rowCount() >= 9_999 and panel.view.currentIndex().row() == 9_998
    assert "10000 images" in panel.summary.text() and "3333 reviewed" in panel.summary.text()
    panel.model.loader.clear()


def test_filter_and_sort_change_what_n_and_p_walk():
    m = ImageListModel()
    m.set_rows(_rows(30))
    m.set_filter("Not reviewed")
    assert all(m.row_data(i).status is not ReviewStatus.REVIEWED for i in range(m.rowCount()))
    assert m.total() == 20
    m.set_filter("With proposals")
    assert m.total() == 10 and all(m.row_data(i).n_proposed for i in range(m.rowCount()))
    m.set_filter("All images")
    m.set_sort("Status")
    assert m.row_data(0).status is ReviewStatus.IN_REVIEW
    assert m.ids()[0] == m.row_data(0).id


def test_thumbnails_arrive_in_the_background(qtbot, project_dir):
    from pathlib import Path

    paths = sorted(Path(project_dir, "images").glob("*.png"))
    m = ImageListModel()
    m.set_rows([ImageRow(i, p.name, str(p), 320, 240, ReviewStatus.NEW) for i, p in enumerate(paths, 1)])
    assert m.data(m.index(0), Qt.ItemDataRole.DecorationRole) is None  # requested, not made on the GUI thread
    qtbot.waitUntil(lambda: m.data(m.index(0), Qt.ItemDataRole.DecorationRole) is not None, timeout=5000)
    pm = m.data(m.index(0), Qt.ItemDataRole.DecorationRole)
    assert max(pm.width(), pm.height()) == 56


def test_new_job_of_same_kind_cancels_the_old_one(qtbot):
    runner = JobRunner()
    results = []
    started = threading.Event()

    def slow(token, name):
        started.set()
        for _ in range(200):
            token.check()
            time.sleep(0.01)
        return name

    def fast(token, name):
        token.update(1, 1, "done")
        return name

    first = runner.submit("image", slow, "old", on_done=results.append)
    started.wait(2)
    runner.submit("image", fast, "new", on_done=results.append)
    qtbot.waitUntil(lambda: results == ["new"], timeout=3000)
    qtbot.waitUntil(lambda: first.done, timeout=3000)
    qtbot.wait(20)
    assert results == ["new"]  # the stale result never lands
    assert first.token.cancelled


def test_job_errors_come_back_as_messages(qtbot):
    from pollenstudio.core.errors import ImageReadError

    runner = JobRunner()
    errors = []

    def bad(token):
        raise ImageReadError("x.tif: not a readable image")

    runner.submit("image", bad, on_error=errors.append)
    qtbot.waitUntil(lambda: errors == ["x.tif: not a readable image"], timeout=3000)


def test_taxon_picker_finds_by_typing(qtbot):
    from pollenstudio.core.types import Category

    cats = [Category(1, "Alnus"), Category(2, "Betula"), Category(3, "Poaceae"), Category(4, "Betulaceae undiff.")]
    dlg = TaxonPicker(cats)
    qtbot.addWidget(dlg)
    dlg.show()
    QTest.keyClicks(dlg.search, "betu")
    QTest.keyClick(dlg.search, Qt.Key.Key_Down)
    QTest.keyClick(dlg.search, Qt.Key.Key_Return)
    assert dlg.chosen == 4
    assert dlg.list.item(0).isHidden() and dlg.list.item(2).isHidden()


def test_taxon_panel_counts_and_edits_go_to_the_store(window, qtbot):
    win, ctl = window, window.ctl
    rows = win.taxa.rows()
    assert [r.category.hotkey for r in rows][:6] == ["1", "2", "3", "4", "5", "6"]
    on_image = sum(r.n_image for r in rows)
    assert on_image == len([a for a in ctl.annotations() if a.status.value != "rejected"])
    win.taxa.addRequested.emit("Corylus")
    assert ctl.project.category_by_name("Corylus") is not None
    cid = ctl.project.category_by_name("Corylus").id
    win.taxa.renameRequested.emit(cid, "Corylus avellana")
    win.taxa.recolourRequested.emit(cid, "#123456")
    c = ctl.project.category(cid)
    assert (c.name, c.color) == ("Corylus avellana", "#123456")
    assert any(r.category.name == "Corylus avellana" for r in win.taxa.rows())
    # merge a used taxon into another: its grains move, the counts follow
    src = next(r for r in win.taxa.rows() if r.n_project)
    dst = next(r for r in win.taxa.rows() if r.category.id != src.category.id)
    win.taxa.mergeRequested.emit(src.category.id, dst.category.id)
    after = {r.category.id: r for r in win.taxa.rows()}
    assert src.category.id not in after
    # project counts are re-read in a worker: they follow the merge within moments
    qtbot.waitUntil(lambda: {r.category.id: r for r in win.taxa.rows()}[dst.category.id].n_project
                    == dst.n_project + src.n_project, timeout=3000)
    # a refused edit shows a message and changes nothing
    win.taxa.addRequested.emit("Corylus avellana")
    assert len([c for c in ctl.categories() if c.name == "Corylus avellana"]) == 1


def test_queue_panel_says_how_many_when_it_lists_only_the_first(qtbot):
    from pollenstudio.gui.review_queue import QueueItem, ReviewQueuePanel

    panel = ReviewQueuePanel()
    qtbot.addWidget(panel)
    items = [QueueItem(i, i % 7, f"img{i % 7}.png", "Betula", "#3cb44b", i / 5000) for i in range(2000)]
    panel.set_items(items, hidden=12, total=45000)
    assert "45000 proposals" in panel.summary.text() and "2000 most uncertain" in panel.summary.text()
    assert "12 below the threshold" in panel.summary.text()
    assert panel.model.rowCount() == 500  # paged in
    panel.set_current(1999)
    assert panel.view.selectionModel().selectedRows()[0].row() == 1999


def test_project_counts_and_queue_follow_a_rejection_read_off_the_gui_thread(window, qtbot):
    """Project-wide taxon counts and the queue are read in a worker: after a rejection
    they still show the store's numbers once the reviewer pauses."""
    win, ctl = window, window.ctl
    win.queue.slider.setValue(0)
    qtbot.waitUntil(lambda: not ctl.reads_pending(), timeout=3000)
    ctl.step_proposal(1)
    a = ctl.selected_annotation()
    before = {r.category.id: r.n_project for r in win.taxa.rows()}[a.category_id]
    n_queue = ctl.project.undecided_count(0.0)
    assert before == ctl.project.category_counts()[a.category_id]
    ctl.reject()
    qtbot.waitUntil(lambda: {r.category.id: r.n_project for r in win.taxa.rows()}[a.category_id] == before - 1,
                    timeout=3000)
    qtbot.waitUntil(lambda: f"{n_queue - 1} proposals to review" in win.queue.summary.text(), timeout=3000)
    assert a.id not in [it.ann_id for it in win.queue.model.items()]
    row = [r.category.id for r in win.taxa.rows()].index(a.category_id)
    # the cell shows it, not just the model: confirmed grains, then "+ N" still to review
    confirmed = ctl.project.category_counts(include_proposed=False).get(a.category_id, 0)
    undecided = before - 1 - confirmed
    assert win.taxa.table.item(row, 3).text() == (f"{confirmed} + {undecided}" if undecided else str(confirmed))


def test_image_list_summary_follows_review_edits(qtbot):
    panel = ImageListPanel()
    qtbot.addWidget(panel)
    rows = _rows(30)
    panel.set_rows(rows)
    assert "10 reviewed" in panel.summary.text()
    new = rows[0]  # status NEW
    panel.update_rows([ImageRow(new.id, new.name, new.path, 640, 480, ReviewStatus.REVIEWED)])
    # refreshed once edits pause (it counts every image)
    qtbot.waitUntil(lambda: "11 reviewed" in panel.summary.text(), timeout=2000)
