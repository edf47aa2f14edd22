"""`pollenstudio calibrate` (issue 28 item 6): the typical grain size per image, sample or
project; and `pollenstudio detect` on a project with no calibration says that calibrating is
the first step (item 8), and names an image far off its calibration."""

import json
import subprocess
import sys

import cv2
import numpy as np

from pollenstudio.project import Project


def _cli(*args, cwd=None):
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pollenstudio", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def _folder(tmp_path):
    folder = tmp_path / "slides"
    for k, name in enumerate(["x40/a.png", "x40/b.png", "x100/c.png"]):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        img = np.full((96, 128, 3), 210, np.uint8)
        cv2.circle(img, (64, 48), 12 + 6 * k, (90, 120, 160), -1)
        cv2.imwrite(str(p), img)
    with Project.create(folder) as p:
        p.add_folder(folder)
    return folder


def _ranged_model(tmp_path):
    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    cfg = ModelConfig.tiny("base", nc=1, class_names=["pollen"], imgsz=96)
    return save_checkpoint(tmp_path / "ranged.safetensors", build_model(cfg), cfg, {"grain_size_px": [20.0, 60.0]})


def test_calibrate_per_sample_image_and_project(tmp_path):
    folder = _folder(tmp_path)
    res = _cli("calibrate", str(folder), "--grain-size", "287", "--sample", "x40")
    assert res.returncode == 0, res.stderr
    assert "set for 2 image(s)" in res.stdout
    res = _cli("calibrate", str(folder), "--grain-size", "60", "--image", "c.png")
    assert res.returncode == 0, res.stderr
    res = _cli("calibrate", str(folder), "--json")
    out = json.loads(res.stdout)
    got = {r["path"]: (r["grain_px"], r["from"], r["sample"]) for r in out["images"]}
    assert got == {"x40/a.png": (287.0, "image", "x40"), "x40/b.png": (287.0, "image", "x40"),
                   "x100/c.png": (60.0, "image", "x100")}
    assert out["default_grain_px"] is None
    # the project's value reaches only the images without their own
    res = _cli("calibrate", str(folder), "--clear", "--image", "x40/b.png")
    res = _cli("calibrate", str(folder), "--grain-size", "250", "--default")
    assert res.returncode == 0 and "set for 1 image(s) (the project's value" in res.stdout
    text = _cli("calibrate", str(folder)).stdout
    assert "project's typical grain size: 250 px" in text
    lines = {ln.split()[1]: ln for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert lines["x40/b.png"].rstrip().endswith("250 px  project's") and lines["x100/c.png"].rstrip().endswith("60 px  its own")


def test_calibrate_refuses_in_words_and_changes_nothing(tmp_path):
    folder = _folder(tmp_path)
    for args, words in ((["--grain-size", "287"], "say which images"),
                        (["--grain-size", "287", "--image", "z.png"], "no image 'z.png'"),
                        (["--grain-size", "287", "--sample", "x63"], "no sample named 'x63'"),
                        (["--grain-size", "nan", "--all"], "typical grain size must be"),
                        (["--grain-size", "1", "--all"], "typical grain size must be"),
                        (["--sample", "x40"], "give --grain-size")):
        res = _cli("calibrate", str(folder), *args)
        assert res.returncode == 1 and words in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    with Project.open(folder) as p:
        assert p.grain_size_px is None and all(r.grain_px is None for r in p.images())


def test_detect_without_calibration_says_it_is_the_first_step(tmp_path):
    folder = _folder(tmp_path)
    model = _ranged_model(tmp_path)
    res = _cli("detect", str(folder), "--model", str(model), "--device", "cpu", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "the grain size is not calibrated" in res.stderr and "is the first step" in res.stderr
    assert f"pollenstudio calibrate {folder.resolve()} --grain-size PX" in res.stderr
    _cli("calibrate", str(folder), "--grain-size", "40", "--all")
    res = _cli("detect", str(folder), "--model", str(model), "--device", "cpu", "--quiet")
    assert res.returncode == 0 and "first step" not in res.stderr  # said until calibrated, then no more


def test_detect_names_an_image_far_off_its_calibration(tmp_path):
    from pollenstudio.core.types import Box

    folder = _folder(tmp_path)
    with Project.open(folder) as p:
        rec = {r.path: r for r in p.images()}["x100/c.png"]
        cid = p.add_category("Poaceae")
        p.add_annotation(rec.id, Box(40, 20, 88, 68), cid)  # a confirmed grain of 48 px
        p.set_grain_size_px(287)  # the project's value, measured on the x40 slides
    res = _cli("detect", str(folder), "--model", str(_ranged_model(tmp_path)), "--device", "cpu", "--quiet", "--images",
               "all")
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: x100/c.png")]
    assert len(warned) == 1 and "48 px" in warned[0] and "287 px, the project's typical grain size" in warned[0]
