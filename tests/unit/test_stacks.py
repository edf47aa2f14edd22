"""Focal stacks (issue 19): import forms, lazy reads, focus measures, detection through
focus, COCO / YOLO round trips, training views. Data is made here (tifffile, OpenCV, the
synthetic stack generator); nothing is downloaded."""

import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from pollenstudio.core.errors import ImageReadError, ImportFormatError, ProjectError
from pollenstudio.core.stack import (
    FocalStack,
    StackPatternError,
    best_plane,
    box_sharpness,
    edf_composite,
    group_plane_files,
    stack_info,
)
from pollenstudio.core.types import Box, Detection
from pollenstudio.engine.synthetic import SynthConfig
from pollenstudio.engine.synthetic.stack import generate_stack_dataset, render_stack
from pollenstudio.project import Project
from pollenstudio.project.coco import export_coco, import_coco
from pollenstudio.project.transfer import export_project, import_to_folder

H, W = 48, 64


def planes_of(n, dtype=np.uint8, rgb=False):
    """n planes whose pixel (0, 0) holds the plane number."""
    shape = (H, W, 3) if rgb else (H, W)
    out = []
    for k in range(n):
        a = np.full(shape, 10 * k, dtype)
        out.append(a)
    return out


def write_forms(folder: Path) -> dict[str, int]:
    """One file (or plane-file set) per import form; returns name -> planes."""
    folder.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(folder / "pages.tif") as w:  # pages written one by one, no metadata
        for a in planes_of(3):
            w.write(a)
    tifffile.imwrite(folder / "shaped.tif", np.stack(planes_of(4, np.uint16)), photometric="minisblack")
    zcyx = np.stack([np.moveaxis(a, -1, 0) for a in planes_of(5, rgb=True)])
    tifffile.imwrite(folder / "ome.ome.tif", zcyx, metadata={"axes": "ZCYX"})
    tzcyx = np.zeros((2, 6, 1, H, W), np.uint16)
    tifffile.imwrite(folder / "time.ome.tif", tzcyx + np.arange(6, dtype=np.uint16)[None, :, None, None, None],
                     metadata={"axes": "TZCYX"})
    tifffile.imwrite(folder / "imagej.tif", np.stack(planes_of(7)), imagej=True, metadata={"axes": "ZYX"})
    for k, a in enumerate(planes_of(4, rgb=True)):
        cv2.imwrite(str(folder / f"field_z{k:02d}.png"), a + 1)
    (folder / "single.png").write_bytes(cv2.imencode(".png", np.full((H, W, 3), 200, np.uint8))[1].tobytes())
    return {"pages.tif": 3, "shaped.tif": 4, "ome.ome.tif": 5, "time.ome.tif": 6, "imagej.tif": 7,
            "field_z00.png": 4, "single.png": 1}


def test_every_tiff_form_is_one_stack_with_its_plane_count(tmp_path):
    forms = write_forms(tmp_path)
    for name, n in forms.items():
        if name.endswith(".png"):
            continue
        with FocalStack.open(tmp_path / name) as st:
            assert st.n_planes == n, name
            assert (st.info.width, st.info.height) == (W, H)
            last = st.plane(n - 1)
            assert last.shape[:2] == (H, W)
        assert stack_info(tmp_path / name).planes == n
    with FocalStack.open(tmp_path / "ome.ome.tif") as st:  # planar RGB pages composed per plane
        assert st.info.channels == 3 and st.plane(4).shape == (H, W, 3) and st.plane(4)[0, 0, 0] == 40
    with FocalStack.open(tmp_path / "time.ome.tif") as st:  # Z read at T = 0
        assert st.plane(5)[0, 0] == 5
    with FocalStack.open(tmp_path / "pages.tif") as st:
        assert st.plane(2)[0, 0] == 20
        with pytest.raises(ImageReadError, match="plane 4 does not exist"):
            st.plane(3)


def test_folder_import_makes_one_image_per_stack_with_its_plane_count(tmp_path):
    forms = write_forms(tmp_path / "src")
    (tmp_path / "src" / "f2").mkdir()
    for k in range(3):  # a folder per field, planes named 0z.png .. 2z.png
        cv2.imwrite(str(tmp_path / "src" / "f2" / f"{k}z.png"), np.full((H, W), 7 * k + 3, np.uint8))
    proj, res = import_to_folder(tmp_path / "p", tmp_path / "src", stack_pattern="*_z{z}.png")
    with proj:
        got = {Path(r.path).name: r.planes for r in proj.images()}
        assert {k: got[k] for k in forms} == forms
        assert res.summary["stacks"] == 6  # 5 TIFFs + the field_z set; f2's names do not match this pattern
        rec = next(r for r in proj.images() if r.path.endswith("field_z00.png"))
        assert len(rec.plane_files) == 4 and rec.plane_files[3].endswith("field_z03.png")
        assert int(proj.read_plane(rec, 3)[0, 0, 0]) == 31
    proj, _ = import_to_folder(tmp_path / "p2", tmp_path / "src" / "f2", stack_pattern="{z}z.png")
    with proj:
        (rec,) = proj.images()
        assert rec.planes == 3 and int(proj.read_plane(rec, 2)[0, 0]) == 17


def test_bad_stack_patterns_are_refused_and_change_nothing(tmp_path):
    write_forms(tmp_path / "src")
    for bad in ("*.png", "*_z{z}_{z}.png", "sub/*_z{z}.png"):
        with pytest.raises(StackPatternError):
            import_to_folder(tmp_path / "p", tmp_path / "src", stack_pattern=bad)
        assert not (tmp_path / "p").exists()
    with pytest.raises(StackPatternError, match="both plane 1"):
        group_plane_files([tmp_path / "a_z1.png", tmp_path / "a_z01.png"], "*_z{z}.png")


def test_planes_are_read_lazily_with_bounded_memory(tmp_path):
    """A 40-plane 512x512 16-bit stack (20 MB): opening reads no plane; stepping through
    every plane holds one; the EDF composite holds its float32 focus maps (2 plane sizes
    each), never the stack."""
    n, side = 40, 512
    plane_bytes = side * side * 2
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(tmp_path / "big.tif") as w:
        for _ in range(n):
            w.write(rng.integers(0, 4000, (side, side), dtype=np.uint16), contiguous=True)
    tracemalloc.start()
    try:
        st = FocalStack.open(tmp_path / "big.tif")
        opened = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        total = 0
        for k in range(n):
            total += int(st.plane(k)[0, 0])
        stepped = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        edf = edf_composite(st.planes())
        edf_peak = tracemalloc.get_traced_memory()[1]
        st.close()
    finally:
        tracemalloc.stop()
    assert st.n_planes == n and edf.shape == (side, side)
    assert opened < plane_bytes / 4, opened  # headers only
    assert stepped < 3 * plane_bytes, stepped  # one plane at a time, not 20
    assert edf_peak < 16 * plane_bytes, edf_peak  # composite + float focus maps: under 40 % of the stack


def test_generator_stacks_have_each_grain_sharpest_on_its_own_plane():
    planes, objects = render_stack(5, SynthConfig(width=320, height=240), 7)
    assert len(planes) == 7 and objects
    assert len({o["plane"] for o in objects}) > 1  # grains on several planes
    table = box_sharpness(planes, [o["bbox"] for o in objects])
    found = table.argmax(axis=0)
    truth = np.array([o["plane"] for o in objects])
    assert np.mean(np.abs(found - truth) <= 1) >= 0.9
    assert (planes[0] != planes[1]).any()
    edf, index = edf_composite(planes, return_index=True)
    assert edf.shape == planes[0].shape and index.max() < 7


def test_synthetic_stack_dataset_bytes_repeat(tmp_path):
    cfg = SynthConfig(width=160, height=120)
    a = generate_stack_dataset(tmp_path / "a", 1, 3, seed=2, cfg=cfg)
    b = generate_stack_dataset(tmp_path / "b", 1, 3, seed=2, cfg=cfg)
    assert (tmp_path / "a/images/000000.tif").read_bytes() == (tmp_path / "b/images/000000.tif").read_bytes()
    doc = json.loads(a.read_text())
    assert doc["images"][0]["planes"] == 3 and all("plane" in x for x in doc["annotations"])
    assert b.is_file()


@pytest.fixture(scope="module")
def synth_stacks(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = generate_stack_dataset(out, 3, 9, seed=11, cfg=SynthConfig())
    return out, json.loads(path.read_text())


def test_detection_through_focus_finds_each_grain_once_on_its_plane(tmp_path, synth_stacks):
    """The shipped default model (the grain model) on the EDF view of synthetic stacks: every grain it finds
    is reported once, with its true plane (within one) for >= 90 % of the grains."""
    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor

    out, coco = synth_stacks
    proj = Project.create(tmp_path / "p")
    proj.add_images([out / im["file_name"] for im in coco["images"]])
    pred = Predictor.from_default(device="cpu")
    summary = detect_project(proj, pred, stack_mode="edf")  # the EDF view; bench/stack_mode.py compares the modes
    assert summary.stacks == 3 and not summary.failed
    total = found = once = on_plane = 0
    for rec, im in zip(proj.images(), coco["images"]):
        props = proj.annotations(rec.id)
        assert all(a.plane is not None and 0 <= a.plane < 9 for a in props)
        for g in (a for a in coco["annotations"] if a["image_id"] == im["id"]):
            total += 1
            gb = Box.from_xywh(*g["bbox"])
            hits = [a for a in props if a.box.iou(gb) >= 0.5]
            found += bool(hits)
            once += len(hits) == 1
            on_plane += bool(hits) and abs(max(hits, key=lambda a: a.box.iou(gb)).plane - g["plane"]) <= 1
    proj.close()
    print(f"grains {total}, found {found}, once {once}, plane within 1: {on_plane}")
    assert found >= 0.9 * total
    assert once == found  # no grain reported twice
    assert on_plane >= 0.9 * total


def test_every_plane_mode_merges_a_grain_seen_on_several_planes():
    from pollenstudio.engine.detect_job import merge_across_planes

    d = lambda b, s, lab="Betula": Detection(Box(*b), 0, lab, s)  # noqa: E731
    dets = [d((10, 10, 50, 50), 0.6), d((11, 9, 51, 49), 0.9), d((12, 11, 49, 52), 0.5),  # one grain, 3 planes
            d((100, 100, 130, 130), 0.7), d((101, 99, 131, 131), 0.4)]  # another grain, 2 planes
    kept, folded = merge_across_planes(dets)
    assert [k.score for k in kept] == [0.9, 0.7] and folded == 3


def test_coco_round_trip_keeps_planes(tmp_path, synth_stacks):
    out, coco = synth_stacks
    p = Project.create(tmp_path / "p")
    s = import_coco(p, out / "annotations.json")
    assert s.images_added == 3
    truth = sorted((round(a["bbox"][0], 1), a["plane"]) for a in coco["annotations"])
    got = lambda proj: sorted((round(a.box.x1, 1), a.plane) for r in proj.images()  # noqa: E731
                              for a in proj.annotations(r.id))
    assert got(p) == truth and all(r.planes == 9 for r in p.images())
    for r in p.images():
        p.set_image_status(r.id, "reviewed")
    export_coco(p, tmp_path / "one.json")
    doc = json.loads((tmp_path / "one.json").read_text())
    assert [im["planes"] for im in doc["images"]] == [9, 9, 9] and len(doc["images"]) == 3
    q = Project.create(tmp_path / "q")
    import_coco(q, tmp_path / "one.json")
    assert got(q) == truth
    # each grain's plane as an image of its own, and back into its stack
    summary = export_coco(p, tmp_path / "planes.json", planes_as_images=True)
    doc = json.loads((tmp_path / "planes.json").read_text())
    assert summary["plane_images"] == len(doc["images"]) > 3
    assert all("stack_of" in im and (tmp_path / im["file_name"]).is_file() for im in doc["images"])
    assert len(doc["annotations"]) == len(coco["annotations"])  # no grain listed twice
    first = cv2.imread(str(tmp_path / doc["images"][0]["file_name"]))[..., ::-1]
    assert np.array_equal(first, p.read_plane(p.images()[0], doc["images"][0]["plane"]))
    r = Project.create(tmp_path / "r")
    import_coco(r, tmp_path / "planes.json")
    assert len(r.images()) == 3 and got(r) == truth
    for proj in (p, q, r):
        proj.close()


def test_coco_round_trip_of_a_plane_file_stack_and_bad_planes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        cv2.imwrite(str(src / f"f_z{k}.png"), np.full((H, W, 3), 30 * k, np.uint8))
    proj, _ = import_to_folder(tmp_path / "p", src, stack_pattern="*_z{z}.png")
    (rec,) = proj.images()
    cid = proj.add_category("Betula")
    proj.add_annotation(rec.id, Box(5, 5, 20, 20), cid, plane=2)
    with pytest.raises(ProjectError, match="plane 3 does not exist"):
        proj.add_annotation(rec.id, Box(5, 5, 20, 20), cid, plane=3)
    proj.set_image_status(rec.id, "reviewed")
    export_coco(proj, tmp_path / "out.json")
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["images"][0]["plane_files"] == ["src/f_z0.png", "src/f_z1.png", "src/f_z2.png"]
    q = Project.create(tmp_path / "q")
    import_coco(q, tmp_path / "out.json")
    (r2,) = q.images()
    assert r2.planes == 3 and [a.plane for a in q.annotations(r2.id)] == [2]
    doc["annotations"][0]["plane"] = 7
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    z = Project.create(tmp_path / "z")
    with pytest.raises(ImportFormatError, match="plane 7 does not exist"):
        import_coco(z, tmp_path / "bad.json")
    assert z.images() == []
    for x in (proj, q, z):
        x.close()


def test_yolo_export_writes_the_edf_or_the_best_plane(tmp_path, synth_stacks):
    out, _ = synth_stacks
    p = Project.create(tmp_path / "p")
    import_coco(p, out / "annotations.json")
    rec = p.images()[0]
    export_project(p, "yolo", tmp_path / "edf", reviewed_only=False, stack_view="edf")
    export_project(p, "yolo", tmp_path / "best", reviewed_only=False, stack_view="best")
    stem = Path(rec.path).stem
    edf = cv2.imread(str(tmp_path / "edf/images" / f"{stem}.png"))[..., ::-1]
    best = cv2.imread(str(tmp_path / "best/images" / f"{stem}.png"))[..., ::-1]
    with p.open_stack(rec) as st:
        assert np.array_equal(edf, edf_composite(st.planes()))
        assert np.array_equal(best, st.plane(best_plane(st)))
    assert (tmp_path / "edf/labels" / f"{stem}.txt").read_text().count("\n") == len(p.annotations(rec.id))
    p.close()


def test_training_shows_each_stack_at_its_grains_planes_and_as_edf(tmp_path, synth_stacks):
    from pollenstudio.engine.augment import AugmentConfig
    from pollenstudio.engine.dataset import TrainDataset, data_from_project, load_model_image

    out, coco = synth_stacks
    p = Project.create(tmp_path / "p")
    import_coco(p, out / "annotations.json")
    for r in p.images():
        p.set_image_status(r.id, "reviewed")
    data = data_from_project(p)
    s0 = data.samples[0]
    assert s0.is_stack and s0.stack_planes == sorted({a.plane for a in p.annotations(p.images()[0].id)})
    ds = TrainDataset(data.samples, 320, augment=AugmentConfig(mosaic=0.0))
    for seed in range(12):
        ds._rng = np.random.default_rng(seed)  # what __getitem__ sets per (seed, epoch, index)
        img, boxes, _ = ds._load(0)
        assert len(boxes) == len(s0.boxes)  # every grain is a target in every view
    ds[0]  # a whole augmented draw works on a stack
    views = {k[1] for k in ds._cache if isinstance(k, tuple) and k[0] == 0}
    assert "edf" in views and views - {"edf"} <= set(s0.stack_planes) and len(views) >= 3
    val = TrainDataset(data.samples, 320, augment=None)
    val[0]
    assert set(k[1] for k in val._cache) == {"edf"}
    src = s0.eval_source()
    assert callable(src) and src().shape == (480, 640, 3)
    assert load_model_image(s0.path, 2).shape == (480, 640, 3)
    p.close()


def test_flipped_pass_skips_stacks_and_runs_on_single_images(tmp_path, synth_stacks):
    """"Review this next"'s flipped pass reads single images again; a stack's proposals come
    from its EDF view, so the pass leaves stacks alone (no flip disagreement recorded)."""
    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor

    out, coco = synth_stacks
    single = tmp_path / "single.png"
    cv2.imwrite(str(single), np.zeros((96, 128, 3), np.uint8) + 200)
    proj = Project.create(tmp_path / "p")
    proj.add_images([out / coco["images"][0]["file_name"], single])
    summary = detect_project(proj, Predictor.from_default(device="cpu"), flip_pass=True)
    assert summary.stacks == 1 and summary.done == 2 and not summary.failed
    flips = dict(proj._q("SELECT id, flip_unmatched FROM images").fetchall())
    by_kind = {rec.is_stack: flips[rec.id] for rec in proj.images()}
    assert by_kind[False] is not None  # the pass ran on the single image
    assert by_kind[True] is None  # and not on the stack
    proj.close()
