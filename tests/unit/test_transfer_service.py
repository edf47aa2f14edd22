"""The one import/export service (project.transfer) the CLI and the GUI both call."""

import json

import cv2
import numpy as np
import pytest

from pollenstudio.core.errors import Cancelled, ImportFormatError, PollenStudioError
from pollenstudio.core.progress import CancelToken
from pollenstudio.project import Project
from pollenstudio.project.schema import DB_NAME
from pollenstudio.project.transfer import detect_source, export_project, import_into, import_to_folder


def _img(path, value, w=40, h=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), value, np.uint8))


def _coco(folder, n=1):
    for i in range(n):
        _img(folder / f"im{i}.png", 10 + i)
    doc = {"images": [{"id": i, "file_name": f"im{i}.png", "width": 40, "height": 30} for i in range(n)],
           "categories": [{"id": 0, "name": "Betula"}],
           "annotations": [{"id": i, "image_id": i, "category_id": 0, "bbox": [2, 2, 10, 10]} for i in range(n)]}
    (folder / "ann.json").write_text(json.dumps(doc))
    return folder / "ann.json"


def test_detect_source_tells_coco_yolo_and_image_folders_apart(tmp_path):
    ann = _coco(tmp_path / "c")
    assert detect_source(ann) == ("coco", ann)
    assert detect_source(tmp_path / "c") == ("coco", ann)  # a folder holding one COCO file
    assert detect_source(tmp_path / "c", "images") == ("images", tmp_path / "c")
    (tmp_path / "y" / "labels").mkdir(parents=True)
    (tmp_path / "y" / "classes.txt").write_text("Betula\n")
    _img(tmp_path / "y" / "images" / "a.png", 3)
    (tmp_path / "y" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert detect_source(tmp_path / "y")[0] == "yolo"
    _img(tmp_path / "plain" / "a.png", 4)
    assert detect_source(tmp_path / "plain") == ("images", tmp_path / "plain")
    with pytest.raises(ImportFormatError, match="not found"):
        detect_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ImportFormatError, match="COCO"):
        detect_source(tmp_path / "x.txt")
    with pytest.raises(ImportFormatError, match="unknown import kind"):
        detect_source(ann, "pdf")


def test_import_records_a_run_with_its_summary(tmp_path):
    ann = _coco(tmp_path / "data", n=2)
    proj, res = import_to_folder(tmp_path / "proj", ann)
    with proj:
        assert res.created and res.kind == "coco" and res.summary["annotations_added"] == 2
        runs = proj.runs("import")
        assert [r.status for r in runs] == ["done"] and runs[0].id == res.run_id
        assert runs[0].params["kind"] == "coco" and runs[0].summary["annotations_added"] == 2


def test_failed_first_import_removes_the_project_it_created(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ImportFormatError, match="not valid JSON"):
        import_to_folder(tmp_path / "new", tmp_path / "bad.json")
    assert not (tmp_path / "new").exists()
    # a folder that existed keeps its other files; only the project goes
    (tmp_path / "slides").mkdir()
    _img(tmp_path / "slides" / "a.png", 7)
    with pytest.raises(ImportFormatError):
        import_to_folder(tmp_path / "slides", tmp_path / "bad.json")
    assert sorted(p.name for p in (tmp_path / "slides").iterdir()) == ["a.png"]


def test_cancelled_first_import_removes_the_project_too(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    for i, n in enumerate(names):
        _img(tmp_path / "slides" / n, 7 + i)
    tokens = []
    token = CancelToken(on_update=lambda done, total, msg: done >= 1 and tokens[0].cancel())
    tokens.append(token)
    with pytest.raises(Cancelled):  # cancelled after the first image was read
        import_to_folder(tmp_path / "slides", tmp_path / "slides", kind="images", progress=token)
    assert not (tmp_path / "slides" / DB_NAME).exists()
    assert sorted(p.name for p in (tmp_path / "slides").iterdir()) == names


def test_failed_import_into_an_existing_project_changes_nothing(tmp_path):
    proj, _ = import_to_folder(tmp_path / "proj", _coco(tmp_path / "data"))
    proj.close()
    (tmp_path / "bad.json").write_text('{"images": 3}')
    with pytest.raises(ImportFormatError):
        import_to_folder(tmp_path / "proj", tmp_path / "bad.json")
    with Project.open(tmp_path / "proj") as p:  # still there, as it was, no run for the failure
        assert len(p.images()) == 1 and [r.status for r in p.runs("import")] == ["done"]
        with pytest.raises(ImportFormatError):
            import_into(p, tmp_path / "bad.json")
        assert len(p.runs("import")) == 1


def test_export_dispatches_by_format_and_refuses_unknown_ones(tmp_path):
    proj, _ = import_to_folder(tmp_path / "proj", _coco(tmp_path / "data"))
    with proj:
        s = export_project(proj, "coco", tmp_path / "out.json")
        assert s["format"] == "coco" and s["annotations"] == 1
        assert export_project(proj, "csv", tmp_path / "c.csv")["format"] == "csv"
        assert export_project(proj, "yolo", tmp_path / "y", copy_images=False)["format"] == "yolo"
        with pytest.raises(PollenStudioError, match="unknown export format"):
            export_project(proj, "pdf", tmp_path / "x.pdf")
        assert not (tmp_path / "x.pdf").exists()
