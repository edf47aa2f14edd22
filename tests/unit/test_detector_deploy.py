"""Deploy form computes the same detections as the training form."""
import pytest
import torch
import torch.nn.functional as F

from pollenstudio.detector import ModelConfig, build_model, deploy_model
from pollenstudio.detector.deploy import FastDepthwiseConv, fft_depthwise_conv2d
from pollenstudio.detector.omnikernel import OmniKernel




def _randomise_bn(model):
    # fresh BN layers are the identity; give them real statistics so fusion is exercised
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)


@pytest.mark.parametrize("h,w", [(17, 23), (40, 40), (64, 48)])
def test_fft_depthwise_conv_equals_direct_conv_with_zero_padding(h, w):
    torch.manual_seed(0)
    x = torch.randn(2, 4, h, w)
    wt = torch.randn(4, 1, 31, 31) * 0.05
    b = torch.randn(4)
    ref = F.conv2d(x, wt, b, padding=15, groups=4)
    assert torch.allclose(fft_depthwise_conv2d(x, wt, b), ref, atol=1e-4)


def test_omnikernel_branches_fold_into_one_kernel_exactly():
    torch.manual_seed(0)
    ok = OmniKernel(4, k=9).eval()
    with torch.no_grad():
        for p in ok.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(1, 4, 24, 20)
    ref = ok(x)
    for method in ("direct", "fft"):
        dep = deploy_model(ok, method=method)
        assert isinstance(dep.large, FastDepthwiseConv) and not hasattr(dep, "dw_kk")
        assert torch.allclose(dep(x), ref, atol=1e-5)


@pytest.mark.parametrize("variant", ["full", "base"])
def test_fused_model_gives_the_same_raw_outputs(variant):
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(variant, nc=3, omni_kernel=31))
    _randomise_bn(model)
    model.eval()
    x = torch.rand(1, 3, 128, 160)
    fused = deploy_model(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original intact
    with torch.inference_mode():
        for a, b in zip(model(x), fused(x)):
            assert (a - b).abs().max() < 1e-4


def test_fused_model_still_gives_input_gradients_after_inference_runs():
    # the GUI runs detection under inference_mode, then Grad-CAM needs gradients
    torch.manual_seed(0)
    fused = deploy_model(build_model(ModelConfig.tiny("full", nc=2, omni_kernel=31)).eval())
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        fused(x)
    x.requires_grad_(True)
    fused(x)[0][:, 64:].sigmoid().max().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_training_form_fft_matches_the_four_direct_branches_values_and_gradients():
    """On the CPU the training form computes the summed depthwise branches by one FFT conv
    with a merged kernel; values and every branch's gradient must equal the direct sum."""
    from pollenstudio.detector.omnikernel import OmniKernel

    torch.manual_seed(0)
    ok = OmniKernel(8, k=31).train()
    for p in ok.parameters():
        p.data.normal_(0, 0.1)
    x = torch.randn(2, 8, 24, 20)
    direct = ok.dw_1k(x) + ok.dw_k1(x) + ok.dw_kk(x) + ok.dw_11(x)
    fft = ok.large_kernel(x)
    assert torch.allclose(fft, direct, atol=1e-4)
    params = [ok.dw_1k.weight, ok.dw_k1.weight, ok.dw_kk.weight, ok.dw_11.weight, ok.dw_kk.bias, ok.dw_1k.bias]
    g_direct = torch.autograd.grad(direct.pow(2).sum(), params)
    g_fft = torch.autograd.grad(fft.pow(2).sum(), params)
    for a, b in zip(g_direct, g_fft):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * a.abs().max().item())
