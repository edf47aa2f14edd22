"""The gate of continuous retraining: a candidate version replaces the model in use only if
it beats it on the identical validation images. A deliberately broken candidate (every
weight of its detection head zeroed) never does; a good one does."""

import cv2
import numpy as np
import pytest
import torch
from fixtures_models import IMGSZ, TAXA, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.core.types import Box
from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
from pollenstudio.engine.compare import beats, gate_candidate, reference_model
from pollenstudio.project import Project


def zeroed_head_copy(src, dst):
    """``src`` with every weight of its detection head set to 0 (a broken candidate)."""
    model, cfg, _ = load_checkpoint(src)
    with torch.no_grad():
        for p in model.detect.parameters():
            p.zero_()
    save_checkpoint(dst, model, cfg, {"note": "zeroed head"})
    return cfg


@pytest.fixture
def reviewed(tmp_path, tiny_model_path):
    folder = tmp_path / "proj"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(5)
    truth = {}
    for i in range(4):
        img, boxes, classes = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 3, margin=4), seed=700 + i)
        name = f"f{i}.png"
        cv2.imwrite(str(folder / "images" / name), img[..., ::-1].copy())
        truth[name] = (boxes, classes)
    proj = Project.create(folder)
    ids = proj.ensure_categories(TAXA)
    proj.add_folder(folder / "images")
    for rec in proj.images():
        for b, c in zip(*truth[rec.path.rsplit("/", 1)[-1]]):
            proj.add_annotation(rec.id, Box(*map(float, b)), ids[TAXA[c]])
    broken = folder / "models" / "broken.safetensors"
    broken.parent.mkdir()
    cfg = zeroed_head_copy(tiny_model_path, broken)
    val = [r.id for r in proj.images()]
    conf = {"model": cfg.to_dict()}
    good_id = proj.add_model_version("good", tiny_model_path, config=conf, summary={"val_image_ids": val})
    broken_id = proj.add_model_version("broken", broken, config=conf, summary={"val_image_ids": val})
    yield proj, good_id, broken_id
    proj.close()


def test_a_broken_candidate_never_replaces_the_model_in_use(reviewed):
    proj, good, broken = reviewed
    proj.set_active_model_version(good)
    d = gate_candidate(proj, broken, device="cpu", batch=4)
    assert not d.activate
    assert d.n_val == 4 and d.reference_name == "good"
    assert d.reference["map50"] > 0.5 and d.candidate["map50"] < d.reference["map50"]
    assert "not better" in d.reason
    assert proj.active_model_version().id == good  # the gate decides, it never switches


def test_a_better_candidate_does(reviewed):
    proj, good, broken = reviewed
    proj.set_active_model_version(broken)
    d = gate_candidate(proj, good, device="cpu", batch=4)
    assert d.activate and d.reason == "better on the same validation images"
    assert d.candidate["map50"] > d.reference["map50"]
    # identical images for both: the same ground truth counted
    truth = sum(len(proj.annotations(r.id)) for r in proj.images())
    assert d.candidate["n_truth"] == d.reference["n_truth"] == truth
    assert d.candidate["n_images"] == d.reference["n_images"] == 4


def test_no_validation_images_means_no_switch(reviewed):
    proj, good, broken = reviewed
    proj.set_active_model_version(broken)
    lone = proj.add_model_version("no-val", proj.model_file(proj.model_version(good)),
                                  config=proj.model_version(good).config, summary={})
    d = gate_candidate(proj, lone, device="cpu")
    assert not d.activate and "held out" in d.reason
    assert reference_model(proj).version_id == broken


def test_beats_is_strict_and_breaks_ties_on_map50_95():
    assert beats({"map50": 0.6}, {"map50": 0.5})
    assert not beats({"map50": 0.5}, {"map50": 0.5, "map50_95": 0.2})
    assert beats({"map50": 0.5, "map50_95": 0.3}, {"map50": 0.5, "map50_95": 0.2})
    assert not beats({"map50": 0.4}, {"map50": 0.5})
