"""Box utilities shared by the head, assigner, loss and postprocess. Boxes are xyxy."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def make_anchors(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor points at grid-cell centres for each level.

    shapes: per level (h, w). Returns points (A, 2) xy in grid units of their own level,
    stride (A, 1), level (A,) long. A = sum(h * w); order: level, then row, then column,
    which is the order of the flattened head outputs.
    """
    points, stride_t, levels = [], [], []
    for i, ((h, w), s) in enumerate(zip(shapes, strides)):
        sy = torch.arange(h, device=device, dtype=dtype) + 0.5
        sx = torch.arange(w, device=device, dtype=dtype) + 0.5
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
        levels.append(torch.full((h * w,), i, device=device, dtype=torch.long))
    return torch.cat(points), torch.cat(stride_t), torch.cat(levels)


def dist2bbox(dist: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(left, top, right, bottom) distances (..., 4) from points (..., 2) -> xyxy (..., 4)."""
    lt, rb = dist.chunk(2, -1)
    return torch.cat((points - lt, points + rb), -1)


def bbox2dist(points: torch.Tensor, boxes: torch.Tensor, max_dist: float | None = None) -> torch.Tensor:
    """Inverse of :func:`dist2bbox`: xyxy boxes (..., 4) around points (..., 2) -> ltrb."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    d = torch.cat((points - x1y1, x2y2 - points), -1)
    if max_dist is not None:
        d = d.clamp(0, max_dist)
    return d


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Pairwise IoU: a (..., N, 4), b (..., M, 4) -> (..., N, M)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / (union + eps)


def bbox_iou(a: torch.Tensor, b: torch.Tensor, ciou: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise IoU (or complete IoU) of a (..., 4) and b (..., 4) -> (...)."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    w1, h1 = ax2 - ax1, ay2 - ay1 + eps
    w2, h2 = bx2 - bx1, by2 - by1 + eps
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    # enclosing box diagonal, centre distance, aspect-ratio consistency term
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)
