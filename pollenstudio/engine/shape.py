"""A grain's outline and fitted ellipse from the image inside its box (issue 20, on request).

The outline is the region that stands out from the slide around the box (colour against
the crop's border and exine edges, Otsu, closed and filled: the classical segmentation of
``engine.segment``), taken at the box's centre, traced along its pixels' edges and
simplified to half a pixel; its size is measured by ``core.outline`` (area, the ellipse of
equal second moments), the same function that measures a stored outline. Long / short
axis ratio = P/E when the grain lies in equatorial view (a box cannot tell which axis is
polar). No model, milliseconds per grain. The GUI and ``pollenstudio report --outlines``
store the outline on the annotation (``Project.set_outlines``, one undoable step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pollenstudio.core.outline import outline_size
from pollenstudio.core.types import Box
from pollenstudio.engine.segment import _region_in_crop, _to_rgb8


MIN_CONTRAST = 8.0  # mean Lab difference from the background, inside or along the outline


@dataclass(frozen=True)
class GrainShape:
    major_px: float  # the outline's moment ellipse (``core.outline``): full axes, image pixels
    minor_px: float
    angle_deg: float  # of the major axis, from the image x axis
    centre: tuple[float, float]  # image pixels
    area_px: float  # inside the outline
    outline: np.ndarray  # (N, 2) float32 image pixels (a pixel spans [i, i + 1]), closed

    @property
    def ratio(self) -> float:
        return self.major_px / self.minor_px if self.minor_px > 0 else math.inf

    @property
    def polygon(self) -> list[float]:
        """The outline as stored (``Annotation.polygon``, COCO segmentation): flat x, y, 0.01 px."""
        return [round(float(v), 2) for v in self.outline.reshape(-1)]

    def describe(self, um_per_px: float | None = None) -> str:
        return outline_size(self.polygon).describe(um_per_px)


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
    return shape_of_mask(mask, x0, y0)


UPSAMPLE = 4  # the outline follows the mask's pixel edges to 1 / UPSAMPLE px
SIMPLIFY_PX = 0.5  # vertices dropped while the outline moves less than this (Douglas-Peucker)


def shape_of_mask(mask: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> GrainShape | None:
    """The outline of the largest region of ``mask`` (uint8, its top-left pixel at image
    (x0, y0)) along the pixels' edges, simplified to ``SIMPLIFY_PX``, and its ellipse."""
    big = cv2.resize(mask, None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, SIMPLIFY_PX * UPSAMPLE, True)
    if len(c) < 3:
        return None
    # sub-pixel centres at 4x lie 1/8 px inside the mask's edge: + 0.5 of a 4x pixel
    pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / UPSAMPLE + np.array([x0, y0])
    pts = np.round(pts, 2).astype(np.float32)
    size = outline_size(pts.reshape(-1))
    if size is None:
        return None
    return GrainShape(size.major_px, size.minor_px, size.angle_deg, size.centre, size.area_px, pts)

def measure_project(project, reviewed_only: bool = False, progress=None, remeasure: bool = False) -> dict[int, list[float]]:
    """Outlines {annotation id: flat polygon} of the confirmed grains on calibrated images
    (sizes need a scale) that have none stored yet (every one with ``remeasure``), reading
    each image once; store them with ``Project.set_outlines``. Unreadable images and grains
    where nothing stands out are left out (the report says how many were measured)."""
    from collections import defaultdict

    from pollenstudio.core.errors import ImageReadError
    from pollenstudio.core.slide import SlideArray, shared_slide

    have = set() if remeasure else set(project.outlines())
    by_image: dict[int, list] = defaultdict(list)
    for image_id, _g, _c, _w, _h, ump, _mv, ann_id in project.grain_table(reviewed_only=reviewed_only):
        if ump and ann_id not in have:
            by_image[image_id].append(ann_id)
    out: dict[int, list[float]] = {}
    for n, (image_id, ann_ids) in enumerate(sorted(by_image.items())):
        if progress is not None:
            progress.check()
            progress.update(n, len(by_image), "measuring outlines")
        try:  # read by region: a whole-slide scan gives the tiles under each grain only
            rec = project.image(image_id)
            slide = shared_slide(project.image_path(rec), project.plane_paths(rec))
        except ImageReadError:
            continue
        for ann_id in ann_ids:
            ann = project.annotation(ann_id)
            plane = ann.plane if ann.plane is not None and ann.plane < slide.planes else slide.planes // 2
            try:
                shape = fit_outline(SlideArray(slide, plane), ann.box)
            except ImageReadError:
                break
            if shape is not None:
                out[ann_id] = shape.polygon
    return out
