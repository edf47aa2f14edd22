"""Detection of whole-slide scans tile by tile from the file (issue 29): the same boxes as on
the decoded image, blank tiles judged from the file's own low-resolution level without
losing a grain, per-tile progress and boxes as they come, and tiles finished before a
cancel not run again."""

import cv2
import numpy as np
import pytest
import tifffile
from fixtures_models import random_grains, render_scene, tiny_model_path  # noqa: F401
from tile_checks import grain_pixels_in_skipped_tiles

from pollenstudio.core.progress import CancelToken
from pollenstudio.core.slide import Slide
from pollenstudio.engine.detect_job import TileJournal, detect_project
from pollenstudio.engine.predict import Predictor, SlideReader, slide_content_map, tile_progress
from pollenstudio.engine.synthetic import DIFFICULTIES, SynthConfig, generate_image
from pollenstudio.engine.tiling import blank_tiles, plan_tiles
from pollenstudio.project import Project


def write_slide(path, img, levels=2, tile=(128, 128)):
    """A tiled pyramidal TIFF (level 0 and ``levels`` halvings in SubIFDs), as scanners write."""
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(img, subifds=levels, tile=tile, compression="zlib", photometric="rgb")
        for k in range(1, levels + 1):
            h, w = img.shape[0] >> k, img.shape[1] >> k
            tw.write(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA), subfiletype=1, tile=tile,
                     compression="zlib", photometric="rgb")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A 1500 x 1100 slide with 12 grains (about 6 x 5 tiles of the tiny model's 256 px)."""
    rng = np.random.default_rng(3)
    grains = random_grains(rng, 1500, 1100, 12, margin=8)
    img, boxes, _ = render_scene(1500, 1100, grains, seed=4)
    path = tmp_path_factory.mktemp("slide") / "scan.tif"
    write_slide(path, img)
    return path, img, boxes


def _boxes(dets):
    return np.asarray([d.box.xyxy() for d in dets], np.float64).reshape(-1, 4)


def _nearest(a, b):
    """For each box of ``a``, its largest coordinate difference to the closest box of ``b``."""
    return np.asarray([np.abs(b - x).max(axis=1).min() for x in a])


@pytest.mark.parametrize("skip_blank", [False, True])
def test_tiles_read_from_the_file_give_the_boxes_of_the_decoded_image(scan, tiny_model_path, skip_blank):  # noqa: F811
    path, img, truth = scan
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, skip_blank=skip_blank)
    with Slide.open(path) as s:
        assert s.lazy
        lazy = next(iter(pred.iter_predict([s])))
    whole = next(iter(pred.iter_predict([img])))
    assert lazy.error is None and lazy.tiles == whole.tiles > 20
    assert len(lazy.detections) == len(whole.detections) >= len(truth)
    assert _nearest(_boxes(lazy.detections), _boxes(whole.detections)).max() <= 0.5
    assert [d.label for d in lazy.detections] == [d.label for d in whole.detections]
    if skip_blank:
        assert lazy.skipped > 0
    # a path to the file takes the same route (it is never decoded whole)
    by_path = next(iter(pred.iter_predict([str(path)])))
    assert np.array_equal(_boxes(by_path.detections), _boxes(lazy.detections))


@pytest.mark.parametrize("factor", [2.0, 0.7])
def test_calibrated_tiles_are_resampled_region_by_region(scan, tiny_model_path, factor):  # noqa: F811
    """With a grain-size calibration each tile is read and resized on its own; the pixels
    are those of the resized whole image (level 0 here), so the boxes are too."""
    path, img, _ = scan
    meta = {"grain_size_px": [44.0, 44.0]}
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, meta=meta,
                                     grain_size=44.0 / factor)
    lazy = next(iter(pred.iter_predict([str(path)])))
    whole = next(iter(pred.iter_predict([img])))
    assert len(lazy.detections) == len(whole.detections) > 0 and lazy.tiles == whole.tiles
    assert _nearest(_boxes(lazy.detections), _boxes(whole.detections)).max() <= 0.5


def test_a_tile_of_the_resampled_slide_equals_the_crop_of_the_resampled_image(scan):
    path, img, _ = scan
    with Slide.open(path) as s:
        for factor in (2.0, 0.7):
            w, h = round(s.width * factor), round(s.height * factor)
            interp = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
            full = cv2.resize(img, (w, h), interpolation=interp).astype(int)
            r = SlideReader(s, w, h)
            for x, y in ((0, 0), (333, 250), (w - 200, h - 100)):
                got = r.read(x, y, 256, 256).astype(int)
                assert np.abs(got - full[y:y + 256, x:x + 256]).max() <= 1


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_blank_tiles_judged_from_the_pyramid_never_hold_a_grain(tmp_path, difficulty):
    """The content map comes from the file's level 2 (1/4 scale), never the full image:
    every tile with any grain pixel still runs, at every difficulty and grain size."""
    tiles = plan_tiles(1280, 896, 256, 64)
    skipped = []
    for k, (sizes, clutter) in enumerate((((6.0, 12.0), 0.0), ((12.0, 30.0), None), ((30.0, 72.0), 0.0))):
        cfg = SynthConfig(width=1280, height=896, difficulty=difficulty, grain_size=sizes, n_grains=(5, 8),
                          clutter=clutter)
        img, objs = generate_image(k + 1, cfg, return_masks=True)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        path = tmp_path / f"s{k}.tif"
        write_slide(path, np.ascontiguousarray(img))
        with Slide.open(path) as s:
            reader = SlideReader(s, s.width, s.height)
            assert reader.level(1 / 4) == 2  # the map is read from the quarter-scale level
            cmap, step = slide_content_map(reader)
        blank = blank_tiles(tiles, cmap, step)
        assert objs and grain_pixels_in_skipped_tiles(objs, tiles, blank) == 0
        skipped.append(blank.mean())
    assert max(skipped) >= 0.3  # most of plain medium is skipped: the test is not vacuous


def test_a_huge_slide_is_judged_on_a_coarser_map_within_its_cell_budget(scan):
    path, _, _ = scan
    with Slide.open(path) as s:
        cmap, step = slide_content_map(SlideReader(s, s.width, s.height), max_cells=20_000)
    assert step > 4 and cmap.size <= 20_000


def test_progress_says_the_tile_and_time_left_and_each_tile_s_boxes_stream(scan, tiny_model_path):  # noqa: F811
    path, _, _ = scan
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=1)
    seen, streamed = [], {}
    token = CancelToken(on_update=lambda d, t, m: seen.append((d, t, m)))
    res = next(iter(pred.iter_predict([str(path)], token, on_tile=lambda i, k, dets: streamed.setdefault(k, dets))))
    assert len(streamed) == res.tiles - res.skipped
    msgs = [m for _d, _t, m in seen if tile_progress(m)]
    assert len(msgs) >= 10 and all(": tile " in m and " of " in m for m in msgs)
    assert any(m.endswith(" left") for m in msgs)
    assert tile_progress("scan.tif: tile 1,146 of 1,147 · 2 min left") == ("scan.tif", 1146, 1147)
    # every final box was streamed first (the fold across seams only removes or joins boxes)
    tiles_boxes = np.concatenate([_boxes(d) for d in streamed.values() if d])
    assert _nearest(_boxes(res.detections), tiles_boxes).min() < 1e-6


def _slide_project(folder, src):
    folder.mkdir()
    dst = folder / "scan.tif"
    dst.write_bytes(src.read_bytes())
    proj = Project.create(folder)
    assert len(proj.add_images([dst]).added) == 1
    return proj


def test_a_cancelled_slide_resumes_at_the_tiles_it_had_not_run(scan, tiny_model_path, tmp_path):  # noqa: F811
    path, _, _ = scan
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=1)
    # uninterrupted, on a project of its own
    ref = _slide_project(tmp_path / "ref", path)
    s_ref = detect_project(ref, pred)
    ref_boxes = sorted(tuple(np.round(a.box.xyxy(), 6)) for a in ref.annotations(ref.images()[0].id))
    assert s_ref.done == 1 and s_ref.tiles_resumed == 0 and len(ref_boxes) >= 12
    ref.close()

    proj = _slide_project(tmp_path / "p", path)
    token = CancelToken()
    first: list[int] = []

    def cancel_after_5(image_id, k, dets):
        first.append(k)
        if len(first) == 5:
            token.cancel()

    s1 = detect_project(proj, pred, progress=token, on_tile=cancel_after_5)
    assert s1.cancelled and s1.done == 0 and len(first) == 5
    img = proj.images()[0]
    assert proj.annotations(img.id) == []  # nothing in the store until the slide is done
    journals = list(TileJournal.folder_of(proj).glob("*.jsonl"))
    assert len(journals) == 1

    second: list[int] = []
    s2 = detect_project(proj, pred, on_tile=lambda i, k, d: second.append(k))
    assert s2.done == 1 and s2.tiles_resumed == 5
    assert not set(second) & set(first) and len(second) == s2.tiles - s2.tiles_skipped - 5
    got = sorted(tuple(np.round(a.box.xyxy(), 6)) for a in proj.annotations(img.id))
    assert got == ref_boxes
    assert not journals[0].exists()  # the tiles are in the store now
    proj.close()


def test_a_journal_of_other_settings_or_cut_short_is_not_trusted(tmp_path):
    plan = {"conf": 0.3, "tile": 256}
    j = TileJournal.open(tmp_path, "a" * 64, plan)
    part = (np.array([[1.0, 2.0, 30.5, 40.25]]), np.array([0.9], np.float32), np.array([0]),
            np.array([[0.9, 0.1]], np.float32), np.array([1]))
    j.add(3, part, False)
    with open(j.path, "a") as f:
        f.write('{"tile": 4, "capped": false, "nc": 2, "boxes": [[1.0, 2')  # a crash mid-line
    j.add(5, part, True)
    done = TileJournal(j.path, plan).done()
    assert sorted(done) == [3, 5] and done[5][5] is True
    assert np.array_equal(done[3][0], part[0]) and done[3][3].shape == (1, 2)
    other = TileJournal.open(tmp_path, "a" * 64, {"conf": 0.5, "tile": 256})
    assert other.done() == {} and not j.path.exists()  # the old plan's journal is gone


def _stack_slide(path, img, blur=(3.0, 0.0, 3.0), levels=2, tile=(128, 128)):
    """An OME-TIFF (planes, H, W, 3) with pyramid levels: plane k is ``img`` blurred by blur[k]."""
    planes = np.stack([cv2.GaussianBlur(img, (0, 0), b) if b else img for b in blur])
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(planes, subifds=levels, tile=tile, compression="zlib", photometric="rgb", metadata={"axes": "ZYXS"})
        for k in range(1, levels + 1):
            h, w = planes.shape[1] >> k, planes.shape[2] >> k
            tw.write(np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in planes]), subfiletype=1,
                     tile=tile, compression="zlib", photometric="rgb")


@pytest.mark.parametrize("mode", ["edf", "planes", "both"])
def test_a_focal_stack_in_one_slide_file_is_detected_from_its_tiles(scan, tiny_model_path, tmp_path, mode,  # noqa: F811
                                                                    monkeypatch):
    """A pyramidal OME-TIFF with Z planes is detected view by view from the file (the EDF view
    computed per tile region), never through the decoded stack, with the boxes and sharpest
    planes the decoded stack gives."""
    from pollenstudio.engine.detect_job import detect_slide_stack, detect_stack

    _, img, truth = scan
    folder = tmp_path / "p"
    folder.mkdir()
    _stack_slide(folder / "stack.ome.tif", img)
    proj = Project.create(folder)
    assert len(proj.add_images([folder / "stack.ome.tif"]).added) == 1
    rec = proj.images()[0]
    assert rec.is_stack and rec.planes == 3
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)
    lazy = detect_slide_stack(proj, pred, rec, mode=mode)
    whole = detect_stack(proj, pred, rec, mode=mode)
    assert lazy.error is None and len(lazy.detections) == len(whole.detections) >= len(truth)
    assert _nearest(_boxes(lazy.detections), _boxes(whole.detections)).max() <= 0.5
    assert {d.plane for d in lazy.detections} == {1}  # the sharp plane, measured on each box's region
    # the project's detection job takes this route: the decoded stack is never opened
    monkeypatch.setattr(Project, "open_stack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    summary = detect_project(proj, pred, stack_mode=mode)
    assert summary.stacks == 1 and summary.proposals == len(lazy.detections) and not summary.failed
    proj.close()


def test_pollenstudio_import_and_detect_a_slide_file(scan, tiny_model_path, tmp_path, capsys):  # noqa: F811
    import json

    from pollenstudio.cli import main

    path, _, truth = scan
    slide = tmp_path / "scan.tif"
    slide.write_bytes(path.read_bytes())
    proj = tmp_path / "proj"
    assert main(["import", str(proj), str(slide), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["detect", str(proj), "--model", str(tiny_model_path), "--device", "cpu", "--backend", "torch",
                 "--conf", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["done"] == 1 and out["proposals"] >= len(truth) and out["tiles"] > 20
    assert out["tiles_skipped"] > 0 and out["tiles_resumed"] == 0
    assert not list((proj / "models" / "tile-journal").glob("*.jsonl"))  # nothing left behind


def test_skipping_blank_tiles_of_a_slide_loses_no_detection(scan, tiny_model_path):  # noqa: F811
    path, _, truth = scan
    on = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)
    off = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4, skip_blank=False)
    r_on, r_off = next(iter(on.iter_predict([str(path)]))), next(iter(off.iter_predict([str(path)])))
    assert r_on.skipped > 0 and r_off.skipped == 0 and r_on.tiles == r_off.tiles
    assert len(r_on.detections) == len(r_off.detections) >= len(truth)
    assert _nearest(_boxes(r_on.detections), _boxes(r_off.detections)).max() < 1e-6
