"""Grain-model proposals read "pollen (unidentified)" wherever the window names a taxon
(issue 15, item 2): box labels on the canvas, the selected-box panel, the review queue,
the taxa panel, the gallery and the count dock; the store keeps "pollen"."""

import cv2
import numpy as np

from pollenstudio.core.types import GRAIN_CLASS, GRAIN_CLASS_LABEL, Box, Detection


def test_grain_model_proposals_read_pollen_unidentified(qtbot, settings, tmp_path):
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    folder = tmp_path / "p"
    (folder / "images").mkdir(parents=True)
    img = np.full((240, 320, 3), 215, np.uint8)
    for cx, cy in ((80, 90), (220, 140)):
        cv2.circle(img, (cx, cy), 26, (120, 150, 190), -1)
    cv2.imwrite(str(folder / "images" / "a.png"), img)
    p = Project.create(folder)
    p.add_images([folder / "images" / "a.png"])
    iid = p.images()[0].id
    ids = p.write_proposals(iid, [Detection(Box(52, 62, 108, 118), 0, GRAIN_CLASS, 0.91, ((GRAIN_CLASS, 0.91),)),
                                  Detection(Box(192, 112, 248, 168), 0, GRAIN_CLASS, 0.84)]).written
    p.accept(ids[1])  # a confirmed grain: counted (out of the sum, still to be named)
    p.close()

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(folder))
    win.ctl.select(ids[0])
    qtbot.waitUntil(lambda: "Size:" in win.topk.label.text(), timeout=3000)
    labels = {v.key: v.label for v in win.ctl.box_views()}
    assert labels[ids[0]] == labels[ids[1]] == GRAIN_CLASS_LABEL
    drawn = {v.key: v.caption for v in win.canvas.overlay._views}  # what the canvas paints
    assert drawn[ids[0]] == f"{GRAIN_CLASS_LABEL} 0.91" and drawn[ids[1]] == GRAIN_CLASS_LABEL
    assert f"<b>{GRAIN_CLASS_LABEL}</b>" in win.topk.label.text()  # the selected box
    assert f"{GRAIN_CLASS_LABEL}&nbsp;" in win.topk.label.text()  # its top-k row
    qtbot.waitUntil(lambda: not win.ctl.reads_pending(), timeout=5000)
    names = [win.taxa.table.item(r, 1).text() for r in range(win.taxa.table.rowCount())]
    assert names == [GRAIN_CLASS_LABEL]
    queue = win.queue.model  # the one undecided proposal, in the review queue
    qtbot.waitUntil(lambda: queue.rowCount() == 1, timeout=5000)
    assert queue.data(queue.index(0, 1)) == GRAIN_CLASS_LABEL
    qtbot.waitUntil(lambda: win.counts.panel.table.rowCount() == 1, timeout=5000)
    assert win.counts.panel.table.item(0, 0).text() == GRAIN_CLASS_LABEL
    dlg = win.open_gallery()
    assert dlg.taxon.currentText() == GRAIN_CLASS_LABEL
    dlg.close()
    win.grab().save(str(tmp_path / "pollen-unidentified.png"))
    # displayed, never stored: the taxon is still "pollen"
    assert [c.name for c in win.ctl.categories()] == [GRAIN_CLASS]
    win.close()
