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
