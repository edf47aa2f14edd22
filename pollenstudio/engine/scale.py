"""Grain-size calibration: show the model grains at the sizes it was trained on.

Slides come at many magnifications, and a detector only finds grains at sizes it has seen.
Every checkpoint trained here records ``grain_size_px``: the 5th-95th percentile of its
training grains' diameters (sqrt(w*h) of the boxes) *as the model saw them*, i.e. after the
training resize (frames up to twice the model input are letterboxed, larger ones tiled at
native resolution). When the user calibrates an image (typical grain diameter in pixels, or a
pixel scale in µm/px), detection resamples the image by

    factor = sqrt(lo * hi) / typical_grain_px      (clamped to 1/16 .. 4)

so the typical grain lands at the geometric centre of the trained range, runs the model on
the resampled image at native resolution (tiles when it is larger than the model input,
padding, never stretching, when smaller), and maps the boxes back by the exact per-axis
factors. Without a calibration detection behaves as before.

A pixel scale is turned into a typical grain size with :data:`TYPICAL_POLLEN_UM`: most pollen
types are 20-50 µm across, so 30 µm is the middle of that range. A lab whose grains are much
smaller or larger should calibrate with a drag over one typical grain instead.

A calibration belongs to a magnification, so it is kept per image (issue 28): an image's own
typical grain size (set for it, its sample or a selection), else its µm/px, else the
project's typical grain size for every image without its own (:func:`image_grain_px`).

Size plausibility (issue 28): once the typical grain size of an image is known, a box far
larger or smaller than it is hardly a grain (a 1500 px box over diatoms and mountant on a
field of 290 px grains). :func:`size_weights` multiplies a detection's score by 1 within
:data:`SIZE_BAND` (x1/3 .. x3 the typical diameter: the taxa of one slide, 10-100 µm around
a typical 30 µm) and by a weight falling linearly in log size to 0 at x1/5 and x5 beyond it;
what falls below the detection threshold is dropped and counted. The band widens to hold the
project's reviewed grains (:func:`size_band`), so a lab whose slides hold large grains keeps
them. The model's own training range is not used for this: it is where calibration puts the
typical grain, and a model trained on many magnifications spans x12 or more.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pollenstudio.core.errors import PollenStudioError

TYPICAL_POLLEN_UM = 30.0
MIN_FACTOR, MAX_FACTOR = 1.0 / 16.0, 4.0
SIZE_BAND = (1.0 / 3.0, 3.0)  # box diameter / typical grain diameter with full weight
SIZE_FADE = 5.0 / 3.0  # beyond the band the weight reaches 0 this factor further out (x1/5, x5)
MISMATCH = 2.0  # an image whose known grains are this much larger or smaller than its calibration is said so


class CalibrationError(PollenStudioError):
    """A calibration that cannot be used (bad value, or a model that records no grain sizes)."""


def model_input_scale(width: int, height: int, imgsz: int) -> float:
    """How much the training/detection size rule resizes a frame: letterboxed (<= 2x input)
    frames by imgsz / long side, tiled ones not at all."""
    long_side = max(int(width), int(height))
    return imgsz / long_side if long_side <= 2 * imgsz else 1.0


def grain_size_range(samples, imgsz: int, lo_pct: float = 5.0, hi_pct: float = 95.0) -> list[float] | None:
    """``[lo, hi]`` grain diameters in model-input pixels over training ``samples`` (objects
    with ``width``, ``height``, ``boxes`` (n, 4) xyxy); None without any box."""
    sizes = []
    for s in samples:
        b = np.asarray(s.boxes, np.float64).reshape(-1, 4)
        if len(b):
            d = np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
            sizes.append(d * model_input_scale(s.width, s.height, imgsz))
    if not sizes:
        return None
    d = np.concatenate(sizes)
    d = d[d > 0]
    if not len(d):
        return None
    return [round(float(np.percentile(d, lo_pct)), 1), round(float(np.percentile(d, hi_pct)), 1)]


def typical_grain_px(grain_px: float | None = None, um_per_px: float | None = None) -> float | None:
    """The typical grain diameter in image pixels from either calibration (grain size wins)."""
    if grain_px is not None:
        g = float(grain_px)
        if not (np.isfinite(g) and 2.0 <= g <= 20000.0):
            raise CalibrationError(f"typical grain size must be 2..20000 pixels, got {grain_px!r}")
        return g
    if um_per_px is not None:
        u = float(um_per_px)
        if not (np.isfinite(u) and 0.001 <= u <= 100.0):
            raise CalibrationError(f"pixel scale must be 0.001..100 µm per pixel, got {um_per_px!r}")
        return TYPICAL_POLLEN_UM / u
    return None


def resample_factor(model_range, grain_px: float) -> float:
    """Factor that brings a grain of ``grain_px`` to the middle of ``model_range`` ([lo, hi])."""
    if not model_range:
        raise CalibrationError(
            "this model does not record the grain sizes it was trained on, so detection cannot be "
            "calibrated; use a model trained with this version of PollenStudio (e.g. the grain model)"
        )
    lo, hi = (float(v) for v in model_range)
    return float(np.clip(np.sqrt(lo * hi) / float(grain_px), MIN_FACTOR, MAX_FACTOR))


def checkpoint_grain_range(path) -> list[float] | None:
    """``grain_size_px`` recorded in a checkpoint file, read from its header only (no torch,
    no weights loaded: cheap enough for a dialog). None when the file records none."""
    import json
    import struct
    from pathlib import Path

    try:
        with open(Path(path), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
        meta = json.loads(header.get("__metadata__", {}).get("meta", "{}"))
    except (OSError, ValueError, struct.error):
        return None
    rng = meta.get("grain_size_px") if isinstance(meta, dict) else None
    if isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) and v > 0 for v in rng):
        return [float(rng[0]), float(rng[1])]
    return None


@dataclass(frozen=True)
class Resample:
    """A resize by ``factor`` with the exact per-axis factors integer sizes give."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int

    @classmethod
    def by(cls, width: int, height: int, factor: float) -> "Resample":
        return cls(int(width), int(height), max(1, int(round(width * factor))), max(1, int(round(height * factor))))

    @property
    def fx(self) -> float:
        return self.dst_w / self.src_w

    @property
    def fy(self) -> float:
        return self.dst_h / self.src_h

    def apply(self, img: np.ndarray) -> np.ndarray:
        if (self.dst_w, self.dst_h) == (self.src_w, self.src_h):
            return img
        interp = cv2.INTER_AREA if self.dst_w < self.src_w else cv2.INTER_LINEAR
        return cv2.resize(img, (self.dst_w, self.dst_h), interpolation=interp)

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(n, 4) xyxy boxes in resampled pixels -> original pixels, clipped to the image."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4) / np.array([self.fx, self.fy, self.fx, self.fy])
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, self.src_w)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, self.src_h)
        return b


# ----------------------------------------------------------------------------------------
# calibration per image, size plausibility (issue 28)
# ----------------------------------------------------------------------------------------


def image_grain_px(rec, project_px: float | None = None) -> tuple[float | None, str]:
    """The typical grain diameter (px) detection calibrates image ``rec`` to, and where it
    comes from: "image" (its own, ``rec.grain_px``), "scale" (its µm/px, grains taken as
    :data:`TYPICAL_POLLEN_UM`), "project" (``project_px``: the project's, for every image
    without its own) or (None, "none"). A pixel scale outside what microscopes give is not a
    calibration."""
    own = getattr(rec, "grain_px", None)
    if own:
        return float(own), "image"
    ump = getattr(rec, "um_per_px", None)
    if ump:
        try:
            return typical_grain_px(um_per_px=ump), "scale"
        except CalibrationError:
            pass
    if project_px:
        return float(project_px), "project"
    return None, "none"


def box_diameters(boxes) -> np.ndarray:
    """sqrt(w * h) of (n, 4) xyxy boxes: the diameter the grain sizes are measured in."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))


def size_weights(diameters, grain_px: float, band=SIZE_BAND) -> np.ndarray:
    """Score multipliers (0..1) of boxes of ``diameters`` px on an image whose typical grain is
    ``grain_px`` px: 1 within ``band`` (ratios to the typical size), falling linearly in log
    size to 0 at ``band / SIZE_FADE`` and ``band * SIZE_FADE``."""
    d = np.asarray(diameters, np.float64).reshape(-1)
    lo, hi = (float(v) for v in band)
    r = np.log(np.maximum(d, 1e-9) / float(grain_px))
    over = np.maximum(r - np.log(hi), 0.0) + np.maximum(np.log(lo) - r, 0.0)
    return np.clip(1.0 - over / np.log(SIZE_FADE), 0.0, 1.0)


def size_band(ratios, min_grains: int = 10, band=SIZE_BAND) -> tuple[float, float]:
    """:data:`SIZE_BAND` widened to hold the project's reviewed grains: ``ratios`` = their
    diameters over their images' typical grain size. With at least ``min_grains`` of them, the
    band reaches 1.25x beyond their 1st and 99th percentiles where those lie outside it; it
    never narrows."""
    r = np.asarray([v for v in ratios if v and np.isfinite(v) and v > 0], np.float64)
    lo, hi = (float(v) for v in band)
    if len(r) < min_grains:
        return lo, hi
    q_lo, q_hi = np.percentile(r, [1.0, 99.0])
    return min(lo, float(q_lo) / 1.25), max(hi, float(q_hi) * 1.25)


def size_mismatch(grain_px: float, diameters, min_grains: int = 1) -> float | None:
    """The median of ``diameters`` (known grains of an image) over its calibrated typical
    size when it is more than :data:`MISMATCH` times off (the image is likely at another
    magnification than the one calibrated), else None."""
    d = np.asarray([v for v in diameters if v and np.isfinite(v) and v > 0], np.float64)
    if len(d) < max(1, int(min_grains)) or not grain_px:
        return None
    ratio = float(np.median(d)) / float(grain_px)
    return ratio if (ratio > MISMATCH or ratio < 1.0 / MISMATCH) else None

