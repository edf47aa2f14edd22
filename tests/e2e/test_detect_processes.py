"""`pollenstudio detect` / `train` as separate processes next to a project held open (as the
GUI holds it), `detect --images new|unreviewed`, and Ctrl+C (SIGINT) during detect and
train: exit code 130 and nothing half-written.

The waits below poll the project until the other process has reached a given point (a run
recorded as running, proposals stored, an epoch saved); nothing is asserted about time.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.types import AnnotationStatus, Box, Detection, ReviewStatus
from pollenstudio.project import Project

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}
N_IMAGES = 40


def _popen(*args):
    return subprocess.Popen([sys.executable, "-m", "pollenstudio", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pollenstudio", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=ENV)


def _query(folder: Path, sql: str, args=()):
    """A read by a third party (read-only connection), so the waits never take a write lock."""
    conn = sqlite3.connect(f"{(folder / 'project.pollen').resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _wait_for(proc, cond, what: str, limit: float = 240.0):
    """Poll ``cond()`` until true; fail (never hang) if the process ends first."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A project of N_IMAGES 256 px fields with 2-3 grains each."""
    folder = tmp_path_factory.mktemp("detproc") / "proj"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(N_IMAGES):
        img, _, _ = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, int(rng.integers(2, 4)), margin=8),
                                 seed=500 + i)
        cv2.imwrite(str(folder / f"f{i:03d}.png"), img[:, :, ::-1])
    with Project.create(folder) as p:
        p.add_folder(folder)
        assert p.image_count() == N_IMAGES
    return folder


@pytest.fixture
def project(template, tmp_path):
    dst = tmp_path / "proj"
    shutil.copytree(template, dst)
    return dst


def _run_ids_by_image(p: Project) -> dict[int, set]:
    out: dict[int, set] = {}
    for a in p.iter_annotations():
        out.setdefault(a.image_id, set()).add(a.extra.get("run_id"))
    return out


@pytest.mark.slow
def test_cli_detect_writes_while_the_gui_holds_the_project_open(project, tiny_model_path):
    """The GUI keeps its Project open and goes on editing (and once holds a write
    transaction for a while) while `pollenstudio detect` stores proposals from another
    process: both finish, no "database is locked", no edit lost, and the open Project sees
    the new proposals without reopening."""
    held = Project.open(project)
    try:
        ids = [r.id for r in held.images()]
        cat = held.add_category("Handdrawn")
        proc = _popen("detect", project, "--model", tiny_model_path, "--device", "cpu", "--conf", "0.3",
                      "--batch", "1", "--json")
        added = []
        _wait_for(proc, lambda: any(r.kind == "detect" and r.status == "running" for r in held.runs()),
                  "the detect run started")
        # a long edit: the GUI holds the write lock while detect wants to store proposals
        with held.batch("several boxes"):
            for k in range(3):
                added.append(held.add_annotation(ids[-1 - k], Box(1, 1, 12, 12), cat))
            time.sleep(1.5)
        seen_mid_run = 0
        while proc.poll() is None:  # keep editing, one commit each, until detect is done
            added.append(held.add_annotation(ids[len(added) % len(ids)], Box(2, 2, 14, 14), cat))
            seen_mid_run = max(seen_mid_run, held.annotation_count(AnnotationStatus.PROPOSED))
            time.sleep(0.05)
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        assert "locked" not in err.lower() and "Traceback" not in err, err
        summary = json.loads(out)
        assert summary["done"] == N_IMAGES and summary["proposals"] > N_IMAGES

        # the held Project sees what the other process wrote, on its open connection
        run = [r for r in held.runs("detect")][-1]
        assert run.status == "done" and run.id == summary["run_id"]
        props = [a for a in held.iter_annotations() if a.extra.get("run_id") == run.id]
        assert len(props) == summary["proposals"] == held.annotation_count(AnnotationStatus.PROPOSED)
        assert {a.image_id for a in props} == set(ids)
        # and nothing of its own edits was lost or overwritten
        mine = {a.id: a for a in held.iter_annotations() if a.category_id == cat}
        assert sorted(mine) == sorted(added) and len(added) > 3
        assert all(a.status is AnnotationStatus.ADDED for a in mine.values())
        assert held.can_undo() and held.undo_label() == "add box"
        assert held.integrity_check() == "ok"
    finally:
        held.close()
    with Project.open(project) as again:  # and the file on disk agrees
        assert again.annotation_count(AnnotationStatus.PROPOSED) == summary["proposals"]
        assert again.annotation_count(AnnotationStatus.ADDED) == len(added)


def test_detect_images_new_and_unreviewed_pick_the_right_images(project, tiny_model_path):
    """--images new: only images nobody detected or edited; --images unreviewed: every image
    not reviewed yet (new or in review), never a reviewed one."""
    with Project.open(project) as p:
        ids = [r.id for r in p.images()][:4]
        reviewed, in_review, negative = ids[0], ids[1], ids[2]  # ids[3] and the rest stay new
        betula = p.add_category("Betula")
        p.add_annotation(reviewed, Box(5, 5, 40, 40), betula)  # a decision: reviewed
        p.write_proposals(in_review, [Detection(Box(50, 50, 90, 90), 0, "Betula", 0.5)])  # undecided
        p.set_image_status(negative, ReviewStatus.REVIEWED)  # reviewed, no grain
        assert [p.image(i).status for i in ids] == [ReviewStatus.REVIEWED, ReviewStatus.IN_REVIEW,
                                                    ReviewStatus.REVIEWED, ReviewStatus.NEW]
        old_proposal = p.annotations(in_review)[0].id
        untouched = {i: p.annotations(i) for i in (reviewed, in_review, negative)}
        n_new = p.image_count(ReviewStatus.NEW)
    common = ("--model", tiny_model_path, "--device", "cpu", "--conf", "0.3", "--json")

    r = _cli("detect", project, "--images", "new", *common)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == out["done"] == n_new == N_IMAGES - 3
    with Project.open(project) as p:
        by_image = _run_ids_by_image(p)
        got = {i for i, runs in by_image.items() if out["run_id"] in runs}
        assert got == {r.id for r in p.images()} - {reviewed, in_review, negative}
        assert {i: p.annotations(i) for i in untouched} == untouched  # not touched at all
        new_after = p.image_count(ReviewStatus.NEW)
        assert new_after == 0  # every new image now has proposals

    r = _cli("detect", project, "--images", "unreviewed", *common)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["images"] == out["done"] == N_IMAGES - 2  # all but the two reviewed images
    with Project.open(project) as p:
        got = {i for i, runs in _run_ids_by_image(p).items() if out["run_id"] in runs}
        assert in_review in got and reviewed not in got and negative not in got
        assert old_proposal not in {a.id for a in p.annotations(in_review)}  # replaced by this run
        assert p.annotations(reviewed) == untouched[reviewed] and p.annotations(negative) == []
        assert p.image(negative).status is ReviewStatus.REVIEWED


@pytest.mark.slow
def test_sigint_during_detect_exits_130_and_leaves_only_whole_images(project, tiny_model_path):
    """Ctrl+C while detect runs: exit 130, a message instead of a traceback, the run recorded
    as cancelled with exactly the proposals it stored, every image either fully detected or
    untouched; `detect --images new` then finishes the rest."""
    proc = _popen("detect", project, "--model", tiny_model_path, "--device", "cpu", "--conf", "0.3", "--batch", "1")
    _wait_for(proc, lambda: _query(project, "SELECT COUNT(*) FROM annotations")[0][0] > 0, "the first proposals")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and ("interrupted" in err or "cancelled" in err), err
    with Project.open(project) as p:
        assert p.integrity_check() == "ok"
        (run,) = p.runs("detect")
        assert run.status == "cancelled", run.status  # not left "running"
        stored = [a for a in p.iter_annotations() if a.extra.get("run_id") == run.id]
        assert len(stored) == run.summary["proposals"] == p.annotation_count()
        done_images = {a.image_id for a in stored}
        assert 0 < run.summary["done"] < N_IMAGES and len(done_images) <= run.summary["done"]
        left = {r.id for r in p.images(status=ReviewStatus.NEW)}
        assert left and not (left & done_images)
    leftovers = [f.name for f in project.rglob("*") if f.name.endswith((".tmp", "-journal"))]
    assert leftovers == []

    r = _cli("detect", project, "--images", "new", "--model", tiny_model_path, "--device", "cpu", "--conf", "0.3",
             "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["images"] == len(left)
    with Project.open(project) as p:
        assert p.image_count(ReviewStatus.NEW) == 0


@pytest.mark.slow
def test_sigint_during_train_exits_130_and_registers_nothing(tmp_path):
    """Ctrl+C during `pollenstudio train`: exit 130, the run recorded as cancelled, no model
    version and no weights in models/, annotations untouched, no temporary file left; the
    last finished epoch's state is whole, so `--resume` could continue."""
    data, proj = tmp_path / "data", tmp_path / "proj"
    assert _cli("synth", "--out", data, "--n", 8, "--size", "128x128", "--difficulty", "easy",
                "--quiet").returncode == 0
    assert _cli("import", proj, data / "annotations.json", "--quiet").returncode == 0
    before = _query(proj, "SELECT * FROM annotations ORDER BY id")
    proc = _popen("train", proj, "--tiny", "--epochs", 200, "--imgsz", 128, "--batch", 4, "--device", "cpu",
                  "--no-compare")
    _wait_for(proc, lambda: any((proj / "models" / "runs").glob("*/last.ckpt")), "the first epoch's state")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err
    assert _query(proj, "SELECT kind, status FROM runs WHERE kind = 'train'") == [("train", "cancelled")]
    assert _query(proj, "SELECT COUNT(*) FROM model_versions") == [(0,)]
    assert _query(proj, "SELECT * FROM annotations ORDER BY id") == before
    assert list((proj / "models").glob("*.safetensors")) == []  # no half-registered weights
    leftovers = [f.name for f in proj.rglob("*") if f.name.endswith((".tmp", "-journal"))]
    assert leftovers == []
    from pollenstudio.engine.train import read_train_state

    (ckpt,) = (proj / "models" / "runs").glob("*/last.ckpt")
    _, state = read_train_state(ckpt)  # a whole file, not one cut off by the interrupt
    assert state
    with Project.open(proj) as p:
        assert p.integrity_check() == "ok"
