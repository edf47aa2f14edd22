"""Loss: every parameter learns, and a tiny model can over-fit two synthetic images."""
import pytest
import torch

from pollenstudio.core.errors import ModelMismatchError
from pollenstudio.detector import DetectionLoss, ModelConfig, build_model, postprocess
from pollenstudio.detector.boxes import box_iou
from pollenstudio.detector.loss import pad_targets




def test_pad_targets_groups_boxes_per_image():
    t = torch.tensor([[1, 0, 1, 1, 2, 2], [0, 1, 3, 3, 4, 4], [1, 1, 5, 5, 6, 6.0]])
    labels, boxes, mask = pad_targets(t, 3)
    assert mask.tolist() == [[True, False], [True, True], [False, False]]
    assert labels[1].tolist() == [0, 1] and boxes[1, 1].tolist() == [5, 5, 6, 6]


def test_every_trainable_parameter_receives_a_gradient():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("full", nc=3))
    x = torch.rand(2, 3, 128, 128)
    targets = torch.tensor([[0, 1, 10, 12, 60, 70], [1, 2, 4, 4, 124, 124], [1, 0, 5, 5, 30, 25.0]])
    # a large top-k so that every pyramid level gets positives (and its box branch a signal)
    total, parts = DetectionLoss(model, topk=200)(model(x), targets)
    assert set(parts) == {"box", "dfl", "cls"} and all(v > 0 for v in parts.values())
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    # FGM starts as the identity (alpha = 0), so its two 1x1 convs get exactly zero gradient
    # at the first step; alpha itself does get one, after which they learn too.
    zero = {n for n, p in model.named_parameters() if p.grad.abs().sum() == 0}
    assert zero <= {f"ok3.ok.fgm.{c}.{w}" for c in ("p1", "p2") for w in ("weight", "bias")}
    assert model.ok3.ok.fgm.alpha.grad.abs().sum() > 0


def test_images_without_objects_still_train_the_classifier_down():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny("base", nc=2))
    total, parts = DetectionLoss(model)(model(torch.rand(1, 3, 64, 64)), torch.zeros(0, 6))
    total.backward()
    assert parts["box"] == 0 and parts["cls"] > 0
    assert model.detect.cls[0][-1].bias.grad.abs().sum() > 0


def test_bad_targets_are_refused():
    model = build_model(ModelConfig.tiny("base", nc=2))
    out = model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ModelMismatchError, match="class"):
        DetectionLoss(model)(out, torch.tensor([[0, 5, 1, 1, 9, 9.0]]))


def _two_images(size=128):
    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    s = size
    scenes = [((s * 0.35, s * 0.4, 0, s * 0.3), (s * 0.7, s * 0.7, 1, s * 0.25)), ((s * 0.5, s * 0.5, 1, s * 0.35),)]
    imgs, targets = [], []
    for i, grains in enumerate(scenes):
        cfg = SynthConfig(width=s, height=s, n_grains=(0, 0), clutter=0.0, taxa=("Betula", "Pinus"), forced_grains=grains)
        img, objs = generate_image(7 + i, cfg)
        imgs.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        targets += [[i, o["category"], *o["bbox"]] for o in objs]
    return torch.stack(imgs), torch.tensor(targets, dtype=torch.float32)


@pytest.mark.slow
def test_overfitting_two_images_lowers_the_loss_and_finds_their_grains():
    torch.manual_seed(0)
    x, targets = _two_images()
    assert len(targets) == 3
    model = build_model(ModelConfig.tiny("full", nc=2))
    loss_fn = DetectionLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.005, weight_decay=0.0)
    losses = []
    for _ in range(50):
        total, _ = loss_fn(model(x), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0]

    # 50 steps are too few for BN running averages (momentum 0.03) to settle: recompute them
    # exactly from the batch, as a trainer would by evaluating its EMA model.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model(x)
    model.eval()
    with torch.no_grad():
        preds = postprocess(model(x), model.strides, conf=0.25)
    for i, p in enumerate(preds):
        gt = targets[targets[:, 0] == i]
        iou = box_iou(gt[:, 2:], p.boxes)  # (n_gt, n_pred)
        same_class = gt[:, 1:2].long() == p.classes[None]
        assert ((iou > 0.5) & same_class).any(1).all(), (iou, p.classes)
