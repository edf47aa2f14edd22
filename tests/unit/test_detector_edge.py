"""Edge priors and OmniKernel maths: the Sobel operator really sees edges (unlike the
reference code, whose edge output was identically zero) and FCA's shortcut is exact."""
import numpy as np
import torch

from pollenstudio.detector import ModelConfig, build_model
from pollenstudio.detector.edge import HEM
from pollenstudio.detector.omnikernel import FGM, OmniKernel, fca, fca_fft




def test_constant_input_gives_zero_edges_everywhere_including_borders():
    hem = HEM(4, (8, 8, 8)).eval()
    x = torch.full((1, 4, 32, 32), 0.7) * torch.arange(1, 5.0).view(1, 4, 1, 1)
    mags = hem.magnitudes(x)
    assert all(m.abs().max() < 1e-6 for m in mags)  # zero up to float rounding
    for ep in hem(x):  # EP maps are spatially constant: no structure invented
        assert torch.allclose(ep, ep[..., :1, :1].expand_as(ep), atol=1e-5)


def test_step_edge_responds_along_the_step_only():
    hem = HEM(2, (4, 4, 4))
    x = torch.zeros(1, 2, 32, 32)
    x[..., 16:] = 1.0  # vertical step between columns 15 and 16
    m = hem.magnitude(x)
    cols = (m[0, 0] > 0).any(0).nonzero().flatten().tolist()
    assert cols == [15, 16]
    assert torch.allclose(m[0, :, :, 15:17], torch.ones(2, 32, 2))  # unit step -> 1
    assert (m[0, :, :, 15] > 0).all()  # along the whole step, top to bottom


def test_sobel_kernels_are_fixed_and_not_trainable():
    hem = HEM(4, (8, 8, 8))
    names = {n for n, _ in hem.named_parameters()}
    assert not any("sobel" in n for n in names)
    assert not hem.sobel.requires_grad
    assert "sobel" not in hem.state_dict()  # a code constant, never overwritten by a file


def test_real_image_gives_non_zero_edge_features():
    try:
        from pollenstudio.engine.synthetic import SynthConfig, generate_image

        img, _ = generate_image(3, SynthConfig(width=128, height=128, n_grains=(2, 2), clutter=0.0))
    except Exception:  # generator not importable: fall back to a drawn disc
        yy, xx = np.mgrid[:128, :128]
        img = np.where((yy - 64) ** 2 + (xx - 60) ** 2 < 30**2, 60, 210).astype(np.uint8)[..., None].repeat(3, -1)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("full", nc=2)).eval()
    with torch.no_grad():
        pyr = model.edge_pyramid(x)
    assert all(m.abs().max() > 1e-3 for m in pyr.magnitudes)
    assert all(f.std() > 1e-4 for f in pyr.features)  # spatial structure reaches the EP maps


def test_fca_shortcut_equals_the_fft_formulation():
    torch.manual_seed(0)
    o = torch.randn(2, 5, 20, 28)
    a = torch.randn(2, 5, 1, 1)
    assert torch.allclose(fca(o, a), fca_fft(o, a), atol=1e-5)


def test_fgm_starts_as_identity_and_runs_in_float32_under_autocast():
    fgm = FGM(4)
    z = torch.randn(1, 4, 24, 24)
    assert torch.equal(fgm(z), z)
    ok = OmniKernel(4, k=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ok(torch.randn(1, 4, 24, 40))
    assert torch.isfinite(y).all()


def test_fgm_alpha_learns_from_the_frequency_path():
    fgm = FGM(3)
    fgm(torch.randn(1, 3, 8, 8)).sum().backward()
    assert fgm.alpha.grad.abs().sum() > 0


def test_fast_sobel_and_pooling_equal_the_textbook_operators():
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 24)
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate").reshape(6, 1, 18, 26)
    ref = (F.conv2d(xp, sx[None, None]).abs() + F.conv2d(xp, sx.t()[None, None]).abs()).reshape(2, 3, 16, 24)
    hem = HEM(3, (4, 4, 4))
    mags = hem.magnitudes(x)
    assert torch.allclose(mags[0], ref, atol=1e-6)
    assert torch.equal(mags[1], F.max_pool2d(mags[0], 2)) and torch.equal(mags[3], F.max_pool2d(mags[2], 2))
