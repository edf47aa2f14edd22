"""The demo project from the welcome screen, end to end with real events: open it (prepared
in a worker), detect all with the model it comes with, review one image with the keys,
export COCO (reviewed only). The tiny test model stands in for the shipped default."""

import shutil

from fixtures_models import tiny_model_path  # noqa: F401
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from pollenstudio.core.types import AnnotationStatus, ReviewStatus


def key(win, k):
    QTest.keyClick(win.canvas.view, k)


def test_demo_from_the_welcome_screen_detect_review_export(qtbot, settings, tmp_path, tiny_model_path, monkeypatch):
    from pycocotools.coco import COCO

    from pollenstudio.gui.main_window import MainWindow

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(tiny_model_path, models / "hieraedgenet-n.safetensors")
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(models))
    monkeypatch.setenv("POLLENSTUDIO_DEMO_DIR", str(tmp_path / "userdata" / "demo"))

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()  # shortcuts go to the active window
    assert win.stack.currentWidget() is win.welcome and win.welcome.open_demo.isEnabled()

    with qtbot.waitSignal(win.ctl.imageShown, timeout=60000):
        qtbot.mouseClick(win.welcome.open_demo, Qt.MouseButton.LeftButton)
        assert win.ctl.project is None  # prepared in a worker: the click returns at once
    ctl = win.ctl
    proj = ctl.project
    # the progress dialog had the focus; a desktop hands it back, offscreen Qt does not
    win.activateWindow()
    assert proj.folder == (tmp_path / "userdata" / "demo").resolve()
    assert win.images.model.rowCount() == 8 and proj.annotation_count() == 0
    assert "hieraedgenet-n" in win.st_model.text()  # the model is active, no file to choose
    assert str(proj.folder) in win.recent_projects()

    with qtbot.waitSignal(win.models.detectEnded, timeout=120000) as ended:
        win.act_detect_all.trigger()
    assert ended.args[0].startswith("Detection done"), ended.args
    mv = proj.active_model_version()
    props = [a for r in proj.images() for a in proj.annotations(r.id)]
    assert props and all(a.status is AnnotationStatus.PROPOSED and a.model_version == mv.id for a in props)

    # review the image with the most proposals: Tab, A on the first, X on the rest
    target = max(proj.images(), key=lambda r: len(proj.annotations(r.id)))
    n_props = len(proj.annotations(target.id))
    with qtbot.waitSignal(ctl.imageShown, timeout=5000):
        ctl.show_image(target.id)
    ctl.within_image = True  # advance inside the image, as when reviewing slide by slide
    win.canvas.view.setFocus()
    key(win, Qt.Key.Key_Tab)
    first = ctl.selected_annotation()
    assert first is not None and first.image_id == target.id
    key(win, Qt.Key.Key_A)
    for _ in range(n_props - 1):
        assert ctl.selected_annotation().image_id == target.id
        key(win, Qt.Key.Key_X)
    anns = proj.annotations(target.id)
    assert [a.id for a in anns if a.status is AnnotationStatus.ACCEPTED] == [first.id]
    assert sum(a.status is AnnotationStatus.REJECTED for a in anns) == n_props - 1
    assert proj.image(target.id).status is ReviewStatus.REVIEWED

    dlg = win.export_dialog()
    assert dlg.format() == "coco" and dlg.reviewed.isChecked()
    out = tmp_path / "export" / "demo.json"
    dlg.path.setText(str(out))
    dlg.run_button.click()
    qtbot.waitUntil(lambda: dlg.summary is not None or dlg.error is not None, timeout=20000)
    assert dlg.error is None, dlg.error
    coco = COCO(str(out))
    assert [im["file_name"].rsplit("/", 1)[-1] for im in coco.dataset["images"]] == [target.path.rsplit("/", 1)[-1]]
    [ann] = coco.dataset["annotations"]
    b = first.box
    assert [round(v, 1) for v in ann["bbox"]] == [round(v, 1) for v in (b.x1, b.y1, b.width, b.height)]
    assert coco.cats[ann["category_id"]]["name"] == proj.category(first.category_id).name
    assert "score" not in ann
    win.models.jobs.cancel_all()
    ctl.jobs.cancel_all()
    win.close()


def test_demo_without_a_model_says_what_to_do_and_stays_on_the_welcome_page(qtbot, settings, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from pollenstudio.gui.main_window import MainWindow

    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(tmp_path / "no-models"))
    monkeypatch.setenv("POLLENSTUDIO_DEMO_DIR", str(tmp_path / "userdata" / "demo"))
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    qtbot.mouseClick(win.welcome.open_demo, Qt.MouseButton.LeftButton)

    def error_box():
        boxes = [w for w in win.findChildren(QMessageBox) if w.isVisible()]
        return boxes[0] if boxes else None

    qtbot.waitUntil(lambda: error_box() is not None, timeout=30000)
    box = error_box()
    assert "demo" in box.windowTitle().lower() and "no default model" in box.text() and "train" in box.text()
    assert win.ctl.project is None and win.stack.currentWidget() is win.welcome
    assert not (tmp_path / "userdata").exists()
    box.close()
    win.close()
