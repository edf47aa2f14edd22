"""COCO export validity (pycocotools), round trips, real-world files, and bad input."""

import json
import sqlite3

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollenstudio.core.errors import ImportFormatError
from pollenstudio.core.types import AnnotationStatus, Box, Detection, ReviewStatus, Source
from pollenstudio.project import Project
from pollenstudio.project.coco import export_coco, import_coco


def _img(path, w, h, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), value, np.uint8))
    return path


def dump(project):
    """Every table of the project, to compare before/after."""
    conn = sqlite3.connect(project.db_path)
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
           for t in ("images", "categories", "annotations", "model_versions", "runs", "history")}
    conn.close()
    return out


def labels_of(project):
    """Annotations as comparable tuples: (image file name, taxon, rounded box, status, polygon)."""
    names = {c.id: c.name for c in project.categories()}
    out = []
    for rec in project.images():
        for a in project.annotations(rec.id):
            out.append((project.image_path(rec).name, names[a.category_id], tuple(round(v, 4) for v in a.box.xyxy()),
                        a.status.value, a.polygon and tuple(round(v, 4) for v in a.polygon)))
    return sorted(out, key=repr)


@pytest.fixture
def proj(tmp_path):
    p = Project.create(tmp_path / "proj")
    _img(tmp_path / "proj" / "img" / "a.png", 200, 150, 10)
    _img(tmp_path / "proj" / "img" / "sub" / "b.png", 100, 80, 20)
    _img(tmp_path / "proj" / "img" / "c.png", 64, 64, 30)
    p.add_folder(tmp_path / "proj" / "img")
    betula = p.add_category("Betula")
    p.add_category("Pinus")
    p.add_annotation(1, Box(10, 10, 50, 40), betula, polygon=[10, 10, 50, 10, 50, 40, 10, 40])
    p.write_proposals(1, [Detection(Box(100, 100, 130, 140), 1, "Pinus", 0.7)])
    p.accept(p.review_queue()[0].id)
    p.write_proposals(2, [Detection(Box(5, 5, 20, 20), 0, "Betula", 0.4)])  # stays undecided
    yield p
    p.close()


def test_reviewed_export_is_valid_coco(proj, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "export" / "ann.json"
    summary = export_coco(proj, out)
    assert summary["images"] == 1 and summary["annotations"] == 2
    coco = COCO(str(out))
    doc = json.loads(out.read_text())
    assert [c["id"] for c in doc["categories"]] == [1, 2]
    assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
    assert min(a["id"] for a in doc["annotations"]) >= 1 and min(i["id"] for i in doc["images"]) >= 1
    (img,) = doc["images"]
    assert (img["width"], img["height"]) == (200, 150)
    assert (out.parent / img["file_name"]).resolve() == proj.image_path(1)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
    by_cat = {coco.loadCats(a["category_id"])[0]["name"]: a for a in anns}
    assert by_cat["Betula"]["bbox"] == [10, 10, 40, 30]
    assert by_cat["Betula"]["area"] == pytest.approx(1200)
    assert by_cat["Betula"]["segmentation"] == [[10, 10, 50, 10, 50, 40, 10, 40]]
    assert by_cat["Pinus"]["segmentation"] == [] and by_cat["Pinus"]["iscrowd"] == 0
    assert "score" not in by_cat["Pinus"]  # reviewed labels carry no scores


def test_all_export_has_scores_and_round_trips_statuses(proj, tmp_path):
    out = tmp_path / "all.json"
    summary = export_coco(proj, out, reviewed_only=False)
    assert summary["images"] == 3 and summary["annotations"] == 3
    doc = json.loads(out.read_text())
    scored = [a for a in doc["annotations"] if "score" in a]
    assert sorted(a["score"] for a in scored) == pytest.approx([0.4, 0.7])
    with Project.create(tmp_path / "copy") as q:
        import_coco(q, out)
        assert labels_of(q) == labels_of(proj)
        (prop,) = q.review_queue()
        assert prop.score == pytest.approx(0.4) and prop.source is Source.MODEL


def test_import_export_import_round_trip(proj, tmp_path):
    first = tmp_path / "first.json"
    export_coco(proj, first)
    with Project.create(tmp_path / "p2") as p2:
        s = import_coco(p2, first)
        assert s.annotations_added == 2 and s.images_added == 1
        assert p2.image(1).status is ReviewStatus.REVIEWED
        second = tmp_path / "again" / "second.json"
        export_coco(p2, second)
        with Project.create(tmp_path / "p3") as p3:
            import_coco(p3, second)
            assert labels_of(p3) == labels_of(p2)
            assert all(a.status is AnnotationStatus.ADDED for a in p3.annotations(1))


def test_reimport_changes_nothing(proj, tmp_path):
    out = tmp_path / "x.json"
    export_coco(proj, out)
    with Project.create(tmp_path / "p2") as p2:
        import_coco(p2, out)
        before = labels_of(p2)
        s = import_coco(p2, out)
        assert (s.images_added, s.images_reused, s.annotations_added, s.annotations_duplicate) == (0, 1, 0, 2)
        assert labels_of(p2) == before


def test_real_world_roboflow_style_file(tmp_path):
    ds = tmp_path / "ds"
    _img(ds / "train" / "slide1_0001.jpg", 120, 90, 5)
    _img(ds / "train" / "slide1_0002.jpg", 60, 60, 6)
    doc = {
        "info": {"year": "2024", "description": "Exported from roboflow.com"},
        "licenses": [{"id": 1, "name": "CC BY 4.0"}],
        "categories": [
            {"id": 0, "name": "pollen-grains", "supercategory": "none"},
            {"id": 1, "name": "Alnus", "supercategory": "pollen-grains"},
            {"id": 2, "name": "Quercus", "supercategory": "pollen-grains"},
        ],
        "images": [
            {"id": 0, "file_name": "train/slide1_0001.jpg", "height": 90, "width": 120, "date_captured": "x"},
            {"id": 1, "file_name": "train/slide1_0002.jpg"},  # width/height absent: read from the file
        ],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 1, "bbox": [10.5, 20.25, 30, 25.5], "area": 765.0001,
             "segmentation": [], "iscrowd": 0, "attributes": {"occluded": False}},
            {"id": 1, "image_id": 0, "category_id": 2, "bbox": [60, 40, 60.4, 50.3], "area": 3038.12,
             "segmentation": [[60, 40, 120, 40, 120, 90, 60, 90]]},  # overshoots by < 1 px: clipped
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},
        ],
    }
    f = ds / "_annotations.coco.json"
    f.write_text(json.dumps(doc))
    with Project.create(tmp_path / "p") as p:
        s = import_coco(p, f)
        assert s.categories_skipped == ["pollen-grains"]
        assert [c.name for c in p.categories()] == ["Alnus", "Quercus"]
        assert s.images_added == 2 and s.annotations_added == 3 and not s.missing_files
        a0, a1 = p.annotations(1)
        assert a0.box.xywh() == pytest.approx((10.5, 20.25, 30, 25.5))
        assert a1.box.xyxy() == pytest.approx((60, 40, 120, 90))
        assert a1.polygon == (60, 40, 120, 40, 120, 90, 60, 90)
        assert (p.image(2).width, p.image(2).height) == (60, 60)
        assert p.image(1).path.endswith("ds/train/slide1_0001.jpg")


def test_missing_image_files_are_registered_and_relinked_later(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "gone.png", "width": 40, "height": 30}],
           "categories": [{"id": 1, "name": "Tilia"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}]}
    f = tmp_path / "c.json"
    f.write_text(json.dumps(doc))
    with Project.create(tmp_path / "p") as p:
        s = import_coco(p, f)
        assert s.missing_files == ["gone.png"] and s.annotations_added == 1
        assert [r.id for r in p.missing_images()] == [1]
        src = _img(tmp_path / "found" / "gone.png", 40, 30, 9)
        assert src.exists()
        _img(tmp_path / "found" / "a_other" / "gone.png", 50, 50, 9)  # same name, wrong size: not it
        assert p.relink(tmp_path / "found") == {1: "../found/gone.png"}
        assert p.missing_images() == [] and len(p.image(1).sha256) == 64


def image_facts(project):
    """Per image file name: review status, calibration, group."""
    return {project.image_path(r).name: (r.status.value, r.um_per_px, r.group) for r in project.images()}


def taxon_facts(project):
    names = {c.id: c.name for c in project.categories()}
    return {c.name: (c.color, c.hotkey, names.get(c.parent_id)) for c in project.categories()}


@pytest.fixture
def rich(tmp_path):
    """Images in every review state, calibrated and grouped, and taxa with colours, keys and
    a parent: the facts a COCO round trip has to carry besides the boxes."""
    p = Project.create(tmp_path / "rich")
    for name, value in (("empty.png", 1), ("grains.png", 2), ("open.png", 3), ("fresh.png", 4), ("props.png", 5)):
        _img(tmp_path / "rich" / name, 120, 90, value)
    p.add_folder(tmp_path / "rich")
    ids = {p.image_path(r).name: r.id for r in p.images()}
    fam = p.add_category("Betulaceae", color="#102030")
    betula = p.add_category("Betula", color="#a0b0c0", hotkey="3")
    p.set_category_parent(betula, fam)
    p.add_category("Alnus", color="#0a0b0c", hotkey="5", parent_id=fam)
    p.set_image_status(ids["empty.png"], ReviewStatus.REVIEWED)  # reviewed, no grain: a negative
    p.add_annotation(ids["grains.png"], Box(10, 10, 40, 40), betula)
    p.add_annotation(ids["open.png"], Box(20, 20, 50, 50), betula)
    p.set_image_status(ids["open.png"], ReviewStatus.IN_REVIEW)  # "not finished" mark
    p.write_proposals(ids["props.png"], [Detection(Box(5, 5, 30, 30), 0, "Betula", 0.6)])
    p.set_um_per_px(0.25, [ids["empty.png"], ids["grains.png"]])
    p.set_image_group(ids["grains.png"], "slide-7")
    assert [r.status for r in p.images()] == [ReviewStatus.REVIEWED, ReviewStatus.NEW, ReviewStatus.REVIEWED,
                                              ReviewStatus.IN_REVIEW, ReviewStatus.IN_REVIEW]
    yield p
    p.close()


@pytest.mark.parametrize("reviewed_only", [True, False])
def test_image_and_taxon_facts_survive_a_round_trip(rich, tmp_path, reviewed_only):
    """A reviewed image with no grain stays reviewed (a training negative, not a new image),
    a "not finished" mark stays, µm/px, group, taxon colours, hotkeys and parents survive;
    the file stays valid COCO."""
    from pycocotools.coco import COCO

    out = tmp_path / "out" / "ann.json"
    summary = export_coco(rich, out, reviewed_only=reviewed_only)
    COCO(str(out))  # pycocotools reads it with the extra keys
    doc = json.loads(out.read_text())
    assert {c["name"]: c["supercategory"] for c in doc["categories"]}["Betula"] == "Betulaceae"
    with Project.create(tmp_path / "copy") as q:
        import_coco(q, out)
        want = {k: v for k, v in image_facts(rich).items() if not reviewed_only or v[0] == "reviewed"}
        assert summary["images"] == len(want)
        assert image_facts(q) == want
        assert taxon_facts(q) == taxon_facts(rich)
        assert [d for d, _ in q.reviewed_dataset()] and {q.image_path(r).name for r, _ in q.reviewed_dataset()} == {
            "empty.png", "grains.png"}  # the negative is still training data
        export_coco(q, tmp_path / "again.json", reviewed_only=reviewed_only)
        again = json.loads((tmp_path / "again.json").read_text())
        strip = lambda d: [{k: v for k, v in i.items() if k != "file_name"} for i in d["images"]]  # noqa: E731
        assert strip(again) == strip(doc) and again["categories"] == doc["categories"]


def test_import_keeps_an_existing_taxon_and_image_as_they_are(rich, tmp_path):
    """Extras apply to what the import creates: a taxon already in the project keeps its
    colour, a hotkey in use is not taken, a reused image keeps its mark and calibration."""
    out = tmp_path / "ann.json"
    export_coco(rich, out, reviewed_only=False)
    with Project.create(tmp_path / "other") as q:
        q.add_category("Betula", color="#ffffff")
        q.add_category("Poaceae", hotkey="5")
        import_coco(q, out)
        facts = taxon_facts(q)
        assert facts["Betula"] == ("#ffffff", None, None)  # kept as the project had it
        assert facts["Alnus"] == ("#0a0b0c", None, "Betulaceae")  # key 5 belongs to Poaceae
        assert facts["Poaceae"][1] == "5"
    before = image_facts(rich)
    rich.set_um_per_px(0.5)
    rich.set_image_status(rich.images()[3].id, ReviewStatus.REVIEWED)
    changed = image_facts(rich)
    import_coco(rich, out)  # same files: every image reused
    assert image_facts(rich) == changed != before


BAD = {
    "malformed JSON": ("{\"images\": [", "not valid JSON"),
    "unknown image": ({"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2]}]}, "unknown image id 7"),
    "unknown category": ({"annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}]}, "unknown category id 9"),
    "duplicate annotation ids": ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
                                                  {"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 3, 2, 2]}]},
                                 "annotation id 1 appears twice"),
    "duplicate image ids": ({"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]}, "image id 1 appears twice"),
    "negative size": ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, -5, 4]}]}, "negative size"),
    "outside the image": ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20]}]}, "outside image"),
    "bbox not numbers": ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": ["a", 1, 2, 2]}]}, "four numbers"),
    "not coco": ([1, 2, 3], "JSON object"),
    "bad calibration": ({"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30, "um_per_px": -0.5}]},
                        "um_per_px must be a positive number"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_clear_error_and_changes_nothing(proj, tmp_path, case):
    body, msg = BAD[case]
    _img(tmp_path / "a.png", 40, 30, 1)
    if isinstance(body, dict):
        doc = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
               "categories": [{"id": 1, "name": "NewTaxon"}],
               "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]}
        doc.update(body)
        text = json.dumps(doc)
    else:
        text = body if isinstance(body, str) else json.dumps(body)
    f = tmp_path / "bad.json"
    f.write_text(text)
    before = dump(proj)
    with pytest.raises(ImportFormatError, match=msg):
        import_coco(proj, f)
    assert dump(proj) == before


box_st = st.tuples(st.integers(0, 180), st.integers(0, 130), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(anns=st.lists(st.tuples(st.booleans(), box_st, st.integers(0, 2)), max_size=12),
       frac=st.sampled_from([0.0, 0.25, 0.5]))
def test_property_random_annotation_sets_round_trip(tmp_path_factory, anns, frac):
    base = tmp_path_factory.mktemp("rt")
    with Project.create(base / "p") as p:
        _img(base / "p" / "a.png", 200, 150, 1)
        p.add_images([base / "p" / "a.png"])
        cats = [p.add_category(n) for n in ("Alnus", "Betula", "Corylus")]
        seen = set()
        for with_polygon, (x, y, w, h), c in anns:
            box = Box(x + frac, y + frac, x + w + frac, y + h + frac)
            if (box, c) in seen:
                continue  # identical duplicate labels are merged on import by design
            seen.add((box, c))
            cx, cy = box.center
            diamond = [cx, box.y1, box.x2, cy, cx, box.y2, box.x1, cy] if with_polygon else None
            p.add_annotation(1, box, cats[c], polygon=diamond)
        p.set_image_status(1, ReviewStatus.REVIEWED)
        export_coco(p, base / "out.json")
        with Project.create(base / "q") as q:
            import_coco(q, base / "out.json")
            assert labels_of(q) == labels_of(p)
