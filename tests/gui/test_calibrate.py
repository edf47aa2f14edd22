"""Model > Calibrate grain size...: from a selected box or a pixel scale into the project."""

from pollenstudio.core.types import Box


def test_calibrate_from_the_selected_box_then_clear(qtbot, window):
    from pollenstudio.gui.calibrate_dialog import CalibrateDialog, open_calibrate_dialog

    p = window.ctl.project
    assert p.grain_size_px is None
    img = p.images()[0]
    cat = p.categories()[0].id
    ann = p.add_annotation(img.id, Box(10, 10, 58, 42), cat)  # 48 x 32 -> sqrt = 39.2 px
    dlg = CalibrateDialog(p, p.annotation(ann).box, [20.0, 80.0], "grain model", window)
    qtbot.addWidget(dlg)
    assert "Not calibrated" in dlg.effect.text() and dlg.grain.text() == "not set"
    dlg.use_box.click()
    assert dlg.grain.value() == 39
    assert "x1.03" in dlg.effect.text() and "20-80 px" in dlg.effect.text()  # sqrt(20*80) = 40
    dlg.save()
    assert p.grain_size_px == 39.0 and dlg.result() == dlg.DialogCode.Accepted

    dlg = CalibrateDialog(p, None, None, "", window)
    qtbot.addWidget(dlg)
    assert dlg.grain.value() == 39 and not dlg.use_box.isEnabled()
    assert "does not record" in dlg.effect.text()
    dlg.clear()
    assert p.grain_size_px is None

    dlg = CalibrateDialog(p, None, [20.0, 80.0], "", window)
    qtbot.addWidget(dlg)
    dlg.um.setValue(0.5)  # 30 um grains -> 60 px
    assert "a 60 px grain" in dlg.effect.text()
    dlg.save()
    assert p.grain_size_px is None and all(r.um_per_px == 0.5 for r in p.images())

    # the menu entry opens it on the window's project
    assert window.act_calibrate.text() == "Calibrate grain size..."
    opened = open_calibrate_dialog(window)
    qtbot.addWidget(opened)
    assert opened.isVisible() and opened.project is p
    opened.reject()


def test_calibration_dialog_looks_right(qtbot, window, tmp_path):
    """Grab the dialog as a user sees it (docs/screenshots/calibrate.png when asked)."""
    import os

    from pollenstudio.gui.calibrate_dialog import CalibrateDialog

    dlg = CalibrateDialog(window.ctl.project, Box(0, 0, 150, 140), [14.5, 183.1], "pollen-grain-n", window)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    dlg.use_box.click()
    pix = dlg.grab()
    assert pix.width() > 300 and pix.height() > 150
    out = os.environ.get("POLLENSTUDIO_SHOTS")
    pix.save(str((tmp_path if not out else __import__("pathlib").Path(out)) / "calibrate.png"))
    assert "x0.36" in dlg.effect.text()  # sqrt(14.5*183.1) = 51.5; 51.5 / 145 = 0.355
