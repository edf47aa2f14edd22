"""Issue 17: bad import input is refused in words and changes nothing; every writer of user
files is atomic (unique temp file + rename); YOLO export clears only its own old files."""

import errno
import json
import os
import sqlite3
import threading

import cv2
import numpy as np
import pytest

from pollenstudio.core.atomic import WriteError
from pollenstudio.core.errors import ImportFormatError, PollenStudioError, ProjectError
from pollenstudio.core.types import Box, Detection
from pollenstudio.project import Project
from pollenstudio.project.coco import export_coco, import_coco
from pollenstudio.project.report import write_counts_csv
from pollenstudio.project.transfer import import_to_folder
from pollenstudio.project.yolo import export_yolo, import_yolo


def _img(path, w=64, h=48, value=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), value, np.uint8))
    return path


def dump(project):
    conn = sqlite3.connect(project.db_path)
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
           for t in ("images", "categories", "annotations", "runs", "history")}
    conn.close()
    return out


@pytest.fixture
def proj(tmp_path):
    p = Project.create(tmp_path / "proj")
    _img(tmp_path / "proj" / "a.png", 64, 48, 1)
    _img(tmp_path / "proj" / "b.png", 64, 48, 2)
    p.add_folder(tmp_path / "proj")
    b = p.add_category("Betula")
    p.add_annotation(1, Box(10, 10, 30, 30), b)  # image 1 reviewed
    p.write_proposals(2, [Detection(Box(5, 5, 20, 20), 0, "Betula", 0.6)])  # image 2 undecided
    yield p
    p.close()


def _coco(tmp_path, images, annotations, categories=None, name="in.json", raw=None):
    doc = {"images": images, "annotations": annotations,
           "categories": categories if categories is not None else [{"id": 1, "name": "Olea"}]}
    path = tmp_path / name
    path.write_text(raw if raw is not None else json.dumps(doc), encoding="utf-8")
    return path


# ------------------------------------------------------------------------- COCO input
BAD_COCO = {
    # F2: the same file under two image ids would make duplicate rows
    "same file twice": ([{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}], []),
    "same file two spellings": ([{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "./sub/../a.png"}], []),
    "score 1e9": ([{"id": 1, "file_name": "a.png"}],
                  [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 1e9}]),
    "score -3": ([{"id": 1, "file_name": "a.png"}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": -3}]),
    "polygon far outside": ([{"id": 1, "file_name": "a.png"}],
                            [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                              "segmentation": [[1, 1, 5000, 1, 5000, 9000, 1, 9000]]}]),
    "empty file_name": ([{"id": 1, "file_name": "", "width": 10, "height": 10}], []),
    "directory file_name": ([{"id": 1, "file_name": "sub", "width": 10, "height": 10}], []),
    # F1: values that used to raise tracebacks
    "width 1e300": ([{"id": 1, "file_name": "zz.png", "width": 1e300, "height": 10}], []),
    "NUL in file_name": ([{"id": 1, "file_name": "a\x00.png", "width": 10, "height": 10}], []),
    "list as annotation id": ([{"id": 1, "file_name": "a.png"}],
                              [{"id": [1], "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]),
    "list as image_id": ([{"id": 1, "file_name": "a.png"}],
                         [{"id": 1, "image_id": [1], "category_id": 1, "bbox": [1, 1, 5, 5]}]),
    "dict as category_id": ([{"id": 1, "file_name": "a.png"}],
                            [{"id": 1, "image_id": 1, "category_id": {"a": 1}, "bbox": [1, 1, 5, 5]}]),
}


@pytest.mark.parametrize("case", sorted(BAD_COCO))
def test_bad_coco_values_are_refused_and_change_nothing(proj, tmp_path, case):
    (tmp_path / "proj" / "sub").mkdir(exist_ok=True)
    images, anns = BAD_COCO[case]
    path = _coco(tmp_path / "proj", images, anns)
    before = dump(proj)
    with pytest.raises(ImportFormatError):
        import_coco(proj, path)
    assert dump(proj) == before


@pytest.mark.parametrize("name", [{"a": 1}, ["Olea"], "Ole\na", "Ol\rea", "x" * 500, 7])
def test_bad_taxon_names_in_coco_are_refused(proj, tmp_path, name):
    """F2/F3: a JSON object as a name, or one with a line break, never becomes a taxon."""
    path = _coco(tmp_path / "proj", [{"id": 1, "file_name": "a.png"}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                 categories=[{"id": 1, "name": name}])
    before = dump(proj)
    with pytest.raises(ImportFormatError):
        import_coco(proj, path)
    assert dump(proj) == before


@pytest.mark.parametrize("raw", [
    '{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "O"}], "annotations": '
    '[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1' + "0" * 400 + ', 5]}]}',
    "[" * 100_000 + "]" * 100_000,
    '{"images": [], "categories": [], "annotations": [], "x": 1' + "1" * 5000 + "}",
])
def test_coco_json_that_broke_the_parser_is_refused(proj, tmp_path, raw):
    """F1: an integer of 400 digits as a coordinate, deeply nested arrays, a 5000-digit number."""
    path = _coco(tmp_path / "proj", [], [], raw=raw)
    before = dump(proj)
    with pytest.raises(ImportFormatError):
        import_coco(proj, path)
    assert dump(proj) == before


def test_bad_images_folder_is_refused_before_anything_is_written(tmp_path):
    """F4: `import P file.json --images no_such_dir` used to register every image as missing."""
    _img(tmp_path / "data" / "a.png")
    path = _coco(tmp_path / "data", [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                 [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(ImportFormatError, match="not found"):
        import_to_folder(tmp_path / "new", path, images_root=tmp_path / "no_such_dir")
    assert not (tmp_path / "new").exists()
    (tmp_path / "elsewhere").mkdir()  # a folder that exists but holds none of the images
    with pytest.raises(ImportFormatError, match="none of the 1 image"):
        import_to_folder(tmp_path / "new", path, images_root=tmp_path / "elsewhere")
    assert not (tmp_path / "new").exists()


def test_reimport_with_the_right_folder_adopts_missing_images(tmp_path):
    """F4: images registered as missing (older versions, or files moved since) are found by a
    later import of the right folder: no duplicate images or annotations."""
    _img(tmp_path / "data" / "a.png", 64, 48, 5)
    doc = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    (tmp_path / "wrong").mkdir()
    wrong = _coco(tmp_path / "wrong", doc, anns)  # no image beside it: registered missing
    p = Project.create(tmp_path / "p")
    import_coco(p, wrong)
    assert len(p.missing_images()) == 1
    right = _coco(tmp_path / "data", doc, anns)
    s = import_coco(p, right)
    assert p.image_count() == 1 and p.annotation_count() == 1
    assert s.images_relinked == 1 and s.annotations_added == 0
    assert p.missing_images() == []
    p.close()


def test_reimport_of_a_moved_folder_relinks_instead_of_keeping_old_paths(tmp_path):
    """F5: the moved images are the same content; the project follows them."""
    a = _img(tmp_path / "old" / "a.png", 64, 48, 7)
    doc = [{"id": 1, "file_name": "a.png"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    p = Project.create(tmp_path / "p")
    import_coco(p, _coco(tmp_path / "old", doc, anns))
    (tmp_path / "new").mkdir()
    os.rename(a, tmp_path / "new" / "a.png")
    s = import_coco(p, _coco(tmp_path / "new", doc, anns))
    assert s.images_relinked == 1 and p.image_count() == 1 and p.annotation_count() == 1
    assert p.image_path(1) == (tmp_path / "new" / "a.png").resolve()
    p.close()


# ------------------------------------------------------------------------- YOLO input
def _yolo(tmp_path, classes=b"Olea\n", label="0 0.5 0.5 0.2 0.2\n"):
    d = tmp_path / "yolo"
    _img(d / "images" / "x.png")
    (d / "labels").mkdir(parents=True, exist_ok=True)
    (d / "classes.txt").write_bytes(classes)
    if label is not None:
        (d / "labels" / "x.txt").write_text(label)
    return d


@pytest.mark.parametrize("classes,label", [
    (b"Olea\n", "0 0.5 0.5 0.2 0.2 7.5\n"),  # F2: score 7.5
    (b"Olea\n", "0 0.5 0.5 0.2 0.2 -1\n"),
    (b"Ol\xe9a\n", "0 0.5 0.5 0.2 0.2\n"),  # F1: classes.txt not UTF-8
    (b"Olea\x0bBetula\n", "0 0.5 0.5 0.2 0.2\n"),  # F3: a vertical tab splits lines elsewhere
    (b"Olea\n", "1" * 5000 + " 0.5 0.5 0.2 0.2\n"),
])
def test_bad_yolo_input_is_refused_and_changes_nothing(proj, tmp_path, classes, label):
    d = _yolo(tmp_path, classes, label)
    before = dump(proj)
    with pytest.raises(ImportFormatError):
        import_yolo(proj, d)
    assert dump(proj) == before


def test_a_fifo_named_like_a_label_does_not_hang_import(proj, tmp_path):
    """F13: reading a FIFO blocks forever; only regular files are labels."""
    d = _yolo(tmp_path, label=None)
    os.mkfifo(d / "labels" / "x.txt")
    result = {}

    def work():
        try:
            result["summary"] = import_yolo(proj, d)
        except PollenStudioError as exc:
            result["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "import blocked on a FIFO"
    assert "summary" in result or "error" in result


# ------------------------------------------------------------------------- taxon names
def test_taxon_names_with_line_breaks_are_refused(proj):
    """F3: a newline in a taxon name would add a line to classes.txt and shift indices."""
    for bad in ("Ole\na", "Ol\r\nea", "a\x00b", "tab\tname"):
        with pytest.raises(ProjectError):
            proj.add_category(bad)
        with pytest.raises(ProjectError):
            proj.rename_category(1, bad)
    assert [c.name for c in proj.categories()] == ["Betula"]


def test_yolo_export_refuses_a_name_with_a_line_break(proj, tmp_path):
    """F3: a project made before the rule (written directly) must not export shifted indices."""
    with proj._tx() as conn:
        conn.execute("UPDATE categories SET name = 'Bet\nula' WHERE id = 1")
    with pytest.raises(WriteError, match="line break"):
        export_yolo(proj, tmp_path / "out")
    assert not (tmp_path / "out" / "classes.txt").exists()


# ------------------------------------------------------------------------- writers
def test_yolo_export_clears_its_own_stale_files_and_only_those(proj, tmp_path):
    """F9: a reviewed-only export into a folder holding an --all export kept the proposals."""
    out = tmp_path / "out"
    export_yolo(proj, out, reviewed_only=False)
    assert (out / "labels" / "b.txt").read_text().strip()  # the proposal, with a score
    (out / "notes.txt").write_text("mine")
    (out / "labels" / "mine.txt").write_text("user file")
    s = export_yolo(proj, out, reviewed_only=True)
    assert s["images"] == 1
    assert not (out / "labels" / "b.txt").exists()
    assert not (out / "images" / "b.png").exists()
    assert (out / "labels" / "a.txt").read_text().strip()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "labels" / "mine.txt").read_text() == "user file"
    assert not [p for p in out.rglob("*.tmp")]


def test_csv_on_a_full_disk_keeps_the_previous_report(proj, tmp_path, monkeypatch):
    """F12: the previous report used to be truncated (and a traceback printed)."""
    import csv

    out = tmp_path / "counts.csv"
    write_counts_csv(proj, out)
    good = out.read_bytes()

    def full_disk(self, rows):
        self.writer.writerow(["partial"])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    with pytest.raises(WriteError, match="No space left"):
        write_counts_csv(proj, out)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["counts.csv"]


def test_coco_failed_write_leaves_no_temp_file(proj, tmp_path, monkeypatch):
    """F12: COCO kept the old file but left a .tmp behind."""
    out = tmp_path / "x.json"
    export_coco(proj, out)
    good = out.read_bytes()
    real = os.replace

    def failing(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(WriteError):
        export_coco(proj, out)
    monkeypatch.setattr(os, "replace", real)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["x.json"]


def test_export_never_writes_through_a_planted_symlink(proj, tmp_path):
    """F10: a symlink at the fixed `<out>.tmp` name redirected the export."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "x.json"
    os.symlink(victim, tmp_path / "x.json.tmp")
    export_coco(proj, out)
    assert victim.read_text() == "precious"
    assert json.loads(out.read_text())["images"]
    # and YOLO: a symlink where a label or image goes is replaced, not followed
    yout = tmp_path / "y"
    (yout / "labels").mkdir(parents=True)
    (yout / "images").mkdir()
    os.symlink(victim, yout / "labels" / "a.txt")
    os.symlink(victim, yout / "images" / "a.png")
    export_yolo(proj, yout)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("fmt", ["coco", "csv"])
def test_output_that_is_a_folder_or_empty_is_refused(proj, tmp_path, fmt):
    """F8: `--out EXISTING_DIR` left a .tmp; `--out ''` gave a traceback."""
    from pollenstudio.project.transfer import export_project

    (tmp_path / "dir").mkdir()
    for bad in (tmp_path / "dir", ""):
        with pytest.raises(WriteError):
            export_project(proj, fmt, bad)
    assert list((tmp_path / "dir").iterdir()) == []
    with pytest.raises(WriteError):
        export_project(proj, fmt, "/proc/pollen_test_out")
