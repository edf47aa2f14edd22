"""Cut one pollen grain out of a real single-grain crop, as optical density with a soft alpha.

A brightfield photo is light transmitted through the specimen, so a grain is best carried as
its optical density relative to the crop's own background, ``od = -log(I / I_background)``:
pasted onto any other background (a generated slide, a tile of real debris) it darkens that
background as the grain darkened its own, and overlapping grains add up as they do under a
microscope (Beer-Lambert). The cut-out is:

1. strip the crop's outer 3 px (many POLLEN73S crops carry a 1-2 px white frame);
2. background colour = median of the outer ring;
3. a difference-from-background map (CIELAB distance, slightly smoothed), Otsu threshold,
   never below a noise floor measured on the ring;
4. morphology: close, fill holes, keep the largest component, open, fill holes again;
5. quality checks (:data:`REJECT_REASONS`): a crop that fails one is rejected and counted by
   the caller, never pasted as a rectangle.

The alpha is the mask feathered by a Gaussian (sigma ~1 px), so the pasted outline is as
soft as a real one, and its 0.5 level is the mask outline, which is what boxes are taken from.

Written by hand because no maintained library does this particular job: rembg/SAM-style
matting needs model weights (never downloaded here) and is far slower than the
threshold-and-morphology that the crops' plain backgrounds allow.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pollenstudio.core.errors import PollenStudioError

F = np.float32
FRAME = 3  # px stripped from every side before anything else
REJECT_REASONS = {
    "small": "the crop is too small to hold a grain (under 24 px a side)",
    "flat": "nothing stands out from the background",
    "border": "the grain touches the crop's edge or a neighbour reaches in",
    "size": "the cut-out covers too little or too much of the crop",
    "shape": "the cut-out is ragged (low solidity): probably not a clean grain outline",
}


class CutoutRejected(PollenStudioError):
    """A crop whose grain could not be cut out cleanly; ``reason`` is a key of REJECT_REASONS."""

    def __init__(self, reason: str, name: str = ""):
        self.reason = reason
        super().__init__(f"{name or 'crop'}: {REJECT_REASONS[reason]}")


@dataclass
class Cutout:
    """One grain: optical density and alpha on a tight canvas (a 2 px margin around the mask)."""

    od: np.ndarray  # (h, w, 3) float32, already multiplied by alpha
    alpha: np.ndarray  # (h, w) float32 0..1, feathered
    diameter: float  # equivalent-circle diameter of the mask, px
    background: np.ndarray  # (3,) float32 RGB 0..1 of the crop's background


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    flood = pad.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return (pad | (1 - flood))[1:-1, 1:-1].astype(np.uint8)


def _largest(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == k).astype(np.uint8)


def grain_mask(rgb: np.ndarray, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The grain's mask (uint8 0/1, same size as ``rgb`` minus the frame) and background colour.

    ``rgb`` is a uint8 (H, W, 3) RGB crop. Raises :class:`CutoutRejected`.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise PollenStudioError(f"{name or 'crop'}: expected an 8-bit RGB image, got {rgb.dtype} {rgb.shape}")
    img = rgb[FRAME:-FRAME, FRAME:-FRAME]
    h, w = img.shape[:2]
    if min(h, w) < 24:
        raise CutoutRejected("small", name)
    ring = np.ones((h, w), bool)
    ring[4:-4, 4:-4] = False
    bg = np.median(img[ring].astype(F), axis=0)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(F)
    bg_lab = cv2.cvtColor(bg.astype(np.uint8).reshape(1, 1, 3), cv2.COLOR_RGB2LAB).astype(F).reshape(3)
    diff = np.sqrt(np.square(lab - bg_lab).sum(-1))
    diff = cv2.GaussianBlur(diff, (0, 0), 1.0)
    ring_d = diff[ring]
    floor = float(np.median(ring_d) + 4.0 * (np.percentile(ring_d, 75) - np.percentile(ring_d, 25)) + 4.0)
    # Stained grains separate from the mount by colour (Otsu on the difference map). Pale,
    # unstained grains differ mostly at their outline, so a second try adds the gradient and
    # closes harder: the rim becomes a closed ring whose inside is then filled.
    grad = cv2.magnitude(cv2.Sobel(diff, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(diff, cv2.CV_32F, 0, 1, ksize=3))
    tries = ((diff, 0.03), (np.maximum(diff, 0.5 * grad), 0.06))
    reason = "flat"
    for score, close in tries:
        try:
            return _mask_from(score, floor, close, name), bg / 255.0
        except CutoutRejected as e:
            reason = e.reason
    raise CutoutRejected(reason, name)


def _mask_from(score: np.ndarray, floor: float, close: float, name: str) -> np.ndarray:
    h, w = score.shape
    top = float(np.percentile(score, 99.5))
    if top <= floor:
        raise CutoutRejected("flat", name)
    scaled = np.clip(score / top * 255, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = max(float(otsu) / 255 * top, floor)
    mask = (score > thr).astype(np.uint8)
    k = max(3, int(round(min(h, w) * close)) | 1)
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, ker)
    mask = _largest(_fill_holes(mask))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, ker)
    mask = _fill_holes(_largest(mask))
    area = int(mask.sum())
    if not 0.10 <= area / float(h * w) <= 0.92:
        raise CutoutRejected("size", name)
    ys, xs = np.nonzero(mask)
    if not (0.2 * h <= ys.mean() <= 0.8 * h and 0.2 * w <= xs.mean() <= 0.8 * w):
        raise CutoutRejected("size", name)  # an off-centre blob is a neighbour, not the grain
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if edge.mean() > 0.03:
        raise CutoutRejected("border", name)
    cs, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.contourArea(cv2.convexHull(max(cs, key=cv2.contourArea)))
    if hull <= 0 or area / hull < 0.80:
        raise CutoutRejected("shape", name)
    return mask


def cut_out(rgb: np.ndarray, name: str = "", feather: float = 1.0) -> Cutout:
    """Cut the grain out of a single-grain crop (uint8 RGB). Raises :class:`CutoutRejected`."""
    mask, bg = grain_mask(rgb, name)
    img = rgb[FRAME:-FRAME, FRAME:-FRAME].astype(F) / 255.0
    ys, xs = np.nonzero(mask)
    m = 2 + int(np.ceil(3 * feather))
    y0, y1 = max(0, ys.min() - m), min(mask.shape[0], ys.max() + 1 + m)
    x0, x1 = max(0, xs.min() - m), min(mask.shape[1], xs.max() + 1 + m)
    img, mask = img[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    od = -np.log(np.clip(img, 1 / 255.0, None) / np.clip(bg, 1 / 255.0, None).astype(F))
    # bright rims inside the outline (refraction) are kept as slightly negative density
    np.clip(od, -0.4, 3.0, out=od)
    alpha = cv2.GaussianBlur(mask.astype(F), (0, 0), feather) if feather > 0 else mask.astype(F)
    od *= alpha[..., None]
    diameter = float(np.sqrt(4 * mask.sum() / np.pi))
    return Cutout(od=od.astype(F), alpha=alpha.astype(F), diameter=diameter, background=bg.astype(F))
