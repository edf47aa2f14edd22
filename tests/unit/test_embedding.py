"""The pollen grain embedding (issue 27): EfficientNet-Lite0 fine-tuned on pollen taxa, the
"pollen" features of the taxon classifier, unknown-taxon flagging and "rejections teach".

Uses the shipped embedding network (models/pollen-embed-lite0.safetensors) on drawn crops."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pollenstudio.core.errors import CheckpointError
from pollenstudio.core.types import WITHDRAWN_BY_MODEL, AnnotationStatus, Box, Detection
from pollenstudio.detector.embedder import EmbedderConfig, GrainEmbedder, load_embedder, save_embedder
from pollenstudio.engine.classify import (
    NOT_POLLEN,
    ClassifierError,
    EmbedSpec,
    TaxonClassifier,
    embed,
    embedder_file,
    tta_views,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = EmbedSpec(features="pollen", views=4)

pytestmark = pytest.mark.skipif(not embedder_file("pollen").is_file(), reason="the shipped embedding is not installed")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _grain(img, cx, cy, r, texture: str, rng, colour=(170, 120, 150)):
    """A round stained grain; ``texture`` "dots" (echinate-like), "stripes" (striate) or
    "smooth"; same colour and size for every texture."""
    import cv2

    cv2.circle(img, (cx, cy), r, colour, -1)
    cv2.circle(img, (cx, cy), r, (90, 50, 80), 2)
    if texture == "dots":
        for _ in range(18):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, r - 5)
            cv2.circle(img, (int(cx + d * np.cos(a)), int(cy + d * np.sin(a))), 2, (80, 40, 70), -1)
    elif texture == "stripes":
        ang = rng.uniform(0, np.pi)
        for k in range(-r, r, 6):
            dx, dy = np.cos(ang), np.sin(ang)
            p, q = (cx + k * -dy - r * dx, cy + k * dx - r * dy), (cx + k * -dy + r * dx, cy + k * dx + r * dy)
            cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (110, 60, 100), 1)
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.circle(mask, (cx, cy), r + 2, 255, -1)
        img[mask == 0] = 226
    elif texture == "blob":  # not pollen: an amorphous dark clump
        pts = np.array([[cx + r * rng.uniform(0.4, 1.0) * np.cos(a), cy + r * rng.uniform(0.4, 1.0) * np.sin(a)]
                        for a in np.linspace(0, 2 * np.pi, 9)[:-1]], np.int32)
        img[:] = 226
        cv2.fillPoly(img, [pts], (60, 45, 30))


def _field(texture: str, n: int, seed: int):
    """(img, boxes): ``n`` grains of one texture on a 96 px-cell grid, with camera noise."""
    rng = np.random.default_rng(seed)
    cells = int(np.ceil(np.sqrt(n)))
    img = np.full((cells * 96, cells * 96, 3), 226, np.uint8)
    boxes = []
    for i in range(n):
        x0, y0 = 96 * (i % cells), 96 * (i // cells)
        jx, jy = int(rng.integers(-4, 5)), int(rng.integers(-4, 5))
        r = int(rng.integers(26, 32))
        sub = img[y0:y0 + 96, x0:x0 + 96].copy()
        _grain(sub, 48 + jx, 48 + jy, r, texture, rng)
        img[y0:y0 + 96, x0:x0 + 96] = sub
        boxes.append((x0 + 48 + jx - r, y0 + 48 + jy - r, x0 + 48 + jx + r, y0 + 48 + jy + r))
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, np.array(boxes, np.float64)


def test_conversion_reads_tensors_only(tmp_path):
    """A crafted .pth whose pickle would run code is refused and the code never runs."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from convert_effnet_lite0 import read_lite0_state
    finally:
        sys.path.pop(0)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"_conv_stem.weight": Payload()}))
    with pytest.raises(CheckpointError, match="tensors-only"):
        read_lite0_state(evil)
    assert not marker.exists()
    # a tensors-only file of another network is refused in words too
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(CheckpointError, match="not EfficientNet-Lite0"):
        read_lite0_state(other)


def test_embedder_file_round_trip_and_damage(tmp_path):
    m = GrainEmbedder(EmbedderConfig(size=64, dim=8))
    p = save_embedder(tmp_path / "e.safetensors", m, {"k": 1})
    m2, meta = load_embedder(p)
    assert meta == {"k": 1} and m2.dim == 8
    x = torch.rand(2, 3, 64, 64)
    m.eval()
    assert torch.allclose(m(x), m2(x), atol=1e-6)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_embedder(tmp_path / "bad.safetensors")


def test_tta_views_are_the_square_symmetries():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = tta_views(x, 8)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    with pytest.raises(ClassifierError):
        tta_views(x, 3)


def test_pollen_embedding_is_deterministic_and_turn_invariant():
    img, boxes = _field("dots", 4, 0)
    e1 = embed(None, img, boxes, SPEC)
    e2 = embed(None, img, boxes, SPEC)
    assert e1.shape[0] == 4 and e1.shape[1] >= 256
    assert np.array_equal(e1, e2)
    # a quarter turn of the whole field: the 4-view average (rotations and mirrors) barely moves
    rot = np.ascontiguousarray(np.rot90(img))
    H = img.shape[0]
    rb = np.stack([boxes[:, 1], H - boxes[:, 2], boxes[:, 3], H - boxes[:, 0]], 1)
    e3 = embed(None, rot, rb, SPEC)
    assert (np.sum(e1 * e3, 1) > 0.97).all()


def _fit(textures, k, seed=0):
    E, y = [], []
    for c, t in enumerate(textures):
        img, boxes = _field(t, k, seed + c)
        E.append(embed(None, img, boxes, SPEC))
        y += [c] * k
    return TaxonClassifier.fit(np.concatenate(E), y, list(textures), EmbedSpec(features="pollen", views=4), "logreg")


def test_classifier_separates_taxa_that_differ_only_in_texture():
    clf = _fit(("dots", "stripes"), 6)
    for c, t in enumerate(("dots", "stripes")):
        img, boxes = _field(t, 9, 100 + c)
        pred = clf.predict_proba(embed(None, img, boxes, SPEC)).argmax(1)
        assert (pred == c).mean() >= 8 / 9, (t, pred)


def test_unknown_taxon_is_flagged_and_known_grains_are_not():
    clf = _fit(("dots", "stripes"), 10)
    assert clf.unknown_below is not None
    known = np.concatenate([embed(None, *_field(t, 9, 200 + c), SPEC) for c, t in enumerate(("dots", "stripes"))])
    unknown = embed(None, *_field("smooth", 9, 300), SPEC)
    assert clf.is_unknown(known).mean() <= 2 / 18
    assert clf.is_unknown(unknown).mean() >= 7 / 9
    # named as the grain class with the nearest taxa as suggestions, not forced into one
    img, boxes = _field("smooth", 4, 301)
    dets = [Detection(Box(*b), 0, "pollen", 0.9) for b in boxes]
    out = clf.label(None, img, dets)
    assert all(d.label == "pollen" and d.class_index == -1 for d in out)
    assert all({n for n, _ in d.topk} <= {"dots", "stripes"} and d.topk for d in out)


def test_classifier_file_keeps_exemplars_and_threshold(tmp_path):
    from pollenstudio.detector.checkpoint import read_extra, save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.engine.classify import load_classifier

    clf = _fit(("dots", "stripes"), 5)
    cfg = ModelConfig.tiny("base", nc=1, class_names=["pollen"], imgsz=64)
    p = save_checkpoint(tmp_path / "v.safetensors", build_model(cfg), cfg, extra=clf.to_extra())
    back = load_classifier(p)
    assert back.unknown_below == pytest.approx(clf.unknown_below)
    assert back.exemplars.shape == clf.exemplars.shape and back.spec.embedder == clf.spec.embedder
    assert back.nearest(back.exemplars[:1] / back.scale + back.mean, 3)[0][0][1] == "dots"
    # a classifier fitted on another embedding network is refused in words, not misused
    from dataclasses import replace

    other = TaxonClassifier(clf.class_names, clf.kind, replace(clf.spec, embedder="pollen-embed-lite0.safetensors@000000000000"),
                            clf.mean, clf.scale, clf.weight, clf.bias)
    img, boxes = _field("dots", 1, 5)
    with pytest.raises(ClassifierError, match="retrain"):
        other.label(None, img, [Detection(Box(*boxes[0]), 0, "pollen", 0.9)])
    assert read_extra(p)[1]["taxa"]["format_version"] == 2


def test_rejected_look_is_withdrawn_at_next_detection_accepted_stays(tmp_path):
    """Rejections teach: a classifier with a "not pollen" class withdraws a proposal that looks
    like the rejected ones (stored as rejected by the model, replaced at the next detection,
    never counted as a person's decision) and keeps one that looks like accepted grains."""
    import cv2

    from pollenstudio.project import Project

    E, y = [], []
    for c, t in enumerate(("dots", "stripes", "blob")):  # 12 reviewed grains each, as after a few fields
        img, boxes = _field(t, 12, 10 + c)
        E.append(embed(None, img, boxes, SPEC))
        y += [c] * 12
    clf = TaxonClassifier.fit(np.concatenate(E), y, ["dots", "stripes", NOT_POLLEN], EmbedSpec(features="pollen"), "logreg")
    img_b, boxes_b = _field("blob", 1, 77)
    img_d, boxes_d = _field("dots", 1, 78)
    field = np.concatenate([img_b, img_d], 1)
    boxes = np.concatenate([boxes_b, boxes_d + [96, 0, 96, 0]])
    out = clf.label(None, field, [Detection(Box(*b), 0, "pollen", 0.8) for b in boxes])
    assert [d.withdrawn for d in out] == [True, False] and out[1].label == "dots"
    assert out[0].label == "pollen" and out[0].topk[0][0] == NOT_POLLEN  # never a taxon "not pollen"

    cv2.imwrite(str(tmp_path / "f.png"), field[:, :, ::-1])
    p = Project.create(tmp_path / "proj")
    p.add_folder(tmp_path)
    iid = p.images()[0].id
    p.write_proposals(iid, [out[0]])  # only the withdrawn one
    assert p.image(iid).status.value == "new"  # the model's withdrawal is no person's decision
    cid = p.add_category("Olea")
    human = p.add_annotation(iid, Box(1, 1, 9, 9), cid)  # a person's grain
    p.write_proposals(iid, out)
    anns = p.annotations(iid)
    gone = [a for a in anns if a.author == WITHDRAWN_BY_MODEL]
    assert len(gone) == 1 and gone[0].status is AnnotationStatus.REJECTED
    assert NOT_POLLEN not in {c.name for c in p.categories()}
    # rejected proposals are no reference grains: the review panel's strip shows grains only
    near = clf.nearest(embed(None, img_b, boxes_b, SPEC), 40)[0]
    assert near and all(taxon != NOT_POLLEN for _, taxon, _ in near)
    assert [a.status for a in anns if a.source.value == "model" and a.author != WITHDRAWN_BY_MODEL] == [AnnotationStatus.PROPOSED]
    # the next detection replaces the withdrawn proposal instead of piling up, and never
    # touches the person's grain
    p.write_proposals(iid, out)
    anns = p.annotations(iid)
    assert sum(a.author == WITHDRAWN_BY_MODEL for a in anns) == 1
    assert any(a.id == human and a.status is AnnotationStatus.ADDED for a in anns)
    p.close()
