"""The split design: a few-shot taxon classifier on grain crops, stored in the model version's
file, used by the Predictor to name the detector's grains. Tiny model, 160 px frames."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pollenstudio.core.errors import CheckpointError, ProjectError
from pollenstudio.detector.checkpoint import load_checkpoint, read_checkpoint, read_extra, save_checkpoint
from pollenstudio.detector.config import ModelConfig
from pollenstudio.detector.model import build_model
from pollenstudio.engine.classify import (
    ClassifierError,
    EmbedSpec,
    TaxonClassifier,
    embed,
    load_classifier,
    train_classifier,
)
from pollenstudio.engine.predict import Predictor

TAXA = ("Poaceae", "Pinus", "Quercus")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _frames(n, seed, taxa=TAXA, size=160):
    """Frames of three drawn taxa a palynologist would tell apart at a glance: small dark
    round grains with a pore, large pale elongated ones, mid-sized purple striped ones;
    random sizes, angles, positions and camera noise. -> [(img, boxes, classes)]"""
    import cv2

    rng = np.random.default_rng(seed)
    look = [((90, 60, 30), (12, 16), 1.0), ((225, 205, 140), (20, 24), 0.55), ((150, 80, 160), (16, 19), 0.9)]
    out = []
    for _ in range(n):
        img = np.full((size, size, 3), 228, np.uint8)
        boxes, classes = [], []
        for cell in range(4):  # one grain per quadrant: never overlapping
            c = int(rng.integers(len(taxa)))
            colour, (lo, hi), aspect = look[c]
            r = float(rng.uniform(lo, hi))
            cx = (cell % 2) * size / 2 + size / 4 + rng.uniform(-8, 8)
            cy = (cell // 2) * size / 2 + size / 4 + rng.uniform(-8, 8)
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(img, (int(cx), int(cy)), (int(r), int(r * aspect)), ang, 0, 360, colour, -1)
            cv2.ellipse(img, (int(cx), int(cy)), (int(r), int(r * aspect)), ang, 0, 360, (60, 40, 20), 2)
            if c == 0:
                cv2.circle(img, (int(cx + r / 2), int(cy)), 3, (230, 220, 200), -1)
            if c == 2:
                for k in (-6, 0, 6):
                    cv2.line(img, (int(cx - r / 2), int(cy + k)), (int(cx + r / 2), int(cy + k)), (90, 40, 100), 2)
            t = np.deg2rad(ang)
            hw = np.hypot(r * np.cos(t), r * aspect * np.sin(t))
            hh = np.hypot(r * np.sin(t), r * aspect * np.cos(t))
            boxes.append([cx - hw, cy - hh, cx + hw, cy + hh])
            classes.append(c)
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        out.append((img, np.array(boxes, np.float64), np.array(classes, np.int64)))
    return out


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", imgsz=160)
    return build_model(cfg).eval(), cfg


@pytest.mark.parametrize("kind", ["prototype", "logreg"])
def test_classifier_learns_separable_taxa_from_a_few_crops(tiny_model, kind):
    model, _ = tiny_model
    train = _frames(4, seed=1)  # 16 grains: ~5 per taxon
    test = _frames(10, seed=2)
    clf = train_classifier(model, train, list(TAXA), EmbedSpec(features="deep+hand", crop=64), kind=kind)
    assert clf.class_names == list(TAXA)
    hit = tot = 0
    for img, boxes, classes in test:
        P = clf.predict_proba(embed(model, img, boxes, clf.spec))
        assert np.allclose(P.sum(1), 1.0)
        hit += int((P.argmax(1) == classes).sum())
        tot += len(classes)
    # chance is 1/3; the drawn taxa differ in size, colour, shape and texture
    assert tot == 40 and hit / tot >= 0.9, (hit, tot)


def test_classifier_refuses_nothing_to_learn(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ClassifierError):
        train_classifier(model, [(np.zeros((64, 64, 3), np.uint8), np.array([[1, 1, 20, 20]]), np.array([-1]))], ["a"])
    with pytest.raises(ClassifierError):
        TaxonClassifier.fit(np.ones((3, 4)), [0, 0, 0], ["a", "b"], EmbedSpec(features="hand"))
    with pytest.raises(ClassifierError):
        EmbedSpec(crop=50)


def test_version_file_round_trips_the_classifier(tiny_model, tmp_path):
    model, cfg = tiny_model
    clf = train_classifier(model, _frames(4, seed=3), list(TAXA), EmbedSpec(crop=64))
    path = save_checkpoint(tmp_path / "v.safetensors", model, cfg, {"grain_size_px": [20.0, 60.0]}, {}, extra=clf.to_extra())
    # the detector loaders see a plain detector ...
    m2, cfg2, meta = load_checkpoint(path)
    assert cfg2.class_names == cfg.class_names and meta["grain_size_px"] == [20.0, 60.0]
    assert all(torch.equal(a, b) for a, b in zip(m2.state_dict().values(), model.state_dict().values()))
    # ... and the classifier comes back exactly
    back = load_classifier(path)
    assert back.class_names == clf.class_names and back.kind == clf.kind and back.spec == clf.spec
    E = np.random.default_rng(0).normal(size=(5, len(clf.mean))).astype(np.float32)
    assert np.allclose(back.predict_proba(E), clf.predict_proba(E), atol=1e-6)
    # a plain detector file has none
    plain = save_checkpoint(tmp_path / "plain.safetensors", model, cfg)
    assert load_classifier(plain) is None and read_extra(plain) == ({}, {})


def test_damaged_classifier_is_refused(tiny_model, tmp_path):
    model, cfg = tiny_model
    clf = train_classifier(model, _frames(3, seed=4), list(TAXA), EmbedSpec(features="hand"))
    tensors, desc = clf.to_extra()
    tensors["taxa.weight"] = torch.full_like(tensors["taxa.weight"], float("nan"))
    path = save_checkpoint(tmp_path / "bad.safetensors", model, cfg, extra=(tensors, desc))
    with pytest.raises(CheckpointError, match="NaN"):
        load_classifier(path)
    read_checkpoint(path)  # the detector itself is still readable
    del tensors["taxa.bias"]
    path = save_checkpoint(tmp_path / "bad2.safetensors", model, cfg, extra=(tensors, desc))
    with pytest.raises(CheckpointError, match="damaged"):
        Predictor.from_checkpoint(path, device="cpu")


def test_predictor_names_grains_with_classifier_taxa_only(tiny_model, tmp_path):
    import copy

    model, cfg = tiny_model
    model = copy.deepcopy(model)
    with torch.no_grad():  # an untrained detector that is sure of everything: boxes to name
        for layer in model.class_layers():
            layer.bias.fill_(4.0)
    clf = train_classifier(model, _frames(4, seed=5), list(TAXA[:2]) + ["Olea"], EmbedSpec(crop=64))
    path = save_checkpoint(tmp_path / "v.safetensors", model, cfg, extra=clf.to_extra())
    plain = Predictor(model, cfg, device="cpu", conf=0.25, max_det=20, fuse=False)
    named = Predictor.from_checkpoint(path, device="cpu", conf=0.25, max_det=20, fuse=False)
    assert named.taxa is not None and named.class_names == clf.class_names
    img = _frames(1, seed=6)[0][0]
    a, b = plain.predict(img), named.predict(img)
    assert len(a) == len(b) > 0  
    for d0, d1 in zip(a, b):
        assert d1.box == d0.box and d1.score == d0.score  # the detector's box and score stay
        # named by the classifier, or (far from every reviewed grain: a random box of an
        # untrained detector) left unnamed as "pollen" with the nearest taxa as suggestions
        assert (d1.label in clf.class_names and d1.label == d1.topk[0][0]) or (d1.label == "pollen" and d1.class_index == -1)
        assert {n for n, _ in d1.topk} <= set(clf.class_names)
        assert abs(sum(p for _, p in d1.topk) - 1.0) < 1e-5
    assert all(d.label not in clf.class_names for d in a)  # the tiny detector's own class names differ


def test_train_project_classifier_stage(tmp_path):
    """A project with reviewed, named grains -> a version = base detector + classifier of
    exactly the project's taxa that have grains; the detector weights are the base's."""
    from pollenstudio.engine.train import TrainConfig, train_project
    from tests.unit.test_train import make_synthetic_project

    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", imgsz=160)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "nc": 1, "class_names": ["pollen"]})
    base = save_checkpoint(tmp_path / "grain.safetensors", build_model(cfg), cfg, {"grain_size_px": [20.0, 60.0]})
    pr = make_synthetic_project(tmp_path, n=8, taxa=TAXA)
    pr.add_category("Betula")  # a taxon without a reviewed grain: not in the classifier
    with pytest.raises(ProjectError, match="detector"):
        train_project(pr, TrainConfig(device="cpu"), base=None, stage="classifier")
    res = train_project(pr, TrainConfig(device="cpu", threads=1), base=str(base), stage="classifier")
    clf = load_classifier(res.weights)
    assert sorted(clf.class_names) == sorted(TAXA)
    m, c, meta = load_checkpoint(res.weights)
    mb, _, _ = load_checkpoint(base)
    assert c.class_names == ["pollen"] and meta["grain_size_px"] == [20.0, 60.0]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), mb.state_dict().values()))
    mv = pr.model_version(res.version_id)
    assert mv.config["stage"] == "classifier" and mv.summary["classifier"]["taxa"] == clf.class_names
    # scoring the version later on its validation images (eval, the comparison) gives its own
    # validation figures: the stored classifier never saw those images
    from pollenstudio.engine.compare import score_on_images

    assert mv.summary["val_image_ids"]
    again = score_on_images(pr, res.weights, c.class_names, mv.summary["val_image_ids"], "cpu", 0.25, 8)
    assert again["map50"] == pytest.approx(res.metrics["map50"])
    pred = Predictor.from_checkpoint(res.weights, device="cpu", conf=0.001, max_det=10)
    assert pred.class_names == clf.class_names
    dets = pred.predict(pr.image_path(pr.images()[0]))
    assert all(d.label in TAXA for d in dets)
    pr.close()
