"""Decoupled Detect head with Distribution Focal Loss (DFL) box encoding, and decoding.

Each level outputs ``(B, 4*reg_max + nc, H/s, W/s)``: first 4*reg_max channels are the
logits of a discrete distribution over distances (0..reg_max-1, in grid cells) from the
anchor point to the left, top, right and bottom box sides; the last nc are class logits.
``decode`` is shared by the loss and postprocess, so anchors and DFL live in one place.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import Conv, DWConv
from .boxes import dist2bbox, make_anchors


class Detect(nn.Module):
    """Per level: box branch Conv3x3, Conv3x3, 1x1 -> 4*reg_max; class branch
    [DWConv3x3, Conv1x1] x 2, 1x1 -> nc."""

    def __init__(self, nc: int, ch: Sequence[int], strides: Sequence[int], reg_max: int = 16):
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        self.strides = tuple(int(s) for s in strides)
        c2 = max(16, ch[0] // 4, reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        self.box = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch
        )
        self.cls = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                nn.Conv2d(c3, nc, 1),
            )
            for x in ch
        )
        self.reset_biases()

    def class_layers(self) -> list[nn.Conv2d]:
        """The final 1x1 class-prediction convs (what fine-tuning on new taxa re-initialises)."""
        return [seq[-1] for seq in self.cls]

    def reset_biases(self) -> None:
        """Box bias 1.0; class bias so the prior is ~5 objects per 640^2 image over nc classes."""
        for b, c, s in zip(self.box, self.cls, self.strides):
            nn.init.constant_(b[-1].bias, 1.0)
            nn.init.constant_(c[-1].bias, math.log(5 / self.nc / (640 / s) ** 2))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat((b(x), c(x)), 1) for x, b, c in zip(feats, self.box, self.cls)]


def dfl_expectation(dist_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(..., 4*reg_max) logits -> (..., 4) expected distances in grid cells."""
    p = dist_logits.unflatten(-1, (4, reg_max)).softmax(-1)
    bins = torch.arange(reg_max, device=p.device, dtype=p.dtype)
    return (p * bins).sum(-1)


@dataclass
class Decoded:
    """Everything the loss and postprocess need from the raw outputs (A anchors, all levels).

    dist_logits (B, A, 4*reg_max); class_logits (B, A, nc); boxes (B, A, 4) xyxy in grid
    units of each anchor's level; points (A, 2) grid units; stride (A, 1); levels (A,).
    """

    dist_logits: torch.Tensor
    class_logits: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    stride: torch.Tensor
    levels: torch.Tensor

    @property
    def boxes_px(self) -> torch.Tensor:
        return self.boxes * self.stride


def decode_parts(outputs: Sequence[torch.Tensor], strides: Sequence[int], reg_max: int = 16) -> Decoded:
    """Flatten the per-level outputs and decode DFL distances into boxes."""
    b = outputs[0].shape[0]
    flat = torch.cat([o.flatten(2) for o in outputs], 2).transpose(1, 2)  # (B, A, no)
    dist_logits, class_logits = flat.split((4 * reg_max, flat.shape[-1] - 4 * reg_max), -1)
    points, stride, levels = make_anchors(
        [tuple(o.shape[2:]) for o in outputs], strides, device=flat.device, dtype=flat.dtype
    )
    boxes = dist2bbox(dfl_expectation(dist_logits, reg_max), points.expand(b, -1, -1))
    return Decoded(dist_logits, class_logits, boxes, points, stride, levels)


def decode(
    outputs: Sequence[torch.Tensor], strides: Sequence[int], reg_max: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs -> (boxes (B, A, 4) xyxy input pixels, class_logits (B, A, nc), levels (A,))."""
    d = decode_parts(outputs, strides, reg_max)
    return d.boxes_px, d.class_logits, d.levels
