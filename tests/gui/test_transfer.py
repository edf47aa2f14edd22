"""File > Export... / Import... dialogs: the work runs in a worker, results and errors in words."""

import json

from pollenstudio.core.types import AnnotationStatus


def _review_first_image(ctl):
    """Accept every proposal of the first image except one rejected: the image is reviewed."""
    p = ctl.project
    rec = p.images()[0]
    anns = p.annotations(rec.id)
    for a in anns[:-1]:
        p.accept(a.id)
    p.reject(anns[-1].id)
    return rec, [a for a in p.annotations(rec.id) if a.status.is_object]


def _run(qtbot, dlg):
    dlg.run_button.click()
    qtbot.waitUntil(lambda: dlg.summary is not None or dlg.error is not None, timeout=20000)


def test_exported_coco_holds_exactly_the_reviewed_annotations(qtbot, window, tmp_path):
    from pycocotools.coco import COCO

    rec, kept = _review_first_image(window.ctl)
    dlg = window.export_dialog()
    assert dlg.format() == "coco" and dlg.reviewed.isChecked()
    out = tmp_path / "out" / "reviewed.json"
    dlg.path.setText(str(out))
    _run(qtbot, dlg)
    assert dlg.error is None, dlg.error
    assert f"{len(kept)} annotations on 1 reviewed image " in dlg.result.text()  # one image: no "1 images"
    coco = COCO(str(out))
    assert [im["file_name"].rsplit("/", 1)[-1] for im in coco.dataset["images"]] == [rec.path.rsplit("/", 1)[-1]]
    got = sorted(tuple(round(v, 1) for v in a["bbox"]) for a in coco.dataset["annotations"])
    want = sorted(tuple(round(v, 1) for v in (a.box.x1, a.box.y1, a.box.width, a.box.height)) for a in kept)
    assert got == want
    assert all("score" not in a for a in coco.dataset["annotations"])

    # with scores: every image, undecided proposals included with their scores
    dlg.all.setChecked(True)
    out_all = tmp_path / "out" / "all.json"
    dlg.path.setText(str(out_all))
    _run(qtbot, dlg)
    doc = json.loads(out_all.read_text())
    p = window.ctl.project
    n_live = sum(1 for r in p.images() for a in p.annotations(r.id) if a.status is not AnnotationStatus.REJECTED)
    assert len(doc["images"]) == len(p.images()) and len(doc["annotations"]) == n_live
    assert any("score" in a for a in doc["annotations"])


def test_csv_export_and_import_errors_in_words(qtbot, window, tmp_path):
    _review_first_image(window.ctl)
    dlg = window.export_dialog()
    dlg.fmt.setCurrentIndex(2)
    assert dlg.format() == "csv" and dlg.path.text().endswith("counts.csv")
    dlg.path.setText(str(tmp_path / "counts.csv"))
    _run(qtbot, dlg)
    assert dlg.error is None and "grains" in dlg.result.text()
    from pollenstudio.project.report import COLUMNS

    assert (tmp_path / "counts.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    dlg.close()

    bad = tmp_path / "bad.json"
    bad.write_text('{"images": 3}')
    imp = window.import_dialog()
    imp.path.setText(str(bad))
    n_images = len(window.ctl.project.images())
    _run(qtbot, imp)
    assert imp.error and "bad.json" in imp.error and "COCO" in imp.result.text()
    assert len(window.ctl.project.images()) == n_images  # bad input changed nothing


def test_import_a_folder_of_images_adds_them_to_the_list(qtbot, window, tmp_path):
    import shutil

    src = tmp_path / "more"
    src.mkdir()
    first = window.ctl.project.image_path(window.ctl.project.images()[0])
    import cv2

    img = cv2.imread(str(first))
    cv2.imwrite(str(src / "new_slide.png"), img[::-1].copy())  # new content, not a duplicate
    shutil.copy(first, src / "same_as_first.png")  # same content: reported as already there
    imp = window.import_dialog()
    imp.fmt.setCurrentIndex(2)
    assert imp.format() == "folder"
    imp.path.setText(str(src))
    _run(qtbot, imp)
    assert imp.error is None, imp.error
    assert "Added 1 image; 1 was already in the project" in imp.result.text()
    qtbot.waitUntil(lambda: window.images.model.total() == 4, timeout=5000)


def test_gui_import_is_recorded_as_a_run(qtbot, window, tmp_path):
    import cv2

    src = tmp_path / "more"
    src.mkdir()
    first = window.ctl.project.image_path(window.ctl.project.images()[0])
    cv2.imwrite(str(src / "new_slide.png"), cv2.imread(str(first))[::-1].copy())
    imp = window.import_dialog()
    imp.fmt.setCurrentIndex(2)
    imp.path.setText(str(src))
    _run(qtbot, imp)
    assert imp.error is None, imp.error
    runs = window.ctl.project.runs("import")
    assert [r.status for r in runs] == ["done"]
    assert runs[0].params["kind"] == "images" and runs[0].summary["images_added"] == 1

    # a refused import records nothing
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": 3}')
    imp.fmt.setCurrentIndex(0)
    imp.path.setText(str(bad))
    _run(qtbot, imp)
    assert imp.error and len(window.ctl.project.runs("import")) == 1


def test_open_folder_that_fails_leaves_no_project_behind(qtbot, settings, tmp_path, monkeypatch):
    """"Open image folder" creates the project through the transfer service: when reading
    the images fails, the project it created is removed and the images stay."""
    import cv2
    import numpy as np

    from pollenstudio.core.errors import ImageReadError
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project.schema import DB_NAME
    from pollenstudio.project.store import Project

    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"field{i}.png"), np.full((60, 80, 3), 40 * i, np.uint8))
    real_add_images = Project.add_images

    def add_then_fail(self, paths, progress=None, **kw):
        real_add_images(self, list(paths)[:1], progress=progress, **kw)  # one image is in, then:
        raise ImageReadError("the disk went away")

    monkeypatch.setattr(Project, "add_images", add_then_fail)
    errors = []
    monkeypatch.setattr("pollenstudio.gui.main_window.show_error", lambda parent, title, msg: errors.append((title, msg)))
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    win.open_folder(str(folder))
    qtbot.waitUntil(lambda: bool(errors), timeout=10000)
    assert errors[0][0] == "Cannot create project" and "disk went away" in errors[0][1]
    assert win.ctl.project is None
    assert not (folder / DB_NAME).exists()
    assert sorted(p.name for p in folder.iterdir()) == ["field0.png", "field1.png", "field2.png"]
    win.close()
