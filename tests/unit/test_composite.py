"""Real-grain compositor: cut-out quality, determinism, boxes that match the pasted grains."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pollenstudio.engine.synthetic.composite import (
    CompositeConfig,
    GrainLibrary,
    composite_dataset,
    composite_image,
    debris_tiles,
)
from pollenstudio.engine.synthetic.config import SynthConfigError
from pollenstudio.engine.synthetic.cutout import CutoutRejected, cut_out, grain_mask


def _crop(seed: int, size=(180, 200), centre=None, axes=(55, 70), colour=(190, 90, 170), pale=False):
    """A crop like POLLEN73S ones: plain background, one textured grain, a 2 px white frame.
    Returns (rgb uint8, true mask of the grain inside the 3 px-stripped crop)."""
    rng = np.random.default_rng(seed)
    h, w = size
    bg = np.array([205, 200, 215], np.float32)
    img = np.ones((h, w, 3), np.float32) * bg
    mask = np.zeros((h, w), np.uint8)
    c = centre or (w // 2, h // 2)
    cv2.ellipse(mask, c, axes, 20, 0, 360, 1, -1)
    col = np.array(colour, np.float32)
    if pale:
        col = bg * 0.93
    texture = cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 2)[..., None]
    grain = col + texture
    ring = mask - cv2.erode(mask, np.ones((5, 5), np.uint8))
    grain[ring.astype(bool)] *= 0.55  # darker exine outline
    img = np.where(mask[..., None].astype(bool), grain, img)
    img += rng.normal(0, 2.0, img.shape)
    img[:2], img[-2:], img[:, :2], img[:, -2:] = 255, 255, 255, 255
    return np.clip(img, 0, 255).astype(np.uint8), mask[3:-3, 3:-3]


def _iou(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("pale", [False, True])
def test_cut_out_recovers_a_known_grain_mask(pale):
    rgb, truth = _crop(1, pale=pale)
    mask, bg = grain_mask(rgb, "crop")
    assert _iou(mask, truth) > 0.9
    assert np.allclose(bg * 255, [205, 200, 215], atol=3)
    c = cut_out(rgb, "crop")
    assert c.diameter == pytest.approx(np.sqrt(4 * truth.sum() / np.pi), rel=0.08)
    assert c.alpha.max() == pytest.approx(1.0, abs=1e-3) and c.alpha.min() >= 0
    # density only where the grain is, and the grain absorbs (positive mean density)
    assert (c.alpha == 0).any() and np.abs(c.od[c.alpha == 0]).max() == 0
    assert c.od[c.alpha > 0.99].mean() > 0.02


def test_cut_out_rejects_bad_crops_with_a_reason():
    flat = np.full((120, 120, 3), 200, np.uint8)
    with pytest.raises(CutoutRejected) as e:
        cut_out(flat, "flat.jpg")
    assert e.value.reason == "flat" and "flat.jpg" in str(e.value)
    edge, _ = _crop(2, centre=(30, 100), axes=(60, 70))  # grain cut by the crop's edge
    with pytest.raises(CutoutRejected) as e:
        cut_out(edge)
    assert e.value.reason == "border"
    with pytest.raises(CutoutRejected) as e:
        cut_out(np.zeros((20, 20, 3), np.uint8))
    assert e.value.reason == "small"


@pytest.fixture(scope="module")
def grain_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("grains")
    for t, colour in (("Alpha", (190, 90, 170)), ("Beta", (150, 120, 60)), ("Gamma", (120, 120, 125))):
        (root / t).mkdir()
        for k in range(3):
            rgb, _ = _crop(10 * len(t) + k, colour=colour, axes=(40 + 8 * k, 55))
            cv2.imwrite(str(root / t / f"{t}_{k}.png"), rgb[..., ::-1])
    # one crop that cannot be cut out: skipped and counted, never pasted
    cv2.imwrite(str(root / "Gamma" / "blank.png"), np.full((100, 100, 3), 210, np.uint8))
    return root


def test_library_reads_taxa_and_counts_rejected_crops(grain_dir):
    lib = GrainLibrary.from_folders([grain_dir])
    assert lib.taxa == ["Alpha", "Beta", "Gamma"]
    assert len(lib.files) == 10
    assert len(lib.usable()) == 9
    assert dict(lib.rejected) == {"flat": 1}


def test_split_keeps_test_crops_and_taxa_out_of_training(grain_dir):
    for by in ("crop", "taxon"):
        tr = GrainLibrary.from_folders([grain_dir], split="train", split_by=by, test_fraction=0.4, split_salt="s")
        te = GrainLibrary.from_folders([grain_dir], split="test", split_by=by, test_fraction=0.4, split_salt="s")
        assert not set(tr.files) & set(te.files)
        assert len(tr.files) + len(te.files) == 10
        if by == "taxon":
            assert not set(tr.taxa) & set(te.taxa)
    with pytest.raises(SynthConfigError):
        GrainLibrary.from_folders([grain_dir / "nope"])


def test_debris_split_is_one_contiguous_block_of_the_scan(tmp_path):
    # tiles named by their place on the scan; natural order puts tile_10_* after tile_9_*
    tile = np.full((8, 8, 3), 200, np.uint8)
    names = [f"scan_{x}_{y}.jpg" for x in range(12) for y in range(2)]
    for n in names:
        cv2.imwrite(str(tmp_path / n), tile)
    train = debris_tiles(tmp_path, split="train", test_fraction=0.25)
    test = debris_tiles(tmp_path, split="test", test_fraction=0.25)
    assert len(train) + len(test) == 24 and not set(train) & set(test)
    assert sorted(p.name for p in test) == sorted(f"scan_{x}_{y}.jpg" for x in (9, 10, 11) for y in range(2))
    assert debris_tiles(tmp_path) == train + test  # natural order, whole folder
    with pytest.raises(SynthConfigError):
        debris_tiles(tmp_path, split="val")


def test_composite_dataset_is_deterministic_and_names_classes(grain_dir, tmp_path):
    lib = GrainLibrary.from_folders([grain_dir])
    cfg = CompositeConfig(width=160, height=128, grain_size=(20, 60), grains_per_frame=(2, 4))
    a = composite_dataset(tmp_path / "a", 3, lib, seed=5, cfg=cfg)
    b = composite_dataset(tmp_path / "b", 3, GrainLibrary.from_folders([grain_dir]), seed=5, cfg=cfg)
    assert a.read_bytes() == b.read_bytes()
    for i in range(3):
        assert (tmp_path / "a" / "images" / f"{i:06d}.png").read_bytes() == (tmp_path / "b" / "images" / f"{i:06d}.png").read_bytes()
    coco = json.loads(a.read_text())
    assert [c["name"] for c in coco["categories"]] == ["Alpha", "Beta", "Gamma"]
    assert coco["info"]["crops_skipped"] == 1 and coco["annotations"]
    c = composite_dataset(tmp_path / "c", 2, lib, seed=6, cfg=cfg.with_(class_agnostic=True))
    coco = json.loads(c.read_text())
    assert [c["name"] for c in coco["categories"]] == ["pollen"]
    assert {a["category_id"] for a in coco["annotations"]} == {1}


def test_boxes_are_exactly_the_pasted_grains(grain_dir):
    """Against the same frame without grains: every darkened pixel is inside a box, and each
    box's four edges touch darkened pixels (its grain), so boxes are tight and none is lost."""
    lib = GrainLibrary.from_folders([grain_dir])
    cfg = CompositeConfig(width=320, height=256, grain_size=(30, 90), grains_per_frame=(3, 3), generated_background=0.0,
                          blur=0.0, noise=(0.0, 0.0), restain=0.0, density=(1.0, 1.0), crowding=0.0)
    checked = 0
    for seed in range(6):
        img, objs = composite_image(seed, lib, cfg)
        empty, none = composite_image(seed, lib, cfg.with_(grains_per_frame=(0, 0)))
        assert none == []
        dark = np.log(empty.astype(np.float32) + 0.5) - np.log(img.astype(np.float32) + 0.5)
        grain = dark.max(-1) > 0.01
        inside = np.zeros_like(grain)
        for o in objs:
            x1, y1, x2, y2 = (int(v) for v in o["bbox"])
            assert float(x1) == o["bbox"][0] and float(y2) == o["bbox"][3]  # whole pixels
            inside[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = True
            box = grain[y1:y2, x1:x2]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            checked += 1
        # grains under 30 % inside the frame are drawn but not listed: darkened pixels outside
        # every box may only be such grains, i.e. blobs that reach the frame's border
        n, labels = cv2.connectedComponents((grain & ~inside).astype(np.uint8))
        for k in range(1, n):
            ys, xs = np.nonzero(labels == k)
            assert ys.min() == 0 or xs.min() == 0 or ys.max() == grain.shape[0] - 1 or xs.max() == grain.shape[1] - 1, (
                f"seed {seed}: darkened pixels outside every box at ({xs.mean():.0f}, {ys.mean():.0f})"
            )
    assert checked >= 12


def test_config_rejects_nonsense():
    with pytest.raises(SynthConfigError):
        CompositeConfig(grain_size=(300, 10))
    with pytest.raises(SynthConfigError):
        CompositeConfig(noise=(0.1, 0.01))
    with pytest.raises(SynthConfigError):
        CompositeConfig(restain=2.0)


def test_one_magnification_keeps_each_grains_own_size(grain_dir):
    """magnification: a grain is pasted at its crop's size times the factor (+-10 %), whatever
    grain_size says: crops of different sizes stay different, as on one microscope."""
    lib = GrainLibrary.from_folders([grain_dir])
    cfg = CompositeConfig(width=640, height=640, grain_size=(12, 14), grains_per_frame=(2, 2), crowding=0.0,
                          blur=0.0, magnification=0.5)
    seen = 0
    for seed in range(8):
        _, objs = composite_image(seed, lib, cfg)
        for o in objs:
            x1, y1, x2, y2 = o["bbox"]
            if x1 <= 0 or y1 <= 0 or x2 >= 639 or y2 >= 639:
                continue  # cut by the frame
            c = lib.cutout(lib.files.index(next(f for f in lib.files if f.name == o["source"])))
            d = np.sqrt((x2 - x1) * (y2 - y1))
            assert 0.5 * 0.75 * c.diameter <= d <= 0.5 * 1.3 * c.diameter, (d, c.diameter)
            seen += 1
    assert seen >= 6
    with pytest.raises(SynthConfigError):
        CompositeConfig(magnification=0.0)
