"""Two CPU processes under torchrun (Gloo, DistributedDataParallel) train one model version."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pollenstudio", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _torchrun():
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else ([shutil.which("torchrun")] if shutil.which("torchrun") else None)


@pytest.mark.slow
def test_two_process_training_registers_exactly_one_loadable_version(tmp_path):
    launcher = _torchrun()
    if launcher is None:
        pytest.skip("torchrun is not installed with this torch")
    data, proj = tmp_path / "data", tmp_path / "proj"
    assert _cli("synth", "--out", data, "--n", 10, "--size", "256x256", "--difficulty", "easy", "--quiet").returncode == 0
    assert _cli("import", proj, data / "annotations.json", "--quiet").returncode == 0
    with sqlite3.connect(proj / "project.pollen") as conn:
        before = conn.execute("SELECT * FROM annotations ORDER BY id").fetchall()

    cmd = launcher + ["--nproc_per_node=2", "--standalone", "-m", "pollenstudio", "train", str(proj), "--tiny",
                      "--epochs", "1", "--imgsz", "128", "--batch", "2", "--device", "cpu", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)  # only rank 0 prints
    assert out["processes"] == 2 and out["version_id"] == 1

    with sqlite3.connect(proj / "project.pollen") as conn:
        versions = conn.execute("SELECT id, file FROM model_versions").fetchall()
        runs = conn.execute("SELECT kind, status FROM runs WHERE kind = 'train'").fetchall()
        after = conn.execute("SELECT * FROM annotations ORDER BY id").fetchall()
    assert len(versions) == 1 and runs == [("train", "done")]
    assert after == before
    assert sorted(p.name for p in (proj / "models").glob("*.safetensors")) == [Path(out["weights"]).name]

    from pollenstudio.detector.checkpoint import load_checkpoint

    model, cfg, meta = load_checkpoint(out["weights"])
    assert cfg.nc == len(cfg.class_names) >= 1
    assert meta["run_id"] is not None
