"""OmniKernel and CSPOKM (the large-receptive-field block on the neck's P3 output).

FFT work runs in float32 even under autocast: half-precision FFTs only accept power-of-two
sizes and lose too much precision. FCA is computed in its exact FFT-free form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv


def _no_autocast(x: torch.Tensor):
    return torch.autocast(device_type=x.device.type, enabled=False)


def fca_fft(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Frequency channel attention as published: |IFFT2(a * FFT2(o))|, o (B,C,H,W), a (B,C,1,1).

    Kept for the equivalence test; the model uses :func:`fca` instead.
    """
    with _no_autocast(o):
        spec = torch.fft.fft2(o.float()) * a.float()
        return torch.fft.ifft2(spec).abs().to(o.dtype)


def fca(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The same as :func:`fca_fft` exactly: a is one real number per channel, so the FFT
    and its inverse cancel and |IFFT2(a * FFT2(o))| = |a * o|."""
    return (a * o).abs()


class FGM(nn.Module):
    """Frequency gating: y = |IFFT2(p1 * FFT2(p2))|, out = alpha * y + beta * z.

    p1 = Conv1x1(z) gates the spectrum of p2 = Conv1x1(z). alpha starts at 0 and beta at 1
    (per channel), so at initialisation the block is the identity and learns how much of the
    frequency path to use.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.p1 = nn.Conv2d(dim, dim, 1)
        self.p2 = nn.Conv2d(dim, dim, 1)
        self.alpha = nn.Parameter(torch.zeros(dim, 1, 1))
        self.beta = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p1, p2 = self.p1(z), self.p2(z)
        with _no_autocast(z):
            spec = torch.fft.fft2(p2.float())  # full complex FFT: p1 is not Hermitian
            y = torch.fft.ifft2(p1.float() * spec).abs()
            out = self.alpha * y + self.beta * z.float()
        return out.to(z.dtype)


class OmniKernel(nn.Module):
    """Omni-kernel block on ``dim`` channels, (B, dim, H, W) -> same shape.

    o = GELU(1x1(x)); large = dw 1xk + dw kx1 + dw kxk + dw 1x1 of o;
    FCA: x_fca = |a * o|, a = 1x1(GAP(o)); SCA: x_sca = 1x1(GAP(x_fca)) * x_fca;
    out = 1x1(ReLU(x + large + FGM(x_sca))).
    In the deploy form (:mod:`.deploy`) the four depthwise branches are replaced by one
    equivalent k x k depthwise module stored in ``self.large``.
    """

    def __init__(self, dim: int, k: int = 31):
        super().__init__()
        self.k = k
        self.in_conv = nn.Conv2d(dim, dim, 1)
        self.out_conv = nn.Conv2d(dim, dim, 1)
        p = k // 2
        self.dw_1k = nn.Conv2d(dim, dim, (1, k), padding=(0, p), groups=dim)
        self.dw_k1 = nn.Conv2d(dim, dim, (k, 1), padding=(p, 0), groups=dim)
        self.dw_kk = nn.Conv2d(dim, dim, k, padding=p, groups=dim)
        self.dw_11 = nn.Conv2d(dim, dim, 1, groups=dim)
        self.fca_conv = nn.Conv2d(dim, dim, 1)
        self.sca_conv = nn.Conv2d(dim, dim, 1)
        self.fgm = FGM(dim)
        self.large: nn.Module | None = None  # set by deploy.reparameterize_omnikernel

    def large_kernel(self, o: torch.Tensor) -> torch.Tensor:
        if self.large is not None:
            return self.large(o)
        return self.dw_1k(o) + self.dw_k1(o) + self.dw_kk(o) + self.dw_11(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.gelu(self.in_conv(x))
        a = self.fca_conv(F.adaptive_avg_pool2d(o, 1))
        x_fca = fca(o, a)
        x_sca = self.sca_conv(F.adaptive_avg_pool2d(x_fca, 1)) * x_fca
        out = x + self.large_kernel(o) + self.fgm(x_sca)
        return self.out_conv(F.relu(out))


class CSPOKM(nn.Module):
    """Cross Stage Partial OmniKernel: 1x1 Conv, OmniKernel on a share ``e`` of the
    channels, concat with the rest, 1x1 Conv. (B, c, H, W) -> (B, c, H, W)."""

    def __init__(self, c: int, e: float = 0.25, k: int = 31):
        super().__init__()
        self.c_ok = max(int(c * e), 1)
        self.cv1 = Conv(c, c, 1)
        self.ok = OmniKernel(self.c_ok, k)
        self.cv2 = Conv(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c_ok, x.shape[1] - self.c_ok), dim=1)
        return self.cv2(torch.cat((self.ok(a), b), 1))
