"""Issue 28: comparisons that always score. The shipped grain model ("pollen", one class) in
use on a taxon-labelled project could not be scored ("no taxon in common") and the dashboard
still offered "Use this model"; `pollenstudio eval` failed the same way. A model that names
none of the project's taxa is scored on finding grains (class-agnostic), and the model it is
compared with is scored the same way on the same images."""

import pytest
from fixtures_models import reviewed_project, tiny_model_path  # noqa: F401

from pollenstudio.engine.compare import compare_with_reference, gate_candidate, reference_model, score_on_images
from pollenstudio.engine.models import DEFAULT_LABEL
from pollenstudio.engine.paths import default_model_path


@pytest.fixture
def project(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.delenv("POLLENSTUDIO_MODELS", raising=False)
    grain = default_model_path()
    if grain.name != "pollen-grain-n.safetensors":
        pytest.skip("the shipped grain model is not installed")
    proj = reviewed_project(tmp_path / "proj", 4, seed=5, scene_seed=700)
    val = [r.id for r in proj.images()]
    from pollenstudio.detector.checkpoint import read_checkpoint

    cfg = read_checkpoint(tiny_model_path)[0]
    new = proj.add_model_version("new", tiny_model_path, config={"model": cfg.to_dict()}, metrics={"map50": 0.9},
                                 summary={"val_image_ids": val})
    yield proj, new, grain
    proj.close()


def test_the_grain_model_is_scored_on_finding_grains(project):
    proj, new, grain = project
    val = [r.id for r in proj.images()]
    m = score_on_images(proj, grain, [], val, "cpu", 0.25, 4)
    assert m is not None and m["class_agnostic"] is True
    assert m["n_truth"] == 12 and [r["name"] for r in m["per_class"]] == ["grain (any taxon)"]
    assert 0.0 <= m["map50"] <= 1.0


def test_the_comparison_with_the_grain_model_in_use_scores_both_on_finding(project):
    proj, new, grain = project
    assert reference_model(proj).name == DEFAULT_LABEL  # a new project: the shipped grain model is in use
    c = compare_with_reference(proj, new, device="cpu", batch=4)
    assert c.reference_metrics is not None and c.reference_metrics["class_agnostic"] is True
    assert c.class_agnostic and "class-agnostic (finding only)" in c.note
    assert c.finding is not None and c.finding["class_agnostic"] is True
    assert c.finding["n_truth"] == c.reference_metrics["n_truth"] == 12  # the same grains
    assert c.finding["map50"] > 0.5  # the new (tiny) model finds the grains of the scenes it knows
    d = c.to_dict()
    assert d["class_agnostic"] is True and d["new_finding"]["map50"] == c.finding["map50"]
    assert all(t["reference_ap50"] is None for t in d["taxa"])  # no taxon figure for a model naming none


def test_the_gate_against_the_grain_model_compares_finding_like_for_like(project):
    proj, new, grain = project
    g = proj.add_model_version("grain model", grain, activate=True)
    d = gate_candidate(proj, new, device="cpu", batch=4)
    assert d.reference_name == "grain model" and d.reference["class_agnostic"] is True
    assert d.candidate["class_agnostic"] is True  # the candidate scored the same way, not by taxon
    assert "class-agnostic" in d.reason
    assert proj.active_model_version().id == g


def test_a_version_validated_on_too_few_images_is_not_compared(project):
    """Issue 28 (item 4): below 2 validation images / 10 grains the comparison says so
    instead of scoring the model in use on them."""
    proj, new, grain = project
    one = [proj.images()[0].id]
    mv = proj.model_version(new)
    few = proj.add_model_version("few", proj.model_file(mv), config=mv.config,
                                 metrics={"map50": 0.005, "n_images": 1, "n_truth": 3}, summary={"val_image_ids": one})
    c = compare_with_reference(proj, few, device="cpu", batch=4)
    assert c.reference_metrics is None and c.taxa == []
    assert c.too_few.startswith("too few reviewed images to score: 1 validation image with 3 grains")
    assert c.note.startswith("Too few reviewed images to score") and "Nothing was compared" in c.note
    assert c.to_dict()["too_few_to_score"] == c.too_few
    none = proj.add_model_version("none held out", proj.model_file(mv), config=mv.config, summary={"val_image_ids": []})
    c = compare_with_reference(proj, none, device="cpu", batch=4)
    assert c.too_few.startswith("too few reviewed images to score: none was held out")
