"""`pollenstudio detect` on a folder of images: creates the project, stores proposals,
reports unreadable files by name, prints a JSON summary."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from cli_run import run_cli
from fixtures_models import IMGSZ, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.types import AnnotationStatus
from pollenstudio.project import Project


@pytest.mark.slow
def test_detect_a_folder_creates_the_project_and_reports_a_corrupt_file(tmp_path, tiny_model_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    rng = np.random.default_rng(4)
    n_grains = 0
    for i in range(3):
        img, boxes, _ = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 3, margin=8), seed=40 + i)
        cv2.imwrite(str(folder / f"field_{i}.png"), img[:, :, ::-1])
        n_grains += len(boxes)
    # a PNG cut short in transfer: its header reads fine, its pixels do not
    good = (folder / "field_0.png").read_bytes()
    (folder / "zz_truncated.png").write_bytes(good[: len(good) // 3])

    res = run_cli("detect", str(folder), "--model", str(tiny_model_path), "--device", "cpu", "--conf", "0.3", "--json")
    assert res.returncode == 3, res.stderr  # some images failed: scripts can tell (issue 31)
    out = json.loads(res.stdout)
    assert out["created"] is True and out["images"] == 4 and out["done"] == 3
    assert [f["image"] for f in out["failed"]] == ["zz_truncated.png"]
    assert "zz_truncated.png" in out["failed"][0]["error"]
    assert out["proposals"] == n_grains and out["device"].startswith("CPU")

    with Project.open(folder) as proj:
        assert proj.annotation_count(AnnotationStatus.PROPOSED) == n_grains
        run = [r for r in proj.runs() if r.kind == "detect"][-1]
        assert run.status == "done" and run.params["conf"] == 0.3
        mv = proj.model_version(run.params["model_version_id"])
        assert proj.model_file(mv).resolve() == tiny_model_path.resolve()

    # second run on the existing project, human-readable output, same model version reused;
    # --flip-pass adds the mirrored pass "review this next" weighs
    res = run_cli("detect", str(folder), "--model", str(tiny_model_path), "--device", "cpu", "--quiet", "--flip-pass")
    assert res.returncode == 3, res.stderr
    assert "3/4 images" in res.stdout and "1 of 4 image(s) failed" in res.stdout and "zz_truncated.png" in res.stderr
    with Project.open(folder) as proj:
        assert len(proj.model_versions()) == 1
        assert proj.annotation_count(AnnotationStatus.PROPOSED) == n_grains  # replaced, not doubled
        runs = [r for r in proj.runs() if r.kind == "detect"]
        assert runs[0].params["flip_pass"] is False and runs[-1].params["flip_pass"] is True


def test_detect_without_any_model_says_what_to_do(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((64, 64, 3), 200, np.uint8))
    import os

    env = dict(os.environ, POLLENSTUDIO_MODELS=str(tmp_path / "no-models"))
    res = subprocess.run(
        [sys.executable, "-m", "pollenstudio", "detect", str(folder), "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert res.returncode == 1
    assert "train" in res.stderr.lower() and "--model" in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]  # no half-made project left behind


def test_detect_on_a_missing_path_fails_cleanly(tmp_path):
    res = run_cli("detect", str(tmp_path / "nowhere"))
    assert res.returncode == 1 and "nowhere" in res.stderr


def test_detect_rejects_a_bad_tile_setting(tmp_path, tiny_model_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((64, 64, 3), 200, np.uint8))
    res = run_cli("detect", str(folder), "--model", str(tiny_model_path), "--tile", "big", "--device", "cpu")
    # a usage error (issue 17: argparse's exit status 2, like every other bad option value)
    assert res.returncode == 2 and "tile" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]
    res = run_cli("detect", str(folder), "--model", str(tiny_model_path), "--device", "cuda:7")
    assert res.returncode == 1 and ("CUDA" in res.stderr or "GPU" in res.stderr)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_detect_calibrates_grain_size_from_the_flag_or_the_project(tmp_path, tiny_model_path):
    """Frames at twice the tiny model's grain size: with a calibration they are halved for the
    model and the grains are found in original pixels; a model without a recorded grain-size
    range refuses the flag in words and is run uncalibrated when only the project is calibrated."""
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, _ = load_checkpoint(tiny_model_path)
    ranged = save_checkpoint(tmp_path / "ranged.safetensors", model, cfg, {"grain_size_px": [45.0, 55.0]})
    folder = tmp_path / "big"
    folder.mkdir()
    grains = [(60, 70, 0, 50), (180, 90, 1, 52), (110, 190, 0, 50)]
    img, boxes, _ = render_scene(IMGSZ, IMGSZ, grains, seed=101)
    big = np.repeat(np.repeat(img, 2, 0), 2, 1)  # 512x512, grains ~100 px
    cv2.imwrite(str(folder / "big.png"), big[:, :, ::-1])

    res = run_cli("detect", str(folder), "--model", str(tiny_model_path), "--device", "cpu", "--grain-size", "100")
    assert res.returncode == 1 and "does not record" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("detect", str(folder), "--model", str(ranged), "--device", "cpu", "--grain-size", "-4")
    assert res.returncode == 1 and "grain size" in res.stderr

    res = run_cli("detect", str(folder), "--model", str(ranged), "--device", "cpu", "--conf", "0.3", "--grain-size", "100", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["calibration"].startswith("every image: typical grain 100 px") and out["proposals"] == 3
    with Project.open(folder) as proj:
        anns = proj.annotations(proj.images()[0].id)
        got = sorted((a.box.x1, a.box.y1) for a in anns)
        want = sorted((2 * b[0], 2 * b[1]) for b in boxes)
        assert np.allclose(got, want, atol=12), (got, want)  # found where they are, in original pixels
        proj.set_grain_size_px(100)
    res = run_cli("detect", str(folder), "--model", str(ranged), "--device", "cpu", "--conf", "0.3", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["calibration"].startswith("1 of 1 image")
    res = run_cli("detect", str(folder), "--model", str(tiny_model_path), "--device", "cpu", "--json")
    assert res.returncode == 0 and "records no training grain sizes" in json.loads(res.stdout)["calibration"]
