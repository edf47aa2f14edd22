"""`pollenstudio import` / `export` as a script would use them: exit codes and --json."""

import json
import subprocess
import sys

import cv2
import numpy as np


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pollenstudio", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _img(path, w, h, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), value, np.uint8))


def test_coco_import_then_export_all_formats(tmp_path):
    _img(tmp_path / "data" / "a.png", 80, 60, 1)
    _img(tmp_path / "data" / "b.png", 80, 60, 2)
    coco = {"images": [{"id": 0, "file_name": "a.png", "width": 80, "height": 60},
                       {"id": 1, "file_name": "b.png", "width": 80, "height": 60}],
            "categories": [{"id": 0, "name": "Betula"}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "bbox": [5, 5, 20, 20]},
                            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 1, 10, 10], "score": 0.4}]}
    (tmp_path / "data" / "ann.json").write_text(json.dumps(coco))
    proj = tmp_path / "proj"
    res = _cli("import", proj, tmp_path / "data" / "ann.json", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["created"] is True and summary["kind"] == "coco" and summary["annotations_added"] == 2

    res = _cli("export", proj, "--format", "coco", "--out", tmp_path / "out" / "reviewed.json", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["annotations"] == 1  # the scored one is an undecided proposal
    res = _cli("export", proj, "--format", "coco", "--out", tmp_path / "out" / "all.json", "--all", "--json")
    assert json.loads(res.stdout)["annotations"] == 2
    res = _cli("export", proj, "--format", "yolo", "--out", tmp_path / "yolo", "--json")
    assert res.returncode == 0 and (tmp_path / "yolo" / "labels" / "a.txt").read_text().startswith("0 ")
    res = _cli("export", proj, "--format", "csv", "--out", tmp_path / "counts.csv")
    assert res.returncode == 0 and "Betula" in (tmp_path / "counts.csv").read_text()

    # the YOLO folder imports back into a new project
    res = _cli("import", tmp_path / "proj2", tmp_path / "yolo", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["kind"] == "yolo" and json.loads(res.stdout)["annotations_added"] == 1


def test_image_folder_import_reports_unreadable_files(tmp_path):
    _img(tmp_path / "imgs" / "x.png", 16, 16, 3)
    (tmp_path / "imgs" / "broken.tif").write_bytes(b"II*\x00garbage")
    res = _cli("import", tmp_path / "p", tmp_path / "imgs", "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["kind"] == "images" and s["images_added"] == 1 and len(s["unreadable"]) == 1


def test_errors_exit_1_usage_exit_2_and_nothing_is_left_behind(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    res = _cli("import", tmp_path / "newproj", tmp_path / "bad.json")
    assert res.returncode == 1 and "not valid JSON" in res.stderr
    assert not (tmp_path / "newproj").exists()  # a failed first import creates no project
    res = _cli("export", tmp_path / "nowhere", "--format", "coco", "--out", tmp_path / "x.json")
    assert res.returncode == 1 and "error:" in res.stderr
    res = _cli("export", tmp_path, "--format", "pdf", "--out", "x")
    assert res.returncode == 2


def test_roboflow_style_coco_folder_is_recognised(tmp_path):
    _img(tmp_path / "rf" / "train" / "x.jpg", 40, 40, 5)
    coco = {"images": [{"id": 0, "file_name": "x.jpg", "width": 40, "height": 40}],
            "categories": [{"id": 0, "name": "pollen", "supercategory": "none"},
                           {"id": 1, "name": "Alnus", "supercategory": "pollen"}],
            "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 1, 9, 9], "segmentation": []}]}
    (tmp_path / "rf" / "train" / "_annotations.coco.json").write_text(json.dumps(coco))
    res = _cli("import", tmp_path / "p", tmp_path / "rf", "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["kind"] == "coco" and s["annotations_added"] == 1 and s["categories_skipped"] == ["pollen"]
