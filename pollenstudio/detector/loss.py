"""Detection loss: 7.5 * CIoU + 1.5 * DFL + 0.5 * BCE, each normalised by the sum of the
task-aligned target scores."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pollenstudio.core.errors import ModelMismatchError

from .assigner import assign
from .boxes import bbox2dist, bbox_iou
from .head import decode_parts


def pad_targets(targets: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 6) [batch_idx, cls, x1, y1, x2, y2] -> labels (B, M), boxes (B, M, 4), mask (B, M)."""
    device = targets.device
    if targets.numel() == 0:
        z = torch.zeros(batch_size, 0, device=device)
        return z.long(), torch.zeros(batch_size, 0, 4, device=device), z.bool()
    bi = targets[:, 0].long()
    counts = torch.bincount(bi, minlength=batch_size)
    m = int(counts.max())
    labels = torch.zeros(batch_size, m, dtype=torch.long, device=device)
    boxes = torch.zeros(batch_size, m, 4, device=device)
    mask = torch.zeros(batch_size, m, dtype=torch.bool, device=device)
    order = torch.argsort(bi, stable=True)
    bi_sorted = bi[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(bi), device=device) - starts[bi_sorted]
    labels[bi_sorted, slot] = targets[order, 1].long()
    boxes[bi_sorted, slot] = targets[order, 2:6].float()
    mask[bi_sorted, slot] = True
    return labels, boxes, mask


class DetectionLoss:
    """``loss_fn(outputs, targets) -> (total, parts)``.

    outputs: the model's raw per-level list; targets (N, 6) [batch_idx, class, x1, y1, x2, y2]
    in input pixels; class -1 = a grain of unknown class (trains the boxes, not the classes). ``total`` is a scalar for ``backward()``: the weighted sum of the three
    parts multiplied by the batch size (the YOLO convention, so the gradient scale matches the
    published learning rates, which were tuned for a summed-over-batch loss). ``parts`` holds
    the unweighted, unscaled {'box', 'dfl', 'cls'} values, detached, for logging.
    """

    def __init__(
        self,
        model: nn.Module,
        box_gain: float = 7.5,
        dfl_gain: float = 1.5,
        cls_gain: float = 0.5,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ):
        self.nc = model.nc
        self.reg_max = model.reg_max
        self.strides: Sequence[int] = model.strides
        self.gains = (box_gain, dfl_gain, cls_gain)
        self.topk, self.alpha, self.beta = topk, alpha, beta

    def __call__(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        outputs = [o.float() for o in outputs]
        b = outputs[0].shape[0]
        if targets.ndim != 2 or targets.shape[-1] != 6:
            raise ModelMismatchError(f"targets must be (N, 6) [batch, class, x1, y1, x2, y2], got {tuple(targets.shape)}")
        targets = targets.to(outputs[0].device)
        if targets.numel() and (targets[:, 1].min() < -1 or targets[:, 1].max() >= self.nc):
            raise ModelMismatchError(f"a target class index is outside 0..{self.nc - 1} (or -1 for unknown)")
        d = decode_parts(outputs, self.strides, self.reg_max)
        labels, gt_boxes, gt_mask = pad_targets(targets, b)

        asg = assign(
            d.class_logits.detach().sigmoid(),
            d.boxes_px.detach(),
            d.points * d.stride,
            labels,
            gt_boxes,
            gt_mask,
            self.topk,
            self.alpha,
            self.beta,
        )
        ts = asg.target_scores
        if asg.unknown.any():
            # unidentified grains: their boxes weigh in as usual, their anchors' class
            # scores are left alone (no taxon target, and not background either)
            anchor_weight = asg.target_weight
            ts_sum = anchor_weight.sum().clamp(min=1.0)
            bce = F.binary_cross_entropy_with_logits(d.class_logits, ts, reduction="none")
            cls = (bce * (~asg.unknown)[..., None]).sum() / ts_sum
        else:  # (the same quantities, in the order every shipped model was trained with)
            anchor_weight = ts.sum(-1)
            ts_sum = ts.sum().clamp(min=1.0)
            cls = F.binary_cross_entropy_with_logits(d.class_logits, ts, reduction="sum") / ts_sum

        fg = asg.fg_mask
        if fg.any():
            tb = asg.target_boxes / d.stride  # grid units of each anchor's level
            weight = anchor_weight[fg]  # (F,)
            iou = bbox_iou(d.boxes[fg], tb[fg], ciou=True)
            box = ((1.0 - iou) * weight).sum() / ts_sum
            pts = d.points.expand(b, -1, -1)[fg]
            target = bbox2dist(pts, tb[fg], self.reg_max - 1 - 0.01)  # (F, 4)
            dfl = (self._dfl(d.dist_logits[fg], target) * weight).sum() / ts_sum
        else:
            box = d.boxes.sum() * 0.0
            dfl = d.dist_logits.sum() * 0.0

        gb, gd, gc = self.gains
        total = (gb * box + gd * dfl + gc * cls) * b
        parts = {"box": box.detach(), "dfl": dfl.detach(), "cls": cls.detach()}
        return total, parts

    def _dfl(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Distribution focal loss: (F, 4*reg_max) logits, (F, 4) continuous targets -> (F,)."""
        logits = logits.reshape(-1, self.reg_max)
        t = target.reshape(-1)
        tl = t.long()
        tr = tl + 1
        wl = tr - t
        wr = 1 - wl
        loss = F.cross_entropy(logits, tl, reduction="none") * wl + F.cross_entropy(logits, tr, reduction="none") * wr
        return loss.view(-1, 4).mean(-1)
