"""A grain's outline (a closed polygon, flat ``x0, y0, x1, y1, ...`` in image pixels, as in
``Annotation.polygon`` and COCO's ``segmentation``) and what is measured from it: area and
the ellipse of the same second moments.

One definition for every place that shows or writes a grain's size from its outline: the
Selected box panel, the per-grain CSV, COCO's ``area`` and the count report. The ellipse is
the one whose area moments equal the polygon's (as scikit-image's ``regionprops``): full
axes ``4 * sqrt(eigenvalue)`` of the central second-moment matrix, so a drawn ellipse is
measured back exactly and the result does not depend on how densely the outline is
sampled. Long / short axis = P/E when the grain lies in equatorial view.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pollenstudio.core.errors import ProjectError

MAX_POINTS = 4096  # a stored outline's vertices (the fitted ones are simplified to ~1 px)


def _xy(poly) -> np.ndarray:
    a = np.asarray(poly, dtype=np.float64).reshape(-1)
    return a.reshape(-1, 2)


def polygon_area(poly) -> float:
    """Area inside a flat polygon (shoelace), px²; 0 for fewer than 3 points."""
    p = _xy(poly)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0)


def check_outline(poly: Iterable[float]) -> list[float]:
    """The outline as a list of floats, or ``ProjectError`` saying what is wrong."""
    try:
        vals = [float(v) for v in poly]
    except (TypeError, ValueError):
        raise ProjectError("an outline is a list of numbers x0, y0, x1, y1, ...") from None
    if len(vals) % 2 or len(vals) < 6:
        raise ProjectError(f"an outline needs at least 3 points as x, y pairs; got {len(vals)} numbers")
    if len(vals) > 2 * MAX_POINTS:
        raise ProjectError(f"an outline has at most {MAX_POINTS} points; got {len(vals) // 2}")
    if not all(math.isfinite(v) for v in vals):
        raise ProjectError("an outline's coordinates must be finite numbers")
    if polygon_area(vals) <= 0.0:
        raise ProjectError("the outline encloses no area")
    return vals


@dataclass(frozen=True)
class OutlineSize:
    major_px: float  # full axes of the ellipse of equal second moments, px
    minor_px: float
    angle_deg: float  # of the major axis from the image x axis (y down), 0-180
    centre: tuple[float, float]  # centroid, image px
    area_px: float  # inside the outline, px²

    @property
    def ratio(self) -> float:
        """Long / short axis (P/E for a grain in equatorial view)."""
        return self.major_px / self.minor_px if self.minor_px > 0 else math.inf

    def in_um(self, um_per_px: float) -> tuple[float, float, float]:
        """(major µm, minor µm, area µm²)."""
        return self.major_px * um_per_px, self.minor_px * um_per_px, self.area_px * um_per_px * um_per_px

    def describe(self, um_per_px: float | None = None) -> str:
        if um_per_px:
            ma, mi, ar = self.in_um(um_per_px)
            return f"ellipse {ma:.1f} × {mi:.1f} µm, area {ar:.0f} µm², long/short {self.ratio:.2f}"
        return (f"ellipse {self.major_px:.0f} × {self.minor_px:.0f} px, area {self.area_px:.0f} px², "
                f"long/short {self.ratio:.2f}")


def outline_size(poly) -> OutlineSize | None:
    """Area and moment ellipse of a flat polygon; None when it encloses no area."""
    p = _xy(poly)
    if len(p) < 3:
        return None
    x0, y0 = p[:, 0], p[:, 1]
    ox, oy = float(x0.mean()), float(y0.mean())  # moments about a point inside: no cancellation
    x0, y0 = x0 - ox, y0 - oy
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = x0 * y1 - x1 * y0
    a = cross.sum() / 2.0  # signed: either winding works
    if not abs(a) > 1e-9:
        return None
    cx = ((x0 + x1) * cross).sum() / (6.0 * a)
    cy = ((y0 + y1) * cross).sum() / (6.0 * a)
    ixx = ((x0 * x0 + x0 * x1 + x1 * x1) * cross).sum() / (12.0 * a)
    iyy = ((y0 * y0 + y0 * y1 + y1 * y1) * cross).sum() / (12.0 * a)
    ixy = ((x0 * y1 + 2 * x0 * y0 + 2 * x1 * y1 + x1 * y0) * cross).sum() / (24.0 * a)
    mu20, mu02, mu11 = ixx - cx * cx, iyy - cy * cy, ixy - cx * cy
    half = (mu20 + mu02) / 2.0
    d = math.sqrt(max(0.0, ((mu20 - mu02) / 2.0) ** 2 + mu11 * mu11))
    l1, l2 = half + d, max(0.0, half - d)
    angle = math.degrees(0.5 * math.atan2(2.0 * mu11, mu20 - mu02)) % 180.0
    return OutlineSize(4.0 * math.sqrt(max(l1, 0.0)), 4.0 * math.sqrt(l2), angle,
                       (float(cx + ox), float(cy + oy)), float(abs(a)))
