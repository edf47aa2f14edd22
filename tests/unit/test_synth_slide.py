"""Generated whole-slide scans (pyramidal tiled TIFF, with and without focal planes): what
core.slide reads from them equals the full image, their ground truth is where the grains
are, and `pollenstudio import PROJECT SLIDE.tif` takes one as one image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from pollenstudio.core.slide import Slide
from pollenstudio.core.stack import focus_measure
from pollenstudio.engine.synthetic.config import SynthConfig
from pollenstudio.engine.synthetic.scene import render
from pollenstudio.engine.synthetic.slide import _halve, level_sizes, write_slide

CFG = SynthConfig(width=1300, height=900)
RECTS = [(0, 0, 10, 10), (100, 37, 300, 213), (250, 250, 20, 20), (600, 450, 900, 900), (-5, -5, 30, 30)]


def _crop(full, x, y, w, h):
    return full[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]


def test_level_sizes_halve_down_to_the_limit():
    assert level_sizes(17832, 15029) == [(17832, 15029), (8916, 7514), (4458, 3757), (2229, 1878), (1114, 939),
                                         (557, 469)]
    assert level_sizes(800, 600) == [(800, 600)]


@pytest.mark.parametrize("planes,compression", [(1, "zlib"), (3, "zlib"), (2, "jpeg")])
def test_regions_equal_crops_of_every_level_and_plane(tmp_path, planes, compression):
    path = tmp_path / ("s.ome.tif" if planes > 1 else "s.tif")
    objects = write_slide(path, 11, CFG, planes=planes, compression=compression, min_level_side=300)
    assert objects
    with Slide.open(path) as s:
        assert s.lazy and s.planes == planes and (s.width, s.height) == (1300, 900)
        assert [(lv.width, lv.height) for lv in s.levels] == level_sizes(1300, 900, 300)
        for level in range(len(s.levels)):
            full = tifffile.imread(path, level=level)
            full = full if planes > 1 else full[None]
            assert full.shape[:3] == (planes, s.levels[level].height, s.levels[level].width)
            for p in range(planes):
                for x, y, w, h in RECTS:
                    assert np.array_equal(s.region(x, y, w, h, level, p), _crop(full[p], x, y, w, h))
        if compression == "zlib":  # lossless: every level is the 2x2 mean of the one above
            for level in range(1, len(s.levels)):
                above = tifffile.imread(path, level=level - 1)
                above = above if planes > 1 else above[None]
                lw = s.levels[level].width
                assert np.array_equal(tifffile.imread(path, level=level).reshape(planes, -1, lw, 3),
                                      np.stack([_halve(a)[:, :lw] for a in above]))


def test_single_plane_slide_is_the_rendered_scene_with_its_ground_truth(tmp_path):
    path = tmp_path / "s.tif"
    objects = write_slide(path, 4, CFG, compression="zlib")
    img, truth = render(4, CFG)
    assert np.array_equal(tifffile.imread(path), img)  # strip by strip, the same pixels as at once
    assert [o["bbox"] for o in objects] == [o["bbox"] for o in truth]
    assert all("plane" not in o for o in objects)


def test_stack_slide_grains_are_sharpest_on_their_own_plane(tmp_path):
    path = tmp_path / "s.ome.tif"
    cfg = SynthConfig(width=1000, height=700, difficulty="easy")
    objects = write_slide(path, 9, cfg, planes=4)
    assert {o["plane"] for o in objects} <= {0, 1, 2, 3} and len({o["plane"] for o in objects}) > 1
    hits = 0
    with Slide.open(path) as s:
        for o in objects:
            x1, y1, x2, y2 = (int(round(v)) for v in o["bbox"])
            scores = [focus_measure(s.region(x1, y1, x2 - x1, y2 - y1, 0, p)) for p in range(4)]
            hits += int(np.argmax(scores)) == o["plane"]
    assert hits >= 0.8 * len(objects), (hits, len(objects))


def test_cli_slide_import_thumbnail_crops_and_coco_round_trip(tmp_path):
    from pollenstudio.cli import main
    from pollenstudio.project import Project

    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--slide", "1200x800", "--planes", "3", "--quiet", "--seed", "2"]) == 0
    truth = json.loads((out / "annotations.json").read_text())
    (image,) = truth["images"]
    assert (image["width"], image["height"], image["planes"]) == (1200, 800, 3)
    slide_file = out / image["file_name"]
    assert slide_file.name == "slide000.ome.tif"
    # one image file imports as one image, with its size and planes from the headers
    assert main(["import", str(tmp_path / "p"), str(slide_file), "--quiet"]) == 0
    with Project.open(tmp_path / "p") as proj:
        (rec,) = proj.images()
        assert (rec.width, rec.height, rec.planes) == (1200, 800, 3)
        with Slide.open(proj.image_path(rec)) as s:
            thumb = s.thumbnail(256)
            assert max(thumb.shape[:2]) == 256
            a = truth["annotations"][0]
            x, y, w, h = (int(round(v)) for v in a["bbox"])
            crop = s.region(x, y, w, h, 0, a["plane"])
            assert crop.shape == (h, w, 3)
    # the ground truth (level-0 boxes, plane per grain) imports and exports unchanged
    assert main(["import", str(tmp_path / "q"), str(out / "annotations.json"), "--quiet"]) == 0
    exported = tmp_path / "export" / "coco.json"
    assert main(["export", str(tmp_path / "q"), "--format", "coco", "--out", str(exported), "--all"]) == 0
    back = json.loads(exported.read_text())
    (bimg,) = back["images"]
    assert (bimg["width"], bimg["height"], bimg["planes"]) == (1200, 800, 3)
    got = sorted((tuple(round(v, 2) for v in a["bbox"]), a["plane"]) for a in back["annotations"])
    want = sorted((tuple(round(v, 2) for v in a["bbox"]), a["plane"]) for a in truth["annotations"])
    assert got == want
    # and the export imports again as the same boxes and planes
    assert main(["import", str(tmp_path / "r"), str(exported), "--quiet"]) == 0
    with Project.open(tmp_path / "r") as proj:
        (rec,) = proj.images()
        anns = proj.annotations(rec.id)
        assert sorted((tuple(round(v, 2) for v in (a.box.x1, a.box.y1, a.box.x2 - a.box.x1, a.box.y2 - a.box.y1)),
                       a.plane) for a in anns) == want


def test_single_file_import_refusals_change_nothing(tmp_path):
    from pollenstudio.core.errors import ImportFormatError
    from pollenstudio.project.transfer import detect_source, import_to_folder

    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    with pytest.raises(ImportFormatError, match="image file"):
        detect_source(txt, "images")
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImportFormatError, match="broken.tif.*nothing imported"):
        import_to_folder(tmp_path / "p", bad)
    assert not (tmp_path / "p").exists()
    good = tmp_path / "s.tif"
    write_slide(good, 1, SynthConfig(width=300, height=200))
    with pytest.raises(ImportFormatError, match="stack-pattern"):
        import_to_folder(tmp_path / "p", good, stack_pattern="*_z{z}.tif")
    assert not (tmp_path / "p").exists()


def test_coco_export_of_a_slides_proposals_keeps_level0_boxes_and_planes(tmp_path):
    """Proposals on a (large-coordinate) slide go out in level-0 pixels with their plane and
    come back the same."""
    from pollenstudio.core.types import Box, Detection
    from pollenstudio.project import Project
    from pollenstudio.project.coco import import_coco
    from pollenstudio.project.transfer import export_project

    path = tmp_path / "s.ome.tif"
    write_slide(path, 3, SynthConfig(width=1300, height=900, n_grains=(0, 0), clutter=0.0), planes=3,
                min_level_side=300)
    dets = [Detection(Box(1010.25, 700.5, 1060.75, 751.0), 0, "pollen", 0.91, plane=2),
            Detection(Box(3.5, 4.0, 40.0, 44.5), 0, "pollen", 0.42, plane=0)]
    with Project.create(tmp_path / "p") as proj:
        (iid,) = proj.add_images([path]).added
        proj.write_proposals(iid, dets)
        export_project(proj, "coco", tmp_path / "out" / "coco.json", reviewed_only=False)
    doc = json.loads((tmp_path / "out" / "coco.json").read_text())
    (img,) = doc["images"]
    assert (img["width"], img["height"], img["planes"]) == (1300, 900, 3)
    got = sorted((tuple(a["bbox"]), a["plane"], a["score"]) for a in doc["annotations"])
    assert got == [((3.5, 4.0, 36.5, 40.5), 0, 0.42), ((1010.25, 700.5, 50.5, 50.5), 2, 0.91)]
    with Project.create(tmp_path / "q") as proj:
        import_coco(proj, tmp_path / "out" / "coco.json")
        (rec,) = proj.images()
        assert rec.planes == 3
        back = sorted((a.box.x1, a.box.y1, a.box.x2, a.box.y2, a.plane) for a in proj.annotations(rec.id))
        assert back == [(3.5, 4.0, 40.0, 44.5, 0), (1010.25, 700.5, 1060.75, 751.0, 2)]


def test_synth_slide_again_clears_a_killed_runs_scratch(tmp_path):
    from pollenstudio.cli import main

    out = tmp_path / "o"
    scratch = out / "images" / ".synth-slide-x1"
    scratch.mkdir(parents=True)
    (scratch / "base.raw").write_bytes(b"\0" * 100)
    (out / "images" / ".slide000.tif.part").write_bytes(b"II*\0")
    assert main(["synth", "--out", str(out), "--slide", "300x200", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["slide000.tif"]


def test_a_slide_larger_than_the_free_disk_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from pollenstudio.engine.synthetic import slide as synth_slide
    from pollenstudio.engine.synthetic.config import SynthConfigError

    monkeypatch.setattr(synth_slide, "_free_bytes", lambda folder: 10_000_000)
    with pytest.raises(SynthConfigError, match="GB of free disk"):
        synth_slide.generate_slide_dataset(tmp_path / "o", 1, SynthConfig(width=4000, height=3000), planes=3)
    assert not (tmp_path / "o").exists()
    with pytest.raises(SynthConfigError, match="GB of free disk"):
        write_slide(tmp_path / "s.tif", 1, SynthConfig(width=4000, height=3000))
    assert list(tmp_path.iterdir()) == []
