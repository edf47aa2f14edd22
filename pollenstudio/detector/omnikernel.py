"""OmniKernel and CSPOKM (the large-receptive-field block on the neck's P3 output).

FFT work runs in float32 even under autocast: half-precision FFTs only accept power-of-two
sizes and lose too much precision. FCA is computed in its exact FFT-free form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv


# CPU: the FFT route wins from tiny maps on (bench/latency.py --dwconv, 16 channels, k=31,
# 1 thread on the 2-core dev VM: 10x10 1.1 vs 0.3 ms, 80x80 222 vs 5.9 ms, 160x160 927 vs
# 12.9 ms direct vs FFT). On CUDA the direct cuDNN depthwise kernel should win on small maps;
# the CUDA threshold is an estimate, not yet measured (no GPU was available).
CPU_FFT_MIN_PIXELS = 8 * 8
CUDA_FFT_MIN_PIXELS = 128 * 128


def _fast_len(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3, 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         _cache: dict | None = None) -> torch.Tensor:
    """Same as ``F.conv2d(x, weight, bias, padding=k//2, groups=C)`` for odd square k, by FFT.

    x (B, C, H, W); weight (C, 1, k, k). Zero 'same' padding: the linear (not circular)
    convolution is obtained by transforming at size >= H + k - 1, then cropped at k//2.
    conv2d is a cross-correlation, hence the flipped kernel. Always float32.
    """
    b, c, h, w = x.shape
    k = weight.shape[-1]
    p = k // 2
    fh, fw = _fast_len(h + k - 1), _fast_len(w + k - 1)
    dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        # inference-mode tensors cannot enter autograd later (Grad-CAM on a fused model),
        # so spectra made inside and outside inference mode are cached apart
        key = (fh, fw, x.device, torch.is_inference_mode_enabled())
        kf = _cache.get(key) if _cache is not None else None
        if kf is None:
            kf = torch.fft.rfft2(weight.float().flip(-1, -2).squeeze(1), s=(fh, fw))  # (C, fh, fw//2+1)
            if _cache is not None:
                _cache[key] = kf
        y = torch.fft.irfft2(torch.fft.rfft2(x.float(), s=(fh, fw)) * kf, s=(fh, fw))
        y = y[..., p : p + h, p : p + w]
        if bias is not None:
            y = y + bias.float().view(1, c, 1, 1)
    return y.to(dtype)


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

    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The four depthwise branches as one kxk kernel (C, 1, k, k) and bias (C,), built
        differentiably, so gradients reach each branch's own weights."""
        p = self.k // 2
        w = self.dw_kk.weight
        w = w + F.pad(self.dw_1k.weight, (0, 0, p, p))  # 1xk -> centre row
        w = w + F.pad(self.dw_k1.weight, (p, p, 0, 0))  # kx1 -> centre column
        w = w + F.pad(self.dw_11.weight, (p, p, p, p))  # 1x1 -> centre tap
        b = self.dw_kk.bias + self.dw_1k.bias + self.dw_k1.bias + self.dw_11.bias
        return w, b

    def large_kernel(self, o: torch.Tensor) -> torch.Tensor:
        if self.large is not None:
            return self.large(o)
        if not o.is_cuda and o.shape[-1] * o.shape[-2] >= CPU_FFT_MIN_PIXELS:
            # Training on CPU: the direct 31x31 depthwise conv (forward and backward) costs
            # about as much as the rest of the network; one FFT conv with the merged kernel
            # computes the same sum (bench/train_step.py measures both).
            w, b = self.merged_kernel()
            return fft_depthwise_conv2d(o, w, b)
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
