"""Issue 31 item 15: `pollenstudio detect` tells scripts whether every image was detected:
0 all done, 3 some images failed (the others keep their proposals; the summary line says
how many), 1 when not one image could be read."""

import json

import cv2
import numpy as np
import pytest

from cli_run import run_cli
from pollenstudio.core.types import AnnotationStatus
from pollenstudio.project import Project


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", nc=1, class_names=["Olea"], imgsz=128)
    return save_checkpoint(tmp_path_factory.mktemp("m") / "tiny.safetensors", build_model(cfg))


def _image(path, value):
    img = np.full((64, 96), value, np.uint8)
    cv2.circle(img, (48, 32), 16, 255 - value, -1)
    cv2.imwrite(str(path), img)
    return path


def _folder(tmp_path, good: int, bad: int, name: str = "slides"):
    folder = tmp_path / name
    folder.mkdir()
    for i in range(good):
        _image(folder / f"field_{i}.png", 30 + 40 * i)
    for i in range(bad):  # cut short in transfer: the header reads, the pixels do not
        data = _image(tmp_path / f"src_{name}_{i}.png", 200 - 30 * i).read_bytes()
        (folder / f"zz_cut_{i}.png").write_bytes(data[: len(data) // 3])
    return folder


def _detect(folder, model, *extra):
    return run_cli("detect", str(folder), "--model", str(model), "--device", "cpu", "--conf", "0.0", "--quiet", *extra)


def test_some_images_failed_is_its_own_exit_status(tmp_path, model):
    folder = _folder(tmp_path, good=2, bad=1)
    res = _detect(folder, model)
    assert res.returncode == 3, res.stdout + res.stderr
    summary = res.stdout.strip().splitlines()[-1]
    assert summary.startswith("2/3 images") and "1 of 3 image(s) failed" in summary
    assert "zz_cut_0.png" in res.stderr and "Traceback" not in res.stderr
    with Project.open(folder) as p:  # the images that could be read have their proposals
        done = {p.image(a.image_id).path for a in p.iter_annotations([AnnotationStatus.PROPOSED])}
        assert done and all(name.startswith("field_") for name in done)
    res = _detect(folder, model, "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["done"] == 2


def test_every_image_detected_exits_0_and_none_readable_exits_1(tmp_path, model):
    ok = _folder(tmp_path, good=2, bad=0, name="ok")
    res = _detect(ok, model)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "failed" not in res.stdout
    bad = _folder(tmp_path, good=0, bad=2, name="bad")
    res = _detect(bad, model)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "2 of 2 image(s) failed" in res.stdout


def test_help_lists_the_exit_statuses():
    res = run_cli("detect", "--help")
    assert res.returncode == 0 and "exit status" in res.stdout and "3 " in res.stdout
