"""A grain's outline and fitted ellipse from the image inside its box (issue 20, on request).

The outline is the region that stands out from the slide around the box (colour against
the crop's border and exine edges, Otsu, closed and filled: the classical segmentation of
``engine.segment``), taken at the box's centre; ``cv2.fitEllipse`` fits an ellipse to it.
Long / short axis ratio = P/E when the grain lies in equatorial view (a box cannot tell
which axis is polar). No model, milliseconds per grain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pollenstudio.core.types import Box
from pollenstudio.engine.segment import _region_in_crop, _to_rgb8


MIN_CONTRAST = 8.0  # mean Lab difference from the background, inside or along the outline


@dataclass(frozen=True)
class GrainShape:
    major_px: float  # fitted ellipse's full axes, image pixels
    minor_px: float
    angle_deg: float  # of the major axis, from the image x axis
    centre: tuple[float, float]  # image pixels
    area_px: float  # inside the outline
    outline: np.ndarray  # (N, 2) float32 image pixels, closed

    @property
    def ratio(self) -> float:
        return self.major_px / self.minor_px if self.minor_px > 0 else math.inf

    def describe(self, um_per_px: float | None = None) -> str:
        if um_per_px:
            u = um_per_px
            return (f"ellipse {self.major_px * u:.1f} × {self.minor_px * u:.1f} µm, area {self.area_px * u * u:.0f} µm², "
                    f"long/short {self.ratio:.2f}")
        return (f"ellipse {self.major_px:.0f} × {self.minor_px:.0f} px, area {self.area_px:.0f} px², "
                f"long/short {self.ratio:.2f}")


def fit_outline(image: np.ndarray, box: Box, pad: float = 0.2) -> GrainShape | None:
    """The outline and ellipse of the grain in ``box`` (image (H, W[, 3]), 8 or 16 bit), or
    None when nothing stands out from the background at the box's centre."""
    h, w = image.shape[:2]
    px, py = box.width * pad + 4, box.height * pad + 4
    x0, y0 = int(max(0, math.floor(box.x1 - px))), int(max(0, math.floor(box.y1 - py)))
    x1, y1 = int(min(w, math.ceil(box.x2 + px))), int(min(h, math.ceil(box.y2 + py)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    crop = _to_rgb8(image[y0:y1, x0:x1])
    cx, cy = int((box.x1 + box.x2) / 2) - x0, int((box.y1 + box.y2) / 2) - y0
    found = _region_in_crop(crop, cx, cy, min_area=max(9, int(0.05 * box.width * box.height)))
    if found is None:
        return None
    mask = found[0].astype(np.uint8)
    # Otsu always splits, even pure slide noise: the region must differ visibly (Lab colour
    # difference, JND ~2.3) from the crop's border, on its outline at least (hyaline exine)
    lab = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32), (0, 0), 1.0)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    diff = np.sqrt(((lab - np.median(border, axis=0)) ** 2).sum(axis=2))
    ring = mask - cv2.erode(mask, np.ones((5, 5), np.uint8))
    if max(float(diff[mask > 0].mean()), float(diff[ring > 0].mean()) if ring.any() else 0.0) < MIN_CONTRAST:
        return None
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    if len(c) < 5:
        return None
    (ex, ey), (a, b), angle = cv2.fitEllipse(c)
    major, minor = max(a, b), min(a, b)
    if a < b:
        angle += 90.0
    pts = c.reshape(-1, 2).astype(np.float32) + np.float32([x0, y0])
    return GrainShape(float(major), float(minor), float(angle % 180.0), (float(ex + x0), float(ey + y0)),
                      float(mask.sum()), pts)


def measure_project(project, reviewed_only: bool = False, progress=None) -> dict[int, tuple[float, float]]:
    """Fitted ellipses {annotation id: (major, minor) px} of the confirmed grains on
    calibrated images (sizes need a scale), reading each image once. Unreadable images
    and grains without an outline are left out (the report says how many were measured)."""
    from collections import defaultdict

    from pollenstudio.core.errors import ImageReadError
    from pollenstudio.core.imageio import read_image

    by_image: dict[int, list] = defaultdict(list)
    for image_id, _g, _c, _w, _h, ump, _mv, ann_id in project.grain_table(reviewed_only=reviewed_only):
        if ump:
            by_image[image_id].append(ann_id)
    out: dict[int, tuple[float, float]] = {}
    for n, (image_id, ann_ids) in enumerate(sorted(by_image.items())):
        if progress is not None:
            progress.check()
            progress.update(n, len(by_image), "measuring outlines")
        try:
            img = read_image(project.image_path(image_id))
        except ImageReadError:
            continue
        for ann_id in ann_ids:
            shape = fit_outline(img, project.annotation(ann_id).box)
            if shape is not None:
                out[ann_id] = (shape.major_px, shape.minor_px)
    return out
