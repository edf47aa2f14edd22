"""Raw outputs -> per-image predictions: decode, confidence threshold, class-aware NMS.

torchvision is not a dependency, so NMS is written here (``nms``), in plain torch and
vectorised: the greedy rule "keep a box unless a kept, higher-scoring box overlaps it by
more than iou" is solved as a fixed point of a matrix recurrence (exact; see ``nms``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pollenstudio.core.types import DEFAULT_CONF

from .boxes import box_iou
from .head import decode

_MAX_ROUNDS = 32

__all__ = ["Predictions", "decode", "nms", "batched_nms", "postprocess"]


@dataclass
class Predictions:
    """Detections of one image, best first. boxes (n, 4) xyxy in input pixels; scores (n,);
    classes (n,) long; probs (n, nc) sigmoid class scores; levels (n,) pyramid level 0/1/2
    (strides 8/16/32); anchor_index (n,) index into the flattened anchors (for Grad-CAM)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    probs: torch.Tensor
    levels: torch.Tensor
    anchor_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device) -> "Predictions":
        return Predictions(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy non-maximum suppression. boxes (n, 4) xyxy, scores (n,) -> kept indices, best first.

    Sort by score; S[i, j] = IoU(i, j) > iou for i ranked before j. Greedy keeps j iff no
    kept i before it has S[i, j]. keep_{t+1}[j] = not any_i(keep_t[i] & S[i, j]) starting
    from all True: because keep[j] depends only on earlier boxes, the first t entries are
    final after t rounds, and a fixed point of this triangular recurrence is unique, so
    stopping when it no longer changes gives exactly the greedy answer (usually in a few
    rounds, each one matrix-vector product).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    b = boxes[order].float()
    s = (box_iou(b, b) > iou).triu(1).float()  # (n, n), i before j
    keep = torch.ones(len(b), dtype=torch.float32, device=b.device)
    for _ in range(_MAX_ROUNDS):
        new = ((keep @ s) == 0).float()
        if torch.equal(new, keep):
            return order[keep.bool()]
        keep = new
    # Long suppression chains (rare): finish with the plain sequential greedy loop.
    sup = s.bool().cpu().numpy()
    removed = np.zeros(len(b), dtype=bool)
    for i in range(len(b)):
        if not removed[i]:
            removed |= sup[i]
    return order[torch.from_numpy(~removed).to(order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou: float) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shift each class to its own region of the plane, so one NMS call does all classes.
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou)


def postprocess(
    outputs: Sequence[torch.Tensor],
    strides: Sequence[int],
    conf: float = DEFAULT_CONF,
    iou: float = 0.7,
    max_det: int = 300,
    agnostic: bool = False,
    reg_max: int = 16,
    max_candidates: int = 3000,
) -> list[Predictions]:
    """Raw model outputs -> one :class:`Predictions` per image.

    Each anchor proposes its best class; anchors scoring below ``conf`` are dropped; at most
    ``max_candidates`` (highest scores) enter NMS; at most ``max_det`` come out.
    """
    with torch.no_grad():
        boxes, logits, levels = decode([o.float() for o in outputs], strides, reg_max)
        probs = logits.sigmoid()
        best, cls = probs.max(-1)  # (B, A)
        result = []
        for i in range(boxes.shape[0]):
            idx = torch.nonzero(best[i] > conf).squeeze(1)
            if idx.numel() > max_candidates:
                idx = idx[best[i, idx].topk(max_candidates).indices]
            bx, sc, cl = boxes[i, idx], best[i, idx], cls[i, idx]
            keep = nms(bx, sc, iou) if agnostic else batched_nms(bx, sc, cl, iou)
            keep = keep[:max_det]
            a = idx[keep]
            result.append(Predictions(bx[keep], sc[keep], cl[keep], probs[i, a], levels[a], a))
        return result
