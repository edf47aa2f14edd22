"""The app's non-canvas paths read a whole-slide scan by region (core.slide), never whole:
thumbnails, gallery crops, embeddings of grains, outlines, click-to-box, training windows,
export. Each is checked against the same computation on the fully decoded image, on a
generated pyramidal slide, with the whole-image decoders made to fail."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from pollenstudio.core.errors import ImageReadError
from pollenstudio.core.slide import SlideArray, shared_slide, slide_pixels
from pollenstudio.core.types import Box
from pollenstudio.engine.synthetic.config import SynthConfig
from pollenstudio.engine.synthetic.slide import write_slide

CFG = SynthConfig(width=1400, height=1000, difficulty="easy")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    one, stack = d / "one.tif", d / "stack.ome.tif"
    objs1 = write_slide(one, 21, CFG, min_level_side=400)
    objs3 = write_slide(stack, 22, CFG, planes=3, min_level_side=400)
    return {"one": (one, objs1), "stack": (stack, objs3)}


@pytest.fixture
def no_whole_decode(monkeypatch):
    """Every whole-image decoder raises: a path that still uses one fails the test."""
    import pollenstudio.core.imageio as imageio
    import pollenstudio.core.stack as stack

    def refuse(*a, **k):
        raise AssertionError("a whole-slide scan was decoded whole")

    monkeypatch.setattr(imageio, "_decode", refuse)
    monkeypatch.setattr(stack, "_decode", refuse)
    monkeypatch.setattr(stack.FocalStack, "_raw_plane", refuse)


def test_slide_array_slices_are_crops_and_whole_reads_are_refused(slides):
    path, _ = slides["stack"]
    full = tifffile.imread(path)
    a = slide_pixels(path, plane=2)
    assert a.shape == (1000, 1400, 3) and a.dtype == np.uint8 and a.lazy
    assert np.array_equal(a[100:300, 250:251], full[2, 100:300, 250:251])
    assert np.array_equal(a[-20:, -30:], full[2, -20:, -30:])
    assert np.array_equal(a[5, 7], full[2, 5, 7]) and np.array_equal(a[3:9, 4:6, 1], full[2, 3:9, 4:6, 1])
    strided = a[::8, ::8]  # nearest pixels of the level nearest the stride
    assert strided.shape == full[2, ::8, ::8].shape
    assert np.abs(strided.astype(int) - full[2, ::8, ::8]).mean() < 12
    with pytest.raises(ImageReadError, match="not decoded whole"):
        np.asarray(a)
    assert shared_slide(path) is shared_slide(path)  # opened once per process


def test_thumbnail_and_gallery_crops_read_regions(slides, no_whole_decode):
    pytest.importorskip("PySide6")
    from pollenstudio.gui.gallery import GrainRow, _open_pixels, make_crop
    from pollenstudio.gui.image_list import THUMB, _make_thumbnail

    path, objs = slides["one"]
    img = _make_thumbnail(str(path))
    assert max(img.width(), img.height()) == THUMB
    full = tifffile.imread(path)
    pixels = _open_pixels(str(path))
    for o in objs[:5]:
        row = GrainRow(1, 1, tuple(o["bbox"]), 1, None, "accepted")
        assert np.array_equal(make_crop(pixels, row), make_crop(full, row))


def test_embeddings_outlines_and_click_to_box_read_regions(slides, no_whole_decode):
    from pollenstudio.engine.classify import EmbedSpec, embed
    from pollenstudio.engine.segment import box_around_point
    from pollenstudio.engine.shape import fit_outline

    path, objs = slides["one"]
    with tifffile.TiffFile(path) as tf:
        full = tf.series[0].levels[0].asarray()
    a = slide_pixels(path)
    boxes = np.array([o["bbox"] for o in objs[:6]] + [[0, 0, 40, 30], [1380, 980, 1400, 1000]], np.float64)
    spec = EmbedSpec(features="hand")
    assert np.array_equal(embed(None, a, boxes, spec), embed(None, full, boxes, spec))
    for o in objs[:6]:
        box = Box(*o["bbox"])
        s1, s2 = fit_outline(a, box), fit_outline(full, box)
        assert (s1 is None) == (s2 is None)
        if s1 is not None:
            assert np.allclose(s1.outline, s2.outline)
        cx, cy = box.center
        assert box_around_point(a, cx, cy) == box_around_point(full, cx, cy)


def test_training_windows_come_from_the_file(slides, no_whole_decode):
    from pollenstudio.engine.dataset import Sample, TrainDataset

    path, objs = slides["stack"]
    boxes = np.array([o["bbox"] for o in objs], np.float32)
    sample = Sample(path=str(path), width=1400, height=1000, boxes=boxes, classes=np.zeros(len(boxes), np.int64),
                    stack_planes=[0, 1, 2])
    ds = TrainDataset([sample], 320, augment=None)
    img, targets, _ = ds[0]
    assert tuple(img.shape) == (3, 320, 320)
    t = targets.numpy()
    assert len(t) and (t[:, 1:] >= 0).all() and (t[:, 1:] <= 320).all()


def test_export_paths_leave_the_slide_whole(slides, tmp_path, no_whole_decode):
    from pollenstudio.engine.export_job import letterboxed_inputs
    from pollenstudio.project import Project
    from pollenstudio.project.transfer import export_project

    path, _ = slides["stack"]
    (inp,) = letterboxed_inputs([path], 320)
    assert inp.shape == (320, 320, 3)
    with Project.create(tmp_path / "p") as proj:
        (iid,) = proj.add_images([path]).added
        cat = proj.add_category("Betula")
        proj.add_annotation(iid, Box(10, 10, 60, 60), cat, plane=1)
        proj.set_image_status(iid, "reviewed")
        res = export_project(proj, "yolo", tmp_path / "yolo", copy_images=True)
        assert [s["path"] for s in res["skipped"]] == [proj.image(iid).path]
        assert "whole-slide scan" in res["skipped"][0]["reason"]
        res = export_project(proj, "coco", tmp_path / "c" / "coco.json", planes_as_images=True)
        assert res["plane_images"] == 0 and "whole-slide scan" in res["skipped"][0]["reason"]


def test_shared_slide_opens_a_rewritten_file_again(tmp_path):
    path = tmp_path / "s.tif"
    write_slide(path, 1, SynthConfig(width=300, height=200))
    assert shared_slide(path).width == 300
    write_slide(path, 1, SynthConfig(width=320, height=200))
    assert shared_slide(path).width == 320
    with pytest.raises(ImageReadError, match="not found"):
        shared_slide(tmp_path / "gone.tif")


def test_strided_reads_of_a_slide_without_reduced_levels_are_exact(tmp_path):
    from pollenstudio.core.slide import Slide

    path = tmp_path / "flat.tif"
    full = np.random.default_rng(3).integers(0, 255, (1100, 1300, 3), dtype=np.uint8)
    tifffile.imwrite(path, full, tile=(128, 128), compression="zlib", photometric="rgb")
    with Slide.open(path, lazy_min_pixels=1) as s:
        a = SlideArray(s, 0)
        assert s.lazy and len(s.levels) == 1
        for key in [(slice(None, None, 9), slice(None, None, 9)), (slice(3, 1000, 7), slice(11, 1299, 5))]:
            assert np.array_equal(a[key], full[key])


def test_planes_kept_as_one_slide_file_each_are_read_lazily(tmp_path, no_whole_decode):
    """Scanners that write each focal plane as a whole-slide file of its own: plane files of
    pyramidal TIFFs make one lazy slide (a plane read from its own file), imported by pattern."""
    from pollenstudio.core.slide import Slide
    from pollenstudio.project import Project

    files = []
    for z in range(3):
        f = tmp_path / "scan" / f"slide_z{z}.tif"
        f.parent.mkdir(exist_ok=True)
        write_slide(f, 30 + z, SynthConfig(width=900, height=700), min_level_side=300)
        files.append(f)
    with Slide.open(files[0], plane_files=files) as s:
        assert s.lazy and s.planes == 3 and len(s.levels) == 3
        for z, f in enumerate(files):
            with tifffile.TiffFile(f) as tf:
                lv1 = tf.series[0].levels[1].asarray()
            assert np.array_equal(s.region(20, 30, 200, 100, 1, z), lv1[30:130, 20:220])
    with Project.create(tmp_path / "p") as proj:
        res = proj.add_folder(tmp_path / "scan", stack_pattern="*_z{z}.tif")
        (rec,) = [proj.image(i) for i in res.added]
        assert (rec.planes, rec.width, rec.height) == (3, 900, 700)
        a = slide_pixels(proj.image_path(rec), proj.plane_paths(rec), plane=2)
        assert a.lazy and a[0:10, 0:10].shape == (10, 10, 3)
    other = tmp_path / "other.tif"
    write_slide(other, 5, SynthConfig(width=800, height=700), min_level_side=300)
    with pytest.raises(ImageReadError, match="other.tif is 800 x 700 px"):
        Slide.open(files[0], plane_files=[files[0], other])
