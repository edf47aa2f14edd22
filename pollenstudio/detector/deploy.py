"""Deploy form: the same function as the training form, computed faster.

- Conv+BN fusion (BatchNorm folded into the conv weights and a bias).
- OmniKernel: its 1xk, kx1, kxk and 1x1 depthwise branches act on the same input and are
  summed, so they fold exactly into one kxk depthwise kernel plus one bias.
- That kxk (31x31) depthwise conv dominates CPU time when computed directly; on CPU it is
  computed by FFT (see ``FastDepthwiseConv`` and bench/latency.py for the measurements).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv
from .omnikernel import (  # noqa: F401  (re-exported: bench/latency.py, tests)
    CPU_FFT_MIN_PIXELS,
    CUDA_FFT_MIN_PIXELS,
    OmniKernel,
    _fast_len,
    fft_depthwise_conv2d,
)

class FastDepthwiseConv(nn.Module):
    """A kxk depthwise conv (stride 1, 'same' zero padding) that picks direct or FFT by
    device and map size. ``method``: "auto" | "direct" | "fft"."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, method: str = "auto"):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.method = method
        self._spectra: dict = {}  # kernel spectra per FFT size and device

    def use_fft(self, x: torch.Tensor) -> bool:
        if self.method != "auto":
            return self.method == "fft"
        pixels = x.shape[-1] * x.shape[-2]
        return pixels >= (CUDA_FFT_MIN_PIXELS if x.is_cuda else CPU_FFT_MIN_PIXELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fft(x):
            return fft_depthwise_conv2d(x, self.weight, self.bias, self._spectra)
        k = self.weight.shape[-1]
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=k // 2, groups=x.shape[1])

    def _apply(self, fn, recurse=True):
        self._spectra = {}  # device/dtype moves invalidate cached spectra
        return super()._apply(fn, recurse)


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias equal to bn(conv(x)) in eval mode (computed in float64)."""
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    b0 = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused.bias.copy_(((b0 - bn.running_mean.double()) * scale + bn.bias.double()).to(conv.weight.dtype))
    fused.requires_grad_(False)
    return fused


@torch.no_grad()
def reparameterize_omnikernel(ok: OmniKernel, method: str = "auto") -> None:
    """Fold the four depthwise branches of ``ok`` into one kxk FastDepthwiseConv (exact)."""
    if ok.large is not None:
        return
    p = ok.k // 2
    w = ok.dw_kk.weight.detach().double().clone()  # (C, 1, k, k)
    w[:, :, p : p + 1, :] += ok.dw_1k.weight.double()  # (C, 1, 1, k): the centre row
    w[:, :, :, p : p + 1] += ok.dw_k1.weight.double()  # (C, 1, k, 1): the centre column
    w[:, :, p, p] += ok.dw_11.weight.double()[:, :, 0, 0]
    b = ok.dw_kk.bias.double() + ok.dw_1k.bias.double() + ok.dw_k1.bias.double() + ok.dw_11.bias.double()
    dtype = ok.dw_kk.weight.dtype
    ok.large = FastDepthwiseConv(w.to(dtype), b.to(dtype), method)
    del ok.dw_1k, ok.dw_k1, ok.dw_kk, ok.dw_11


def deploy_model(model: nn.Module, method: str = "auto") -> nn.Module:
    """A fused copy of ``model`` in eval mode (the original is untouched). Raw outputs equal
    the training form's in eval mode within float32 rounding. ``method`` picks how the
    large depthwise conv is computed ("auto" = by device and size)."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(mod, Conv) and isinstance(mod.bn, nn.BatchNorm2d):
            mod.conv = fuse_conv_bn(mod.conv, mod.bn)
            mod.bn = nn.Identity()
        elif isinstance(mod, OmniKernel):
            reparameterize_omnikernel(mod, method)
    m.requires_grad_(False)
    m.deployed = True
    return m
