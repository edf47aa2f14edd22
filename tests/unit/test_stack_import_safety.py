"""Issue 31 (items 2, 6, 7, 13, 14): focal stacks come in whole or not at all, and never mixed up.

- relink finds a stack of plane files by the content of all its planes, moves every plane,
  and refuses in words rather than matching by name (fields named alike swapped);
- one rule for every import path (folder, COCO): plane files of one size, bit depth and
  channels, each listed once, at most MAX_PLANES;
- a stack pattern that groups nothing (or '') is refused: every grain would count once per plane;
- `eval` on a COCO file of stacks scores the EDF view, as detection sees it;
- float TIFF stacks (a 3-plane stack is one page of 3 samples) are read, on one scale.
"""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from pollenstudio.core.errors import ImageReadError, ImportFormatError
from pollenstudio.core.imageio import image_info
from pollenstudio.core.stack import MAX_PLANES, FocalStack, StackPatternError, import_info, stack_hash
from pollenstudio.project import Project
from pollenstudio.project.coco import import_coco
from pollenstudio.project.relink import find_missing_files, relink_project
from pollenstudio.project.transfer import import_to_folder

H, W = 48, 64


def _field(folder: Path, base: int, n: int = 3, name="{k}z.png") -> list[Path]:
    """A field of ``n`` plane files whose pixels say which field and plane they are."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        img = np.full((H, W), base + k, np.uint8)
        img[5:15, 5 + 7 * k:12 + 7 * k] = 255 - base  # planes differ in more than a constant
        cv2.imwrite(str(folder / name.format(k=k)), img)
        out.append(folder / name.format(k=k))
    return out


def _own_pixels(p: Project, rec) -> list[int]:
    return [int(p.read_plane(rec, k)[0, 0]) for k in range(rec.planes)]


# ----------------------------------------------------------------------------- item 2
def test_relink_of_two_moved_plane_file_fields_named_alike_restores_each_to_its_own_pixels(tmp_path):
    src = tmp_path / "slide"
    _field(src / "fieldA", 10)
    _field(src / "fieldB", 100)
    proj, _ = import_to_folder(tmp_path / "p", src, stack_pattern="{z}z.png")
    with proj:
        recs = sorted(proj.images(), key=lambda r: r.path)
        assert [r.planes for r in recs] == [3, 3]
        truth = {r.id: _own_pixels(proj, r) for r in recs}
        shas = {r.id: r.sha256 for r in recs}
        assert truth[recs[0].id] == [10, 11, 12] and truth[recs[1].id] == [100, 101, 102]
        # the slide is moved and its fields renamed so that B now sorts before A
        moved = tmp_path / "archive" / "slide"
        moved.parent.mkdir()
        os.rename(src / "fieldA", src / "x2")
        os.rename(src / "fieldB", src / "x1")
        os.rename(src, moved)
        assert len(proj.missing_images()) == 2
        report = relink_project(proj, [tmp_path / "archive"])
        assert report.still_missing == [] and len(report.by_hash) == 2, report.text()
        for rec in proj.images():
            assert _own_pixels(proj, rec) == truth[rec.id]  # each field on its own pixels
            assert rec.sha256 == shas[rec.id]  # the stored content hash is kept
            assert all(Path(f).parent == proj.image_path(rec).parent for f in proj.plane_paths(rec))
            assert proj.file_problem(rec) is None
        assert proj.missing_images() == []
        # and the moved folder imported again adds nothing a second time
        res = proj.add_folder(tmp_path / "archive", stack_pattern="{z}z.png")
        assert res.added == [] and len(res.duplicates) == 2 and len(proj.images()) == 2


def test_relink_refuses_a_stack_whose_planes_changed_and_says_why(tmp_path):
    src = tmp_path / "slide"
    _field(src / "f1", 10)
    proj, _ = import_to_folder(tmp_path / "p", src, stack_pattern="{z}z.png")
    with proj:
        (rec,) = proj.images()
        before = proj.image(rec.id)
        moved = tmp_path / "moved"
        shutil.move(str(src), str(moved))
        _field(moved / "f1", 50)  # same names and size, other pixels (re-saved, or another field)
        _field(moved / "f2", 50)
        report = relink_project(proj, [moved])
        assert report.found == [] and [i for i, _ in report.still_missing] == [rec.id]
        assert "content of all its planes" in report.text() and "never by file names" in report.text()
        assert proj.image(rec.id) == before  # nothing changed: path, plane files, hash
        assert report.to_dict()["still_missing"][0]["reason"]


def test_a_stack_with_one_plane_gone_is_missing_and_found_whole(tmp_path):
    src = tmp_path / "slide"
    planes = _field(src / "f1", 10)
    proj, _ = import_to_folder(tmp_path / "p", src, stack_pattern="{z}z.png")
    with proj:
        (rec,) = proj.images()
        elsewhere = tmp_path / "copy"
        shutil.copytree(src / "f1", elsewhere)
        planes[2].unlink()  # plane 3 lost here, the whole field is in "copy"
        assert [r.id for r in proj.missing_images()] == [rec.id]
        report = relink_project(proj, [elsewhere])
        assert [f.image_id for f in report.by_hash] == [rec.id]
        assert [Path(f).parent for f in proj.plane_paths(rec.id)] == [elsewhere.resolve()] * 3
        assert _own_pixels(proj, proj.image(rec.id)) == [10, 11, 12]


def test_renamed_plane_files_are_found_by_content(tmp_path):
    src = tmp_path / "slide"
    _field(src / "f1", 10, name="a_z{k}.png")
    proj, _ = import_to_folder(tmp_path / "p", src, stack_pattern="*_z{z}.png")
    with proj:
        (rec,) = proj.images()
        new = tmp_path / "new"
        new.mkdir()
        for k in range(3):
            os.rename(src / "f1" / f"a_z{k}.png", new / f"slide7_plane{k + 1:02d}.png")
        report = relink_project(proj, [new])
        assert [f.image_id for f in report.by_hash] == [rec.id], report.text()
        assert [Path(f).name for f in proj.plane_paths(rec.id)] == [f"slide7_plane{k:02d}.png" for k in (1, 2, 3)]
        assert _own_pixels(proj, proj.image(rec.id)) == [10, 11, 12]


def test_reimporting_a_moved_stack_folder_finds_the_lost_stack_instead_of_calling_it_a_duplicate(tmp_path):
    src = tmp_path / "slide"
    _field(src / "f1", 10)
    _field(src / "f2", 100)
    proj, _ = import_to_folder(tmp_path / "p", src, stack_pattern="{z}z.png")
    with proj:
        truth = {r.id: _own_pixels(proj, r) for r in proj.images()}
        moved = tmp_path / "moved"
        os.rename(src, moved)
        res = proj.add_folder(moved, stack_pattern="{z}z.png")
        assert res.added == [] and res.duplicates == [] and sorted(res.relinked) == sorted(truth)
        assert proj.missing_images() == []
        for rec in proj.images():
            assert _own_pixels(proj, rec) == truth[rec.id]
            assert all(str(f).startswith(str(moved.resolve())) for f in proj.plane_paths(rec))


def test_a_coco_stack_whose_files_are_elsewhere_stays_a_stack_and_relinks_only_unambiguously(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "f1/0z.png", "width": W, "height": H, "planes": 3,
                       "plane_files": ["f1/0z.png", "f1/1z.png", "f1/2z.png"]}],
           "categories": [{"id": 1, "name": "Olea"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "plane": 2}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with Project.create(tmp_path / "p") as p:
        import_coco(p, tmp_path / "c.json")
        (rec,) = p.images()
        assert rec.planes == 3 and len(rec.plane_files) == 3  # not a single image of its first plane
        assert [a.plane for a in p.annotations(rec.id)] == [2]
        _field(tmp_path / "a" / "f1", 10)
        _field(tmp_path / "b" / "f1", 100)  # two folders with planes of these names: which one?
        report = find_missing_files(p, [tmp_path / "a", tmp_path / "b"])
        assert report.found == [] and "cannot tell which" in report.reasons[rec.id]
        report = relink_project(p, [tmp_path / "b"])
        assert [f.how for f in report.found] == ["name"]
        rec = p.image(rec.id)
        assert _own_pixels(p, rec) == [100, 101, 102] and rec.sha256 == stack_hash(p.plane_paths(rec))


# ----------------------------------------------------------------------------- item 6
def _coco_stack(tmp_path: Path, planes: list[str], w=W, h=H) -> Path:
    doc = {"images": [{"id": 1, "file_name": planes[0], "width": w, "height": h, "planes": len(planes),
                       "plane_files": planes}],
           "categories": [{"id": 1, "name": "Olea"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 30, 20, 15]}]}
    f = tmp_path / "c.json"
    f.write_text(json.dumps(doc))
    return f


@pytest.mark.parametrize("case", ["sizes", "twice", "huge", "depth", "channels"])
def test_coco_plane_files_follow_the_rules_of_every_import_path(tmp_path, case):
    d = tmp_path / "planes"
    _field(d, 10, n=2)
    if case == "sizes":
        cv2.imwrite(str(d / "2z.png"), np.zeros((H - 8, W - 4), np.uint8))
        planes, words = ["planes/0z.png", "planes/1z.png", "planes/2z.png"], "same size"
    elif case == "twice":
        planes, words = ["planes/0z.png", "planes/0z.png", "planes/1z.png"], "listed twice"
    elif case == "huge":
        planes, words = [f"planes/{k}z.png" for k in range(10_000)], f"at most {MAX_PLANES}"
    elif case == "depth":
        cv2.imwrite(str(d / "2z.png"), np.full((H, W), 4000, np.uint16))
        planes, words = ["planes/0z.png", "planes/1z.png", "planes/2z.png"], "same bit depth"
    else:
        cv2.imwrite(str(d / "2z.png"), np.full((H, W, 3), 40, np.uint8))
        planes, words = ["planes/0z.png", "planes/1z.png", "planes/2z.png"], "colour channels"
    with Project.create(tmp_path / "p") as p:
        with pytest.raises(ImportFormatError, match=words):
            import_coco(p, _coco_stack(tmp_path, planes))
        assert p.images() == [] and p.categories() == []
    if case in ("sizes", "depth", "channels"):  # the folder import says the same about these files
        with pytest.raises(ImportFormatError, match=words):
            import_to_folder(tmp_path / "q", d, stack_pattern="{z}z.png")
        assert not (tmp_path / "q").exists()


def test_import_info_is_the_one_rule_and_refuses_the_same_file_twice(tmp_path):
    files = _field(tmp_path, 10, n=3)
    assert import_info(files[0], files).planes == 3
    with pytest.raises(ImageReadError, match="same file as plane 1"):
        import_info(files[0], [files[0], tmp_path / "." / files[0].name, files[1]])
    with pytest.raises(ImageReadError, match="two or more"):
        import_info(files[0], [files[0]])


# ----------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("pattern", ["", "{z}.png", "*_z{z}.png"])
def test_a_stack_pattern_that_groups_nothing_is_refused_and_imports_nothing(tmp_path, pattern):
    _field(tmp_path / "src" / "f1", 10)
    _field(tmp_path / "src" / "f2", 100)
    with pytest.raises(StackPatternError, match="'{z}'" if pattern == "" else "groups no plane files"):
        import_to_folder(tmp_path / "p", tmp_path / "src", stack_pattern=pattern)
    assert not (tmp_path / "p").exists()
    with Project.create(tmp_path / "q") as q:  # an existing project: unchanged
        with pytest.raises(StackPatternError):
            q.add_folder(tmp_path / "src", stack_pattern=pattern)
        assert q.images() == []


# ----------------------------------------------------------------------------- item 13
def test_eval_on_a_coco_file_of_stacks_scores_the_edf_view(tmp_path):
    from pollenstudio.core.stack import edf_composite
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.engine.dataset import data_from_coco
    from pollenstudio.engine.evaluate import evaluate_model
    from pollenstudio.engine.synthetic import SynthConfig
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset

    cfg = SynthConfig(width=160, height=128)
    coco = generate_stack_dataset(tmp_path / "s", 2, 3, seed=4, cfg=cfg)
    data = data_from_coco(coco)
    assert all(s.is_stack for s in data.samples)
    # the same ground truth on the EDF composites written as plain images
    doc = json.loads(coco.read_text())
    for im in doc["images"]:
        with FocalStack.open(tmp_path / "s" / im["file_name"]) as st:
            edf = edf_composite(st.planes())
        im["file_name"] = im["file_name"].replace(".tif", ".png")
        cv2.imwrite(str(tmp_path / "s" / im["file_name"]), edf)
        del im["planes"]
    (tmp_path / "s" / "edf.json").write_text(json.dumps(doc))
    flat = data_from_coco(tmp_path / "s" / "edf.json")
    assert not any(s.is_stack for s in flat.samples)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mcfg = ModelConfig.tiny("base", nc=len(data.class_names), class_names=data.class_names, imgsz=128)
    model = build_model(mcfg).eval()
    a = evaluate_model(model, mcfg, data.samples, data.class_names, conf=0.001).to_dict()
    b = evaluate_model(model, mcfg, flat.samples, flat.class_names, conf=0.001).to_dict()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_multi_page_tiff_read_as_one_picture_is_refused_in_plain_words(tmp_path):
    from pollenstudio.core.imageio import read_image

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((5, H, W), np.uint8))
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "s.tif")
    assert "core." not in str(err.value) and "FocalStack" not in str(err.value)


# ----------------------------------------------------------------------------- item 14
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # tifffile: how it stores (3, H, W) will change
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_float32_tiff_stacks_are_read_on_one_scale(tmp_path, n):
    """tifffile writes a (3, H, W) or (4, H, W) array as one page of 3 or 4 samples: that was
    refused as 'plane 2 of 3 is missing (truncated?)'."""
    stack = np.stack([np.full((H, W), 250.0 * (k + 1), np.float32) for k in range(n)])
    tifffile.imwrite(tmp_path / "f.tif", stack, metadata={"axes": "ZYX"})
    proj, res = import_to_folder(tmp_path / "p", tmp_path, kind="images")
    with proj:
        (rec,) = proj.images()
        assert rec.planes == n and res.summary["stacks"] == 1
        vals = [int(proj.read_plane(rec, k)[0, 0]) for k in range(n)]
        # one scale for the stack: the brightest plane at the top, the others in proportion
        assert all(abs(v - 65535 * (k + 1) / n) <= 2 for k, v in enumerate(vals)), vals
        assert proj.read_plane(rec, "edf").shape == (H, W)


def test_a_16_bit_colour_png_says_16_bit_so_mixed_depths_are_caught(tmp_path):
    cv2.imwrite(str(tmp_path / "a_z0.png"), np.full((H, W, 3), 20, np.uint8))
    cv2.imwrite(str(tmp_path / "a_z1.png"), np.full((H, W, 3), 5000, np.uint16))
    assert image_info(tmp_path / "a_z1.png").bit_depth == 16
    with pytest.raises(ImageReadError, match="same bit depth"):
        import_info(tmp_path / "a_z0.png", [tmp_path / "a_z0.png", tmp_path / "a_z1.png"])


def test_a_plane_file_replaced_after_import_is_refused_in_words(tmp_path):
    files = _field(tmp_path / "src" / "f", 10)
    proj, _ = import_to_folder(tmp_path / "p", tmp_path / "src", stack_pattern="{z}z.png")
    with proj:
        (rec,) = proj.images()
        cv2.imwrite(str(files[1]), np.full((H, W, 3), 7, np.uint8))  # now colour
        with pytest.raises(ImageReadError, match="like plane 1"):
            proj.read_plane(rec, "edf")


def test_a_yolo_import_keeps_a_multi_page_tiff_a_stack(tmp_path):
    """The YOLO import registered a multi-page TIFF as a single image (1 plane), which every
    reader then refused: the same rule as the folder and COCO imports."""
    from pollenstudio.project.yolo import import_yolo

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    (ds / "classes.txt").write_text("Olea\n")
    tifffile.imwrite(ds / "images" / "s.tif", np.stack([np.full((H, W), 20 * (k + 1), np.uint8) for k in range(5)]))
    (ds / "labels" / "s.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    with Project.create(tmp_path / "p") as p:
        import_yolo(p, ds)
        (rec,) = p.images()
        assert rec.planes == 5 and int(p.read_plane(rec, 4)[0, 0]) == 100
