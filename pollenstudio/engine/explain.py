"""Explanations shown in the review view: edge-attention maps and Grad-CAM.

Every map comes back as a float32 array with the image's own (H, W), values 0..1, aligned
pixel for pixel with the image (letterbox padding removed, tiles blended in place), so the
GUI can draw it over the image with a colour map and an opacity slider.

- :func:`edge_maps`: the HEM edge features EP3/EP4/EP5 (strides 8/16/32). A flat region
  has Sobel magnitude exactly 0, so its edge feature is the constant ``EP(0)``; the map is
  the channel-mean of ``|EP - EP(0)|``: how far each place is from "no edge". On tiled
  images the raw responses are blended with feathered weights that drop to 0 near a side
  shared with another tile (where the backbone's zero padding makes false edges), then
  normalised once to 0..1 by a high percentile of the whole image: no seams.
- :func:`grad_cam`: for one detection, the gradient of its class logit (at the anchor
  that produced it) with respect to a feature map (the neck output of its own pyramid
  level by default, or a level/kind chosen by the user), combined with that feature map:
  classic Grad-CAM ``ReLU(sum_c w_c A_c)`` with ``w_c`` the spatial mean of the gradient,
  or HiResCAM ``ReLU(sum_c grad_c * A_c)`` (element-wise, so it follows the selected
  grain rather than every grain of the same taxon).
- :func:`class_activation`: Grad-CAM of the summed class probability over the whole
  image (all anchors, all levels): where the model sees a given taxon anywhere.

Written here with forward hooks and ``torch.autograd.grad`` rather than with the packaged
``pytorch-grad-cam`` library, because that library pulls torchvision and the non-headless
OpenCV (which clashes with opencv-python-headless and Qt) for a few dozen lines of maths.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pollenstudio.core.errors import ModelMismatchError
from pollenstudio.core.types import Box, Detection
from pollenstudio.engine.tiling import (
    Letterbox,
    intensity_range,
    letterbox,
    plan_tiles,
    resolve_tile_size,
    to_model_uint8,
)

LEVEL_NAMES = ("P3", "P4", "P5")
# Grad-CAM keeps the autograd graph of a whole forward pass until the backward one: about
# 0.35 GB at a 640 px input, 0.8 GB at 1024 and 3.3 GB at 2048 (HieraEdgeNet-n, CPU; a map of
# a 2592 px field downscaled to 2048 took the app to about 4 GB). A larger window is shrunk
# to this input (never below the model's own input size); the map is resized back.
GRADCAM_MAX_INPUT = 1024


def _detect_module(model):
    from pollenstudio.detector.head import Detect

    for m in model.modules():
        if isinstance(m, Detect):
            return m
    raise ModelMismatchError("this model has no detection head to explain")


def _normalise(m: np.ndarray, pct: float = 99.5) -> np.ndarray:
    hi = float(np.percentile(m, pct)) if m.size else 0.0
    if hi <= 0:
        hi = float(m.max()) if m.size else 0.0
    if hi <= 0:
        return np.zeros_like(m, dtype=np.float32)
    return np.clip(m / hi, 0.0, 1.0).astype(np.float32)


def _windows(predictor, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Regions of the image the predictor would run as one model input each."""
    tile = resolve_tile_size(predictor.tile, w, h, predictor.imgsz)
    if tile is None:
        return [(0, 0, w, h)]
    return [(t.x0, t.y0, t.x1, t.y1) for t in plan_tiles(w, h, tile, int(round(tile * predictor.overlap)))]


def _ramp(n: int, lo_inner: bool, hi_inner: bool, overlap: int) -> np.ndarray:
    """(n,) weights along one tile axis: 0 within ``overlap * 3/8`` of a side shared with
    another tile (the conv response there sees the tile's zero padding, not the image),
    rising linearly to 1 at ``overlap / 2``; 1 at sides on the image border (no other tile
    covers them). Neighbours overlap by >= ``overlap``, so at every pixel some tile has
    full or partial weight and the hand-over happens inside the overlap."""
    r = np.ones(n, np.float32)
    if overlap < 4:
        return r
    cut, full = 0.375 * overlap, 0.5 * overlap
    d = np.arange(n, dtype=np.float32) + 0.5
    if lo_inner:
        r = np.minimum(r, np.clip((d - cut) / (full - cut), 0.0, 1.0))
    if hi_inner:
        r = np.minimum(r, np.clip((n - d - cut) / (full - cut), 0.0, 1.0))
    return r


def _feather(x0: int, y0: int, x1: int, y1: int, w: int, h: int, overlap: int) -> np.ndarray:
    """(y1 - y0, x1 - x0) blending weight of one tile of a w x h image."""
    rx = _ramp(x1 - x0, x0 > 0, x1 < w, overlap)
    ry = _ramp(y1 - y0, y0 > 0, y1 < h, overlap)
    return np.outer(ry, rx)


# ----------------------------------------------------------------------------------------
# edge maps
# ----------------------------------------------------------------------------------------


def edge_maps(predictor, image: np.ndarray) -> dict[str, np.ndarray]:
    """{"P3", "P4", "P5"} -> (H, W) float32 in 0..1, the HEM edge features over the image.

    Raises ModelMismatchError for a model without edge priors (edge="none").
    """
    import torch

    model = predictor.model
    hem = getattr(model, "hem", None)
    if hem is None:
        raise ModelMismatchError("this model was trained without edge priors (edge='none'): it has no edge map")
    h, w = image.shape[:2]
    rng = intensity_range(image)
    # Raw (unnormalised) responses blended across tiles with feathered weights, then one
    # normalisation over the whole image: no tile is scaled on its own and no tile's
    # border artefact (zero padding in the backbone convs) is pasted over its neighbour.
    acc = [np.zeros((h, w), np.float32) for _ in LEVEL_NAMES]
    wsum = np.zeros((h, w), np.float32)
    tile = resolve_tile_size(predictor.tile, w, h, predictor.imgsz)
    overlap = 0 if tile is None else int(round(tile * predictor.overlap))
    captured: dict = {}
    predictor.lock.acquire()
    handle = hem.register_forward_hook(lambda mod, args, res: captured.__setitem__("ep", res))
    try:
        with torch.inference_mode():
            flat = None
            for x0, y0, x1, y1 in _windows(predictor, w, h):
                arr, lb = letterbox(to_model_uint8(image[y0:y1, x0:x1], rng), predictor.imgsz)
                predictor.forward(predictor.to_tensor([arr]))
                eps = [e.float() for e in captured["ep"]]
                if flat is None:
                    # EP of a zero edge magnitude: what every flat region produces
                    zeros = [torch.zeros((1, hem.c_in, 1, 1), device=eps[0].device) for _ in range(4)]
                    flat = [f.float() for f in hem.features(zeros)]
                wt = _feather(x0, y0, x1, y1, w, h, overlap)
                wsum[y0:y1, x0:x1] += wt
                for li, (ep, f0) in enumerate(zip(eps, flat)):
                    dev = (ep - f0).abs().mean(1)[0]  # (h, w)
                    up = cv2.resize(dev.cpu().numpy(), (lb.size, lb.size), interpolation=cv2.INTER_LINEAR)
                    acc[li][y0:y1, x0:x1] += wt * lb.map_to_source(up)
    finally:
        handle.remove()
        predictor.lock.release()
    out = [a / np.maximum(wsum, 1e-12) for a in acc]
    return {name: _normalise(m) for name, m in zip(LEVEL_NAMES, out)}


# ----------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------


@dataclass
class _Pass:
    outputs: list  # raw level outputs (1, no, h, w), with grad
    feats: list  # feature maps captured by the hook, with grad
    lb: Letterbox


def grad_input_size(predictor) -> int:
    """The model input side a Grad-CAM pass runs at: the predictor's, at most
    ``GRADCAM_MAX_INPUT`` (or the model's own input size, if larger)."""
    cap = max(GRADCAM_MAX_INPUT, int(getattr(predictor.cfg, "imgsz", 0) or 0))
    return min(int(predictor.imgsz), cap)


def _forward_with_grad(predictor, image, window, rng, layer: str) -> _Pass:
    import torch

    model = predictor.explain_model
    x0, y0, x1, y1 = window
    arr, lb = letterbox(to_model_uint8(image[y0:y1, x0:x1], rng), grad_input_size(predictor), origin=(x0, y0))
    x = predictor.to_tensor([arr]).requires_grad_(True)  # params may be frozen: grad flows via x
    captured: dict = {}
    with predictor.lock:  # hooks live only while this thread owns the model
        if layer == "neck":
            handle = _detect_module(model).register_forward_pre_hook(
                lambda mod, args: captured.__setitem__("f", list(args[0]))
            )
        elif layer == "edge":
            hem = getattr(model, "hem", None)
            if hem is None:
                raise ModelMismatchError("this model has no edge module; choose the neck features")
            handle = hem.register_forward_hook(lambda mod, args, res: captured.__setitem__("f", list(res)))
        else:
            raise ValueError(f"layer must be 'neck' or 'edge', got {layer!r}")
        try:
            with torch.enable_grad():
                outputs = [o.float() for o in model(x)]
        finally:
            handle.remove()
    return _Pass(outputs, captured["f"], lb)


def _cam(grad, act, method: str) -> np.ndarray:
    """grad, act: (1, C, h, w) -> (h, w) ReLU CAM."""
    if method == "gradcam":
        w = grad.mean((2, 3), keepdim=True)
        cam = (w * act).sum(1)[0]
    elif method == "hirescam":
        cam = (grad * act).sum(1)[0]
    else:
        raise ValueError(f"method must be 'gradcam' or 'hirescam', got {method!r}")
    return cam.clamp(min=0).detach().float().cpu().numpy()


def _paste(cam: np.ndarray, p: _Pass, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    up = cv2.resize(cam, (p.lb.size, p.lb.size), interpolation=cv2.INTER_LINEAR)
    full = np.zeros((h, w), np.float32)
    x0, y0 = int(p.lb.origin_x), int(p.lb.origin_y)
    full[y0 : y0 + p.lb.src_h, x0 : x0 + p.lb.src_w] = p.lb.map_to_source(up)
    return full


def _window_for(predictor, w: int, h: int, box: Box) -> tuple[int, int, int, int]:
    """The model-input window whose centre is closest to the box (whole image when untiled)."""
    wins = _windows(predictor, w, h)
    cx, cy = box.center

    def dist(win):
        x0, y0, x1, y1 = win
        inside = x0 <= box.x1 and box.x2 <= x1 and y0 <= box.y1 and box.y2 <= y1
        return (not inside, (cx - (x0 + x1) / 2) ** 2 + (cy - (y0 + y1) / 2) ** 2)

    return min(wins, key=dist)


def _find_anchor(predictor, p: _Pass, det: Detection) -> tuple[int, int, int]:
    """(level, y, x) of the anchor whose prediction is ``det``: the anchor of ``det``'s class
    whose decoded box best overlaps it (IoU, then class logit)."""
    import torch

    from pollenstudio.detector.head import decode

    with torch.no_grad():
        boxes, logits, levels = decode([o.detach() for o in p.outputs], predictor.strides, predictor.cfg.reg_max)
    target = torch.tensor(p.lb.to_model(np.array([det.box.xyxy()]))[0], dtype=boxes.dtype, device=boxes.device)
    b = boxes[0]
    iw = (torch.minimum(b[:, 2], target[2]) - torch.maximum(b[:, 0], target[0])).clamp(min=0)
    ih = (torch.minimum(b[:, 3], target[3]) - torch.maximum(b[:, 1], target[1])).clamp(min=0)
    inter = iw * ih
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / (area + (target[2] - target[0]) * (target[3] - target[1]) - inter + 1e-9)
    prob = logits[0, :, det.class_index].sigmoid()
    a = int(torch.argmax(iou * prob).item())
    level = int(levels[a].item())
    offset = sum(int(o.shape[2] * o.shape[3]) for o in p.outputs[:level])
    w_l = int(p.outputs[level].shape[3])
    local = a - offset
    return level, local // w_l, local % w_l


def grad_cam(
    predictor,
    image: np.ndarray,
    detection: Detection,
    level: int | None = None,
    layer: str = "neck",
    method: str = "hirescam",
) -> np.ndarray:
    """(H, W) float32 0..1 heatmap explaining one detection.

    detection: a Detection from ``predictor`` on this image. level: feature level to take
    the gradient at (0=P3, 1=P4, 2=P5); default the level that produced the detection.
    layer: "neck" (the features the head reads) or "edge" (HEM edge features).
    method: "hirescam" (element-wise, follows the selected grain; default) or "gradcam".
    """
    import torch

    h, w = image.shape[:2]
    rng = intensity_range(image)
    p = _forward_with_grad(predictor, image, _window_for(predictor, w, h, detection.box), rng, layer)
    det_level, yy, xx = _find_anchor(predictor, p, detection)
    level = det_level if level is None else int(level)
    if not 0 <= level < len(p.feats):
        raise ValueError(f"level must be 0..{len(p.feats) - 1} (P3..P5), got {level}")
    reg = 4 * predictor.cfg.reg_max
    score = p.outputs[det_level][0, reg + detection.class_index, yy, xx]
    (grad,) = torch.autograd.grad(score, p.feats[level], allow_unused=True)
    if grad is None:
        return np.zeros((h, w), np.float32)
    return _normalise(_paste(_cam(grad, p.feats[level], method), p, (h, w)), 100.0)


def class_activation(
    predictor, image: np.ndarray, class_index: int | None = None, layer: str = "neck"
) -> np.ndarray:
    """(H, W) float32 0..1: Grad-CAM of the summed probability of one taxon (default: the
    most probable taxon per anchor) over all anchors, combined over the three levels (pixel-wise max)."""
    import torch

    h, w = image.shape[:2]
    rng = intensity_range(image)
    reg = 4 * predictor.cfg.reg_max
    full = np.zeros((h, w), np.float32)
    for win in _windows(predictor, w, h):
        p = _forward_with_grad(predictor, image, win, rng, layer)
        probs = [o[:, reg:].sigmoid() for o in p.outputs]
        if class_index is None:
            target = sum(pr.max(1).values.sum() for pr in probs)
        else:
            target = sum(pr[:, class_index].sum() for pr in probs)
        grads = torch.autograd.grad(target, p.feats, allow_unused=True)
        for g, a in zip(grads, p.feats):
            if g is not None:
                np.maximum(full, _paste(_cam(g, a, "gradcam"), p, (h, w)), out=full)
    return _normalise(full, 100.0)


def whole_image_predictor(pred, w: int, h: int):
    """The same model as ``pred`` (training form, same lock) run on a whole (already
    downscaled) ``w`` x ``h`` image in one input instead of tiles: the maps then have no
    seams at tile borders (the edge features of each tile's own border drew a grid over
    the image) and Grad-CAM sees the grain's whole neighbourhood. The detector is fully
    convolutional."""
    from pollenstudio.engine.predict import Predictor

    side = max(pred.imgsz, -(-max(w, h) // 32) * 32)
    ep = Predictor(pred.explain_model, pred.cfg, device=pred.device, tile="off", imgsz=side, fuse=False,
                   conf=pred.conf, iou=pred.iou, source=pred.source)
    ep.lock = pred.lock  # one model: never two forward passes with hooks at once
    ep.model_version_id = pred.model_version_id
    return ep
