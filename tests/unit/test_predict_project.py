"""Detection jobs on a project: proposals through the merge rule, run records, cancel."""

import shutil
import threading

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.progress import CancelToken
from pollenstudio.core.types import AnnotationStatus, Box
from pollenstudio.engine.detect_job import detect_project
from pollenstudio.engine.predict import Predictor
from pollenstudio.project import Project




def _write_scenes(folder, n, seed=0, size=IMGSZ):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        grains = random_grains(rng, size, size, 2, margin=8)
        img, boxes, classes = render_scene(size, size, grains, seed=seed * 1000 + i)
        name = f"img_{i:03d}.png"
        cv2.imwrite(str(folder / name), img[:, :, ::-1])
        truth[name] = (boxes, classes)
    return truth


@pytest.fixture
def project(tmp_path, tiny_model_path):
    truth = _write_scenes(tmp_path / "proj", 3, seed=1)
    proj = Project.create(tmp_path / "proj")
    proj.add_folder(tmp_path / "proj")
    mv = proj.add_model_version("tiny", tiny_model_path, activate=True)
    yield proj, truth, mv
    proj.close()


def test_proposals_land_with_provenance_and_human_decisions_survive_redetection(project):
    proj, truth, mv = project
    pred = Predictor.from_project(proj, device="cpu", conf=0.3, batch=4)
    assert pred.model_version_id == mv  # the active version, no duplicate registration
    s = detect_project(proj, pred)
    assert s.done == 3 and not s.failed and not s.cancelled
    assert s.proposals == sum(len(b) for b, _ in truth.values())
    img = proj.images()[0]
    anns = proj.annotations(img.id)
    boxes, _ = truth[img.path.split("/")[-1]]
    assert all(a.status is AnnotationStatus.PROPOSED and a.model_version == mv for a in anns)
    assert all(max(a.box.iou(Box(*map(float, b))) for b in boxes) > 0.5 for a in anns)
    run = proj.run(s.run_id)
    assert run.status == "done" and run.params["conf"] == 0.3 and run.params["model_version_id"] == mv
    assert run.params["tile"] == "auto"
    # a person accepts one grain and rejects the other; detection runs again
    proj.accept(anns[0].id)
    proj.reject(anns[1].id)
    s2 = detect_project(proj, pred, [img.id])
    after = proj.annotations(img.id)
    assert s2.skipped == 2 and s2.proposals == 0
    assert {(a.id, a.status) for a in after} == {
        (anns[0].id, AnnotationStatus.ACCEPTED),
        (anns[1].id, AnnotationStatus.REJECTED),
    }


def test_cancel_stops_a_50_image_run_within_one_batch_and_the_project_stays_consistent(tmp_path, tiny_model_path):
    _write_scenes(tmp_path / "big", 50, seed=2, size=128)
    proj = Project.create(tmp_path / "big")
    assert len(proj.add_folder(tmp_path / "big").added) == 50
    pred = Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)
    token = CancelToken()
    stored: dict[int, int] = {}
    first = threading.Event()
    at_cancel = {}
    result = {}

    def on_image(image_id, dets):
        stored[image_id] = len(dets)
        first.set()

    def worker():
        result["summary"] = detect_project(proj, pred, progress=token, on_image=on_image)

    t = threading.Thread(target=worker)
    t.start()
    assert first.wait(60)
    at_cancel["n"] = len(stored)
    token.cancel()
    t.join(60)
    s = result["summary"]
    assert s.cancelled and proj.run(s.run_id).status == "cancelled"
    assert len(stored) - at_cancel["n"] <= pred.batch  # stopped within one batch
    assert s.done == len(stored) < 50
    # every image either has all of its proposals or none
    for rec in proj.images():
        n = len(proj.annotations(rec.id))
        assert n == stored.get(rec.id, 0), rec.path
    assert proj.integrity_check() == "ok"
    proj.close()


def test_an_active_version_whose_weights_are_gone_is_named_not_replaced_by_the_default(project):
    """Detection never quietly falls back to another model: the proposals would record
    the wrong model version."""
    from pollenstudio.core.errors import CheckpointError

    proj, _truth, _mv = project
    copy = proj.folder / "retrained.safetensors"
    shutil.copyfile(proj.model_file(_mv), copy)  # the test model itself is shared: never delete it
    mv = proj.add_model_version("retrained", copy, activate=True)
    n_versions = len(proj.model_versions())
    copy.unlink()
    with pytest.raises(CheckpointError, match=r"active model version .*retrained.* missing"):
        Predictor.from_project(proj, device="cpu")
    assert len(proj.model_versions()) == n_versions
    assert proj.active_model_version().id == mv
