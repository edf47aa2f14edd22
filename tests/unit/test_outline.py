"""A grain's outline (issue 20): measured by one function (``core.outline``), stored per
annotation through the undoable edit path (survives reopening, undo and redo), dropped when
its box moves, exported as COCO segmentation + area and in the per-grain CSV (µm with a
scale), and read back from COCO."""

import csv
import json
import math

import cv2
import numpy as np
import pytest

from pollenstudio.core.errors import ProjectError
from pollenstudio.core.outline import check_outline, outline_size, polygon_area
from pollenstudio.core.types import Box
from pollenstudio.project import Project


def ellipse_polygon(cx, cy, a, b, deg, n=200):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    th = math.radians(deg)
    x = cx + a * np.cos(t) * math.cos(th) - b * np.sin(t) * math.sin(th)
    y = cy + a * np.cos(t) * math.sin(th) + b * np.sin(t) * math.cos(th)
    return np.stack([x, y], 1).reshape(-1).tolist()


def test_outline_size_measures_a_drawn_ellipse_and_a_square():
    s = outline_size(ellipse_polygon(150, 120, 40, 25, 30))
    assert s.major_px == pytest.approx(80, rel=1e-3) and s.minor_px == pytest.approx(50, rel=1e-3)
    assert s.angle_deg == pytest.approx(30, abs=0.1) and s.centre == pytest.approx((150, 120))
    assert s.area_px == pytest.approx(math.pi * 40 * 25, rel=1e-3) and s.ratio == pytest.approx(1.6, rel=1e-3)
    # hand-computed: a 10 x 10 square has area 100 and second moments 100/12 each way:
    # full axes 4 * sqrt(100 / 12) = 11.547; the winding does not matter
    sq = [0, 0, 10, 0, 10, 10, 0, 10]
    for poly in (sq, [0, 0, 0, 10, 10, 10, 10, 0]):
        s = outline_size(poly)
        assert s.area_px == pytest.approx(100) and polygon_area(poly) == pytest.approx(100)
        assert s.major_px == pytest.approx(4 * math.sqrt(100 / 12)) and s.minor_px == pytest.approx(s.major_px)
    assert s.describe(0.5).startswith("ellipse 5.8 × 5.8 µm, area 25 µm²")
    assert outline_size([0, 0, 5, 5, 10, 10]) is None  # no area


@pytest.mark.parametrize("bad", [[1, 2, 3, 4], [1, 2, 3, 4, 5], [0, 0, 5, 0, float("nan"), 5],
                                 [0, 0, 5, 5, 10, 10], ["a", 1, 2, 3, 4, 5], [0.0, 0.0] * 5000])
def test_bad_outlines_are_refused(bad):
    with pytest.raises(ProjectError):
        check_outline(bad)


@pytest.fixture
def slide_project(tmp_path):
    img = np.full((240, 320, 3), (226, 218, 204), np.uint8)
    cv2.ellipse(img, (100, 120), (40, 25), 20, 0, 360, (150, 100, 70), -1)
    cv2.imwrite(str(tmp_path / "slide.png"), img[..., ::-1])
    p = Project.create(tmp_path / "p")
    p.add_images([tmp_path / "slide.png"], group="S1", um_per_px=0.5)
    cid = p.add_category("Betula")
    aid = p.add_annotation(1, Box(55, 90, 145, 150), cid)
    p.set_image_status(1, "reviewed")
    p.clear_history()
    yield p, aid
    p.close()


def test_fitted_outline_is_stored_undone_redone_and_kept_across_reopening(slide_project, tmp_path):
    from pollenstudio.core.imageio import read_image
    from pollenstudio.engine.shape import fit_outline

    p, aid = slide_project
    shape = fit_outline(read_image(p.image_path(1)), p.annotation(aid).box)
    assert shape is not None and shape.major_px == pytest.approx(80, rel=0.05)
    a = p.set_outline(aid, shape.polygon)
    assert a.polygon == pytest.approx(tuple(shape.polygon)) and p.undo_label() == "measure outline"
    assert a.status.value == "added"  # measuring is not a review decision
    # what the panel says is what the stored outline says
    assert outline_size(a.polygon).describe(0.5) == shape.describe(0.5)
    p.close()
    p = Project.open(tmp_path / "p")
    assert p.annotation(aid).polygon == pytest.approx(tuple(shape.polygon))
    assert list(p.outlines()) == [aid]
    p.undo()
    assert p.annotation(aid).polygon is None and p.outlines() == {}
    p.redo()
    assert p.annotation(aid).polygon == pytest.approx(tuple(shape.polygon))
    # bad outlines change nothing
    with pytest.raises(ProjectError):
        p.set_outline(aid, [0, 0, 400, 0, 400, 10])  # past the 320 px wide image
    with pytest.raises(ProjectError):
        p.set_outlines({aid: None, 999: [0, 0, 5, 0, 5, 5]})  # no annotation 999: not even the first is removed
    assert p.annotation(aid).polygon is not None and p.undo_label() == "measure outline"
    p.close()


def test_a_moved_or_resized_box_drops_its_outline_and_undo_brings_it_back(slide_project):
    p, aid = slide_project
    poly = ellipse_polygon(100, 120, 40, 25, 20, n=60)
    p.set_outline(aid, poly)
    box = p.annotation(aid).box
    assert p.move_annotation(aid, box.translated(4, 0)).polygon is None
    p.undo()
    assert p.annotation(aid).polygon == pytest.approx(tuple(poly)) and p.annotation(aid).box == box
    assert p.resize_annotation(aid, Box(box.x1, box.y1, box.x2 + 10, box.y2)).polygon is None
    p.undo()
    assert p.move_annotation(aid, box).polygon is not None  # not moved at all: kept


def test_outline_goes_to_coco_and_the_grain_csv_and_comes_back(slide_project, tmp_path):
    from pollenstudio.project.coco import import_coco
    from pollenstudio.project.report import GRAIN_COLUMNS
    from pollenstudio.project.transfer import export_project

    p, aid = slide_project
    poly = ellipse_polygon(100, 120, 40, 25, 20, n=120)
    p.set_outline(aid, poly)
    other = p.add_annotation(1, Box(200, 20, 230, 60), p.category_by_name("Betula").id)  # no outline
    export_project(p, "coco", tmp_path / "c.json")
    coco = json.loads((tmp_path / "c.json").read_text())
    ann = {a["id"]: a for a in coco["annotations"]}
    seg = next(a for a in coco["annotations"] if a["segmentation"])
    assert seg["segmentation"][0] == pytest.approx(poly) and seg["area"] == pytest.approx(polygon_area(poly))
    assert len(ann) == 2 and sum(1 for a in ann.values() if not a["segmentation"]) == 1
    q = Project.create(tmp_path / "q")
    import_coco(q, tmp_path / "c.json", images_root=tmp_path)
    back = [a.polygon for r in q.images() for a in q.annotations(r.id) if a.polygon]
    assert len(back) == 1 and back[0] == pytest.approx(tuple(poly))
    q.close()

    summary = export_project(p, "grains", tmp_path / "g.csv")
    assert summary["grains"] == 2 and summary["outlines"] == 1
    with open(tmp_path / "g.csv", newline="", encoding="utf-8") as f:
        rows = {int(r["annotation_id"]): r for r in csv.DictReader(f)}
    assert list(rows[aid]) == GRAIN_COLUMNS
    r = rows[aid]
    assert float(r["major_um"]) == pytest.approx(40.0, abs=0.03) and float(r["minor_um"]) == pytest.approx(25.0, abs=0.03)
    assert float(r["area_um2"]) == pytest.approx(math.pi * 40 * 25 * 0.25, rel=1e-3)
    assert float(r["pe_ratio"]) == pytest.approx(1.6, abs=1e-3) and r["sample"] == "S1" and r["taxon"] == "Betula"
    assert float(r["box_long_um"]) == pytest.approx(45.0)
    assert rows[other]["major_um"] == "" and rows[other]["outline_points"] == ""
    # without a scale: pixels only
    p.set_um_per_px(None)
    export_project(p, "grains", tmp_path / "g2.csv")
    with open(tmp_path / "g2.csv", newline="", encoding="utf-8") as f:
        r = next(x for x in csv.DictReader(f) if int(x["annotation_id"]) == aid)
    assert r["major_um"] == r["area_um2"] == "" and float(r["major_px"]) == pytest.approx(80.0, abs=0.05)


def test_cli_exports_the_grain_csv(slide_project, tmp_path, capsys):
    from pollenstudio.cli import main

    p, aid = slide_project
    p.set_outline(aid, ellipse_polygon(100, 120, 40, 25, 20, n=60))
    folder = p.folder
    p.close()
    out = tmp_path / "grains.csv"
    assert main(["export", str(folder), "--format", "grains", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "grains" and summary["grains"] == 1 and summary["outlines"] == 1
    with open(out, newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["annotation_id"]) == aid and float(row["pe_ratio"]) == pytest.approx(1.6, abs=0.01)
