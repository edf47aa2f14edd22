"""Issue 31 item 16: a taxon classifier learns taxa from named grains. With only
"unidentified" / "pollen" grains reviewed, `train --stage classifier` (and "both") is refused
in words before any training, and nothing is registered or written."""

import subprocess
import sys

import pytest
import torch

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.detector.checkpoint import save_checkpoint
from pollenstudio.detector.config import ModelConfig
from pollenstudio.detector.model import build_model
from pollenstudio.engine.train import TrainConfig, train_project
from tests.unit.test_train import make_synthetic_project


def _grain_model(folder):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", imgsz=160)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "nc": 1, "class_names": ["pollen"]})
    return save_checkpoint(folder / "grain.safetensors", build_model(cfg), cfg, {"grain_size_px": [20.0, 60.0]})


def _unnamed_project(folder, name):
    """Every reviewed grain carries ``name`` (a grain found, no taxon given)."""
    pr = make_synthetic_project(folder, n=6, taxa=("Poaceae",))
    pr.rename_category(pr.category_by_name("Poaceae").id, name)
    return pr


def _nothing_written(pr):
    assert pr.model_versions() == [] and pr.runs("train") == []
    assert not (pr.folder / "models").exists() or not any((pr.folder / "models").rglob("*.safetensors"))


@pytest.mark.parametrize("name", ["pollen", "unidentified", "Pollen"])
@pytest.mark.parametrize("stage", ["classifier", "both"])
def test_only_unnamed_grains_are_refused_before_training(tmp_path, name, stage):
    base = _grain_model(tmp_path)
    pr = _unnamed_project(tmp_path, name)
    with pytest.raises(PollenStudioError, match="name some grains first") as exc:
        train_project(pr, TrainConfig(device="cpu", threads=1, epochs=1), base=str(base), stage=stage)
    assert "\n" not in str(exc.value)
    _nothing_written(pr)
    pr.close()


def test_one_named_grain_among_unnamed_ones_trains_a_classifier_of_that_taxon(tmp_path):
    base = _grain_model(tmp_path)
    pr = _unnamed_project(tmp_path, "pollen")
    ann = next(pr.iter_annotations())
    pr.relabel(ann.id, pr.add_category("Betula"))
    res = train_project(pr, TrainConfig(device="cpu", threads=1), base=str(base), stage="classifier")
    assert pr.model_version(res.version_id).summary["classifier"]["taxa"] == ["Betula"]
    pr.close()


def test_cli_says_so_and_exits_1(tmp_path):
    base = _grain_model(tmp_path)
    pr = _unnamed_project(tmp_path, "unidentified")
    folder = pr.folder
    pr.close()
    res = subprocess.run([sys.executable, "-m", "pollenstudio", "train", str(folder), "--stage", "classifier",
                          "--base", str(base), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "name some grains first" in res.stderr and "Traceback" not in res.stderr
    from pollenstudio.project import Project

    with Project.open(folder) as pr:
        _nothing_written(pr)
