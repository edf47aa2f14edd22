"""The gate of continuous retraining: a candidate version replaces the model in use only if
it beats it on the identical validation images. A deliberately broken candidate (every
weight of its detection head zeroed) never does; a good one does."""

import pytest
from fixtures_models import reviewed_project, tiny_model_path, zeroed_head_copy  # noqa: F401

from pollenstudio.engine.compare import beats, gate_candidate, reference_model


@pytest.fixture
def reviewed(tmp_path, tiny_model_path):
    folder = tmp_path / "proj"
    proj = reviewed_project(folder, 4, seed=5, scene_seed=700)
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
