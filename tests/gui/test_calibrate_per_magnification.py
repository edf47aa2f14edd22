"""Issue 28 items 6 and 8 in the window: the calibrate dialog says which images a calibration is
for (the image on screen, its sample, the selection, every image, or the project's value) and
stores it there only; on the first detection of a project with no calibration the status bar
says that calibrating is the first step, with the dialog one click away; an image found far
off its calibrated size is named there too."""

import os
from pathlib import Path

from fixtures_models import tiny_model_path  # noqa: F401
from PySide6.QtCore import Qt

from pollenstudio.core.types import Box

MODEL_RANGE = [14.5, 176.4]  # the grain model's


def _shot(pix, tmp_path, name):
    out = os.environ.get("POLLENSTUDIO_SHOTS")
    pix.save(str((Path(out) if out else tmp_path) / name))


def test_calibration_is_for_the_images_of_the_sample_and_says_which(qtbot, window, tmp_path):
    from pollenstudio.gui.calibrate_dialog import CalibrateDialog

    p = window.ctl.project
    a, b, c = (r.id for r in p.images())
    p.set_images_group([a, b], "slide 1 (x40)")
    p.set_images_group([c], "slide 2 (x100)")
    p.set_grain_size_px(60, [c])
    dlg = CalibrateDialog(p, Box(0, 0, 290, 284), MODEL_RANGE, "pollen-grain-n", window, image_id=a)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    # the sample of the image on screen is the default: it and the other image of that slide
    assert dlg.scope_sample.isChecked()
    names = [r.path.rsplit("/", 1)[-1] for r in p.images()]
    assert dlg.applies.text().startswith("Applies to 2 image(s): ")
    assert names[0] in dlg.applies.text() and names[1] in dlg.applies.text() and names[2] not in dlg.applies.text()
    assert f"{names[2]} 60 px (its own)" in dlg.others.text()
    qtbot.mouseClick(dlg.use_box, Qt.MouseButton.LeftButton)
    assert dlg.grain.value() == 287
    _shot(dlg.grab(), tmp_path, "calibrate-sample.png")
    dlg.save()
    recs = {r.id: r for r in p.images()}
    assert (recs[a].grain_px, recs[b].grain_px, recs[c].grain_px) == (287, 287, 60)
    assert p.grain_size_px is None  # nothing project-wide: the other slide keeps its own

    # the image on screen alone, then the project's value for the images without their own
    dlg = CalibrateDialog(p, None, MODEL_RANGE, "pollen-grain-n", window, image_id=b)
    qtbot.addWidget(dlg)
    assert dlg.grain.value() == 287  # what it has now
    dlg.scope_image.setChecked(True)
    assert dlg.applies.text() == f"Applies to 1 image(s): {names[1]}."
    dlg.clear()
    assert p.image(b).grain_px is None and p.image(a).grain_px == 287
    dlg = CalibrateDialog(p, None, MODEL_RANGE, "pollen-grain-n", window, image_id=b)
    qtbot.addWidget(dlg)
    dlg.scope_default.setChecked(True)
    assert "1 image(s) without a calibration of their own" in dlg.applies.text() and names[1] in dlg.applies.text()
    assert "images added later" in dlg.applies.text()
    dlg.grain.setValue(250)
    dlg.save()
    assert p.grain_size_px == 250 and p.image(a).grain_px == 287 and p.image(c).grain_px == 60


def test_the_selected_images_are_a_scope(qtbot, window):
    from pollenstudio.gui.calibrate_dialog import CalibrateDialog

    p = window.ctl.project
    a, b, c = (r.id for r in p.images())
    dlg = CalibrateDialog(p, None, MODEL_RANGE, "", window, image_id=a, selected_ids=[a, c])
    qtbot.addWidget(dlg)
    assert dlg.scope_selected.isChecked() and dlg.scope_records() is not None
    assert [r.id for r in dlg.scope_records()] == [a, c]
    dlg.um.setValue(0.25)  # the pixel scale goes to the same images: 30 um grains -> 120 px
    assert "a 120 px grain" in dlg.effect.text()
    dlg.save()
    assert [r.um_per_px for r in p.images()] == [0.25, None, 0.25]


def test_first_detection_without_calibration_points_to_the_dialog_once(qtbot, window, tmp_path):
    note = window.calibration_notice
    assert not note.isVisible()
    window.models.detectStarted.emit(3)  # what ModelController.detect emits when a detection starts
    assert note.isVisible() and "first step" in note.text.text()
    window.statusBar().showMessage("Detecting...", 3000)  # a passing message does not hide it
    assert note.isVisible()
    qtbot.wait(50)  # the status bar lays the note out
    assert note.text.width() >= note.text.sizeHint().width()  # its words are not cut
    _shot(window.statusBar().grab(), tmp_path, "calibrate-notice.png")
    from pollenstudio.gui.calibrate_dialog import CalibrateDialog

    qtbot.mouseClick(note.button, Qt.MouseButton.LeftButton)

    dlgs = [d for d in window.findChildren(CalibrateDialog) if d.isVisible()]
    assert len(dlgs) == 1 and dlgs[0].image.id == window.ctl.image_id
    dlgs[0].grain.setValue(50)
    dlgs[0].save()
    assert not note.isVisible()  # calibrated: the note has done its work
    window.models.detectStarted.emit(3)
    assert not note.isVisible()


def test_the_note_is_not_a_nag(qtbot, window):
    note = window.calibration_notice
    window.models.detectStarted.emit(1)
    assert note.isVisible()
    qtbot.mouseClick(note.close_button, Qt.MouseButton.LeftButton)
    assert not note.isVisible()
    window.models.detectStarted.emit(1)  # the same project, the same session: said once is enough
    assert not note.isVisible()


def test_an_image_far_off_its_calibration_is_named_with_the_dialog_for_it(qtbot, window, tmp_path):
    from pollenstudio.engine.detect_job import DetectSummary
    from pollenstudio.gui.calibrate_dialog import CalibrateDialog

    p = window.ctl.project
    last = p.images()[-1]
    s = DetectSummary(run_id=1, images=3, size_warnings=[(last.path, f"{last.path}: its proposals so far measure "
                                                                     "about 50 px, 0.2x ...")])
    window.models.detectSummary.emit(s)
    note = window.calibration_notice
    assert note.isVisible() and last.path.rsplit("/", 1)[-1] in note.text.text()
    qtbot.wait(50)
    _shot(window.statusBar().grab(), tmp_path, "calibrate-mismatch-notice.png")
    qtbot.mouseClick(note.button, Qt.MouseButton.LeftButton)
    dlgs = [d for d in window.findChildren(CalibrateDialog) if d.isVisible()]
    assert len(dlgs) == 1 and dlgs[0].image.id == last.id and dlgs[0].scope_image.isChecked()
    dlgs[0].reject()


def test_a_real_detection_shows_the_note_and_hands_over_its_summary(qtbot, window_on_copy, template_project,
                                                                    tiny_model_path, tmp_path):
    """Through ModelController.detect, as the Detect action runs it: a model that records its
    grain sizes on a project with no calibration."""
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, _ = load_checkpoint(tiny_model_path)
    ranged = save_checkpoint(tmp_path / "ranged.safetensors", model, cfg, {"grain_size_px": [45.0, 55.0]})
    win = window_on_copy(template_project, ranged)
    summaries = []
    win.models.detectSummary.connect(summaries.append)
    with qtbot.waitSignal(win.models.detectEnded, timeout=60000):
        assert win.models.detect_which("image")
    assert win.calibration_notice.isVisible() and "first step" in win.calibration_notice.text.text()
    assert len(summaries) == 1 and summaries[0].calibration == "none" and summaries[0].done == 1
    win.models.jobs.cancel_all()
    win.close()
