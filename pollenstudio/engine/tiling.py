"""Image -> model input geometry: intensity scaling, letterbox, tiles, and merging tiles.

Pure numpy + OpenCV, no torch, so it is cheap to test and reusable by the GUI.

Pipeline for one image (see :mod:`pollenstudio.engine.predict`):

1. :func:`intensity_range` once per image (16-bit: robust percentiles on a subsample, so a
   12-bit camera in a 16-bit container is not left black and one hot pixel does not
   darken everything), then :func:`to_model_uint8` per tile or whole image: 8-bit RGB,
   grey repeated to 3 channels. Scaling is computed on the whole image, never per tile,
   so neighbouring tiles see the same contrast.
2. :func:`plan_tiles` when the image is much larger than the model input: overlapping tiles
   covering the image, each letterboxed to the model input size.
3. :func:`letterbox`: keep the aspect ratio, pad to a square model input; boxes are mapped
   back with :meth:`Letterbox.to_source`.
4. :func:`merge_tile_detections`: a grain cut by a tile border is reported once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # grey padding around letterboxed images (the YOLO-family convention)

# 16-bit scaling percentiles: a dark speck or a saturated reflection should not set the range
LOW_PERCENTILE = 0.1
HIGH_PERCENTILE = 99.9


# ----------------------------------------------------------------------------------------
# intensity
# ----------------------------------------------------------------------------------------


def intensity_range(img: np.ndarray) -> tuple[float, float] | None:
    """Display/model range for a 16-bit image: (low, high) percentiles; None for 8-bit.

    Percentiles come from a strided subsample (about 1000x1000 pixels) so a 20000x20000
    slide scan is not sorted in full.
    """
    if img.dtype == np.uint8:
        return None
    step = max(1, int(math.ceil(max(img.shape[0], img.shape[1]) / 1024)))
    sample = img[::step, ::step]
    lo, hi = np.percentile(sample, (LOW_PERCENTILE, HIGH_PERCENTILE))
    lo, hi = float(lo), float(hi)
    if hi - lo < 1.0:  # a flat image: use the container range rather than divide by ~0
        lo, hi = float(sample.min()), float(max(sample.max(), sample.min() + 1))
    return lo, hi


def to_model_uint8(img: np.ndarray, rng: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W) or (H, W, 3), uint8 or uint16 -> (H, W, 3) uint8 RGB.

    16-bit values are mapped linearly from ``rng`` (see :func:`intensity_range`; computed
    here when not given) to 0..255 and clipped there, never wrapped.
    """
    if img.dtype != np.uint8:
        if rng is None:
            rng = intensity_range(img)
        lo, hi = rng  # type: ignore[misc]
        scale = 255.0 / max(hi - lo, 1e-6)
        img = np.clip((img.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected (H, W) or (H, W, 3) image, got {img.shape}")
    return np.ascontiguousarray(img)


# ----------------------------------------------------------------------------------------
# letterbox
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How a source region was placed in a square model input.

    model = (source - origin) * scale + pad; ``origin`` is the region's top-left corner in
    the whole image (non-zero for tiles)."""

    scale: float
    pad_x: float
    pad_y: float
    size: int  # model input side
    src_w: int
    src_h: int
    origin_x: float = 0.0
    origin_y: float = 0.0

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(n, 4) xyxy in model pixels -> whole-image pixels, clipped to the source region."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.pad_x) / self.scale
        b[:, [1, 3]] = (b[:, [1, 3]] - self.pad_y) / self.scale
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, self.src_w) + self.origin_x
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, self.src_h) + self.origin_y
        return b

    def to_model(self, boxes: np.ndarray) -> np.ndarray:
        """(n, 4) xyxy in whole-image pixels -> model pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.origin_x) * self.scale + self.pad_x
        b[:, [1, 3]] = (b[:, [1, 3]] - self.origin_y) * self.scale + self.pad_y
        return b

    @property
    def content(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the image content inside the model input, integer pixels."""
        x0, y0 = int(round(self.pad_x)), int(round(self.pad_y))
        return x0, y0, x0 + int(round(self.src_w * self.scale)), y0 + int(round(self.src_h * self.scale))

    def map_to_source(self, heat: np.ndarray) -> np.ndarray:
        """(size, size) map over the model input -> (src_h, src_w) map over the source region
        (padding cut away, resized back)."""
        x0, y0, x1, y1 = self.content
        crop = heat[y0:y1, x0:x1]
        if crop.size == 0:
            return np.zeros((self.src_h, self.src_w), np.float32)
        return cv2.resize(crop.astype(np.float32), (self.src_w, self.src_h), interpolation=cv2.INTER_LINEAR)


def letterbox(
    img: np.ndarray, size: int, origin: tuple[float, float] = (0.0, 0.0), upscale: bool = True
) -> tuple[np.ndarray, Letterbox]:
    """(h, w, 3) uint8 -> ((size, size, 3) uint8, Letterbox), aspect ratio kept, centred.
    ``upscale=False``: a smaller image is padded, never enlarged (calibrated detection)."""
    h, w = img.shape[:2]
    scale = min(size / h, size / w)
    if not upscale:
        scale = min(scale, 1.0)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    px, py = (size - nw) // 2, (size - nh) // 2
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[py : py + nh, px : px + nw] = img
    # exact scale per axis differs from `scale` by rounding; use the realised one
    info = Letterbox(
        scale=nw / w if w >= h else nh / h,
        pad_x=float(px),
        pad_y=float(py),
        size=size,
        src_w=w,
        src_h=h,
        origin_x=float(origin[0]),
        origin_y=float(origin[1]),
    )
    return out, info


# ----------------------------------------------------------------------------------------
# tiles
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """A window (x0, y0, x1, y1) of the whole image; ``inner_*`` marks sides that border
    another tile (a box touching such a side may be a grain cut in two)."""

    x0: int
    y0: int
    x1: int
    y1: int
    inner_left: bool
    inner_top: bool
    inner_right: bool
    inner_bottom: bool

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    n = int(math.ceil((length - overlap) / (tile - overlap)))
    n = max(n, 2)
    # evenly spread so every pair overlaps by at least `overlap` and the last tile ends at
    # the border (no thin sliver tile)
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def plan_tiles(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping ``tile`` x ``tile`` windows covering a width x height image, row-major.

    Neighbouring tiles overlap by at least ``overlap`` pixels; choose it at least as large
    as the largest grain so every grain lies whole inside some tile.
    """
    if tile <= 0:
        raise ValueError("tile size must be positive")
    overlap = int(min(max(overlap, 0), tile - 1))
    xs, ys = _starts(width, tile, overlap), _starts(height, tile, overlap)
    tiles = []
    for y in ys:
        for x in xs:
            x1, y1 = min(x + tile, width), min(y + tile, height)
            tiles.append(Tile(x, y, x1, y1, x > 0, y > 0, x1 < width, y1 < height))
    return tiles


def resolve_tile_size(mode: str | int | None, width: int, height: int, imgsz: int) -> int | None:
    """Tile side in image pixels, or None to run the whole image in one letterbox.

    ``"auto"``: tile at native resolution (tile = model input) only when the image is more
    than twice the model input on its longer side: a camera frame up to that size is
    letterboxed (downscaled at most 2x, as in training on whole frames), a slide scan is
    tiled so small grains keep their pixels. ``"off"``/None/0: never tile. An int: tile
    side in image pixels (each tile is then letterboxed to the model input).
    """
    if mode is None:
        return None
    if isinstance(mode, str):
        m = mode.strip().lower()
        if m in ("off", "none", "0", ""):
            return None
        if m == "auto":
            return imgsz if max(width, height) > 2 * imgsz else None
        try:
            mode = int(m)
        except ValueError:
            raise ValueError(f"tile must be 'auto', 'off' or a size in pixels, got {mode!r}") from None
    n = int(mode)
    if n <= 0:
        return None
    if n < 64:
        raise ValueError(f"tile size {n} px is too small; use at least 64 px")
    return n if max(width, height) > n else None


# ----------------------------------------------------------------------------------------
# merging detections across tiles
# ----------------------------------------------------------------------------------------


def _cut_sides(boxes: np.ndarray, tile: Tile, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(n,) bool pair: box (whole-image xyxy) touches a left/right side of ``tile`` that
    borders another tile, and a top/bottom one."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cut_x = (tile.inner_left & (b[:, 0] <= tile.x0 + margin)) | (tile.inner_right & (b[:, 2] >= tile.x1 - margin))
    cut_y = (tile.inner_top & (b[:, 1] <= tile.y0 + margin)) | (tile.inner_bottom & (b[:, 3] >= tile.y1 - margin))
    return cut_x, cut_y


def truncated_at_inner_edge(boxes: np.ndarray, tile: Tile, margin: float) -> np.ndarray:
    """(n,) bool: box (whole-image xyxy) touches a side of ``tile`` that borders another tile."""
    cut_x, cut_y = _cut_sides(boxes, tile, margin)
    return cut_x | cut_y


def _pairwise_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection-over-smaller between one box a (4,) and boxes b (n, 4)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
    area_b = np.clip((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9, None)
    iou = inter / (area_a + area_b - inter)
    ios = inter / np.minimum(area_a, area_b)
    return iou, ios


def join_fragments(
    boxes: np.ndarray,
    scores: np.ndarray,
    tile_index: np.ndarray,
    tiles: list[Tile],
    edge_margin: float = 2.0,
    aligned: float = 0.7,
) -> tuple[np.ndarray, np.ndarray]:
    """Pieces of one grain larger than the tile overlap, joined into one box.

    A grain wider than the overlap is seen whole by no tile: each neighbour reports the part
    it sees, cut at its inner side. Two such boxes from different tiles, both cut at a side
    of the same orientation, overlapping, and lined up along the cut (their extents along it
    overlap by at least ``aligned`` of the shorter) are the two halves of one grain: the better-scored
    one becomes their union, the other is dropped. Repeats until nothing joins (a grain
    across a tile corner has four pieces).

    Returns ``(boxes, keep)``: a copy of the boxes with unions written in, and a bool mask of
    the boxes that remain. Grains that some tile saw whole are untouched (not cut).
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    keep = np.ones(n, dtype=bool)
    if n < 2 or not tiles:
        return boxes, keep
    scores = np.asarray(scores, dtype=np.float64)
    tile_index = np.asarray(tile_index, dtype=np.int64)
    cut_x = np.zeros(n, dtype=bool)  # cut by a left/right inner side
    cut_y = np.zeros(n, dtype=bool)  # cut by a top/bottom inner side
    for ti, tile in enumerate(tiles):
        m = tile_index == ti
        if m.any():
            cut_x[m], cut_y[m] = _cut_sides(boxes[m], tile, edge_margin)
    cut = cut_x | cut_y
    changed = True
    while changed:
        changed = False
        for i in np.argsort(-scores, kind="stable"):
            if not (keep[i] and cut[i]):
                continue
            for j in np.nonzero(keep & cut & (tile_index != tile_index[i]))[0]:
                if j == i:
                    continue
                a, b = boxes[i], boxes[j]
                ix = min(a[2], b[2]) - max(a[0], b[0])
                iy = min(a[3], b[3]) - max(a[1], b[1])
                if ix <= 0 or iy <= 0:
                    continue
                along_x = ix / max(min(a[2] - a[0], b[2] - b[0]), 1e-9)
                along_y = iy / max(min(a[3] - a[1], b[3] - b[1]), 1e-9)
                side_by_side = cut_x[i] and cut_x[j] and along_y >= aligned
                stacked = cut_y[i] and cut_y[j] and along_x >= aligned
                if not (side_by_side or stacked):
                    continue
                boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                keep[j] = False
                changed = True
    return boxes, keep


def merge_tile_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    tile_index: np.ndarray,
    tiles: list[Tile],
    iou: float = 0.5,
    contain: float = 0.6,
    edge_margin: float = 2.0,
) -> np.ndarray:
    """Indices of the detections to keep after tiled inference, best first.

    boxes: (n, 4) whole-image xyxy; scores: (n,); tile_index: (n,) tile of each box.

    Within one tile the detector's own NMS has already decided, so only boxes from
    *different* tiles suppress each other. Greedy, in order of preference: a box that does
    not touch an inner tile side (the tile saw the grain whole) beats one that does (a
    grain cut by the border), then higher score. A kept box suppresses boxes of other tiles
    with IoU > ``iou`` or whose intersection covers more than ``contain`` of the smaller box
    (a half grain inside the whole one has low IoU but high containment). Class-agnostic:
    the same grain seen cut in one tile may be labelled differently there.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    tile_index = np.asarray(tile_index, dtype=np.int64)
    trunc = np.zeros(n, dtype=bool)
    for ti, tile in enumerate(tiles):
        m = tile_index == ti
        if m.any():
            trunc[m] = truncated_at_inner_edge(boxes[m], tile, edge_margin)
    order = np.lexsort((-scores, trunc))  # untruncated first, then by score
    alive = np.ones(n, dtype=bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        others = alive & (tile_index != tile_index[i])
        others[i] = False
        idx = np.nonzero(others)[0]
        if len(idx):
            iou_v, ios_v = _pairwise_overlap(boxes[i], boxes[idx])
            alive[idx[(iou_v > iou) | (ios_v > contain)]] = False
        alive[i] = False
    return np.asarray(keep, dtype=np.int64)


# ----------------------------------------------------------------------------------------
# blank tiles: what holds no grain is not run through the model
# ----------------------------------------------------------------------------------------

# Tuned on synthetic 1536x1024 scans of every difficulty preset, grains 6-10, 10-20 and
# 30-72 px across, no clutter, 3 seeds each (local contrast as computed below, 8-bit grey):
#   weakest grain's peak: easy 16.3, default 20.7, hard 12.9 (6-10 px grains)
#   plain background: median 0.69 / 0.76 / 0.94, 99.99th percentile 3.9 / 4.5 / 5.8
# so the threshold max(5, 7 x median) (easy/default 5.3, hard 6.6) sits at about half the
# faintest, smallest grain and above nearly all of the background
# (tests/unit/test_blank_tiles.py checks that no tile with a grain pixel is ever skipped).
BLANK_STEP = 4  # content test on a 1/4 downscaled image: ~3 M pixels for an 8000x6000 scan
BLANK_NOISE_K = 7.0  # content = local contrast above this many times its image median ...
BLANK_MIN_CONTRAST = 5.0  # ... and at least this many grey levels (8-bit, after downscaling)


def content_map(
    img: np.ndarray, rng: tuple[float, float] | None = None, step: int = BLANK_STEP, min_extent: float | None = None
) -> np.ndarray:
    """(ceil(h/step), ceil(w/step)) bool: True where the image holds something (a grain, debris,
    an edge), False on plain background (mounting medium with its slow illumination change
    and camera noise).

    Cheap: the image is reduced ``step`` x by area averaging (which also averages away most
    camera noise), converted to grey the way the model sees it (``rng``: 16-bit scaling),
    and each pixel's local contrast, |pixel - local background| with the background a wide
    median, is compared with a noise level estimated on the image itself (a low percentile of
    the local contrast: its median, which a scan must be more than half covered to raise). The map is dilated by two
    reduced pixels so a grain's faint outer halo counts as content too.

    ``min_extent`` (image px): content pieces too small to be a grain at least this large
    are ignored - specks of dust, smaller than any grain the model was trained on, which
    otherwise make nearly every tile of a real scan "not blank". The predictor passes 0.8 x
    the smallest trained grain size (see ``Predictor.speck_px``); None keeps all.
    """
    small = reduced_grey(img, rng, step)
    return content_of_reduced(small, max(1, int(step)), min_extent)


def reduced_grey(img: np.ndarray, rng: tuple[float, float] | None = None, step: int = BLANK_STEP) -> np.ndarray:
    """(ceil(h/step), ceil(w/step)) float32 grey, 0..255 as the model sees it: ``img``
    reduced ``step`` x by area averaging, channels averaged, 16-bit scaled by ``rng``."""
    h, w = img.shape[:2]
    step = max(1, int(step))
    sw, sh = max(1, -(-w // step)), max(1, -(-h // step))
    # grey first (cheap channel mean on the full image would cost as much as the resize):
    # resize the colour image, then average its channels
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA) if step > 1 else img
    small = small.astype(np.float32)
    if small.ndim == 3:
        small = small.mean(axis=2)
    if img.dtype != np.uint8:
        lo, hi = rng if rng is not None else intensity_range(img)  # type: ignore[misc]
        small = np.clip((small - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255)
    return small


def content_of_reduced(small: np.ndarray, step: int, min_extent: float | None = None) -> np.ndarray:
    """:func:`content_map` of an image already reduced ``step`` x to grey (:func:`reduced_grey`,
    or a slide's pyramid level read at that scale): the same rule, so a whole-slide job can
    judge its tiles from the file's own low-resolution level without decoding the slide.
    A float32 ``small`` is used up (overwritten in place), so a slide's map costs about three
    copies of it at most."""
    small = np.asarray(small, dtype=np.float32)
    sh, sw = small.shape[:2]
    cv2.GaussianBlur(small, (3, 3), 0.8, dst=small)
    # local background: a wide median ignores grains up to about half its window (grains
    # larger than that still show their rims and texture, which is what is detected)
    k = 31 if min(sh, sw) >= 31 else max(3, (min(sh, sw) // 2) * 2 - 1)
    if k >= 3:
        grey8 = np.empty(small.shape, np.uint8)
        np.clip(small, 0, 255, out=grey8, casting="unsafe")  # clipped, then cut to integers
        bg = cv2.medianBlur(grey8, k)
        del grey8
        contrast = np.abs(np.subtract(small, bg, out=small), out=small)  # small is not needed after this
        del bg
    else:
        contrast = np.zeros_like(small)
    noise = float(np.percentile(contrast, 50)) if contrast.size else 0.0
    thr = max(BLANK_MIN_CONTRAST, BLANK_NOISE_K * noise)
    mask = (contrast > thr).astype(np.uint8)
    del contrast, small
    if min_extent is not None and min_extent > step:
        # measured on generated grains at every difficulty: a grain of D px leaves a piece of
        # at least D / step + 1 reduced pixels (the smoothing widens it), an isolated dark
        # speck of 3 px one of at most 3
        mask = _drop_small_pieces(mask, float(min_extent) / step + 1.0)
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    return mask.astype(bool)


def _drop_small_pieces(mask: np.ndarray, min_extent: float) -> np.ndarray:
    """``mask`` without its 8-connected pieces whose bounding box is under ``min_extent``
    pixels on both sides."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return mask
    keep = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) >= min_extent
    keep[0] = False  # background
    return keep[labels].astype(np.uint8)


def blank_tiles(tiles: list[Tile], cmap: np.ndarray, step: int = BLANK_STEP) -> np.ndarray:
    """(len(tiles),) bool: True for a tile whose window holds no content in ``cmap``
    (see :func:`content_map`) and so can be skipped."""
    out = np.zeros(len(tiles), dtype=bool)
    if not tiles:
        return out
    # integral image: any content in a window in O(1)
    ii = np.zeros((cmap.shape[0] + 1, cmap.shape[1] + 1), np.int64)
    ii[1:, 1:] = cmap.astype(np.int64).cumsum(0).cumsum(1)
    for i, t in enumerate(tiles):
        x0, y0 = t.x0 // step, t.y0 // step
        x1, y1 = min(-(-t.x1 // step), cmap.shape[1]), min(-(-t.y1 // step), cmap.shape[0])
        s = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
        out[i] = s == 0
    return out
