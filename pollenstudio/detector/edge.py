"""Edge priors: HEM (fixed-Sobel edge pyramid) and SEF (edge + semantic fusion).

Unlike the public reference code (whose Conv3d padding made the Sobel output identically
zero), the Sobel operator here is a plain depthwise 2-D convolution with fixed kernels, and
tests check that it responds to edges and only to edges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv

# Divided by 4 so that a unit step gives a response of 1 next to it: the magnitude is then
# in the units of the features it came from.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0


_BLOCK = 8  # channels per block in HEM.magnitudes (8 measured best on the dev VM: 4..16 tried)


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool, stride 2 (even H, W), as three element-wise maxima: same values as
    F.max_pool2d(x, 2) and several times faster on CPU."""
    return torch.maximum(
        torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]), torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2])
    )


class HEM(nn.Module):
    """Hierarchical Edge Module.

    ``hem(p2)`` with p2 ``(B, C, H/4, W/4)`` returns ``[EP3, EP4, EP5]`` at strides 8/16/32
    with ``out_channels`` channels.

    Edge magnitude = |Gx| + |Gy| (L1), not sqrt(Gx^2 + Gy^2): it is cheaper, and the L2 norm
    has an infinite gradient wherever the response is zero (flat regions), which would put
    NaNs into the backbone's gradients. Borders are padded by replication so a flat region
    touching the border gives no false edge.

    Scale: the Sobel response of BN/SiLU features can be much larger or smaller than the
    features SEF fuses it with. The 1x1 Conv that maps each pyramid level is Conv-BN-SiLU,
    and its BatchNorm re-normalises each edge channel to unit scale (with a learnt gain)
    during training, so no separate normalisation is needed.
    """

    def __init__(self, c_in: int, out_channels: tuple[int, int, int]):
        super().__init__()
        kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1)  # (2, 1, 3, 3): Gx, Gy
        # Fixed operator: a buffer, never a Parameter, so no optimizer can change it.
        # Not persistent: it is a constant of the code, not of the checkpoint.
        self.register_buffer("sobel", kernels, persistent=False)
        # The same kernels repeated for one channel block, contiguous: oneDNN runs a depthwise
        # conv several times faster with a contiguous weight than with an expanded view.
        self.register_buffer("_sobel_block", kernels.repeat_interleave(_BLOCK, 1).unsqueeze(2).contiguous(),
                             persistent=False)  # (2, _BLOCK, 1, 3, 3)
        self.c_in = c_in
        self.convs = nn.ModuleList(Conv(c_in, c, 1) for c in out_channels)

    def _block_magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """|Gx| + |Gy| of at most _BLOCK channels."""
        c = x.shape[1]
        xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
        w = self._sobel_block.to(dtype=x.dtype)
        # Two depthwise convs with one filter per channel each: on CPU this is ~10x faster
        # than a single depthwise conv with two filters per channel (a slow oneDNN path).
        gx = F.conv2d(xp, w[0, :c], groups=c)
        gy = F.conv2d(xp, w[1, :c], groups=c)
        if torch.is_grad_enabled() and gx.requires_grad:
            return gx.abs() + gy.abs()
        return gx.abs_().add_(gy.abs_())

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel Sobel magnitude |Gx| + |Gy|: (B, C, H, W) -> (B, C, H, W)."""
        parts = [self._block_magnitude(xb) for xb in x.split(_BLOCK, dim=1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def magnitudes(self, p2: torch.Tensor, keep_stride4: bool = True) -> list[torch.Tensor]:
        """Raw edge pyramid before the 1x1 convs: magnitudes at strides 4, 8, 16, 32
        (without the stride-4 map when ``keep_stride4`` is False)."""
        # Channel blocks keep each block's padded input, gradients and magnitude in cache
        # instead of streaming several full-size stride-4 tensors through memory: the same
        # numbers, about twice as fast on CPU.
        levels: list[list[torch.Tensor]] = [[], [], [], []]
        for xb in p2.split(_BLOCK, dim=1):
            m = self._block_magnitude(xb)
            if keep_stride4:
                levels[0].append(m)
            for lv in (1, 2, 3):
                m = _max_pool_2x2(m)
                levels[lv].append(m)
        out = [torch.cat(lv, 1) if len(lv) > 1 else lv[0] for lv in levels if lv]
        return out if keep_stride4 else [None, *out]

    def features(self, mags: list[torch.Tensor]) -> list[torch.Tensor]:
        """EP3/EP4/EP5 from the stride 8/16/32 magnitudes."""
        return [conv(m) for conv, m in zip(self.convs, mags[1:])]

    def forward(self, p2: torch.Tensor) -> list[torch.Tensor]:
        return self.features(self.magnitudes(p2, keep_stride4=False))


class SEF(nn.Module):
    """Synergistic Edge Fusion: concat(edge, feat) -> 1x1 to c/2 -> 3x3 -> 1x1 to c."""

    def __init__(self, c_edge: int, c: int):
        super().__init__()
        self.cv1 = Conv(c_edge + c, c // 2, 1)
        self.cv2 = Conv(c // 2, c // 2, 3)
        self.cv3 = Conv(c // 2, c, 1)

    def forward(self, edge: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.cv1(torch.cat((edge, feat), 1))))
