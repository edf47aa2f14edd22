"""Retraining: a tiny HieraEdgeNet learns from reviewed boxes, registers a model version,
fine-tunes from it, survives cancel + resume, and never touches an annotation.

Speed: images of 160 px, a tiny-width model of the real topology, one CPU thread (the
test machine's two cores are shared). The learning test is the heaviest (~40 s).
"""

import math
import sqlite3
from pathlib import Path

import cv2
import pytest
import torch

from pollenstudio.core.errors import Cancelled, CheckpointError, ProjectError
from pollenstudio.core.progress import CancelToken
from pollenstudio.core.types import Box
from pollenstudio.detector.checkpoint import load_checkpoint
from pollenstudio.detector.config import ModelConfig
from pollenstudio.engine.augment import AugmentConfig
from pollenstudio.engine.train import EVENTS, ModelEMA, TrainConfig, Trainer, read_train_state, train_project
from pollenstudio.project.store import Project

IMGSZ = 160


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """These tests train on one thread (shared 2-core machine); give others theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def make_synthetic_project(folder: Path, n: int = 40, size: int = IMGSZ, taxa=("Poaceae",), seed: int = 0) -> Project:
    """A project whose every image is reviewed: the generator's grains entered as added boxes."""
    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(width=size, height=size, difficulty="easy", taxa=tuple(taxa), n_grains=(2, 4), grain_size=(22.0, 42.0))
    items = []
    for i in range(n):
        img, objs = generate_image(seed * 1000 + i, cfg)
        p = img_dir / f"im{i:03d}.png"
        cv2.imwrite(str(p), img[..., ::-1])
        items.append((p, objs))
    pr = Project.create(folder / "proj")
    pr.add_images([p for p, _ in items])
    cats = pr.ensure_categories(list(taxa))
    recs = {Path(r.path).name: r for r in pr.images()}
    with pr.batch("ground truth"):
        for p, objs in items:
            for o in objs:
                pr.add_annotation(recs[p.name].id, Box(*o["bbox"]), cats[o["name"]])
    return pr


def annotations_snapshot(project: Project) -> list[tuple]:
    with sqlite3.connect(project.db_path) as conn:
        return conn.execute("SELECT * FROM annotations ORDER BY id").fetchall()


def fast_cfg(**kw) -> TrainConfig:
    kw.setdefault("augment", AugmentConfig(mosaic=0.0, scale=0.2, translate=0.05))
    base = dict(epochs=2, imgsz=IMGSZ, batch=8, lr0=0.006, warmup_epochs=1, patience=0, device="cpu", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def tiny(variant="full"):
    return ModelConfig.tiny(variant)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project and a model version trained on it from scratch (shared by several tests)."""
    torch.set_num_threads(1)
    pr = make_synthetic_project(tmp_path_factory.mktemp("train"))
    before = annotations_snapshot(pr)
    events = []
    cbs = {e: [lambda tr, *a, e=e: events.append((e, a))] for e in EVENTS}
    res = train_project(pr, fast_cfg(epochs=12, batch=4), model_cfg=tiny(), callbacks=cbs)
    # what this training left, read before any other test adds runs, versions or taxa to
    # the shared project: the assertions on it must not depend on the order tests run in
    after = {
        "train_runs": [r.status for r in pr.runs("train")],
        "versions": [mv.id for mv in pr.model_versions()],
        "active": pr.active_model_version(),
        "annotation_ids": sorted(a.id for a in pr.iter_annotations()),
        "annotations": annotations_snapshot(pr),
    }
    yield pr, res, events, before, after
    pr.close()


@pytest.mark.slow
def test_training_from_scratch_learns_and_registers_a_version(trained):
    pr, res, events, before, after = trained
    m = res.metrics
    print(f"\nfrom scratch: mAP@.5 {m['map50']:.3f}, mAP@.5:.95 {m['map50_95']:.3f} on {res.n_val_images} val images, "
          f"{res.result.epochs_run} epochs, {res.result.seconds:.1f} s")
    assert m["map50"] > 0.15, m  # untrained: 0.0; typical after 12 epochs: 0.4-0.6
    assert res.n_train_images + res.n_val_images == 40 and res.n_val_images >= 4

    mv = pr.model_version(res.version_id)
    assert after["versions"] == [res.version_id]  # one version per training
    assert not mv.active and after["active"] is None  # active only on request
    assert mv.parent_id is None
    assert mv.metrics["map50"] == pytest.approx(m["map50"]) and "per_class" in mv.metrics
    assert mv.config["model"]["class_names"] == ["Poaceae"] and mv.config["train"]["epochs"] == 12
    assert mv.annotation_ids == after["annotation_ids"]
    path = pr.model_file(mv)
    assert path.is_file() and path.parent == pr.folder / "models"
    model, cfg, _ = load_checkpoint(path)
    assert cfg.class_names == ["Poaceae"]
    assert after["train_runs"] == ["done"]
    assert after["annotations"] == before  # training never changes an annotation

    names = [e for e, _ in events]
    assert names[0] == "on_train_start" and names[-1] == "on_train_end"
    assert names.count("on_epoch_end") == 12 and names.count("on_val_end") == 12
    assert names.count("on_batch_end") == 12 * math.ceil(res.n_train_images / 4)
    last_metrics = [a for e, a in events if e == "on_epoch_end"][-1][1]
    assert {"loss", "lr", "map50", "map50_95"} <= set(last_metrics)


@pytest.mark.slow
def test_finetune_starts_from_the_base_weights_even_with_new_taxa(trained):
    pr, res, _, _, _ = trained
    base_sd = load_checkpoint(pr.model_file(res.version_id))[0].state_dict()
    seen = {}

    def grab(trainer):
        seen["sd"] = {k: v.clone() for k, v in trainer.start_weights.items()}

    before = annotations_snapshot(pr)
    r2 = train_project(pr, fast_cfg(epochs=1, lr0=0.001), base=res.version_id, callbacks={"on_train_start": grab})
    assert set(seen["sd"]) == set(base_sd)
    assert all(torch.equal(seen["sd"][k], base_sd[k]) for k in base_sd)
    assert pr.model_version(r2.version_id).parent_id == res.version_id
    # it kept what it knew: one gentle epoch on top of a trained model is far from zero
    assert r2.metrics["map50"] > 0.5 * res.metrics["map50"]
    assert annotations_snapshot(pr) == before

    # a new taxon appears: the head grows, everything else starts from the base
    img = pr.images()[0]
    cat = pr.add_category("Betula")
    pr.add_annotation(img.id, Box(1, 1, 30, 30), cat)
    try:
        r3 = train_project(pr, fast_cfg(epochs=1, lr0=0.001), base=res.version_id, callbacks={"on_train_start": grab})
        _, cfg3, _ = load_checkpoint(r3.weights)
        assert cfg3.class_names == ["Poaceae", "Betula"]
        cls_layers = {k for k in seen["sd"] if seen["sd"][k].shape != base_sd[k].shape}
        assert cls_layers and all("detect" in k for k in cls_layers)  # only the class outputs differ
        same = [k for k in base_sd if k not in cls_layers]
        assert all(torch.equal(seen["sd"][k], base_sd[k]) for k in same)
    finally:
        pr.undo()  # the added box
        pr.delete_category(cat)


def test_cancel_within_one_batch_then_resume_gives_a_model(tmp_path):
    torch.set_num_threads(1)
    pr = make_synthetic_project(tmp_path, n=12, size=128)
    before = annotations_snapshot(pr)
    token = CancelToken()
    after_cancel = []

    def on_batch(trainer, epoch, i, n, loss):
        if token.cancelled:
            after_cancel.append(i)
        if epoch == 1 and i == 0:
            token.cancel()

    cfg = fast_cfg(epochs=3, imgsz=128, batch=4)
    with pytest.raises(Cancelled):
        train_project(pr, cfg, model_cfg=tiny("base"), progress=token, callbacks={"on_batch_end": on_batch})
    assert after_cancel == []  # no batch ran after the one during which cancel was pressed
    run = pr.runs("train")[-1]
    assert run.status == "cancelled" and pr.model_versions() == []
    state = pr.folder / run.params["work_dir"] / "last.ckpt"
    assert state.read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    tensors, st = read_train_state(state)
    assert st["epoch"] == 0 and any(k.startswith("optim.") for k in tensors)

    starts = []
    res = train_project(pr, cfg, resume=True, callbacks={"on_epoch_start": lambda tr, e: starts.append(e)})
    assert starts == [1, 2]  # picked up after the last finished epoch
    assert res.result.epochs_run == 3 and [h["epoch"] for h in res.result.history] == [0, 1, 2]
    model, mcfg, _ = load_checkpoint(res.weights)
    assert mcfg.variant_name == "base"
    assert len(pr.model_versions()) == 1
    assert annotations_snapshot(pr) == before
    with pytest.raises(ProjectError):
        train_project(pr, cfg, resume=True)  # nothing left to resume
    pr.close()


def test_early_stopping_when_validation_stops_improving(tmp_path):
    torch.set_num_threads(1)
    pr = make_synthetic_project(tmp_path, n=10, size=96)
    # lr 0: the model cannot improve, so the first epoch stays the best
    res = train_project(pr, fast_cfg(epochs=6, imgsz=96, lr0=0.0, patience=2, ema=False), model_cfg=tiny("base"))
    assert res.result.stopped_early and res.result.epochs_run == 3 and res.result.best_epoch == 0
    pr.close()


def test_training_without_reviewed_grains_says_what_to_do(tmp_path):
    pr = Project.create(tmp_path / "p")
    from pollenstudio.engine.dataset import DatasetError

    with pytest.raises(DatasetError, match="review"):
        train_project(pr, fast_cfg(), model_cfg=tiny())
    assert pr.model_versions() == []
    pr.close()


def test_missing_image_files_are_reported_before_any_training(tmp_path):
    pr = make_synthetic_project(tmp_path, n=3, size=96)
    gone = pr.image_path(pr.images()[1])
    gone.unlink()
    from pollenstudio.engine.dataset import DatasetError

    with pytest.raises(DatasetError, match="missing"):
        train_project(pr, fast_cfg(), model_cfg=tiny())
    assert pr.runs("train") == [] and pr.model_versions() == []
    pr.close()


def test_lr_schedule_and_ema():
    tr = Trainer([], [], ["a"], TrainConfig(epochs=10, lrf=0.01), "/nonexistent")
    assert tr._lr_factor(0) == pytest.approx(1.0) and tr._lr_factor(10) == pytest.approx(0.01)
    assert tr._lr_factor(5) == pytest.approx(0.505)  # cosine midpoint
    tr.cfg.schedule = "linear"
    assert tr._lr_factor(5) == pytest.approx(0.505) and tr._lr_factor(2) == pytest.approx(0.802)

    net = torch.nn.Linear(2, 1)
    ema = ModelEMA(net, decay=0.9, tau=1.0)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    d = 0.9 * (1 - math.exp(-1))
    w0 = net.weight - 1.0
    assert torch.allclose(ema.module.weight, d * w0 + (1 - d) * net.weight)


def test_resume_refuses_foreign_files(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"\x80\x04\x95 pickle")
    with pytest.raises(CheckpointError):
        read_train_state(bad)


@pytest.mark.cuda
def test_mixed_precision_training_on_cuda(tmp_path):
    """On a GPU: float16 autocast + GradScaler, one epoch, a loadable version."""
    pr = make_synthetic_project(tmp_path, n=8, size=128)
    res = train_project(pr, fast_cfg(epochs=1, imgsz=128, device="cuda", threads=None), model_cfg=tiny())
    model, cfg, _ = load_checkpoint(res.weights)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert pr.model_version(res.version_id).summary["epochs"] == 1
    pr.close()
