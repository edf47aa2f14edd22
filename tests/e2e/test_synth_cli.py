"""`pollenstudio synth` from a shell: identical reruns, clear errors, JSON summary."""

import json
import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pollenstudio", "synth", *args], capture_output=True, text=True, timeout=120)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_running_twice_gives_identical_files(tmp_path):
    out = tmp_path / "s"
    res = _cli("--out", str(out), "--n", "5", "--seed", "1", "--size", "320x240", "--quiet")
    assert res.returncode == 0, res.stderr
    first = _files(out)
    assert "annotations.json" in first and sum(k.startswith("images/") for k in first) == 5
    res = _cli("--out", str(out), "--n", "5", "--seed", "1", "--size", "320x240", "--quiet")
    assert res.returncode == 0, res.stderr
    assert _files(out) == first


def test_json_summary_and_jpeg(tmp_path):
    res = _cli("--out", str(tmp_path / "j"), "--n", "2", "--size", "200x160", "--difficulty", "hard", "--jpeg", "80", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["images"] == 2 and sum(summary["per_taxon"].values()) == summary["grains"]
    assert len(list((tmp_path / "j" / "images").glob("*.jpg"))) == 2


def test_bad_arguments_fail_with_a_clear_message(tmp_path):
    res = _cli("--out", str(tmp_path / "x"), "--size", "640by480")
    assert res.returncode != 0 and "640x480" in res.stderr
    res = _cli("--out", str(tmp_path / "x"), "--difficulty", "insane")
    assert res.returncode != 0 and "difficulty" in res.stderr
    res = _cli("--out", str(tmp_path / "x"), "--jpeg", "300")
    assert res.returncode != 0 and "1..100" in res.stderr
    assert not (tmp_path / "x").exists()


def test_refuses_to_write_into_a_folder_of_other_files(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    res = _cli("--out", str(tmp_path), "--n", "1")
    assert res.returncode == 1 and "not empty" in res.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert not (tmp_path / "annotations.json").exists()


def _grain_folders(root):
    """Two taxa of plain-background crops with one drawn grain each, plus a blank crop."""
    import cv2
    import numpy as np

    for t, colour in (("Alpha", (170, 80, 160)), ("Beta", (60, 110, 150))):
        (root / t).mkdir(parents=True)
        for k in range(2):
            img = np.full((140, 150, 3), (215, 200, 205), np.uint8)
            cv2.ellipse(img, (75, 70), (40 + 6 * k, 50), 15, 0, 360, colour, -1)
            cv2.ellipse(img, (75, 70), (40 + 6 * k, 50), 15, 0, 360, (40, 40, 40), 3)
            cv2.imwrite(str(root / t / f"{k}.png"), img)
    cv2.imwrite(str(root / "Beta" / "blank.png"), np.full((100, 100, 3), 210, np.uint8))
    return root


def test_grains_compositor_from_the_shell(tmp_path):
    grains = _grain_folders(tmp_path / "grains")
    args = ["--out", str(tmp_path / "c"), "--n", "3", "--size", "256x192", "--grains", str(grains), "--grain-size", "20,80", "--json"]
    res = _cli(*args)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["crops"] == 5 and summary["crops_skipped"] == 1 and summary["taxa"] == 2
    assert set(summary["per_taxon"]) == {"Alpha", "Beta"} and summary["grains"] > 0
    first = _files(tmp_path / "c")
    assert _cli(*args).returncode == 0 and _files(tmp_path / "c") == first
    res = _cli("--out", str(tmp_path / "a"), "--n", "2", "--size", "256x192", "--grains", str(grains), "--class-agnostic", "--json")
    assert res.returncode == 0, res.stderr
    assert list(json.loads(res.stdout)["per_taxon"]) == ["pollen"]
    res = _cli("--out", str(tmp_path / "x"), "--n", "2", "--grains", str(tmp_path / "missing"))
    assert res.returncode == 1 and "missing" in res.stderr and "Traceback" not in res.stderr
    res = _cli("--out", str(tmp_path / "y"), "--n", "2", "--debris", str(grains))
    assert res.returncode == 1 and "--grains" in res.stderr
