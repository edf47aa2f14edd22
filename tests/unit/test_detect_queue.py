"""The work queue of spread detection (project.detect_queue) and the worker loop
(engine.distributed_detect.run_worker) in one process: claims never overlap, a dead or
expired claim comes back, a batch the server refused is taken back and detected again."""

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, random_grains, render_scene, tiny_model_path, tiny_predictor  # noqa: F401

from pollenstudio.project import Project
from pollenstudio.project.detect_queue import DetectQueue, worker_name


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        img, _, _ = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 2, margin=8), seed=40 + i)
        cv2.imwrite(str(folder / f"f{i}.png"), img[:, :, ::-1])
    p = Project.create(folder)
    p.add_folder(folder)
    yield p
    p.close()


def _job(p, n=None):
    q = DetectQueue(p)
    ids = [r.id for r in p.images()][:n]
    job, resumed = q.open_job({"model_version_id": 1, "conf": 0.3}, ids)
    assert not resumed
    return q, job


def test_two_connections_never_claim_the_same_image(project):
    q, job = _job(project)
    other = Project.open(project.folder)
    try:
        q2 = DetectQueue(other)
        a = q.claim(job.id, 2, "hostA:1")
        b = q2.claim(job.id, 2, "hostB:1")
        c = q.claim(job.id, 5, "hostA:1")
        assert len(a) == len(b) == 2 and len(c) == 2
        assert not set(a) & set(b) and not (set(a) | set(b)) & set(c)
        assert q2.claim(job.id, 5, "hostB:1") == []  # all claimed, none expired
    finally:
        other.close()


def test_the_same_settings_continue_the_open_job(project):
    q, job = _job(project)
    again, resumed = q.open_job({"conf": 0.3, "model_version_id": 1}, [])
    assert resumed and again.id == job.id
    fresh, resumed = q.open_job({"conf": 0.3, "model_version_id": 1}, [1], restart=True)
    assert not resumed and fresh.id != job.id and q.job(job.id).status == "abandoned"


def test_expired_and_dead_claims_come_back(project):
    q, job = _job(project)
    q.lease_s = 0.2
    remote = q.claim(job.id, 2, "elsewhere:123")  # a machine that vanished: only its lease tells
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    local = q.claim(job.id, 2, worker_name(dead.pid))  # a process of this machine that is gone
    assert q.release_dead(job.id, "me:1") == 2
    assert q.counts(job.id).claimed == 2  # the remote one still holds its lease
    assert q.claim(job.id, 10, "me:1") == sorted(set(range(1, 7)) - set(remote))  # the dead one's came back
    assert set(local) <= set(range(1, 7)) - set(remote)
    q.lease_s = 60
    q.renew(job.id, "me:1")
    time.sleep(0.3)
    assert q.claim(job.id, 10, "me:2") == sorted(remote)  # the vanished machine's lease ran out


def test_a_batch_the_server_refused_is_detected_again(project, tiny_predictor):
    from pollenstudio.engine.distributed_detect import run_worker

    q, job = _job(project)
    real = project.write_proposals
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the second image of the second batch: as a deadlock with a reviewer's edit
            from pollenstudio.core.errors import ProjectError

            raise ProjectError("server: deadlock detected DETAIL: ...")
        return real(*a, **kw)

    project.write_proposals = flaky
    s = run_worker(project, job.id, chunk=2, predictor=tiny_predictor)
    del project.write_proposals
    counts = q.counts(job.id)
    assert counts.done == 6 and counts.open == 0 and q.job(job.id).status == "done"
    tries = {i: t for i, _s, _w, _r, t, _e in q.items(job.id)}
    assert sorted(tries.values()) == [1, 1, 1, 1, 2, 2]  # the refused batch, and only it, ran twice
    statuses = [r.status for r in project.runs("detect")]
    assert statuses.count("failed") == 1 and statuses.count("done") == 3
    assert s.detected == 6
    # the failed run's first image was taken back and written again by a later run: one set of proposals
    for rec in project.images():
        runs = {a.extra.get("run_id") for a in project.annotations(rec.id)}
        assert len(runs) <= 1, runs


def test_a_lost_server_is_not_retried(project, tiny_predictor):
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.engine.distributed_detect import run_worker

    q, job = _job(project)

    def broken(*a, **kw):
        raise ProjectError("lost the connection to the PostgreSQL server")

    project.write_proposals = broken
    with pytest.raises(ProjectError, match="lost the connection"):
        run_worker(project, job.id, chunk=2, predictor=tiny_predictor)
    del project.write_proposals
    assert q.counts(job.id).pending == 6  # nothing kept, nothing held



@pytest.mark.parametrize("text, transient", [
    ("server: deadlock detected DETAIL: Process 1 waits for ShareLock", True),
    ('server: duplicate key value violates unique constraint "categories_name_key" DETAIL: Key (name)=(Pinus)', True),
    ("project.pollen is busy: another program is writing to it (database is locked); try again", True),
    ("lost the connection to the PostgreSQL server of x; the change in flight was not saved", False),
    ('duplicate key value violates unique constraint "images_pkey"', False),
])
def test_which_refusals_are_tried_again(text, transient):
    from pollenstudio.engine.distributed_detect import is_transient

    assert is_transient(Exception(text)) is transient
