"""The grain model's class is shown "pollen (unidentified)" and kept "pollen" (issue 15, item 2):
one display helper (``core.types.display_taxon``) for every view; the store and every
interchange format (COCO, YOLO, CSV) keep the name as stored."""

import csv
import json

import cv2
import numpy as np

from pollenstudio.core.types import GRAIN_CLASS, GRAIN_CLASS_LABEL, UNIDENTIFIED, Box, Detection, display_taxon
from pollenstudio.project import Project


def test_display_taxon_names_only_the_grain_class():
    assert GRAIN_CLASS == "pollen" and display_taxon("pollen") == GRAIN_CLASS_LABEL == "pollen (unidentified)"
    assert display_taxon(" Pollen ") == GRAIN_CLASS_LABEL  # the same rule as is_unassigned_taxon
    for name in ("Betula", "Pollenites", UNIDENTIFIED, "pollen grain", ""):
        assert display_taxon(name) == name


def _grain_project(folder):
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "a.png"), np.full((120, 160, 3), 200, np.uint8))
    p = Project.create(folder)
    p.add_images([folder / "images" / "a.png"])
    img = p.images()[0].id
    ids = p.write_proposals(img, [Detection(Box(10, 10, 40, 40), 0, GRAIN_CLASS, 0.9),
                                  Detection(Box(60, 20, 90, 50), 0, GRAIN_CLASS, 0.8)]).written
    betula = p.ensure_categories(["Betula"])["Betula"]
    p.accept(ids[0])
    p.relabel(ids[1], betula)
    p.set_image_status(img, "reviewed")
    return p


def test_reports_show_the_label_and_interchange_keeps_pollen(tmp_path):
    from pollenstudio.project.pollen_report import csv_rows, build_report, write_report
    from pollenstudio.project.transfer import export_project

    p = _grain_project(tmp_path / "p")
    write_report(p, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "pollen (unidentified)" in text
    assert [r["taxon"] for r in csv_rows(build_report(p)) if r.get("taxon") != "Betula"] == ["pollen"]
    export_project(p, "coco", tmp_path / "c.json")
    coco = json.loads((tmp_path / "c.json").read_text())
    assert "pollen" in {c["name"] for c in coco["categories"]}
    assert not any("unidentified" in c["name"] for c in coco["categories"])
    export_project(p, "yolo", tmp_path / "y", copy_images=False)
    names = "".join(f.read_text() for f in (tmp_path / "y").rglob("classes.txt"))
    assert "pollen" in names and "unidentified" not in names
    export_project(p, "csv", tmp_path / "c.csv")
    with open(tmp_path / "c.csv", newline="", encoding="utf-8") as f:
        assert "pollen" in {r["taxon"] for r in csv.DictReader(f)}
    assert p.category_by_name("pollen") is not None and p.category_by_name(GRAIN_CLASS_LABEL) is None
    p.close()
