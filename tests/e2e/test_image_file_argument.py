"""Issue 29: a single image file (a slide scan is one file) is accepted where a folder of
images is: `pollenstudio detect SLIDE.tif` detects that image in its folder's project
(created there when there is none), `pollenstudio gui SLIDE.tif` opens it."""

import json

import cv2
import numpy as np
import pytest

from cli_run import run_cli
from fixtures_models import tiny_model_path  # noqa: F401  (fixture)

from pollenstudio.project import Project
from pollenstudio.project.schema import DB_NAME
from pollenstudio.project.transfer import project_with_image


def _image(path, value=60):
    img = np.full((64, 96, 3), value, np.uint8)
    cv2.circle(img, (48, 32), 16, (200, 180, 160), -1)
    cv2.imwrite(str(path), img)
    return path


def test_detect_one_file_makes_a_project_of_that_file_only(tmp_path, tiny_model_path):
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png", 90)
    r = run_cli("detect", str(a), "--model", tiny_model_path, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["created"] and out["images"] == 1
    with Project.open(tmp_path) as p:
        assert [rec.path for rec in p.images()] == ["a.png"]
    # the project exists now: a second file of the folder is added to it and detected alone
    r = run_cli("detect", str(b), "--model", tiny_model_path, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert not out["created"] and out["images"] == 1
    with Project.open(tmp_path) as p:
        assert sorted(rec.path for rec in p.images()) == ["a.png", "b.png"]


def test_an_unreadable_file_leaves_no_project(tmp_path):
    bad = tmp_path / "scan.tif"
    bad.write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(Exception, match="scan.tif"):
        project_with_image(bad)
    assert not (tmp_path / DB_NAME).exists()


def test_a_file_already_in_the_project_is_not_added_again(tmp_path):
    a = _image(tmp_path / "a.png")
    p, first, created = project_with_image(a)
    p.close()
    p, again, created2 = project_with_image(a)
    try:
        assert created and not created2 and first == again and p.image_count() == 1
    finally:
        p.close()
