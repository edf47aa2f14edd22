"""Focal stacks from a shell (issue 19): synth --planes, import --stack-pattern, detect
--stack-mode planes, export --planes-as-images and back."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pollenstudio", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_synth_stacks_detect_every_plane_and_export_planes_as_images(tmp_path):
    res = _cli("synth", "--out", str(tmp_path / "s"), "--n", "1", "--planes", "3", "--size", "320x240", "--quiet")
    assert res.returncode == 0, res.stderr
    coco = json.loads((tmp_path / "s" / "annotations.json").read_text())
    assert coco["images"][0]["planes"] == 3 and {a["plane"] for a in coco["annotations"]} <= {0, 1, 2}
    res = _cli("detect", str(tmp_path / "s" / "images"), "--stack-mode", "planes", "--device", "cpu", "--json",
               "--quiet")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["stacks"] == 1 and summary["stack_mode"] == "planes" and summary["proposals"] > 0
    res = _cli("export", str(tmp_path / "s" / "images"), "--format", "coco", "--all", "--planes-as-images",
               "--out", str(tmp_path / "x" / "out.json"), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "x" / "out.json").read_text())
    assert doc["images"] and all("stack_of" in im for im in doc["images"])
    assert all((tmp_path / "x" / im["file_name"]).is_file() for im in doc["images"])
    res = _cli("import", str(tmp_path / "back"), str(tmp_path / "x" / "out.json"), "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    back = json.loads(res.stdout)
    assert back["images_added"] == 1 and back["annotations_added"] == len(doc["annotations"])


def test_import_with_a_stack_pattern_and_a_bad_one(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for field in ("a", "b"):
        for z in range(4):
            cv2.imwrite(str(src / f"{field}_z{z:02d}.png"), np.full((32, 40, 3), 40 * z + (field == "b"), np.uint8))
    res = _cli("import", str(tmp_path / "p"), str(src), "--stack-pattern", "*_z{z}.png", "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["images_added"] == 2 and out["stacks"] == 2 and out["planes"] == 8
    res = _cli("import", str(tmp_path / "q"), str(src), "--stack-pattern", "*_z.png", "--quiet")
    assert res.returncode == 1 and "{z}" in res.stderr
    assert not (tmp_path / "q").exists()
