"""Box coding, the task-aligned assigner on hand-computed cases, and NMS vs brute force."""
import math

import pytest
import torch

from pollenstudio.detector.assigner import assign
from pollenstudio.detector.boxes import bbox2dist, make_anchors
from pollenstudio.detector.head import decode
from pollenstudio.detector.postprocess import batched_nms, nms, postprocess




REG = 16


def _encode(boxes_px, shapes, strides, nc=2, cls=None):
    """Raw outputs whose decoded box at each chosen anchor is exactly boxes_px[anchor]."""
    outs = [torch.full((1, 4 * REG + nc, h, w), -20.0) for h, w in shapes]
    points, stride, _ = make_anchors(shapes, strides)
    flat_index = []
    for level, (h, w) in enumerate(shapes):
        flat_index += [(level, y, x) for y in range(h) for x in range(w)]
    for a, box in boxes_px.items():
        level, y, x = flat_index[a]
        d = bbox2dist(points[a], torch.tensor(box) / stride[a])  # ltrb in cells
        logits = torch.full((4, REG), -1e4)
        for side in range(4):
            lo = int(d[side].floor())
            frac = float(d[side] - lo)
            logits[side, lo] = math.log(max(1 - frac, 1e-30))
            if lo + 1 < REG:
                logits[side, lo + 1] = math.log(max(frac, 1e-30))
        outs[level][0, : 4 * REG, y, x] = logits.flatten()
        outs[level][0, 4 * REG + (cls or {}).get(a, 0), y, x] = 5.0
    return outs


def test_decode_of_encode_returns_the_box():
    shapes, strides = [(8, 8), (4, 4), (2, 2)], (8, 16, 32)
    # anchor 9 = level 0 cell (1, 1) centre (12, 12); anchor 70 = level 1 cell (1, 2) centre (40, 24)
    want = {9: (3.0, 5.5, 40.25, 31.0), 70: (20.0, 2.0, 77.0, 60.5)}
    boxes, logits, levels = decode(_encode(want, shapes, strides), strides, REG)
    assert boxes.shape == (1, 64 + 16 + 4, 4) and logits.shape == (1, 84, 2)
    for a, b in want.items():
        assert torch.allclose(boxes[0, a], torch.tensor(b), atol=1e-4)
    assert levels[9] == 0 and levels[70] == 1


def test_postprocess_returns_the_encoded_detections_with_their_metadata():
    shapes, strides = [(8, 8), (4, 4), (2, 2)], (8, 16, 32)
    want = {9: (3.0, 5.5, 40.25, 31.0), 70: (20.0, 2.0, 77.0, 60.5)}
    preds = postprocess(_encode(want, shapes, strides, cls={70: 1}), strides, conf=0.5)[0]
    assert len(preds) == 2
    assert sorted(preds.anchor_index.tolist()) == [9, 70]
    i70 = preds.anchor_index.tolist().index(70)
    assert preds.classes[i70] == 1 and preds.levels[i70] == 1
    assert torch.allclose(preds.boxes[i70], torch.tensor(want[70]), atol=1e-4)
    assert preds.probs.shape == (2, 2) and torch.allclose(preds.scores, preds.probs.max(1).values)


def test_assigner_matches_hand_computation():
    points = torch.tensor([[5.0, 5.0], [15.0, 5.0], [5.0, 15.0], [25.0, 25.0]])
    gt = torch.tensor([[[0.0, 0.0, 20.0, 20.0]]])
    pred = torch.tensor([[[0, 0, 20, 20], [0, 0, 20, 10], [0, 10, 20, 20], [0, 0, 20, 20.0]]])
    scores = torch.zeros(1, 4, 2)
    scores[0, :, 0] = torch.tensor([0.64, 0.81, 0.25, 0.9])
    r = assign(scores, pred, points, torch.tensor([[0]]), gt, torch.tensor([[True]]), topk=2)
    # align = s^0.5 * iou^6: 0.8, 0.9/64, 0.5/64; anchor 3 lies outside the box
    assert r.fg_mask.tolist() == [[True, True, False, False]]
    assert torch.allclose(r.target_scores[0, :, 0], torch.tensor([1.0, 0.9 / 64 / 0.8, 0, 0]), atol=1e-6)
    assert r.target_scores[0, :, 1].abs().sum() == 0
    assert torch.equal(r.target_boxes[0, 0], gt[0, 0])


def test_assigner_gives_a_shared_anchor_to_the_best_overlapping_box_and_ignores_padding():
    points = torch.tensor([[5.0, 5.0], [25.0, 25.0]])
    gts = torch.tensor([[[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 30.0, 30.0], [0.0, 0.0, 50.0, 50.0]]])
    pred = torch.tensor([[[0.0, 0.0, 29.0, 29.0], [20.0, 20.0, 30.0, 30.0]]])
    scores = torch.full((1, 2, 3), 0.5)
    r = assign(scores, pred, points, torch.tensor([[0, 1, 2]]), gts, torch.tensor([[True, True, False]]), topk=10)
    assert r.fg_mask[0, 0] and r.target_labels[0, 0] == 1  # IoU 0.93 with gt 1 beats 0.48
    assert r.fg_mask[0, 1] and r.target_labels[0, 1] == 1  # only gt 1 contains (25, 25)
    assert r.target_scores[0, :, 2].sum() == 0  # the padded gt never assigns


def test_assigner_with_no_ground_truth_assigns_nothing():
    r = assign(torch.rand(2, 5, 3), torch.rand(2, 5, 4), torch.rand(5, 2), torch.zeros(2, 0).long(),
               torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assert not r.fg_mask.any() and r.target_scores.sum() == 0


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _brute_nms(boxes, scores, classes, thr):
    boxes, scores, classes = boxes.tolist(), scores.tolist(), classes.tolist()
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(classes[i] != classes[j] or _iou(boxes[i], boxes[j]) <= thr for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_aware_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 300
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 5
    boxes = torch.cat((xy, xy + wh), 1)
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, 3, (n,), generator=g)
    for thr in (0.3, 0.7):
        assert batched_nms(boxes, scores, classes, thr).tolist() == _brute_nms(boxes, scores, classes, thr)


def test_nms_long_suppression_chain_is_still_exact():
    # each box overlaps only its neighbour: greedy keeps every other one (needs > 32 rounds)
    n = 80
    x = torch.arange(n, dtype=torch.float32) * 6
    boxes = torch.stack((x, torch.zeros(n), x + 10, torch.full((n,), 10.0)), 1)
    scores = torch.linspace(1, 0.1, n)
    assert nms(boxes, scores, 0.2).tolist() == list(range(0, n, 2))
