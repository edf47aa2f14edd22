"""Click-to-box without a model: find the grain around a clicked point by classical
segmentation (no learning), for "B then click" in the review window.

The grain is what differs from the slide around it: colour (stained exine, brown or pink
grains on a pale mount) and edges (the exine outline of a hyaline grain). Both are measured
against the crop's border (background), thresholded with Otsu, closed and filled; the
connected region under the click is the grain. A region that reaches the crop's border
is larger than the crop: the crop grows (up to ``max_side``) and the search repeats.
"""

from __future__ import annotations

import cv2
import numpy as np

from pollenstudio.core.types import Box


MIN_COLOUR_CONTRAST = 6.0  # CIELAB units between a grain and the mount around it (a plain mount: ~1)
MIN_EDGE_CONTRAST = 3.0  # mean Sobel magnitude likewise (a hyaline grain differs by its edges)


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    from pollenstudio.core.imageio import to_uint8

    a = img if img.dtype == np.uint8 else to_uint8(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def _region_in_crop(crop: np.ndarray, cx: int, cy: int,
                    min_area: int) -> tuple[np.ndarray, set[str], bool] | None:
    """(mask of the region under (cx, cy), the crop sides it touches: "top", "bottom",
    "left", "right", whether it stands out from the rest of the crop in colour or edges)
    or None. Otsu splits even a plain mount in two: only a region that stands out is a grain."""
    h, w = crop.shape[:2]
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab = cv2.GaussianBlur(lab, (0, 0), 1.5)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    bg = np.median(border, axis=0)
    diff = np.sqrt(((lab - bg) ** 2).sum(axis=2))
    grey = lab[..., 0]
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    grad = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 2.0)

    def norm(a):
        lo, hi = np.percentile(a, 2), np.percentile(a, 99.5)
        return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)

    score = norm(diff) + 0.5 * norm(grad)
    s8 = (255 * score / max(score.max(), 1e-6)).astype(np.uint8)
    t, mask = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(3, int(round(min(h, w) / 60)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    # fill holes: a grain's pale interior is part of the grain
    filled = mask.copy()
    ff = np.zeros((h + 2, w + 2), np.uint8)
    seeds = [(x, y) for x, y in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)) if filled[y, x] == 0]
    for sx, sy in seeds:
        cv2.floodFill(filled, ff, (sx, sy), 128)
    if seeds:
        mask = np.where(filled == 128, 0, 255).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels = cv2.connectedComponents(mask)
    lab_id = labels[cy, cx]
    if lab_id == 0:
        # the click fell on a pale part not enclosed by the mask (an open, C-shaped grain, a
        # pore): the largest region nearby, if the click lies within its outline box
        r = max(4, int(0.15 * min(h, w)))
        win = labels[max(0, cy - r): cy + r + 1, max(0, cx - r): cx + r + 1]
        ids = win[win > 0]
        if not len(ids):
            return None
        lab_id = np.bincount(ids).argmax()
        ys, xs = np.nonzero(labels == lab_id)
        if not (xs.min() <= cx <= xs.max() and ys.min() <= cy <= ys.max()):
            return None
    region = labels == lab_id
    if region.sum() < min_area:
        return None
    # the blur and the closing widen the outline by about two pixels: take them back
    shrunk = cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if shrunk.sum() >= min_area:
        region = shrunk
    touches = {side for side, edge in (("top", region[0]), ("bottom", region[-1]), ("left", region[:, 0]),
                                       ("right", region[:, -1])) if edge.any()}
    rest = ~region
    stands_out = bool(rest.any()) and (
        float(diff[region].mean()) - float(np.median(diff[rest])) >= MIN_COLOUR_CONTRAST
        or float(grad[region].mean()) - float(np.median(grad[rest])) >= MIN_EDGE_CONTRAST)
    return region, touches, stands_out


def box_around_point(image: np.ndarray, x: float, y: float, start_side: int = 256, max_side: int = 1536,
                     min_side: float = 6.0) -> Box | None:
    """The box of the grain under (x, y) in image pixels, or None when nothing stands out
    from the background there. ``image``: (H, W) or (H, W, 3), 8 or 16 bit."""
    h, w = image.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        return None
    side = start_side
    while True:
        half = side // 2
        x0, y0 = int(max(0, x - half)), int(max(0, y - half))
        x1, y1 = int(min(w, x + half)), int(min(h, y + half))
        crop = _to_rgb8(image[y0:y1, x0:x1])
        found = _region_in_crop(crop, int(x) - x0, int(y) - y0, min_area=int(min_side * min_side))
        if found is None:
            return None
        region, touched, stands_out = found
        # a side of the crop that is the image's own edge cuts the grain, not the search: a
        # grain cut by the image edge ends there (the crop grew until the search gave up)
        inner = {"top": y0 > 0, "bottom": y1 < h, "left": x0 > 0, "right": x1 < w}
        touches = any(inner[s] for s in touched)
        if touches and side < max_side:
            side *= 2
            continue
        if touches:
            return None  # larger than any grain: the background itself, or a smear
        if touched and not stands_out:
            return None  # a patch of plain mount at the image edge
        ys, xs = np.nonzero(region)
        box = Box(float(xs.min() + x0), float(ys.min() + y0), float(xs.max() + 1 + x0), float(ys.max() + 1 + y0))
        return box if plausible_grain_box(box, min_side) else None


MAX_ASPECT = 5.0  # a grain cut by the image edge still shows a fifth of its diameter


def plausible_grain_box(box: Box, min_side: float = 6.0, max_aspect: float = MAX_ASPECT) -> bool:
    """Whether ``box`` can be a grain (or the part of one the image edge leaves): at least
    ``min_side`` px both ways and at most ``max_aspect`` times as long as wide. B + click at
    the image edge took a 5 px wide sliver for a grain."""
    short, long_ = sorted((box.width, box.height))
    return short >= min_side and long_ <= max_aspect * short


def model_box_at(pred, image: np.ndarray, x: float, y: float, conf: float = 0.05,
                 side: int | None = None) -> tuple[Box, str, float] | None:
    """The model's best box holding (x, y): the predictor run on one window around the click
    at a low threshold (``conf``, under the detection threshold: a grain the detection
    dropped still has its candidate here). Returns (box in image px, taxon, score) or None.
    The shared predictor is not changed (its own threshold stays); forward passes hold its
    lock."""
    from pollenstudio.detector.postprocess import postprocess
    from pollenstudio.engine.tiling import intensity_range, letterbox, to_model_uint8

    h, w = image.shape[:2]
    side = int(side or pred.imgsz)
    x0 = int(min(max(0, x - side / 2), max(0, w - side)))
    y0 = int(min(max(0, y - side / 2), max(0, h - side)))
    crop = np.asarray(image[y0:y0 + side, x0:x0 + side])
    arr, lb = letterbox(to_model_uint8(crop, intensity_range(crop)), pred.imgsz, origin=(x0, y0))
    out = pred.forward(pred.to_tensor([arr]))
    p = postprocess(out, pred.strides, conf=conf, iou=pred.iou, max_det=pred.max_det, reg_max=int(pred.cfg.reg_max))[0]
    boxes = lb.to_source(p.boxes.detach().float().cpu().numpy())
    scores = p.scores.detach().float().cpu().numpy()
    classes = p.classes.detach().cpu().numpy()
    # the detector's classes (a taxon classifier names grains later)
    return best_candidate_at(boxes, scores, classes, pred.cfg.class_names, x, y, w, h)


def best_candidate_at(boxes, scores, classes, names, x: float, y: float, w: int, h: int,
                      min_side: float = 6.0) -> tuple[Box, str, float] | None:
    """The highest-scoring candidate box that holds (x, y) and can be a grain
    (:func:`plausible_grain_box`), clipped to the w x h image; (box, taxon, score) or None."""
    best = None
    for b, s, c in zip(boxes, scores, classes):
        box = Box(max(0.0, float(b[0])), max(0.0, float(b[1])), min(float(w), float(b[2])), min(float(h), float(b[3])))
        if not (box.x1 <= x <= box.x2 and box.y1 <= y <= box.y2) or not plausible_grain_box(box, min_side):
            continue
        if best is None or s > best[2]:
            best = (box, names[int(c)] if 0 <= int(c) < len(names) else str(int(c)), float(s))
    return best
