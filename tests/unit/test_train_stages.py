"""Training stages and freezing: a fine-tuned model names exactly the project's taxa, frozen
layers stay as they were, and "both" gives a grain finder + a classifier in one file."""

import pytest
import torch

from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
from pollenstudio.detector.config import ModelConfig
from pollenstudio.detector.model import build_model
from pollenstudio.engine.classify import load_classifier
from pollenstudio.engine.train import NECK_MODULES, train_project
from tests.unit.test_train import fast_cfg, make_synthetic_project


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _base(tmp_path, classes):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", imgsz=160)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "nc": len(classes), "class_names": list(classes)})
    return save_checkpoint(tmp_path / "base.safetensors", build_model(cfg), cfg, {"grain_size_px": [20.0, 60.0]})


@pytest.mark.parametrize("freeze,trained", [("neck", {"detect"}), ("backbone", {"detect", *NECK_MODULES})])
def test_fine_tune_keeps_frozen_layers_and_names_only_project_taxa(tmp_path, freeze, trained):
    base = _base(tmp_path, ["Betula", "Poaceae", "Olea"])  # Betula and Olea are not in the project
    pr = make_synthetic_project(tmp_path, n=6, taxa=("Poaceae",))
    res = train_project(pr, fast_cfg(epochs=1, freeze=freeze, ema=False), base=str(base))
    m, cfg, _ = load_checkpoint(res.weights)
    assert cfg.class_names == ["Poaceae"]  # no leftover base taxa
    mb, _, _ = load_checkpoint(base)
    new, old = m.state_dict(), mb.state_dict()
    changed = {k.split(".")[0] for k in new if new[k].shape == old[k].shape and not torch.equal(new[k], old[k])}
    assert changed and changed <= trained, changed
    pr.close()


def test_both_stage_is_a_grain_finder_plus_classifier(tmp_path):
    base = _base(tmp_path, ["pollen"])
    pr = make_synthetic_project(tmp_path, n=6, taxa=("Poaceae", "Pinus"))
    res = train_project(pr, fast_cfg(epochs=1), base=str(base), stage="both")
    _, cfg, _ = load_checkpoint(res.weights)
    assert cfg.class_names == ["pollen"]
    assert sorted(load_classifier(res.weights).class_names) == ["Pinus", "Poaceae"]
    assert pr.model_version(res.version_id).summary["classifier"]["taxa"]
    pr.close()
