"""Hostile CLI cases of issue 28 for the grain-size calibration (items 6 and 8), loaded by
scripts/hostile_cli.py: ``build(w) -> (cases, check)``.

- I28-6: `pollenstudio calibrate` refuses, in words and changing nothing, a calibration with
  no scope, an unknown or ambiguous image, an unknown sample, sizes that are no size (nan,
  inf, negative, huge), --grain-size with --clear, a folder that is no project; a sample's
  calibration reaches its images only; a schema-6 project is upgraded with the copy kept;
  detection names an image whose grains are far off the size it is calibrated to.
- I28-8: detection of a project with no calibration says that calibrating is the first step.
"""

from __future__ import annotations

from common import expect

from pathlib import Path


_expect = expect  # the shared check (scripts/hostile/common.py)


_DRAWN = [0]  # every image drawn differs: a project skips a file of the same content


def _images(folder: Path, names: list[str], size: int = 96) -> None:
    import cv2
    import numpy as np

    for name in names:
        k = _DRAWN[0] = _DRAWN[0] + 1
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        img = np.full((size, size, 3), 200, np.uint8)
        cv2.circle(img, (size // 2, size // 2), size // 5, (k % 250, 90, 140), -1)
        assert cv2.imwrite(str(p), img)


def _state(proj: Path) -> tuple:
    from pollenstudio.project import Project

    with Project.open(proj) as p:
        return p.grain_size_px, tuple((r.path, r.grain_px, r.um_per_px) for r in p.images())


def build(w: Path):
    from pollenstudio.core.types import Box
    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.project import Project

    cases: list[tuple] = []
    facts: dict = {}

    # a project of two samples, with two images of the same file name in different folders
    proj = w / "cal"
    _images(proj / "slide1", ["a.png", "field.png"])
    _images(proj / "slide2", ["b.png", "field.png"])
    with Project.create(proj) as p:
        p.add_folder(proj)
    facts["before"] = _state(proj)
    argv = ["calibrate", str(proj)]
    refusals = [
        ("I28-6 calibrate without saying which images", ["--grain-size", "287"], "say which images"),
        ("I28-6 calibrate an image the project lacks", ["--grain-size", "287", "--image", "nope.png"], "no image"),
        ("I28-6 calibrate an ambiguous file name", ["--grain-size", "287", "--image", "field.png"],
         "2 images are named"),
        ("I28-6 calibrate a sample the project lacks", ["--grain-size", "287", "--sample", "slide9"],
         "no sample named"),
        ("I28-6 calibrate with nan", ["--grain-size", "nan", "--all"], "typical grain size"),
        ("I28-6 calibrate with inf", ["--grain-size", "inf", "--all"], "typical grain size"),
        ("I28-6 calibrate with a negative size", ["--grain-size=-5", "--all"], "typical grain size"),
        ("I28-6 calibrate with a size beyond any image", ["--grain-size", "1e30", "--default"], "typical grain size"),
        ("I28-6 calibrate a scope without a value", ["--sample", "slide1"], "give --grain-size"),
        ("I28-6 calibrate --grain-size with --clear", ["--grain-size", "5", "--clear", "--all"], "not allowed"),
    ]
    for name, extra, word in refusals:
        cases.append((name, argv + extra, 60, _expect(False, word)))
    notproj = w / "not_a_project"
    notproj.mkdir()
    cases.append(("I28-6 calibrate a folder that holds no project", ["calibrate", str(notproj), "--grain-size", "50",
                                                                      "--all"], 60, _expect(False, "no project")))

    # a sample's calibration reaches its images only
    sample = w / "cal_sample"
    _images(sample / "slide1", ["a.png", "c.png"])
    _images(sample / "slide2", ["b.png"])
    with Project.create(sample) as p:
        p.add_folder(sample)
    cases.append(("I28-6 calibrate one sample", ["calibrate", str(sample), "--grain-size", "287", "--sample", "slide1",
                                                "--json"], 60, _expect(True, '"changed": 2')))

    # an older project (schema 6) is upgraded, and the copy for the older version is kept
    old = w / "cal_old"
    _images(old, ["x.png"])
    with Project.create(old) as p:
        p.add_folder(old)
    import sqlite3

    conn = sqlite3.connect(old / "project.pollen")
    # the file as schema 6 wrote it: without v7's column and v8's reviewer tables (as in
    # tests/unit/test_calibration_per_image.py), so every later step runs as on a user's file
    conn.execute("ALTER TABLE images DROP COLUMN grain_px")
    for stmt in ("DROP INDEX history_author", "ALTER TABLE history DROP COLUMN author", "DROP TABLE claims",
                 "DROP TABLE opinions", "DROP TABLE change_feed"):
        conn.execute(stmt)
    from pollenstudio.project.schema import MIGRATIONS

    assert len(MIGRATIONS) == 8, "a newer schema step: undo it here too"
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    cases.append(("I28-6 calibrate a project of schema 6", ["calibrate", str(old), "--grain-size", "40", "--all"], 60,
                  _expect(True, "set for 1 image(s)")))

    # detection: a model that records its grain sizes
    cfg = ModelConfig.tiny("base", nc=1, class_names=["pollen"], imgsz=96)
    model = save_checkpoint(w / "ranged.safetensors", build_model(cfg), cfg, {"grain_size_px": [20.0, 60.0]})
    fresh = w / "cal_detect"
    _images(fresh, ["f1.png", "f2.png"])
    cases.append(("I28-8 detect without calibration says it is the first step",
                  ["detect", str(fresh), "--model", str(model), "--device", "cpu", "--quiet"], 180,
                  _expect(True, "is the first step", "pollenstudio calibrate")))
    far = w / "cal_far"
    _images(far, ["small.png"])
    with Project.create(far) as p:
        p.add_folder(far)
        cid = p.add_category("Poaceae")
        rec = p.images()[0]
        p.add_annotation(rec.id, Box(30, 30, 50, 50), cid)  # grains of 20 px ...
        p.set_grain_size_px(250)  # ... calibrated by the project's value from another magnification
    cases.append(("I28-6 detect names an image far off its calibration",
                  ["detect", str(far), "--model", str(model), "--device", "cpu", "--quiet"], 180,
                  _expect(True, "small.png", "another magnification")))

    def check() -> list[str]:
        problems = []
        if _state(proj) != facts["before"]:
            problems.append(f"a refused calibrate changed the project: {facts['before']} -> {_state(proj)}")
        default, rows = _state(sample)
        got = {Path(path).name: px for path, px, _ in rows}
        if default is not None or got != {"a.png": 287.0, "c.png": 287.0, "b.png": None}:
            problems.append(f"calibrating sample slide1 set {got}, project default {default}")
        if not (old / ".pollen-backups" / "project.pollen.schema6").is_file():
            problems.append("the schema-6 project was upgraded without the copy for the older version")
        default, rows = _state(old)
        if rows[0][1] != 40.0:
            problems.append(f"the upgraded project's image has grain size {rows[0][1]}, expected 40")
        if notproj.exists() and any(notproj.iterdir()):
            problems.append(f"calibrate wrote into a folder that holds no project: {list(notproj.iterdir())}")
        return problems

    return cases, check
