"""The synthetic micrograph generator: exact boxes, determinism, COCO output, scale."""

import json

import numpy as np
import pytest

from pollenstudio.core.errors import Cancelled
from pollenstudio.core.progress import CancelToken
from pollenstudio.engine.synthetic import TAXA, SynthConfig, SynthConfigError, generate_dataset, generate_image

SMALL = SynthConfig(width=320, height=240)


def test_image_layout_and_objects():
    img, objs = generate_image(0, SynthConfig(width=640, height=480))
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert objs, "a default image should contain grains"
    for o in objs:
        assert set(o) >= {"bbox", "category", "name", "area", "polygon"}
        assert TAXA[o["category"]] == o["name"]
        assert o["area"] > 0


def test_same_seed_same_pixels_other_seed_differs():
    a, oa = generate_image(7, SMALL)
    b, ob = generate_image(7, SMALL)
    c, _ = generate_image(8, SMALL)
    assert np.array_equal(a, b) and oa == ob
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("difficulty", ["easy", "default", "hard"])
def test_boxes_inside_image_and_tight_around_masks(difficulty):
    cfg = SynthConfig(width=320, height=240, difficulty=difficulty, n_grains=(8, 14))
    for seed in range(6):
        _, objs = generate_image(seed, cfg, return_masks=True)
        for o in objs:
            x1, y1, x2, y2 = o["bbox"]
            assert 0 <= x1 < x2 <= cfg.width and 0 <= y1 < y2 <= cfg.height
            m = o["mask"]
            assert m.shape == (round(y2 - y1), round(x2 - x1))
            # tight: the mask touches all four sides of its box
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
            assert int(m.sum()) == o["area"]


def _lone_grain(cx, cy, taxon, diameter, w=200, h=160, seed=3):
    base = SynthConfig(width=w, height=h, n_grains=(0, 0), clutter=0.0, noise=0.0, blur=0.0)
    empty, none = generate_image(seed, base)
    img, objs = generate_image(seed, base.with_(forced_grains=((cx, cy, taxon, diameter),)))
    assert none == []
    return empty, img, objs


@pytest.mark.parametrize("taxon", range(len(TAXA)))
def test_box_is_where_the_grain_is_drawn(taxon):
    empty, img, objs = _lone_grain(97.3, 81.6, taxon, 50)
    assert len(objs) == 1 and objs[0]["category"] == taxon
    x1, y1, x2, y2 = objs[0]["bbox"]
    # the box's long side is about the requested diameter (rotation and shape change it a
    # little; a bisaccate grain is wider than tall)
    assert 35 <= max(x2 - x1, y2 - y1) <= 54 and min(x2 - x1, y2 - y1) >= 22
    changed = np.abs(img.astype(int) - empty.astype(int)).max(2) > 25
    ys, xs = np.nonzero(changed)
    assert len(xs) > 300
    # strongly changed pixels lie inside the box, but for the thin refraction halo
    assert xs.min() >= x1 - 4 and xs.max() < x2 + 4 and ys.min() >= y1 - 4 and ys.max() < y2 + 4
    # and the grain fills its box: no large empty margin on any side
    assert xs.min() <= x1 + 3 and xs.max() >= x2 - 4 and ys.min() <= y1 + 3 and ys.max() >= y2 - 4


def test_forced_grain_across_a_tile_border():
    _, _, objs = _lone_grain(100.0, 80.0, 1, 40)
    (o,) = objs
    assert o["bbox"][0] < 100 < o["bbox"][2] and o["bbox"][1] < 80 < o["bbox"][3]


def test_grains_cut_by_the_border_are_clipped_and_slivers_dropped():
    # centre 10 px inside the left edge: about 40 % visible -> kept with a box clipped at 0
    _, _, objs = _lone_grain(10.0, 80.0, 0, 60)
    assert len(objs) == 1 and objs[0]["bbox"][0] == 0.0
    # centre 20 px outside: a sliver of about 10 % -> not annotated
    _, _, objs = _lone_grain(-20.0, 80.0, 0, 60)
    assert objs == []


def test_all_taxa_appear_over_a_moderate_set():
    seen = set()
    for seed in range(12):
        _, objs = generate_image(seed, SMALL)
        seen |= {o["name"] for o in objs}
    assert seen == set(TAXA)


def test_grains_touch_overlap_and_are_cut_by_the_border():
    overlapping = at_border = 0
    for seed in range(8):
        _, objs = generate_image(seed, SMALL)
        boxes = [o["bbox"] for o in objs]
        at_border += sum(b[0] == 0 or b[1] == 0 or b[2] == SMALL.width or b[3] == SMALL.height for b in boxes)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                overlapping += min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
    assert overlapping >= 3 and at_border >= 3


def test_taxa_subset_indexes_into_the_subset():
    cfg = SynthConfig(width=320, height=240, taxa=("Pinus", "Olea"), n_grains=(6, 6))
    _, objs = generate_image(1, cfg)
    assert objs and all(o["name"] == ("Pinus", "Olea")[o["category"]] for o in objs)


def test_harder_images_are_noisier_and_paler():
    def stats(difficulty):
        cfg = SynthConfig(width=256, height=256, difficulty=difficulty, n_grains=(0, 0), clutter=0.0)
        img, _ = generate_image(5, cfg)
        g = img.astype(float).mean(2)
        return np.abs(np.diff(g, axis=1)).mean()

    assert stats("hard") > 1.5 * stats("easy")


def test_jpeg_quality_changes_pixels():
    png, _ = generate_image(2, SMALL)
    jpg, _ = generate_image(2, SMALL.with_(jpeg_quality=40))
    assert jpg.shape == png.shape and not np.array_equal(png, jpg)
    assert np.abs(png.astype(int) - jpg.astype(int)).mean() < 6


@pytest.mark.parametrize(
    "kwargs",
    [dict(difficulty="extreme"), dict(taxa=("Pinus", "Rosa")), dict(grain_size=(50, 20)), dict(width=4),
     dict(jpeg_quality=0), dict(forced_grains=((1, 1, 9, 30),)), dict(noise=-1.0)],
)
def test_bad_settings_raise_a_clear_error(kwargs):
    with pytest.raises(SynthConfigError):
        SynthConfig(**kwargs)


def test_dataset_is_valid_coco_and_byte_identical(tmp_path):
    from pycocotools.coco import COCO

    cfg = SynthConfig(width=256, height=192)
    a = generate_dataset(tmp_path / "a", 4, seed=11, cfg=cfg)
    b = generate_dataset(tmp_path / "b", 4, seed=11, cfg=cfg)
    assert a.read_bytes() == b.read_bytes()
    for f in sorted((tmp_path / "a" / "images").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "images" / f.name).read_bytes()
    coco = COCO(str(a))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    ann_ids = [x["id"] for x in json.loads(a.read_text())["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1)) and ann_ids
    assert [c["id"] for c in coco.loadCats(coco.getCatIds())] == list(range(1, len(TAXA) + 1))
    for img in coco.loadImgs(coco.getImgIds()):
        assert (tmp_path / "a" / img["file_name"]).is_file()
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= img["width"] and y + h <= img["height"]
            # the polygon outline agrees with the box
            m = coco.annToMask(ann)
            ys, xs = np.nonzero(m)
            assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
    # a different seed gives a different set
    c = generate_dataset(tmp_path / "c", 4, seed=12, cfg=cfg)
    assert c.read_bytes() != a.read_bytes()


def test_dataset_pixels_match_generate_image_and_jpeg_writes_jpg(tmp_path):
    from pollenstudio.core.imageio import read_image

    cfg = SynthConfig(width=200, height=150, jpeg_quality=85)
    path = generate_dataset(tmp_path, 2, seed=0, cfg=cfg)
    coco = json.loads(path.read_text())
    assert all(i["file_name"].endswith(".jpg") for i in coco["images"])
    seed0 = coco["images"][0]["synth_seed"]
    img, _ = generate_image(seed0, cfg)
    assert np.array_equal(read_image(tmp_path / coco["images"][0]["file_name"]), img)


def test_progress_reports_and_cancel_leaves_no_annotations(tmp_path):
    seen = []
    tok = CancelToken(on_update=lambda d, t, m: seen.append((d, t)))
    generate_dataset(tmp_path / "ok", 3, seed=0, cfg=SynthConfig(width=64, height=64), progress=tok)
    assert seen[-1] == (3, 3)
    tok = CancelToken(on_update=lambda d, t, m: tok.cancel())
    with pytest.raises(Cancelled):
        generate_dataset(tmp_path / "stop", 3, seed=0, cfg=SynthConfig(width=64, height=64), progress=tok)
    assert not (tmp_path / "stop" / "annotations.json").exists()


def test_large_slide_scan_size():
    cfg = SynthConfig(width=2400, height=2000, difficulty="hard")
    img, objs = generate_image(0, cfg)
    assert img.shape == (2000, 2400, 3)
    assert len(objs) > 50
    assert all(0 <= o["bbox"][0] < o["bbox"][2] <= 2400 and 0 <= o["bbox"][1] < o["bbox"][3] <= 2000 for o in objs)
    # the strips the image is composited in leave no seams: the row step across a strip
    # border is like any other row step
    g = img.astype(float).mean(2)
    steps = np.abs(np.diff(g, axis=0)).mean(1)
    assert steps[255] < 3 * np.median(steps) and steps[511] < 3 * np.median(steps)


def test_strip_compositing_leaves_no_seams(monkeypatch):
    from pollenstudio.engine.synthetic import scene

    # without noise (the only thing seeded per strip) the strip height must not matter
    cfg = SynthConfig(width=200, height=600, noise=0.0, difficulty="hard")
    a, oa = generate_image(4, cfg)
    monkeypatch.setattr(scene, "STRIP", 48)
    b, ob = generate_image(4, cfg)
    assert np.array_equal(a, b) and oa == ob
