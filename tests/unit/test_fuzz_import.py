"""Issue 17: property-based fuzzing of COCO and YOLO import. Any JSON / text either imports
consistently or is refused with a PollenStudioError that leaves the project unchanged;
never another exception, never a half-written project."""

import json
import math
import sqlite3

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.project import Project
from pollenstudio.project.coco import import_coco
from pollenstudio.project.yolo import import_yolo

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def dump(project):
    conn = sqlite3.connect(project.db_path)
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
           for t in ("images", "categories", "annotations", "runs", "history")}
    conn.close()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzdata")
    cv2.imwrite(str(d / "a.png"), np.full((48, 64), 10, np.uint8))
    cv2.imwrite(str(d / "b.png"), np.full((30, 40), 20, np.uint8))
    (d / "sub").mkdir()
    return d


def check_consistent(p):
    """What any successful import must leave: an intact file, boxes with area inside known
    image sizes, scores within 0..1, clean taxon names, every annotation on an image."""
    assert p.integrity_check() == "ok"
    image_ids = {r.id: r for r in p.images()}
    cats = {c.id: c.name for c in p.categories()}
    for name in cats.values():
        assert name == name.strip() and name and not any(ord(ch) < 32 for ch in name)
    for a in p.iter_annotations():
        rec = image_ids[a.image_id]
        assert a.category_id in cats
        assert a.box.x2 > a.box.x1 and a.box.y2 > a.box.y1
        assert all(math.isfinite(v) for v in a.box.xyxy())
        if rec.width and rec.height:
            assert -1e-6 <= a.box.x1 and a.box.x2 <= rec.width + 1e-6
            assert -1e-6 <= a.box.y1 and a.box.y2 <= rec.height + 1e-6
        if a.score is not None:
            assert 0.0 <= a.score <= 1.0
    paths = [r.path for r in image_ids.values()]
    assert len(paths) == len(set(paths))  # never the same file twice


# ------------------------------------------------------------------------- COCO
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10, max_value=100),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["a.png", "b.png", "", "sub", "missing.png", "a\x00.png", "A.PNG", "./a.png", "Olea", "Ole\na"]),
)
any_json = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                        max_leaves=12)
num = st.one_of(st.integers(min_value=-5, max_value=80), st.floats(min_value=-5, max_value=80),
                json_leaf)
image_entry = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 3), json_leaf),
     "file_name": st.one_of(st.sampled_from(["a.png", "b.png", "missing.png", "sub", "./a.png"]), json_leaf)},
    optional={"width": num, "height": num})
ann_entry = st.fixed_dictionaries(
    {"image_id": st.one_of(st.integers(0, 3), json_leaf), "category_id": st.one_of(st.integers(0, 2), json_leaf),
     "bbox": st.one_of(st.lists(num, min_size=4, max_size=4), json_leaf)},
    optional={"id": st.one_of(st.integers(0, 5), json_leaf), "score": num, "iscrowd": st.one_of(st.just(0), json_leaf),
              "segmentation": st.one_of(st.lists(st.lists(num, min_size=6, max_size=8), max_size=1), json_leaf),
              "status": st.one_of(st.sampled_from(["proposed", "accepted", "rejected", "bogus"]), json_leaf)})
cat_entry = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 2), json_leaf),
     "name": st.one_of(st.sampled_from(["Olea", "Betula", "Pinus", " Olea ", "Ole\na", ""]), json_leaf)},
    optional={"supercategory": json_leaf})
coord = st.floats(min_value=-3, max_value=70, allow_nan=False)
plausible_ann = st.fixed_dictionaries(
    {"image_id": st.sampled_from([1, 2]), "category_id": st.sampled_from([1, 2]),
     "bbox": st.tuples(st.floats(-1.5, 40), st.floats(-1.5, 28), st.floats(0.5, 26), st.floats(0.5, 20)).map(list)},
    optional={"score": st.floats(min_value=0, max_value=1),
              "segmentation": st.lists(st.lists(coord, min_size=6, max_size=6), max_size=1),
              "status": st.sampled_from(["proposed", "accepted", "edited", "rejected", "added"]),
              "iscrowd": st.sampled_from([0, 1])})
plausible = st.fixed_dictionaries({
    "images": st.just([{"id": 1, "file_name": "a.png", "width": 64, "height": 48}, {"id": 2, "file_name": "b.png"}]),
    "categories": st.just([{"id": 1, "name": "Olea"}, {"id": 2, "name": "Betula", "supercategory": "pollen"}]),
    "annotations": st.lists(plausible_ann, max_size=6),
})
coco_doc = st.one_of(
    plausible,  # mostly valid: exercises the consistency of what gets in
    st.fixed_dictionaries({"images": st.lists(image_entry, max_size=3), "annotations": st.lists(ann_entry, max_size=5),
                           "categories": st.lists(cat_entry, max_size=3)}),
    any_json,
)


@FUZZ
@given(doc=coco_doc)
def test_fuzz_coco_import_is_consistent_or_refused(tmp_path_factory, data, doc):
    folder = tmp_path_factory.mktemp("coco")
    p = Project.create(folder / "p")
    path = data / f"fuzz_{folder.name}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    try:
        before = dump(p)
        try:
            import_coco(p, path)
        except PollenStudioError:
            assert dump(p) == before
            return
        check_consistent(p)
        again = dump(p)
        import_coco(p, path)  # the same file again changes nothing
        assert dump(p)["annotations"] == again["annotations"]
        assert len(dump(p)["images"]) == len(again["images"])
    finally:
        p.close()
        path.unlink()


# ------------------------------------------------------------------------- YOLO
token = st.one_of(st.sampled_from(["0", "1", "2", "-1", "0.5", "0.25", "1.0", "0.0", "nan", "inf", "1e9", "7.5",
                                   "x", "", "0.999", "1.001", "1" * 30]),
                  st.floats(min_value=-0.2, max_value=1.2).map(lambda v: f"{v:.4f}"), st.text(max_size=4))
line = st.lists(token, max_size=8).map(" ".join)
label_text = st.lists(line, max_size=4).map("\n".join)
plausible_line = st.tuples(
    st.sampled_from(["0", "1"]), st.floats(0.3, 0.7), st.floats(0.3, 0.7), st.floats(0.05, 0.6), st.floats(0.05, 0.6),
    st.one_of(st.none(), st.floats(0, 1))).map(
    lambda t: " ".join([t[0], *(f"{v:.4f}" for v in t[1:] if v is not None)]))
label_text = st.one_of(st.lists(plausible_line, max_size=4).map("\n".join), label_text)
classes_text = st.one_of(
    st.just("Olea\nBetula\n"),
    st.lists(st.sampled_from(["Olea", "Betula", "Olea", " ", "Ole\x0ba", "Pin\x00us", "é"]), max_size=3).map("\n".join),
    st.text(max_size=20))


@FUZZ
@given(classes=classes_text, labels=st.lists(label_text, min_size=1, max_size=2),
       classes_bytes=st.one_of(st.none(), st.binary(max_size=12)))
def test_fuzz_yolo_import_is_consistent_or_refused(tmp_path_factory, data, classes, labels, classes_bytes):
    folder = tmp_path_factory.mktemp("yolo")
    ds = folder / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    for name, text in zip(("a", "b"), labels):
        (ds / "images" / f"{name}.png").write_bytes((data / f"{name}.png").read_bytes())
        (ds / "labels" / f"{name}.txt").write_text(text, encoding="utf-8")
    if classes_bytes is not None:
        (ds / "classes.txt").write_bytes(classes_bytes)
    else:
        (ds / "classes.txt").write_text(classes, encoding="utf-8")
    p = Project.create(folder / "p")
    try:
        before = dump(p)
        try:
            import_yolo(p, ds)
        except PollenStudioError:
            assert dump(p) == before
            return
        check_consistent(p)
        again = dump(p)
        import_yolo(p, ds)
        assert dump(p)["annotations"] == again["annotations"]
    finally:
        p.close()
