"""Display pyramid for large images (numpy + OpenCV, no Qt).

A 16000 x 16000 RGB slide scan is 768 MB; drawing it whole at every pan is what makes
other viewers crawl. Level k holds the image shrunk by 2**k (area averaging, so fine
texture does not alias); the canvas shows the coarsest level as an overview and, on top,
only the visible window cut from the level that matches the zoom.

Two sources share that interface (``overview``, ``overview_level``, ``level_for(zoom)``,
``crop(level, x1, y1, x2, y2)``, ``window(x1, y1, x2, y2)``): :class:`DisplayImage`, a
pyramid built from a decoded array (camera fields, small images), and :class:`SlideImage`,
a whole-slide scan read lazily from the file's own levels (``core.slide``): its overview
is a thumbnail of the smallest level, and a crop reads only the tiles it covers. A crop of
a slide may take a tenth of a second, so the canvas reads those off the GUI thread
(``lazy`` says which kind a source is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OVERVIEW_MAX = 2048  # px: the overview level is the first one no larger than this


def build_levels(img: np.ndarray, overview_max: int = OVERVIEW_MAX, token=None) -> list[np.ndarray]:
    """levels[0] is ``img`` itself; each next level halves both sides until the longer
    side fits ``overview_max``."""
    import cv2

    levels = [img]
    while max(levels[-1].shape[:2]) > overview_max:
        if token is not None:
            token.check()
        prev = levels[-1]
        h, w = prev.shape[:2]
        nxt = cv2.resize(prev, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        levels.append(np.ascontiguousarray(nxt))
    return levels


def auto_levels(img: np.ndarray) -> tuple[float, float]:
    """Display range: full range for 8-bit, 0.1/99.9 percentiles for 16-bit (a 12-bit
    camera in a 16-bit file would otherwise look black)."""
    if img.dtype == np.uint8:
        return (0.0, 255.0)
    step = max(1, max(img.shape[:2]) // 1024)
    lo, hi = np.percentile(img[::step, ::step], (0.1, 99.9))
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def to_display(arr: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """Map ``arr`` through display ``levels`` (lo -> 0, hi -> 255, clipped) to C-contiguous
    uint8, so the ImageItem takes its fast path (no LUT) and 16-bit data costs one or two
    SIMD passes per cut."""
    import cv2

    lo, hi = float(levels[0]), float(levels[1])
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.uint8 and lo == 0.0 and hi == 255.0:
        return arr
    alpha = 255.0 / max(hi - lo, 1e-6)
    if arr.dtype == np.uint8:
        lut = np.clip((np.arange(256, dtype=np.float32) - lo) * alpha, 0, 255).round().astype(np.uint8)
        return cv2.LUT(arr, lut)
    if lo >= 0:
        # saturating subtract first: convertScaleAbs takes |a*x+b|, which would fold values
        # below ``lo`` back up instead of clipping them to black
        # (``lo`` snapped to a whole grey level: sub-level shifts are invisible in 16-bit)
        nch = 1 if arr.ndim == 2 else arr.shape[2]
        shifted = cv2.subtract(arr, (float(math.ceil(lo)),) * nch + (0.0,) * (4 - nch))
        return cv2.convertScaleAbs(shifted, alpha=alpha)
    return np.clip((arr.astype(np.float32) - lo) * alpha, 0, 255).astype(np.uint8)


def adjust_levels(base: tuple[float, float], brightness: float, contrast: float) -> tuple[float, float]:
    """Levels after brightness (-1..1, fraction of the range, positive = brighter) and
    contrast (factor > 0, 2 = twice as steep)."""
    lo, hi = base
    span = (hi - lo) / max(contrast, 1e-3)
    centre = (lo + hi) / 2.0 - brightness * (hi - lo)
    return (centre - span / 2.0, centre + span / 2.0)


@dataclass
class DisplayImage:
    """An image ready to show: its pyramid, size, bit depth and default levels."""

    levels: list[np.ndarray]
    width: int
    height: int
    bit_depth: int
    channels: int
    auto: tuple[float, float]
    name: str = ""
    lazy = False  # every level is in memory: crops are instant

    @classmethod
    def from_array(cls, img: np.ndarray, name: str = "", token=None) -> "DisplayImage":
        levels = build_levels(img, token=token)
        h, w = img.shape[:2]
        return cls(
            levels=levels,
            width=w,
            height=h,
            bit_depth=8 * img.dtype.itemsize,
            channels=1 if img.ndim == 2 else img.shape[2],
            auto=auto_levels(levels[-1]),
            name=name,
        )

    @property
    def overview_level(self) -> int:
        return len(self.levels) - 1

    @property
    def overview(self) -> np.ndarray:
        """The coarsest level: what the canvas shows under the detail."""
        return self.levels[-1]

    @property
    def nbytes(self) -> int:
        return sum(level.nbytes for level in self.levels)

    def window(self, x1: float, y1: float, x2: float, y2: float) -> tuple[np.ndarray | None, int, int]:
        """Full-resolution pixels of the image-px rectangle (clipped to the image) and the
        image position of their top-left pixel: what click-to-box and outlines read."""
        arr, (x, y, _w, _h) = self.crop(0, x1, y1, x2, y2)
        return arr, int(round(x)), int(round(y))

    def level_for(self, zoom: float) -> int:
        """Pyramid level for ``zoom`` screen px per image px: the one whose pixels are
        closest to screen pixels (0.7 to 1.4 level px per screen px), full resolution from
        zoom 0.7 up."""
        if zoom <= 0:
            return self.overview_level
        k = int(round(math.log2(max(1.0, 1.0 / zoom))))
        return min(k, self.overview_level)

    def crop(self, level: int, x1: float, y1: float, x2: float, y2: float):
        """Cut the window (image px) from ``level``, snapped outwards to level pixels.

        Returns ``(array, (x, y, w, h))``, the rectangle in image px the array covers
        (level pixel size 2**k image px; the last level pixel may cover a ragged edge).
        """
        arr = self.levels[level]
        s = 2**level
        lh, lw = arr.shape[:2]
        c0 = max(0, int(math.floor(x1 / s)))
        r0 = max(0, int(math.floor(y1 / s)))
        c1 = min(lw, int(math.ceil(x2 / s)))
        r1 = min(lh, int(math.ceil(y2 / s)))
        if c1 <= c0 or r1 <= r0:
            return None, (0.0, 0.0, 0.0, 0.0)
        # level size is floor(W / 2**k): scale back by the true ratio so edges line up
        sx, sy = self.width / lw, self.height / lh
        view = arr[r0:r1, c0:c1]
        return view, (c0 * sx, r0 * sy, (c1 - c0) * sx, (r1 - r0) * sy)


class SlideImage:
    """A whole-slide image shown from the file's own levels (see the module docstring).

    ``view`` is a plane index or ``"edf"`` (all-in-focus, computed over each crop). The
    overview is read once (a thumbnail of the smallest level at least ``overview_max``
    px, shrunk as it is read); the display range (``auto``) comes from it."""

    lazy = True

    def __init__(self, slide, view=0, name: str = "", overview_max: int = OVERVIEW_MAX, token=None,
                 path: str | None = None):
        self.slide = slide
        self.path = path  # the file (None: not known)
        self.view = view
        self.width, self.height = slide.width, slide.height
        self.bit_depth = slide.bit_depth
        self.channels = slide.channels
        self.name = name or slide.name
        if token is not None:
            token.check()
        ov = np.ascontiguousarray(slide.thumbnail(overview_max, plane=view))
        self.levels = [ov]  # the overview only (``levels[-1]`` is what other views read)
        self.auto = auto_levels(ov)
        self.overview_downsample = self.width / max(1, ov.shape[1])
        self.plane_index = None

    @property
    def overview(self) -> np.ndarray:
        return self.levels[0]

    @property
    def overview_level(self) -> int:
        """The index ``level_for`` returns when the overview is fine enough (no detail)."""
        return len(self.slide.levels)

    @property
    def nbytes(self) -> int:
        return self.overview.nbytes

    def level_for(self, zoom: float) -> int:
        """The file level whose pixels are closest to screen pixels at ``zoom`` (no coarser
        than 1.4 screen px per level px), or ``overview_level`` when the overview already
        is that fine."""
        if zoom <= 0:
            return self.overview_level
        want = 1.0 / zoom
        if self.overview_downsample <= want * 1.42:
            return self.overview_level
        return self.slide.level_for(want * 1.42)

    def crop(self, level: int, x1: float, y1: float, x2: float, y2: float):
        """The window (image px) read from file ``level`` (only the tiles it covers),
        snapped outwards to level pixels: ``(array, (x, y, w, h))`` as ``DisplayImage.crop``."""
        if level >= self.overview_level:
            ov = self.overview
            sx, sy = self.width / ov.shape[1], self.height / ov.shape[0]
            c0, r0 = max(0, int(math.floor(x1 / sx))), max(0, int(math.floor(y1 / sy)))
            c1, r1 = min(ov.shape[1], int(math.ceil(x2 / sx))), min(ov.shape[0], int(math.ceil(y2 / sy)))
            if c1 <= c0 or r1 <= r0:
                return None, (0.0, 0.0, 0.0, 0.0)
            return ov[r0:r1, c0:c1], (c0 * sx, r0 * sy, (c1 - c0) * sx, (r1 - r0) * sy)
        return self.slide.region0(x1, y1, x2, y2, level, self.view)

    def window(self, x1: float, y1: float, x2: float, y2: float) -> tuple[np.ndarray | None, int, int]:
        arr, (x, y, _w, _h) = self.slide.region0(max(0.0, x1), max(0.0, y1), x2, y2, 0, self.view)
        return arr, int(round(x)), int(round(y))


def is_slide_file(path, plane_files=None) -> bool:
    """Whether ``path`` may be a whole-slide file (a TIFF not split into plane files):
    only such files are opened as slides to find out."""
    return not plane_files and Path(str(path)).suffix.lower() in (".tif", ".tiff")


def shared_slide(path, plane_files=None):
    """The process's open :class:`~pollenstudio.core.slide.Slide` of ``path``
    (``core.slide.shared_slide``: shared with thumbnails, crops and jobs; never closed here)
    when it is a whole-slide file read by region, else None (the file is read whole, as
    before). Errors reading the file are ``ImageReadError``."""
    if not is_slide_file(path, plane_files):
        return None
    from pollenstudio.core.slide import shared_slide as core_shared

    slide = core_shared(path)
    return slide if slide.lazy else None


def open_display(path, name: str = "", view=0, token=None):
    """What the canvas shows of an image file: a :class:`SlideImage` for a whole-slide
    file (nothing decoded whole), else a :class:`DisplayImage` of the decoded image."""
    slide = shared_slide(path)
    if slide is not None:
        return SlideImage(slide, view=view, name=name or Path(str(path)).name, token=token, path=str(path))
    from pollenstudio.core.imageio import read_image

    img = read_image(path)
    if token is not None:
        token.check()
    return DisplayImage.from_array(img, name=name or Path(str(path)).name, token=token)
