"""Issue 31 items 10 and 11: a detection is all or nothing, and detecting again with the same
model file registers no second identical model version.

10: a model whose class names cannot become taxa (a line break in one) is refused before
the project is touched (no version, taxon, run or proposal); a run that fails part-way
takes back what it wrote (its proposals and new taxa; the proposals it replaced come back;
grains a person decided meanwhile stay).
11: the shipped default model (no active version) or the same model file is registered
once, however often detect runs; other weights written over that file are a new version.
"""

import sqlite3
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from pollenstudio.core.errors import CheckpointError
from pollenstudio.core.types import AnnotationStatus, Box, Detection
from pollenstudio.detector.checkpoint import save_checkpoint
from pollenstudio.detector.config import ModelConfig
from pollenstudio.detector.model import build_model
from pollenstudio.engine.detect_job import detect_project
from pollenstudio.engine.predict import Predictor
from pollenstudio.project import Project


def _project(tmp_path, n=3):
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(n):
        img = np.full((64, 96), 40 + 40 * i, np.uint8)
        cv2.circle(img, (48, 32), 16, 220, -1)
        cv2.imwrite(str(folder / f"im{i}.png"), img)
    p = Project.create(folder)
    p.add_folder(folder)
    return p


def _model(path, class_names, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig.tiny("full", nc=len(class_names), class_names=list(class_names), imgsz=128)
    return save_checkpoint(path, build_model(cfg))


def _state(p):
    """Everything a detection may write, as plain rows."""
    with sqlite3.connect(p.db_path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                for t in ("annotations", "categories", "model_versions")} | {
            "images": conn.execute("SELECT id, status, flip_unmatched, n_undecided FROM images ORDER BY id").fetchall()}


# ------------------------------------------------------------------ 10: refused up front
@pytest.mark.parametrize("bad", ["Bad\nname", "Ole\x1b[31ma", " Olea", ""])
def test_a_model_whose_class_cannot_be_a_taxon_is_refused_before_anything_is_written(tmp_path, bad):
    p = _project(tmp_path)
    model = _model(tmp_path / "bad.safetensors", ["Olea", bad])
    before, runs = _state(p), p.runs()
    with pytest.raises(CheckpointError, match="class 2") as exc:
        Predictor.from_project(p, str(model), device="cpu", conf=0.0)
    assert "nothing was changed" in str(exc.value)
    # a predictor built some other way is refused by the job itself, before its run starts
    pred = Predictor.from_checkpoint(model, device="cpu", conf=0.0)
    with pytest.raises(CheckpointError, match="class 2"):
        detect_project(p, pred)
    assert _state(p) == before and p.runs() == runs
    p.close()


# ------------------------------------------------------------------ 10: taken back on failure
class _Failing:
    """A predictor-like object: fixed detections per image, and an error on image ``fail_at``
    (a GPU out of memory, a disk error: anything but a cancel)."""

    source, model_version_id, conf, iou, max_det, tile, overlap, imgsz, batch = "fake", None, 0.25, 0.7, 300, "off", 0, 128, 1
    device_description = "cpu"
    class_names = ["Olea", "Betula"]
    timings: dict = {}

    def __init__(self, dets, fail_at):
        self.dets, self.fail_at = dets, fail_at

    def reset_timings(self):
        pass

    def iter_predict(self, paths, progress, names=None):
        for i, _ in enumerate(paths):
            if i == self.fail_at:
                raise RuntimeError("CUDA out of memory (simulated)")
            yield SimpleNamespace(index=i, error=None, detections=list(self.dets))


def test_a_run_failing_part_way_takes_back_what_it_wrote(tmp_path):
    p = _project(tmp_path, n=3)
    olea = p.add_category("Olea")
    i1, i2, i3 = (r.id for r in p.images())
    p.add_annotation(i1, Box(60, 5, 80, 25), olea)  # a person's grain: never touched
    # an earlier run's undecided proposals, which the failing run replaces on images 1 and 2
    old = detect_project(p, _Failing([Detection(Box(10, 10, 30, 30), 0, "Olea", 0.6)], fail_at=None))
    assert old.proposals == 3
    before = _state(p)
    decided = []

    def decide(image_id, dets):  # a person accepts a new proposal while the run goes on
        if not decided:
            aid = next(a.id for a in p.annotations(image_id) if a.status is AnnotationStatus.PROPOSED
                       and a.category_id != olea)
            p.accept(aid)
            decided.append(aid)

    new = [Detection(Box(12, 12, 31, 31), 1, "Betula", 0.9), Detection(Box(40, 30, 55, 45), 0, "Quercus", 0.7)]
    with pytest.raises(RuntimeError, match="out of memory"):
        detect_project(p, _Failing(new, fail_at=2), on_image=decide)
    after = _state(p)
    run = p.runs("detect")[-1]
    assert run.status == "failed" and run.summary["taken_back"] == 3
    # the grain a person accepted stays, with its taxon; everything else is as before
    kept = p.annotation(decided[0])
    assert kept.status is AnnotationStatus.ACCEPTED
    cats = {c.name for c in p.categories()}
    assert p.category(kept.category_id).name in cats
    assert [r for r in after["annotations"] if r[0] != decided[0]] == before["annotations"]
    assert len(after["categories"]) == len(before["categories"]) + 1  # only the accepted grain's taxon was added
    assert after["images"][1:] == before["images"][1:]
    # a successful run afterwards replaces the restored proposals as usual
    s = detect_project(p, _Failing(new, fail_at=None))
    assert s.proposals == 6 - 1  # the accepted grain's box is a decision now
    p.close()


def test_a_failing_first_run_leaves_no_taxon_and_no_proposal(tmp_path):
    p = _project(tmp_path, n=3)
    before = _state(p)
    with pytest.raises(RuntimeError):
        detect_project(p, _Failing([Detection(Box(10, 10, 30, 30), 0, "Olea", 0.6)], fail_at=2))
    assert _state(p) == before
    assert p.image(1).status.value == "new"
    p.close()


def test_a_cancel_keeps_the_images_finished_before_it(tmp_path):
    from pollenstudio.core.errors import Cancelled

    class _Cancelling(_Failing):
        def iter_predict(self, paths, progress, names=None):
            for i, _ in enumerate(paths):
                if i == 2:
                    raise Cancelled()
                yield SimpleNamespace(index=i, error=None, detections=list(self.dets))

    p = _project(tmp_path, n=3)
    s = detect_project(p, _Cancelling([Detection(Box(10, 10, 30, 30), 0, "Olea", 0.6)], None))
    assert s.cancelled and s.done == 2 and p.annotation_count(AnnotationStatus.PROPOSED) == 2
    p.close()


# ------------------------------------------------------------------ 11: one version per model file
def test_detecting_again_with_the_same_file_adds_no_version(tmp_path, monkeypatch):
    p = _project(tmp_path, n=1)
    models = tmp_path / "shipped"
    models.mkdir()
    _model(models / "pollen-grain-n.safetensors", ["pollen"])
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(models))
    ids = set()
    for _ in range(3):  # no active version: the shipped default, every time
        pred = Predictor.from_project(p, None, device="cpu")
        detect_project(p, pred)
        ids.add(pred.model_version_id)
    assert len(p.model_versions()) == 1 and ids == {p.model_versions()[0].id}
    # the same file given by path is that version too
    assert Predictor.from_project(p, str(models / "pollen-grain-n.safetensors"), device="cpu").model_version_id in ids
    # other weights written over the same file are another model: a new version
    _model(models / "pollen-grain-n.safetensors", ["pollen"], seed=1)
    other = Predictor.from_project(p, None, device="cpu").model_version_id
    assert other not in ids and len(p.model_versions()) == 2
    assert p.model_version(other).name != p.model_version(next(iter(ids))).name  # names stay unambiguous
    p.close()
