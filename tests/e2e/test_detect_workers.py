"""`pollenstudio detect PROJECT --workers N` (issue 30, item 4): local worker processes share
one project through its database, on SQLite and (with POLLENSTUDIO_TEST_PG) on PostgreSQL.

- two workers give the same proposals as one `pollenstudio detect` process;
- a worker SIGKILLed mid-run loses nothing: the other worker takes its images over, or,
  when it was the only one, a rerun of the same command detects exactly the images missing;
- a person's decisions are never overwritten by a worker (the store's merge rule).

The waits poll the project's queue until the workers have reached a given point; the
worker to kill is found by its claim in the queue (``host:pid``). Nothing is asserted about time.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.types import AnnotationStatus, Box
from pollenstudio.project import Project
from pollenstudio.project.merge import iou_matrix

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "POLLENSTUDIO_BACKEND": "torch", "QT_QPA_PLATFORM": "offscreen"}
N_IMAGES = 16
PG = os.environ.get("POLLENSTUDIO_TEST_PG", "")


def _cmd(target, model, *extra):
    return [sys.executable, "-m", "pollenstudio", "detect", str(target), "--model", str(model), "--device", "cpu",
            "--conf", "0.3", "--batch", "1", *map(str, extra)]


def _cli(target, model, *extra):
    res = subprocess.run(_cmd(target, model, *extra), capture_output=True, text=True, timeout=600, env=ENV)
    return res


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workers") / "images"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(N_IMAGES):
        img, _, _ = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, int(rng.integers(2, 4)), margin=8),
                                 seed=900 + i)
        cv2.imwrite(str(folder / f"f{i:03d}.png"), img[:, :, ::-1])
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def make_project(request, images, tmp_path):
    """make_project() -> the target (folder or URL) of a new project over the images."""
    kind = request.param
    if kind == "postgresql" and not PG:
        pytest.skip("no PostgreSQL server: set POLLENSTUDIO_TEST_PG (scripts/pg_throwaway.sh start)")
    made = []

    def make():
        if kind == "sqlite":
            folder = tmp_path / f"proj{len(made)}"
            shutil.copytree(images, folder)
            target = str(folder)
            with Project.create(folder) as p:
                p.add_folder(folder)
        else:
            sep = "&" if "?" in PG else "?"
            target = f"{PG}{sep}project=dd_{uuid.uuid4().hex[:12]}"
            # the workers (other processes) find the images under the same root
            ENV["POLLENSTUDIO_IMAGE_ROOT"] = str(images)
            with Project.create(target, image_root=images) as p:
                p.add_folder(images)
        made.append(target)
        return target

    return make


def _open(target) -> Project:
    return Project.open(target, image_root=ENV.get("POLLENSTUDIO_IMAGE_ROOT")) if "://" in str(target) \
        else Project.open(target)


def _proposals(target) -> dict[str, list[tuple]]:
    """Per image file name, its annotations (status, taxon, box, score), sorted."""
    out: dict[str, list[tuple]] = {}
    with _open(target) as p:
        names = {c.id: c.name for c in p.categories()}
        for rec in p.images():
            rows = [(a.status.value, names[a.category_id], *np.round(a.box.xyxy(), 1).tolist(),
                     round(float(a.score or 0), 3)) for a in p.annotations(rec.id)]
            out[Path(rec.path).name] = sorted(rows)
    return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        ra, rb = a[name], b[name]
        assert len(ra) == len(rb), (name, ra, rb)
        for x, y in zip(ra, rb):
            assert x[:2] == y[:2], (name, x, y)
            assert np.allclose(x[2:], y[2:], atol=0.15), (name, x, y)


@pytest.fixture(scope="module")
def reference(images, tiny_model_path, tmp_path_factory):
    """What one `pollenstudio detect` process stores (SQLite: the result does not depend on the store)."""
    folder = tmp_path_factory.mktemp("reference") / "proj"
    shutil.copytree(images, folder)
    with Project.create(folder) as p:
        p.add_folder(folder)
    res = _cli(folder, tiny_model_path)
    assert res.returncode == 0, res.stderr
    ref = _proposals(folder)
    assert sum(len(v) for v in ref.values()) >= N_IMAGES  # the tiny model finds grains on these
    return ref


def _rows(target, sql: str, args=()):
    """A read by a third party (never through Project.open, which would write a backup)."""
    if "://" in str(target):
        import psycopg

        from pollenstudio.project.dialect import parse_server_url

        loc = parse_server_url(target)
        with psycopg.connect(loc.conninfo, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {loc.project}")
            return conn.execute(sql.replace("?", "%s"), args).fetchall()
    import sqlite3

    conn = sqlite3.connect(f"{(Path(target) / 'project.pollen').resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _queue(target, job=None):
    """(job id, [(image id, state, worker, run id, tries, error)], job status) of the newest job."""
    if job is None:
        job = _rows(target, "SELECT MAX(id) FROM detect_jobs")[0][0]
    items = _rows(target, "SELECT image_id, state, worker, run_id, tries, error FROM detect_queue WHERE job_id = ? "
                          "ORDER BY image_id", (job,))
    return job, items, _rows(target, "SELECT status FROM detect_jobs WHERE id = ?", (job,))[0][0]


def _wait_until(procs, cond, what: str, limit: float = 300.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        if all(p.poll() is not None for p in procs):
            pytest.fail(f"the workers ended before {what}")
        time.sleep(0.02)
    pytest.fail(f"gave up waiting for {what}")


def _pid(worker: str) -> int:
    return int(worker.rpartition(":")[2])


def test_two_workers_store_what_one_process_stores(make_project, tiny_model_path, reference):
    target = make_project()
    res = _cli(target, tiny_model_path, "--workers", 2, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["done"] == out["detected_now"] == N_IMAGES and out["waiting"] == 0 and out["job_status"] == "done"
    assert [e["returncode"] for e in out["worker_exits"]] == [0, 0], out["worker_exits"]
    _same(_proposals(target), reference)
    job, items, status = _queue(target)
    assert status == "done" and all(state == "done" and tries == 1 for _i, state, _w, _r, tries, _e in items)


def test_a_killed_worker_loses_nothing_and_the_rerun_detects_only_what_is_missing(make_project, tiny_model_path,
                                                                                   reference):
    target = make_project()
    launcher = subprocess.Popen(_cmd(target, tiny_model_path, "--workers", 1, "--claim", 2, "--json"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        def claimed_after_some_done():
            try:
                _job, items, _ = _queue(target)
            except Exception:  # the queue is not made yet
                return None
            done = sum(s == "done" for _i, s, *_ in items)
            held = [w for _i, s, w, *_ in items if s == "claimed"]
            return held[0] if done >= 3 and held else None

        worker = _wait_until([launcher], claimed_after_some_done, "the worker stored 3 images")
        os.kill(_pid(worker), signal.SIGSTOP)  # frozen mid-run, so what it stored can be counted
        _job, items, _ = _queue(target)
        done_before = sum(s == "done" for _i, s, *_ in items)
        assert 3 <= done_before < N_IMAGES
        os.kill(_pid(worker), signal.SIGKILL)
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 4, err  # a worker died and left images
    first = json.loads(out)
    assert first["done"] == done_before and first["waiting"] == N_IMAGES - done_before
    assert first["worker_exits"][0]["returncode"] == -signal.SIGKILL

    res = _cli(target, tiny_model_path, "--workers", 1, "--claim", 2, "--json")
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert again["job"] == first["job"]  # the same job, continued
    assert again["detected_now"] == N_IMAGES - done_before
    _same(_proposals(target), reference)  # nothing lost, nothing twice
    _job, items, status = _queue(target, first["job"])
    assert status == "done" and all(s == "done" for _i, s, *_ in items)


def test_the_other_worker_takes_over_a_killed_workers_images(make_project, tiny_model_path, reference):
    target = make_project()
    launcher = subprocess.Popen(_cmd(target, tiny_model_path, "--workers", 2, "--claim", 2, "--json"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        def a_claim_after_some_done():
            try:
                _job, items, _ = _queue(target)
            except Exception:
                return None
            held = [w for _i, s, w, *_ in items if s == "claimed"]
            return held[0] if sum(s == "done" for _i, s, *_ in items) >= 2 and held else None

        for _ in range(50):
            victim = _wait_until([launcher], a_claim_after_some_done, "a worker held a claim")
            os.kill(_pid(victim), signal.SIGSTOP)  # frozen: does it still hold that claim?
            _job, items, _ = _queue(target)
            held = [i for i, s, w, *_ in items if s == "claimed" and w == victim]
            if held:
                break
            os.kill(_pid(victim), signal.SIGCONT)  # it had just stored its claim: try again
        assert held, "never caught a worker holding a claim"
        os.kill(_pid(victim), signal.SIGKILL)
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    res = json.loads(out)
    assert sorted(e["returncode"] for e in res["worker_exits"]) == [-signal.SIGKILL, 0], (res, err)
    assert launcher.returncode == 0, err  # the other worker took the killed one's images over
    assert res["done"] == N_IMAGES and res["waiting"] == 0
    _same(_proposals(target), reference)
    _job, items, _ = _queue(target)
    taken_over = [(i, w) for i, s, w, *_ in items if i in held]
    assert all(w != victim for _i, w in taken_over), taken_over


def test_a_workers_never_overwrite_a_persons_decisions(make_project, tiny_model_path, reference):
    target = make_project()
    with _open(target) as p:
        recs = p.images()
    res = _cli(target, tiny_model_path, "--workers", 1)  # proposals first, then a person decides some of them
    assert res.returncode == 0, res.stderr
    with _open(target) as p:
        props = [a for r in recs for a in p.annotations(r.id) if a.status is AnnotationStatus.PROPOSED]
        accepted, rejected, moved = props[0], props[3], props[6]
        p.accept(accepted.id)
        p.reject(rejected.id)
        b = moved.box
        p.move_annotation(moved.id, Box(b.x1 + 2, b.y1 + 2, b.x2 + 2, b.y2 + 2))
        cat = p.add_category("Handdrawn")
        drawn = p.add_annotation(props[9].image_id, props[9].box, cat)
        decided = {a.id: p.annotation(a.id) for a in (accepted, rejected, moved)}
        decided[drawn] = p.annotation(drawn)
    res = _cli(target, tiny_model_path, "--workers", 2, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["skipped_now"] >= 4  # each decided grain was found again and left to the person
    with _open(target) as p:
        for aid, before in decided.items():
            now = p.annotation(aid)
            assert (now.status, now.box, now.category_id, now.author) == (before.status, before.box,
                                                                           before.category_id, before.author)
            others = [a for a in p.annotations(now.image_id) if a.id != aid and a.status is AnnotationStatus.PROPOSED]
            if others:  # no proposal brought back over a decided grain
                assert (iou_matrix([a.box.xyxy() for a in others], [now.box.xyxy()]) <= 0.5).all()
        names = {c.id: c.name for c in p.categories()}
        assert "Handdrawn" in names.values()


def test_bad_use_is_refused_in_words(images, tmp_path, tiny_model_path):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    res = _cli(folder, tiny_model_path, "--workers", 2)
    assert res.returncode == 1 and "holds no project" in res.stderr, res.stderr
    assert not (folder / "project.pollen").exists()  # nothing was made
    with Project.create(folder) as p:
        p.add_folder(folder)
    res = _cli(folder, tiny_model_path, "--workers", 2, "--distributed")
    assert res.returncode == 1 and "give one of them" in res.stderr, res.stderr
    with Project.open(folder) as p:
        assert not p.runs()  # refused before anything was written


def test_two_processes_under_torchrun_store_what_one_process_stores(images, tmp_path, tiny_model_path, reference):
    """The form for several machines, here two CPU processes of one machine (Gloo)."""
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.is_file() else ([shutil.which("torchrun")] if shutil.which("torchrun") else None)
    if launcher is None:
        pytest.skip("torchrun is not installed with this torch")
    folder = tmp_path / "proj"
    shutil.copytree(images, folder)
    with Project.create(folder) as p:
        p.add_folder(folder)
    cmd = launcher + ["--nproc_per_node=2", "--standalone", "-m", "pollenstudio", "detect", str(folder), "--model",
                      str(tiny_model_path), "--device", "cpu", "--conf", "0.3", "--batch", "1", "--distributed",
                      "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)  # only rank 0 reports
    assert out["workers"] == 2 and out["done"] == N_IMAGES and out["job_status"] == "done"
    _same(_proposals(folder), reference)
    _job, items, _ = _queue(folder)
    assert all(s == "done" and tries == 1 for _i, s, _w, _r, tries, _e in items)


def test_ctrl_c_keeps_what_was_stored_and_gives_back_the_rest(make_project, tiny_model_path, reference):
    target = make_project()
    launcher = subprocess.Popen(_cmd(target, tiny_model_path, "--workers", 2, "--claim", 2, "--json"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        def some_done():
            try:
                _job, items, _ = _queue(target)
            except Exception:
                return None
            return sum(s == "done" for _i, s, *_ in items) >= 3

        _wait_until([launcher], some_done, "3 images were stored")
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    if launcher.returncode == 0:  # the job was done before the signal came
        return
    assert launcher.returncode == 130, err
    _job, items, status = _queue(target)
    states = [s for _i, s, *_ in items]
    assert status == "open" and "claimed" not in states  # every claim was given back
    done_before = states.count("done")
    res = _cli(target, tiny_model_path, "--workers", 2, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["detected_now"] == N_IMAGES - done_before
    _same(_proposals(target), reference)
