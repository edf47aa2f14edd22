"""HieraEdgeNet network: shapes, variants, config round trip, feature access."""
import pytest
import torch

from pollenstudio.core.errors import ModelMismatchError
from pollenstudio.detector import HieraEdgeNet, ModelConfig, build_model, count_parameters




@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny("full", nc=3)).eval()


@pytest.mark.parametrize("h,w", [(320, 320), (416, 640)])
def test_output_shapes_square_and_non_square(tiny, h, w):
    with torch.no_grad():
        out = tiny(torch.rand(1, 3, h, w))
    assert tiny.strides == (8, 16, 32)
    assert [tuple(o.shape) for o in out] == [(1, 4 * 16 + 3, h // s, w // s) for s in (8, 16, 32)]


def test_input_not_multiple_of_32_is_refused_with_a_clear_message(tiny):
    with pytest.raises(ModelMismatchError, match="multiple of 32"):
        tiny(torch.rand(1, 3, 100, 128))


def test_variants_are_config_switches():
    base = build_model(ModelConfig.tiny("base", nc=2))
    full = build_model(ModelConfig.tiny("full", nc=2))
    assert base.hem is None and base.ok3 is None and base.sef3 is None
    assert full.hem is not None and full.ok3 is not None and full.sef5 is not None
    assert ModelConfig.variant("edge", nc=1).variant_name == "edge"
    with pytest.raises(ModelMismatchError):
        ModelConfig.variant("bogus", nc=1)


def test_parameter_counts_match_the_published_architecture():
    # YOLO11n at 80 classes has 2,624,080 parameters, 16 of which are its frozen DFL conv;
    # ours keeps that constant as a buffer. This pins every block of the base network.
    assert count_parameters(build_model(ModelConfig.variant("base", nc=80))) == 2_624_080 - 16
    full = count_parameters(build_model(ModelConfig.variant("full", nc=120)))
    assert 3.0e6 < full < 3.1e6  # spec: about 3.05 M


def test_config_round_trip_and_class_name_checks():
    cfg = ModelConfig.tiny("edge", nc=2, class_names=["Betula", "Pinus"], imgsz=320)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ModelMismatchError):
        ModelConfig(nc=2, class_names=["only one"])
    with pytest.raises(ModelMismatchError, match="newer"):
        ModelConfig.from_dict({**cfg.to_dict(), "future_knob": 1})


def test_forward_with_features_gives_differentiable_head_inputs(tiny):
    x = torch.rand(1, 3, 128, 128)
    out, feats = tiny.forward_with_features(x)
    assert [f.shape[-1] for f in feats] == [16, 8, 4]
    score = out[0][:, 64:].sigmoid().max()
    g = torch.autograd.grad(score, feats[0])[0]
    assert g.abs().sum() > 0


def test_edge_pyramid_gives_maps_at_four_strides(tiny):
    pyr = tiny.edge_pyramid(torch.rand(1, 3, 128, 128))
    assert [m.shape[-1] for m in pyr.magnitudes] == [32, 16, 8, 4]
    assert [f.shape[-1] for f in pyr.features] == [16, 8, 4]
    base = build_model(ModelConfig.tiny("base", nc=1))
    with pytest.raises(ModelMismatchError, match="edge"):
        base.edge_pyramid(torch.rand(1, 3, 64, 64))
    assert isinstance(base, HieraEdgeNet)


def test_scale_s_is_wider_than_n():
    n = build_model(ModelConfig.variant("full", nc=120))
    s = build_model(ModelConfig.variant("full", nc=120, scale="s"))
    assert s.detect.box[0][0].conv.in_channels == 2 * n.detect.box[0][0].conv.in_channels
    assert count_parameters(s) > 3 * count_parameters(n)


def test_mixed_precision_forward_and_loss_stay_finite():
    from pollenstudio.detector import DetectionLoss

    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("full", nc=2, omni_kernel=31))
    targets = torch.tensor([[0, 1, 10, 12, 40, 50.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 64, 64))
        total, _ = DetectionLoss(model)(out, targets)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
