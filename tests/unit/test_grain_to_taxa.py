"""From a grain model to taxa: unidentified grains teach boxes, not classes; the head grows
from one class to the project's taxa keeping the box branch; scoring ignores them."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pollenstudio.core.types import GRAIN_CLASS as UNIDENTIFIED
from pollenstudio.core.types import Box
from pollenstudio.detector import DetectionLoss, ModelConfig, build_model
from pollenstudio.detector.assigner import assign
from pollenstudio.detector.checkpoint import load_for_finetune, save_checkpoint
from pollenstudio.engine.dataset import data_from_project
from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, evaluate_detections
from pollenstudio.project.store import Project


def test_unknown_class_grains_get_box_targets_but_no_class_target():
    torch.manual_seed(0)
    pd_scores = torch.rand(1, 16, 3)
    pts = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="xy"), -1).reshape(-1, 2) * 8 + 4
    pd_boxes = torch.cat([pts - 6, pts + 6], -1)[None]
    gt_boxes = torch.tensor([[[0.0, 0.0, 14.0, 14.0], [16.0, 16.0, 32.0, 32.0]]])
    asg = assign(pd_scores, pd_boxes, pts, torch.tensor([[2, -1]]), gt_boxes, torch.tensor([[True, True]]), topk=3)
    unknown = asg.unknown[0]
    assert unknown.any() and asg.fg_mask[0][unknown].all()
    assert (asg.target_scores[0][unknown] == 0).all()  # no class pushed up...
    assert (asg.target_weight[0][unknown] > 0).all()  # ...but the box is learnt
    known = asg.fg_mask[0] & ~unknown
    assert known.any() and (asg.target_scores[0][known].argmax(-1) == 2).all()


def test_loss_leaves_the_class_scores_of_unidentified_grains_alone():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("base", nc=2))
    x = torch.rand(1, 3, 128, 128)
    raw = [o.detach() for o in model(x)]
    reg = 4 * model.reg_max

    def class_grads(targets):
        out = [o.clone().requires_grad_(True) for o in raw]
        total, parts = DetectionLoss(model, topk=10)(out, targets)
        total.backward()
        return torch.cat([o.grad[0, reg:].flatten(1) for o in out], 1), parts  # (nc, anchors)

    g_unknown, parts = class_grads(torch.tensor([[0, -1, 20, 20, 70, 70.0]]))
    assert parts["box"] > 0 and parts["dfl"] > 0  # the box is learnt
    g_none, _ = class_grads(torch.zeros(0, 6))
    g_named, _ = class_grads(torch.tensor([[0, 1, 20, 20, 70, 70.0]]))
    # the grain's positive anchors: exactly no class gradient when it is unidentified, where
    # an image without it would push them down (background) and a named grain up (taxon 1)
    held = (g_unknown == 0).all(0)
    assert held.sum() >= 3
    assert (g_none[:, held] > 0).all()
    assert (g_named[1, held] < 0).any()
    with pytest.raises(Exception):
        DetectionLoss(model)([o.clone() for o in raw], torch.tensor([[0, -2, 1, 1, 9, 9.0]]))


def test_growing_a_one_class_grain_model_keeps_the_box_branch(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", nc=1, class_names=[UNIDENTIFIED])
    grain = build_model(cfg)
    path = save_checkpoint(tmp_path / "grain.safetensors", grain, cfg)
    grown, gcfg, meta = load_for_finetune(path, ["Betula", "Quercus", "Pinus"])
    assert gcfg.class_names == ["Betula", "Quercus", "Pinus"] and meta["finetuned_from"]["class_names"] == [UNIDENTIFIED]
    old, new = grain.state_dict(), grown.state_dict()
    cls_keys = set()
    for layer_old, layer_new in zip(grain.class_layers(), grown.class_layers()):
        for j in range(3):  # every taxon starts as the grain class
            assert torch.equal(layer_new.weight[j], layer_old.weight[0]) and torch.equal(layer_new.bias[j], layer_old.bias[0])
        cls_keys |= {k for k, v in new.items() if v is layer_new.weight or v is layer_new.bias}
    same = [k for k in old if old[k].shape == new[k].shape]
    assert len(same) == len(old) - 2 * len(grown.class_layers())
    assert all(torch.equal(old[k], new[k]) for k in same)  # box branch, backbone, neck: all kept


def _image(folder: Path, i: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.full((64, 80, 3), 200, np.uint8)
    img[10 + i : 30 + i, 10:30] = 60
    p = folder / f"f{i}.png"
    cv2.imwrite(str(p), img)
    return p


def test_unidentified_grains_are_a_class_only_in_a_grain_only_project(tmp_path):
    with Project.create(tmp_path / "p") as pr:
        pr.add_images([_image(tmp_path / "imgs", i) for i in range(2)])
        ims = pr.images()
        cats = pr.ensure_categories([UNIDENTIFIED, "Betula"])
        pr.add_annotation(ims[0].id, Box(10, 10, 30, 30), cats[UNIDENTIFIED])
        data = data_from_project(pr, [UNIDENTIFIED])
        assert data.class_names == [UNIDENTIFIED] and data.samples[0].classes.tolist() == [0]
        pr.add_annotation(ims[1].id, Box(12, 12, 32, 32), cats["Betula"])
        data = data_from_project(pr, [UNIDENTIFIED])
        assert data.class_names == ["Betula"]
        by_name = {s.name: s.classes.tolist() for s in data.samples}
        assert by_name == {"f0.png": [-1], "f1.png": [0]}


def test_predictions_on_unidentified_grains_are_neither_hits_nor_false_alarms():
    truths = [ImageTruth(np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]]), np.array([0, -1]), 40, 40)]
    preds = [ImagePreds(np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]]), np.array([0.9, 0.8]), np.array([0, 0]))]
    r = evaluate_detections(truths, preds, ["Betula"], conf=0.25)
    assert r.precision == 1.0 and r.recall == 1.0 and r.n_truth == 1 and r.map50 == pytest.approx(1.0)
    preds = [ImagePreds(np.array([[0, 0, 10, 10], [50, 50, 60, 60.0]]), np.array([0.9, 0.8]), np.array([0, 0]))]
    assert evaluate_detections(truths, preds, ["Betula"], conf=0.25).precision == 0.5


def test_training_plan_says_what_will_be_learnt(tmp_path):
    from pollenstudio.engine.train import plan_training

    cfg = ModelConfig.tiny("full", nc=1, class_names=[UNIDENTIFIED])
    base = save_checkpoint(tmp_path / "grain.safetensors", build_model(cfg), cfg)
    with Project.create(tmp_path / "p") as pr:
        pr.add_images([_image(tmp_path / "imgs", i) for i in range(3)])
        ims = pr.images()
        cats = pr.ensure_categories([UNIDENTIFIED, "Betula", "Quercus"])
        pr.add_annotation(ims[0].id, Box(10, 10, 30, 30), cats[UNIDENTIFIED])
        plan = plan_training(pr, str(base))
        assert plan.class_names == [UNIDENTIFIED] and "a grain model" in plan.describe()
        pr.add_annotation(ims[1].id, Box(12, 12, 32, 32), cats["Betula"])
        pr.add_annotation(ims[2].id, Box(12, 12, 32, 32), cats["Quercus"])
        plan = plan_training(pr, str(base))
        assert plan.class_names == ["Betula", "Quercus"] and plan.grains == {"Betula": 1, "Quercus": 1}
        assert plan.unidentified == 1 and plan.images == 3
        text = plan.describe()
        assert "2 taxa (Betula 1, Quercus 1)" in text and "1 unidentified grains" in text and "Grows the grain model" in text
