"""Task-aligned assigner (TOOD): which anchors learn which ground-truth box, and how much.

A plain no-grad function of tensors so it can be tested with hand-built toy inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .boxes import box_iou


@dataclass
class Assignment:
    """target_labels (B, A) long; target_boxes (B, A, 4) xyxy (same units as gt_boxes);
    target_scores (B, A, C) soft one-hot (normalised alignment); fg_mask (B, A) bool;
    target_gt_idx (B, A) long (index into the M padded gts, 0 where background);
    target_weight (B, A) the normalised alignment of each positive (its box-loss weight);
    unknown (B, A) bool: positives of a grain of unknown class (label -1): they learn the box,
    and their class scores are neither pushed up nor down."""

    target_labels: torch.Tensor
    target_boxes: torch.Tensor
    target_scores: torch.Tensor
    fg_mask: torch.Tensor
    target_gt_idx: torch.Tensor
    target_weight: torch.Tensor | None = None
    unknown: torch.Tensor | None = None


@torch.no_grad()
def assign(
    pd_scores: torch.Tensor,
    pd_boxes: torch.Tensor,
    anchor_points: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> Assignment:
    """Assign anchors to ground truths.

    pd_scores (B, A, C) class probabilities (sigmoid); pd_boxes (B, A, 4) xyxy;
    anchor_points (A, 2) xy in the same units as the boxes; gt_labels (B, M) long;
    gt_boxes (B, M, 4) xyxy; gt_mask (B, M) bool (False = padding). A label of -1 marks a
    grain of unknown class (an unidentified pollen grain): its alignment uses the best class
    score, and its positives get no class target (``unknown``).

    For each gt: candidates are anchors whose point lies strictly inside the box; alignment
    t = score(gt class)^alpha * IoU(pred, gt)^beta; the top-k candidates by t are positive.
    An anchor positive for several gts goes to the gt its prediction overlaps most.
    Target score = t / max_t(gt) * max_IoU(gt) over that gt's positives.
    """
    b, a, c = pd_scores.shape
    m = gt_boxes.shape[1]
    device = pd_scores.device
    if m == 0:
        return Assignment(
            torch.zeros(b, a, dtype=torch.long, device=device),
            torch.zeros(b, a, 4, device=device, dtype=pd_boxes.dtype),
            torch.zeros_like(pd_scores),
            torch.zeros(b, a, dtype=torch.bool, device=device),
            torch.zeros(b, a, dtype=torch.long, device=device),
            torch.zeros(b, a, device=device, dtype=pd_scores.dtype),
            torch.zeros(b, a, dtype=torch.bool, device=device),
        )
    gt_labels = gt_labels.long()
    gt_mask = gt_mask.bool()

    # (B, M, A): anchor point strictly inside the gt box
    lt = anchor_points[None, None] - gt_boxes[:, :, None, :2]
    rb = gt_boxes[:, :, None, 2:] - anchor_points[None, None]
    inside = torch.cat((lt, rb), -1).amin(-1) > eps
    cand = inside & gt_mask[:, :, None]

    iou = box_iou(gt_boxes, pd_boxes).clamp(min=0)  # (B, M, A)
    score = pd_scores.gather(2, gt_labels.clamp(0, c - 1)[:, None, :].expand(b, a, m)).transpose(1, 2)  # (B,M,A)
    unknown_gt = gt_labels < 0
    if unknown_gt.any():
        score = torch.where(unknown_gt[:, :, None], pd_scores.amax(-1)[:, None, :].expand(b, m, a), score)
    iou = iou * cand
    align = score.pow(alpha) * iou.pow(beta) * cand

    k = min(topk, a)
    # Ties at zero alignment (early training, far-off predictions) still give positives
    # as long as the anchor lies inside the box: otherwise nothing would ever learn.
    top_idx = align.masked_fill(~cand, -1.0).topk(k, dim=-1).indices  # (B, M, k)
    is_top = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top_idx, True)
    pos = is_top & cand  # (B, M, A)

    # anchors claimed by several gts: keep the gt with the highest IoU
    multi = pos.sum(1) > 1  # (B, A)
    if multi.any():
        best = iou.masked_fill(~pos, -1.0).argmax(1)  # (B, A)
        one = torch.zeros_like(pos).scatter_(1, best[:, None, :], True)
        pos = torch.where(multi[:, None, :], one & pos, pos)

    fg = pos.any(1)  # (B, A)
    gt_idx = pos.float().argmax(1)  # (B, A)
    batch = torch.arange(b, device=device)[:, None]
    labels = gt_labels[batch, gt_idx]  # (B, A)
    boxes = gt_boxes[batch, gt_idx]  # (B, A, 4)

    align = align * pos
    iou = iou * pos
    max_align = align.amax(-1, keepdim=True)  # (B, M, 1)
    max_iou = iou.amax(-1, keepdim=True)
    norm = (align * max_iou / (max_align + eps)).amax(1)  # (B, A)
    unknown = fg & (labels < 0)
    scores = torch.zeros_like(pd_scores)
    scores.scatter_(2, labels.clamp(0, c - 1)[..., None], norm[..., None])
    scores = scores * (fg & ~unknown)[..., None]
    labels = torch.where(fg, labels, torch.zeros_like(labels))
    weight = norm * fg
    return Assignment(labels, boxes, scores, fg, torch.where(fg, gt_idx, torch.zeros_like(gt_idx)), weight, unknown)
