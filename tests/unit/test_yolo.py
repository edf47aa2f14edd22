"""YOLO txt export/import round trips, real layouts, bad input; CSV count report."""

import csv
import sqlite3

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollenstudio.core.errors import ImportFormatError
from pollenstudio.core.types import AnnotationStatus, Box, Detection, ReviewStatus
from pollenstudio.project import Project
from pollenstudio.project.report import write_counts_csv
from pollenstudio.project.yolo import export_yolo, import_yolo


def _img(path, w, h, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), value, np.uint8))
    return path


def dump(project):
    conn = sqlite3.connect(project.db_path)
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("images", "categories", "annotations")}
    conn.close()
    return out


def boxes_of(project, ndigits=2):
    names = {c.id: c.name for c in project.categories()}
    return sorted(
        (project.image_path(r).stem, names[a.category_id],
         tuple(round(v, ndigits) for v in a.box.xyxy()), a.status.value)
        for r in project.images() for a in project.annotations(r.id)
    )


@pytest.fixture
def proj(tmp_path):
    p = Project.create(tmp_path / "proj")
    _img(tmp_path / "proj" / "a.png", 200, 100, 1)
    _img(tmp_path / "proj" / "b.png", 64, 64, 2)
    p.add_folder(tmp_path / "proj")
    b = p.add_category("Betula")
    q = p.add_category("Quercus")
    p.add_annotation(1, Box(10, 20, 50, 60), b)
    p.add_annotation(1, Box(100, 0, 200, 100), q)
    p.write_proposals(2, [Detection(Box(1, 1, 9, 9), 0, "Betula", 0.3)])
    yield p
    p.close()


def test_export_layout_and_normalised_lines(proj, tmp_path):
    out = tmp_path / "yolo"
    s = export_yolo(proj, out)
    assert s["images"] == 1 and s["annotations"] == 2
    assert (out / "classes.txt").read_text() == "Betula\nQuercus\n"
    lines = (out / "labels" / "a.txt").read_text().splitlines()
    assert lines == ["0 0.150000 0.400000 0.200000 0.400000", "1 0.750000 0.500000 0.500000 1.000000"]
    assert (out / "images" / "a.png").is_file()
    assert not (out / "labels" / "b.txt").exists()  # b is still in review


def test_round_trip_with_proposals_and_scores(proj, tmp_path):
    out = tmp_path / "yolo_all"
    export_yolo(proj, out, reviewed_only=False)
    assert (out / "labels" / "b.txt").read_text().split()[-1] == "0.300000"
    with Project.create(tmp_path / "q") as q:
        s = import_yolo(q, out)
        assert s.images_added == 2 and s.annotations_added == 3
        assert boxes_of(q) == boxes_of(proj)
        (prop,) = q.review_queue()
        assert prop.score == pytest.approx(0.3)
        # import again: nothing doubles
        s2 = import_yolo(q, out)
        assert (s2.images_reused, s2.annotations_added, s2.annotations_duplicate) == (2, 0, 3)


def test_import_side_by_side_subfolders_polygons_and_empty_labels(tmp_path):
    ds = tmp_path / "ds"
    (ds / "images" / "train").mkdir(parents=True)
    (ds / "labels" / "train").mkdir(parents=True)
    _img(ds / "images" / "train" / "s1.jpg", 100, 50, 3)
    _img(ds / "images" / "train" / "s2.jpg", 100, 50, 4)
    _img(ds / "images" / "train" / "s3.jpg", 100, 50, 5)
    (ds / "obj.names").write_text("Alnus\nPoaceae\n")
    (ds / "labels" / "train" / "s1.txt").write_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n0 0.5 0.5 0.2 0.2\n\n")
    (ds / "labels" / "train" / "s2.txt").write_text("")  # checked: no grains
    (ds / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with Project.create(tmp_path / "p") as p:
        s = import_yolo(p, ds)
        assert s.images_added == 3 and s.annotations_added == 2
        assert s.orphan_labels == [str(ds / "labels" / "orphan.txt")]
        poly, box = p.annotations(1)
        assert poly.box.xyxy() == pytest.approx((10, 10, 50, 30))
        assert poly.polygon == pytest.approx((10, 10, 50, 10, 50, 30, 10, 30))
        assert box.box.xyxy() == pytest.approx((40, 20, 60, 30)) and box.status is AnnotationStatus.ADDED
        assert [p.image(i).status for i in (1, 2, 3)] == [ReviewStatus.REVIEWED, ReviewStatus.REVIEWED, ReviewStatus.NEW]


BAD = {
    "class out of range": ("2 0.5 0.5 0.1 0.1", "not in classes.txt"),
    "not numbers": ("0 a b c d", "expected 'class cx cy w h'"),
    "too few values": ("0 0.5 0.5 0.1", "got 3 numbers"),
    "negative size": ("0 0.5 0.5 -0.1 0.1", "negative size"),
    "outside": ("0 0.95 0.5 0.2 0.1", "outside the image"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_labels_are_clear_errors_and_change_nothing(proj, tmp_path, case):
    line, msg = BAD[case]
    ds = tmp_path / "bad"
    _img(ds / "x.png", 30, 30, 7)
    (ds / "classes.txt").write_text("Betula\nNewTaxon\n")
    (ds / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    before = dump(proj)
    with pytest.raises(ImportFormatError, match=msg) as err:
        import_yolo(proj, ds)
    assert "x.txt line 2" in str(err.value)
    assert dump(proj) == before


def test_missing_class_list_is_an_error(tmp_path):
    (tmp_path / "ds").mkdir()
    with Project.create(tmp_path / "p") as p:
        with pytest.raises(ImportFormatError, match="classes.txt"):
            import_yolo(p, tmp_path / "ds")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(anns=st.lists(st.tuples(st.integers(0, 180), st.integers(0, 80), st.integers(2, 20), st.integers(2, 20),
                               st.integers(0, 2)), max_size=10))
def test_property_random_sets_round_trip_within_rounding(tmp_path_factory, anns):
    base = tmp_path_factory.mktemp("y")
    with Project.create(base / "p") as p:
        _img(base / "p" / "a.png", 200, 100, 1)
        p.add_images([base / "p" / "a.png"])
        cats = [p.add_category(n) for n in ("Alnus", "Betula", "Corylus")]
        uniq = {(Box(x, y, x + w, y + h), c) for x, y, w, h, c in anns}
        for box, c in uniq:
            p.add_annotation(1, box, cats[c])
        p.set_image_status(1, ReviewStatus.REVIEWED)
        export_yolo(p, base / "out", copy_images=True)
        with Project.create(base / "q") as q:
            import_yolo(q, base / "out")
            assert boxes_of(q) == boxes_of(p)  # 6 decimals of 200 px: well under 0.01 px


def test_csv_counts_percentages_and_micrometre_sizes(proj, tmp_path):
    proj.set_um_per_px(0.5, [1])
    s = write_counts_csv(proj, tmp_path / "counts.csv")
    assert s["grains"] == 2 and s["images"] == 1
    rows = list(csv.DictReader(open(tmp_path / "counts.csv")))
    img_rows = [r for r in rows if r["scope"] == "image"]
    assert [(r["taxon"], r["count"], r["percent"]) for r in img_rows] == [("Betula", "1", "50.0"), ("Quercus", "1", "50.0")]
    assert float(img_rows[0]["mean_size_um"]) == pytest.approx(20.0)  # (40 + 40) / 2 px * 0.5 um
    assert float(img_rows[1]["max_size_um"]) == pytest.approx(50.0)
    write_counts_csv(proj, tmp_path / "all.csv", reviewed_only=False)
    taxa = {r["taxon"]: r for r in csv.DictReader(open(tmp_path / "all.csv")) if r["scope"] == "taxon"}
    assert taxa["Betula"]["count"] == "2" and taxa["Betula"]["percent"] == pytest.approx("66.67")
    assert taxa["Betula"]["mean_size_um"] == "20.0"  # the uncalibrated image adds no size
