"""Counting in the window (issue 20): the count dock follows the sample on screen and its
target sum, roles move taxa out of the sum, File > Report writes through the same function
as the CLI, the pixel scale dialog measures a drawn line, the scale bar follows the zoom and
the selected box shows its axes in µm."""

import math

import pytest

from pollenstudio.core.types import Box


def _counted(qtbot, win):
    qtbot.waitUntil(lambda: not win.counts.jobs.busy("count") and win.counts.samples, timeout=5000)


def test_count_dock_target_sum_and_roles(qtbot, window, tmp_path):
    p = window.ctl.project
    ids = [r.id for r in p.images()]
    p.set_images_group(ids[:2], "slide-1")
    betula, pinus = (p.category_by_name(n) or p.categories()[i] for i, n in enumerate(("Betula", "Pinus")))
    with p.batch("grains"):
        for k in range(6):
            p.add_annotation(ids[0], Box(5 + 20 * k, 5, 20 + 20 * k, 20), betula.id)
        for k in range(2):
            p.add_annotation(ids[1], Box(5 + 20 * k, 60, 20 + 20 * k, 75), pinus.id)
    window.ctl.show_image(ids[0])
    qtbot.waitUntil(lambda: window.counts.panel.current is not None
                    and window.counts.panel.current.name == "slide-1"
                    and window.counts.panel.current.count_of(betula.name) >= 6, timeout=5000)
    panel = window.counts.panel
    s = panel.current
    assert panel.progress.format() == f"{s.pollen_sum} / 300" and s.pollen_sum >= 8
    panel.target.setValue(150)  # stored for this sample only
    assert p.sample_settings()["slide-1"]["target_sum"] == 150
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.target_sum == 150, timeout=5000)
    assert panel.progress.format().endswith("/ 150")
    before = panel.current.pollen_sum
    window.counts.set_role(pinus.id, "spore")
    qtbot.waitUntil(lambda: panel.current.pollen_sum == before - panel.current.count_of(pinus.name), timeout=5000)
    rows = {panel.table.item(i, 0).text() for i in range(panel.table.rowCount())}
    assert f"{pinus.name}  (spore)" in rows
    window.counts.panel.grab().save(str(tmp_path / "count-dock.png"))
    # moving the image on screen to another sample: the dock follows it
    from pollenstudio.gui.counting import set_sample_of_selection

    window.images.view.clearSelection()
    set_sample_of_selection(window, "slide-2")
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.name == "slide-2", timeout=5000)
    assert p.image(ids[0]).group == "slide-2" and p.image(ids[1]).group == "slide-1"


def test_file_report_writes_in_a_worker(qtbot, window, tmp_path):
    from pollenstudio.gui.counting import report_dialog

    assert window.act_report.text() == "Report..."
    out = tmp_path / "out" / "counts.html"
    job = report_dialog(window, out=str(out), open_after=False)
    assert job is not None
    qtbot.waitUntil(lambda: window.counts.last_report is not None, timeout=20000)
    assert out.is_file() and "Pollen diagram" in out.read_text(encoding="utf-8")
    assert window.counts.last_report["format"] == "html"


def test_scale_dialog_measures_a_line_over_a_scale_bar(qtbot, window):
    from pollenstudio.gui.counting import ScaleDialog

    p = window.ctl.project
    ids = [r.id for r in p.images()]
    dlg = ScaleDialog(p, ids[:1], image=window.canvas.image, parent=window)
    qtbot.addWidget(dlg)
    h0, h1 = dlg.line.getHandles()[:2]
    s = dlg.shrink
    dlg.line.movePoint(h0, dlg.line.mapFromParent(_pt(20 / s, 200 / s)))
    dlg.line.movePoint(h1, dlg.line.mapFromParent(_pt(220 / s, 200 / s)))
    x1, y1, x2, y2 = dlg.line_points()
    assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(200, abs=0.5)
    dlg.length.setValue(50.0)
    dlg.use_line()
    assert dlg.value.value() == pytest.approx(0.25, abs=1e-3)
    assert "0.2500 µm/px" in dlg.measured.text()
    dlg.save()
    assert p.image(ids[0]).um_per_px == pytest.approx(0.25, abs=1e-3)
    assert all(p.image(i).um_per_px is None for i in ids[1:])  # only the selection


def _pt(x, y):
    from PySide6.QtCore import QPointF

    return QPointF(x, y)


def test_scale_bar_follows_the_zoom_and_the_box_shows_its_axes(qtbot, window, tmp_path):
    p = window.ctl.project
    iid = window.ctl.image_id
    p.set_um_per_px(0.5, [iid])
    qtbot.waitUntil(lambda: window.counts.scale_bar.um_per_px == 0.5, timeout=3000)
    window.act_scale_bar.setChecked(True)
    bar = window.counts.scale_bar
    for factor in (1.0, 3.0, 0.4):
        window.canvas.zoom_keys(factor)
        qtbot.wait(20)
        um, screen = bar.bar
        assert screen / bar.zoom() * 0.5 == pytest.approx(um, rel=1e-6)
    assert bar.isVisible()
    window.grab().save(str(tmp_path / "window-scale-bar.png"))
    window.act_scale_bar.setChecked(False)
    assert not bar.isVisible()
    cat = p.categories()[0].id
    ann = p.add_annotation(iid, Box(10, 10, 50, 30), cat)  # 40 x 20 px at 0.5 µm/px
    window.ctl.select(ann)
    qtbot.waitUntil(lambda: "Size:" in window.topk.label.text(), timeout=3000)
    assert "20.0 × 10.0 µm" in window.topk.label.text()


def test_measure_outline_of_the_selected_grain(qtbot, window, tmp_path):
    from pollenstudio.gui.counting import measure_outline

    p = window.ctl.project
    props = [a for a in window.ctl.annotations() if a.status.value == "proposed"]
    a = max(props, key=lambda x: x.box.width * x.box.height)
    p.set_um_per_px(0.5, [window.ctl.image_id])
    window.ctl.select(a.id)
    assert window.act_outline.text() == "Measure grain outline"
    assert measure_outline(window) is not None
    qtbot.waitUntil(lambda: "Outline:" in window.topk.label.text(), timeout=5000)
    shape = window.counts.last_shape
    assert shape is not None and "µm" in window.topk.label.text()
    # the ellipse of a grain the box holds: no longer than the box's diagonal, centred inside it
    assert shape.major_px <= math.hypot(a.box.width, a.box.height) * 1.1
    assert a.box.x1 <= shape.centre[0] <= a.box.x2 and a.box.y1 <= shape.centre[1] <= a.box.y2
    assert len(window.counts.outline_curve.getData()[0]) > 5
    window.grab().save(str(tmp_path / "outline.png"))
    window.ctl.select(None)
    qtbot.waitUntil(lambda: window.counts.outline_curve.getData()[0] is None
                    or len(window.counts.outline_curve.getData()[0]) == 0, timeout=3000)
