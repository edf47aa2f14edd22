"""Whole-slide images read lazily: regions of a pyramidal TIFF's own levels, tile by tile.

Slide scanners write a slide as a tiled TIFF (BigTIFF past 4 GB) holding the full
resolution and a pyramid of reduced copies (generic pyramidal TIFF, OME-TIFF with SubIFDs,
Aperio SVS, Hamamatsu NDPI; tifffile reads them all, JPEG tiles through imagecodecs). A
17,832 x 15,029 RGB scan is 800 MB decoded and a 9-plane one 7 GB, so nothing here decodes
a level whole: :meth:`Slide.region` reads only the tiles (or strips) that overlap the
asked rectangle, through a small LRU cache of decoded tiles, and every caller (canvas,
thumbnails, crops, detection) asks for the rectangle it needs.

Why not zarr over ``tifffile.aszarr``: it would add a dependency (and zarr 2/3 API churn)
for what ``TiffPage.decode`` and ``FileHandle.read_segments`` already do in a few lines;
why not OpenSlide: it reads no OME-TIFF focal planes and no 16-bit data, it does not see
the SubIFD pyramid of the real slide (one level), and on that slide tifffile read random
regions faster with identical pixels (bench/slide_reader.py, bench/results/slide_reader.txt).

The same API serves every image a project holds, so callers need no second path: a JPEG or
PNG field (small by nature) is decoded once on first use and cut from memory; a focal
stack's planes (one TIFF, or plane files) are planes of the slide; ``"edf"`` and ``"best"``
are computed over the asked region only.

Coordinates: ``region(x, y, w, h, level)`` takes the rectangle in that level's pixels;
``region0(x1, y1, x2, y2, level)`` takes level-0 (image) pixels, as boxes are stored, and
returns the covering level pixels with the image-pixel rectangle they cover.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pollenstudio.core.errors import ImageReadError
from pollenstudio.core.imageio import _normalise_layout, _quiet, closed_on_error, open_tiff
from pollenstudio.core.stack import BEST, EDF, FocalStack, _page_layout, edf_composite, focus_measure

_TIFF = (".tif", ".tiff")
# A TIFF at least this large (level 0, pixels) is read tile by tile even without a pyramid
# of its own; smaller files are decoded whole on first use, which is faster for a field.
LAZY_MIN_PIXELS = 64_000_000
TILE_CACHE_BYTES = 96 * 1024 * 1024  # decoded tiles kept per open slide (LRU)


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    downsample: float  # level-0 pixels per level pixel (x; y is within a pixel of it)


class _TiledPage:
    """Region reads from one TIFF page (tiled or stripped), segment by segment."""

    def __init__(self, tif, page, lock: threading.Lock, cache: "_TileCache"):
        self.tif = tif
        self.page = page.keyframe if hasattr(page, "keyframe") and page.keyframe is not None else page
        self.offsets = page.dataoffsets
        self.counts = page.databytecounts
        self.lock = lock
        self.cache = cache
        kp = self.page
        shape = kp.shaped  # (separate samples, depth, length, width, contig samples)
        self.height, self.width = int(shape[2]), int(shape[3])
        self.separate = int(shape[0]) if kp.planarconfig == 2 else 1
        if kp.is_tiled:
            self.seg_h, self.seg_w = int(kp.tilelength), int(kp.tilewidth)
        else:
            self.seg_h, self.seg_w = int(kp.rowsperstrip or self.height), self.width
            self.seg_h = min(self.seg_h, self.height)
        self.across = math.ceil(self.width / self.seg_w)
        self.down = math.ceil(self.height / self.seg_h)
        self.per_sample = self.across * self.down
        self.key = (id(self), )

    def _segments(self, indices: list[int]) -> dict[int, np.ndarray]:
        """Decoded segments by index (cached)."""
        out, missing = {}, []
        for i in indices:
            hit = self.cache.get((self.key, i))
            if hit is not None:
                out[i] = hit
            else:
                missing.append(i)
        if missing:
            kp = self.page
            offs = [self.offsets[i] for i in missing]
            cnts = [self.counts[i] for i in missing]
            with self.lock:
                raw = list(self.tif.filehandle.read_segments(offs, cnts, indices=missing, lock=self.lock))
            for data, i in raw:
                if data is None or self.counts[i] == 0:
                    seg = None  # a sparse tile: absent from the file, reads as zeros
                else:
                    seg, _, _ = kp.decode(data, i, jpegtables=kp.jpegtables, jpegheader=kp.jpegheader)
                    seg = seg.reshape(seg.shape[-3:]) if seg.ndim > 3 else seg
                out[i] = seg
                if seg is not None:
                    self.cache.put((self.key, i), seg)
        return out

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels [y, y+h) x [x, x+w) of this page as stored (H, W, samples), clipped to it."""
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + w), min(self.height, y + h)
        kp = self.page
        samples = int(kp.shaped[4]) * self.separate
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0), samples), dtype=kp.dtype)
        if x1 <= x0 or y1 <= y0:
            return out
        c0, c1 = x0 // self.seg_w, (x1 - 1) // self.seg_w
        r0, r1 = y0 // self.seg_h, (y1 - 1) // self.seg_h
        want = []
        for s in range(self.separate):
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    want.append(s * self.per_sample + r * self.across + c)
        segs = self._segments(want)
        for idx in want:
            seg = segs.get(idx)
            if seg is None:
                continue
            s, rest = divmod(idx, self.per_sample)
            r, c = divmod(rest, self.across)
            sy, sx = r * self.seg_h, c * self.seg_w
            ys0, ys1 = max(y0, sy), min(y1, sy + self.seg_h, sy + seg.shape[0])
            xs0, xs1 = max(x0, sx), min(x1, sx + self.seg_w, sx + seg.shape[1])
            if ys1 <= ys0 or xs1 <= xs0:
                continue
            block = seg[ys0 - sy:ys1 - sy, xs0 - sx:xs1 - sx]
            if self.separate > 1:
                out[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0, s] = block[..., 0]
            else:
                out[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0] = block
        return out


class _TileCache:
    """An LRU of decoded segments, bounded in bytes, shared by a slide's pages."""

    def __init__(self, limit: int = TILE_CACHE_BYTES):
        self.limit = limit
        self.size = 0
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            arr = self.items.get(key)
            if arr is not None:
                self.items.move_to_end(key)
            return arr

    def put(self, key, arr: np.ndarray) -> None:
        with self.lock:
            if key in self.items:
                return
            self.items[key] = arr
            self.size += arr.nbytes
            while self.size > self.limit and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.size -= old.nbytes

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.size = 0


class Slide:
    """One image of a project, read by region. Open with :meth:`open`; close (or use as a
    context manager) to release the file. Thread-safe: file reads take one lock, decoding
    happens outside it."""

    def __init__(self, name: str, width: int, height: int, bit_depth: int, channels: int, planes: int,
                 levels: Sequence[Level], lazy: bool):
        self.name = name
        self.width, self.height = int(width), int(height)
        self.bit_depth, self.channels, self.planes = int(bit_depth), int(channels), int(planes)
        self.levels = tuple(levels)
        self.lazy = lazy  # True: read tile by tile from the file; False: decoded whole once
        self._tif = None
        self._pages: list[list[list[_TiledPage]]] = []  # [level][plane] -> pages composing it
        self._stack: FocalStack | None = None
        self._whole: dict[int, np.ndarray] = {}
        self._whole_lock = threading.Lock()
        self._cache = _TileCache()
        self._lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, plane_files: Sequence[str | os.PathLike] | None = None,
             lazy_min_pixels: int = LAZY_MIN_PIXELS) -> "Slide":
        p = Path(path)
        if not plane_files and p.suffix.lower() in _TIFF and p.is_file():
            slide = cls._open_tiff(p, lazy_min_pixels)
            if slide is not None:
                return slide
        if plane_files and all(Path(f).suffix.lower() in _TIFF and Path(f).is_file() for f in plane_files):
            slide = cls._open_plane_slides(p, [Path(f) for f in plane_files], lazy_min_pixels)
            if slide is not None:
                return slide
        stack = FocalStack.open(p, plane_files=plane_files)
        info = stack.info
        slide = cls(p.name, info.width, info.height, info.bit_depth, info.channels, info.planes,
                    [Level(info.width, info.height, 1.0)], lazy=False)
        slide._stack = stack
        return slide

    @classmethod
    def _open_tiff(cls, p: Path, lazy_min_pixels: int) -> "Slide | None":
        """A lazily read slide, or None when the file is better decoded whole (small, or a
        layout read only whole: several planes inside one page)."""
        tif = open_tiff(p)
        with closed_on_error(tif, p.name, "slide"):
            series = tif.series[0]
            levels_series = list(series.levels) if getattr(series, "levels", None) else [series]
            pyramid = len(levels_series) > 1
            planes, layout = _page_layout(series)
            key0 = series.pages[layout[0][0]]
            key0 = key0.keyframe if getattr(key0, "keyframe", None) is not None else key0
            shaped = key0.shaped
            h, w = int(shaped[2]), int(shaped[3])
            if int(shaped[1]) != 1:
                tif.close()
                return None  # volumetric tiles (SGI depth): read whole
            if not pyramid and (h * w < lazy_min_pixels or not (key0.is_tiled or key0.rowsperstrip)):
                tif.close()
                return None
            if planes == 1 and len(tif.pages) > 1 and not pyramid:
                tif.close()
                return None  # pages written one by one: FocalStack's rules decide what they are
            lock = threading.RLock()
            cache = _TileCache()
            pages, levels = [], []
            for lev in levels_series:
                lp, llayout = _page_layout(lev)
                if lp != planes:
                    break  # a level without every plane: stop the pyramid there
                per_plane = [[_TiledPage(tif, lev.pages[k], lock, cache) for k in idx] for idx in llayout]
                first = per_plane[0][0]
                levels.append(Level(first.width, first.height, w / first.width))
                pages.append(per_plane)
            dtype = np.dtype(key0.dtype)
            samples = int(shaped[0]) * int(shaped[4]) if key0.planarconfig == 2 else int(shaped[4])
            channels = 3 if len(layout[0]) == 3 else (1 if samples in (1, 2) else 3)
            bits = 8 if dtype.itemsize == 1 else 16
            slide = cls(p.name, w, h, bits, channels, planes, levels, lazy=True)
            slide._tif, slide._pages, slide._cache, slide._lock = tif, pages, cache, lock
            return slide

    @classmethod
    def _open_plane_slides(cls, p: Path, files: list[Path], lazy_min_pixels: int) -> "Slide | None":
        """Focal planes kept as one whole-slide file each (``scan_z0.tif``, ``scan_z1.tif``
        ...): one lazy slide whose plane ``k`` reads file ``k``, with the levels every file
        has. None when the first file is better decoded whole (a small field)."""
        first = cls._open_tiff(files[0], lazy_min_pixels)
        if first is None:
            return None
        parts = [first]
        try:
            for f in files[1:]:
                part = cls._open_tiff(f, 1)  # every plane read like the first, whatever its size
                parts.append(part)
                if part is None or part.planes != 1 or (part.width, part.height) != (first.width, first.height) \
                        or (part.bit_depth, part.channels) != (first.bit_depth, first.channels):
                    what = "not a tiled TIFF" if part is None else (
                        f"{part.width} x {part.height} px, {part.bit_depth}-bit, {part.channels} channel(s), "
                        f"{part.planes} plane(s)")
                    raise ImageReadError(f"{p.name}: plane file {f.name} is {what}, not like plane 1 "
                                         f"({first.width} x {first.height} px, {first.bit_depth}-bit, "
                                         f"{first.channels} channel(s), 1 plane); the planes of one focal stack "
                                         "must be alike")
            if first.planes != 1:
                raise ImageReadError(f"{p.name}: plane file {files[0].name} holds {first.planes} planes itself")
            n_levels = len(first.levels)
            for part in parts[1:]:
                same = [a == b for a, b in zip(first.levels, part.levels)]
                n_levels = min(n_levels, same.index(False) if False in same else len(same))
            slide = cls(p.name, first.width, first.height, first.bit_depth, first.channels, len(parts),
                        first.levels[:n_levels], lazy=True)
            cache = _TileCache()
            slide._pages = [[part._pages[k][0] for part in parts] for k in range(n_levels)]
            for part in parts:  # one tile cache for the whole stack (each file keeps its own lock)
                for level in part._pages:
                    for plane in level:
                        for pg in plane:
                            pg.cache = cache
            slide._cache, slide._lock = cache, first._lock
            slide._tif = parts[0]._tif
            slide._parts = parts
            return slide
        except BaseException:
            for part in parts:
                if part is not None:
                    part.close()
            raise

    def close(self) -> None:
        for part in getattr(self, "_parts", ())[1:]:
            part.close()
        if self._tif is not None:
            self._tif.close()
            self._tif = None
        if self._stack is not None:
            self._stack.close()
        self._whole.clear()
        self._cache.clear()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- levels -------------------------------------------------------------------------
    def level_for(self, downsample: float) -> int:
        """The finest level whose pixels are no coarser than ``downsample`` level-0 px."""
        best = 0
        for k, lev in enumerate(self.levels):
            if lev.downsample <= downsample * 1.01:
                best = k
        return best

    def level_for_size(self, max_side: int) -> int:
        """The finest level that fits ``max_side`` px on its longer side (the coarsest if none does)."""
        for k, lev in enumerate(self.levels):
            if max(lev.width, lev.height) <= max_side:
                return k
        return len(self.levels) - 1

    # -- reading ------------------------------------------------------------------------
    def _plane_index(self, plane: int) -> int:
        plane = int(plane)
        if not 0 <= plane < self.planes:
            raise ImageReadError(f"{self.name}: plane {plane + 1} does not exist (the slide has {self.planes})")
        return plane

    def _whole_plane(self, plane: int) -> np.ndarray:
        with self._whole_lock:
            arr = self._whole.get(plane)
            if arr is None:
                arr = self._stack.plane(plane)
                if len(self._whole) >= 2:  # keep at most two decoded planes of a small stack
                    self._whole.pop(next(iter(self._whole)))
                self._whole[plane] = arr
            return arr

    def region(self, x: int, y: int, w: int, h: int, level: int = 0, plane: int | str = 0) -> np.ndarray:
        """Pixels [y, y+h) x [x, x+w) of ``level`` (in that level's pixels), clipped to the
        level, as (H, W) or (H, W, 3) uint8 / uint16 like ``read_image``. ``plane`` is a
        plane index, ``"edf"`` (all-in-focus over this region) or ``"best"`` (the plane
        sharpest over this region)."""
        if not 0 <= level < len(self.levels):
            raise ImageReadError(f"{self.name}: level {level} does not exist (the slide has {len(self.levels)})")
        if plane == EDF or plane == BEST:
            if self.planes == 1:
                return self.region(x, y, w, h, level, 0)
            if plane == EDF:
                return edf_composite(self.region(x, y, w, h, level, k) for k in range(self.planes))
            scores = [focus_measure(self.region(x, y, w, h, level, k)) for k in range(self.planes)]
            return self.region(x, y, w, h, level, int(np.argmax(scores)))
        plane = self._plane_index(plane)
        x, y, w, h = int(x), int(y), int(w), int(h)
        if not self.lazy:
            arr = self._whole_plane(plane)
            return np.ascontiguousarray(arr[max(0, y):max(0, y + h), max(0, x):max(0, x + w)])
        if self._tif is None:
            raise ImageReadError(f"{self.name}: the slide is closed")
        parts = self._pages[level][plane]
        try:
            with _quiet():
                arrs = [pg.read(x, y, w, h) for pg in parts]
        except MemoryError:
            raise ImageReadError(f"{self.name}: a region of {w}x{h} px is too large for the available memory") from None
        except ImageReadError:
            raise
        except Exception as exc:
            raise ImageReadError(f"{self.name}: region at ({x}, {y}) of level {level} is not readable ({exc})") from exc
        arr = np.concatenate(arrs, axis=-1) if len(arrs) == 3 else arrs[0]
        return _normalise_layout(arr, self.name)

    def region0(self, x1: float, y1: float, x2: float, y2: float, level: int = 0, plane: int | str = 0):
        """The image-pixel rectangle (x1, y1, x2, y2) read from ``level``, snapped outwards
        to that level's pixels. Returns ``(array, (x, y, w, h))``: the pixels and the
        image-pixel rectangle they cover (None and zeros when nothing of it is inside)."""
        lev = self.levels[level]
        sx, sy = self.width / lev.width, self.height / lev.height
        c0 = max(0, int(math.floor(x1 / sx)))
        r0 = max(0, int(math.floor(y1 / sy)))
        c1 = min(lev.width, int(math.ceil(x2 / sx)))
        r1 = min(lev.height, int(math.ceil(y2 / sy)))
        if c1 <= c0 or r1 <= r0:
            return None, (0.0, 0.0, 0.0, 0.0)
        arr = self.region(c0, r0, c1 - c0, r1 - r0, level, plane)
        return arr, (c0 * sx, r0 * sy, (c1 - c0) * sx, (r1 - r0) * sy)

    def thumbnail(self, max_side: int, plane: int | str = 0) -> np.ndarray:
        """The whole slide fitted into ``max_side`` px, from the smallest level that is at
        least that large, read tile row by tile row and shrunk as it goes, so memory stays
        that of the thumbnail even where the file has no pyramid."""
        import cv2

        k = len(self.levels) - 1
        while k > 0 and max(self.levels[k].width, self.levels[k].height) < max_side:
            k -= 1
        lev = self.levels[k]
        scale = min(1.0, max_side / max(lev.width, lev.height))
        tw, th = max(1, round(lev.width * scale)), max(1, round(lev.height * scale))
        if scale == 1.0:
            return self.region(0, 0, lev.width, lev.height, k, plane)
        band = max(256, int(math.ceil(4 / scale)))  # level rows per band: a few output rows each
        rows = []
        y = 0
        while y < lev.height:
            hb = min(band, lev.height - y)
            arr = self.region(0, y, lev.width, hb, k, plane)
            oh = max(1, round((y + hb) * scale) - round(y * scale))
            rows.append(cv2.resize(arr, (tw, oh), interpolation=cv2.INTER_AREA))
            y += hb
        out = np.concatenate(rows, axis=0)
        return np.ascontiguousarray(out[:th]) if out.shape[0] >= th else cv2.resize(out, (tw, th), interpolation=cv2.INTER_AREA)


class SlideArray:
    """One plane (or view) of a slide as a read-only array in level-0 (image) pixels, for
    code written for decoded images: ``a.shape``, ``a.dtype``, ``a[y0:y1, x0:x1]`` reads
    that region only (tile by tile on a lazy slide); a strided slice (``a[::16, ::16]``,
    what percentile sampling does) reads the level nearest the stride. ``np.asarray(a)``
    decodes the whole plane, which is refused in words for a lazily read slide: read a
    region. ``plane``: an index, ``"edf"`` or ``"best"`` (computed per region read)."""

    def __init__(self, slide: Slide, plane: int | str = 0):
        self.slide = slide
        self.plane = plane if plane in (EDF, BEST) else slide._plane_index(plane)
        self.dtype = np.dtype(np.uint8 if slide.bit_depth == 8 else np.uint16)
        self.shape = (slide.height, slide.width, 3) if slide.channels == 3 else (slide.height, slide.width)
        self.ndim = len(self.shape)

    @property
    def lazy(self) -> bool:
        return self.slide.lazy

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        yx, rest = list(key[:2]), key[2:]
        while len(yx) < 2:
            yx.append(slice(None))
        spans, squeeze = [], []
        for k, n in zip(yx, self.shape[:2]):
            if isinstance(k, (int, np.integer)):
                k = int(k) + (n if k < 0 else 0)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} is outside the image (size {n})")
                spans.append((k, k + 1, 1))
                squeeze.append(True)
            elif isinstance(k, slice):
                spans.append(k.indices(n))
                squeeze.append(False)
            else:
                raise TypeError(f"{self.slide.name}: a slide is read by slices, not {type(k).__name__}")
        (y0, y1, sy), (x0, x1, sx) = spans
        if sy < 1 or sx < 1:
            raise ValueError(f"{self.slide.name}: a slide is read top-down, left to right (positive steps)")
        if sy == 1 and sx == 1:
            arr = self.slide.region(x0, y0, max(0, x1 - x0), max(0, y1 - y0), 0, self.plane)
        else:
            arr = self._strided(y0, y1, sy, x0, x1, sx)
        if squeeze[0] or squeeze[1]:
            arr = arr[(0 if squeeze[0] else slice(None), 0 if squeeze[1] else slice(None))]
        if rest:  # a channel index or slice
            arr = arr[(slice(None),) * (2 - sum(squeeze)) + tuple(rest)]
        return arr

    def _strided(self, y0, y1, sy, x0, x1, sx) -> np.ndarray:
        """Every ``sy``-th row and ``sx``-th column: exact on a decoded image, else the
        nearest pixels of the level whose pixels are closest to (not coarser than) the step."""
        ny, nx = len(range(y0, y1, sy)), len(range(x0, x1, sx))
        if not self.slide.lazy:
            return self.slide.region(x0, y0, x1 - x0, y1 - y0, 0, self.plane)[::sy, ::sx]
        if not ny or not nx:
            return np.zeros((ny, nx) + self.shape[2:], self.dtype)
        k = self.slide.level_for(min(sy, sx))
        lev = self.slide.levels[k]
        fx, fy = lev.width / self.slide.width, lev.height / self.slide.height
        rows = np.minimum((y0 + np.arange(ny) * sy) * fy, lev.height - 1).astype(int)  # in level pixels
        cols = np.minimum((x0 + np.arange(nx) * sx) * fx, lev.width - 1).astype(int)
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        out = np.empty((ny, nx) + self.shape[2:], self.dtype)
        band = 256  # level rows read at once: a level much finer than the step is never read whole
        i = 0
        while i < ny:
            r0 = int(rows[i])
            j = int(np.searchsorted(rows, r0 + band, side="left"))
            arr = self.slide.region(c0, r0, c1 - c0, int(rows[j - 1]) + 1 - r0, k, self.plane)
            out[i:j] = arr[rows[i:j] - r0][:, cols - c0]
            i = j
        return out

    def __array__(self, dtype=None, copy=None):
        if self.slide.lazy:
            raise ImageReadError(f"{self.slide.name}: a whole-slide scan of {self.slide.width:,} x "
                                 f"{self.slide.height:,} px is not decoded whole; read a region of it")
        arr = self.slide.region(0, 0, self.slide.width, self.slide.height, 0, self.plane)
        return arr.astype(dtype) if dtype is not None else arr


_SHARED: OrderedDict = OrderedDict()
_SHARED_LOCK = threading.Lock()
SHARED_SLIDES = 6  # open slides kept by shared_slide (each with its tile cache)
SHARED_DECODED_BYTES = 256 * 1024 * 1024  # decoded small images kept by them, together
SHARED_TILE_CACHE_BYTES = 32 * 1024 * 1024  # decoded tiles kept per shared slide


def shared_slide(path: str | os.PathLike, plane_files: Sequence[str | os.PathLike] | None = None) -> Slide:
    """An open :class:`Slide` shared by the threads of this process (thumbnails, crops,
    outlines read the same file many times): reopened when the file changed; the least
    recently used beyond ``SHARED_SLIDES`` are dropped (closed when no reader holds them any
    more). Do not close it."""
    p = Path(path)
    files = tuple(str(f) for f in plane_files) if plane_files else ()
    try:  # a file (or plane file) written again since is opened again
        key = (str(p.resolve()), files) + tuple((st.st_mtime_ns, st.st_size) for st in
                                                (Path(f).stat() for f in (str(p), *files)))
    except OSError:
        key = (str(p), files, None)
    with _SHARED_LOCK:
        hit = _SHARED.get(key)
        if hit is not None:
            _SHARED.move_to_end(key)
            _trim_shared()
            return hit
    slide = Slide.open(p, plane_files=list(files) or None)
    slide._cache.limit = SHARED_TILE_CACHE_BYTES
    with _SHARED_LOCK:
        hit = _SHARED.get(key)
        if hit is not None:
            slide.close()
            return hit
        _SHARED[key] = slide
        while len(_SHARED) > SHARED_SLIDES:
            _SHARED.popitem(last=False)  # garbage collection closes its file once unused
        _trim_shared()
    return slide


def _trim_shared() -> None:
    """Forget the decoded pictures of small images (fields, stack planes) of the least
    recently used shared slides beyond ``SHARED_DECODED_BYTES`` (caller holds the lock)."""
    total = 0
    for slide in reversed(_SHARED.values()):
        with slide._whole_lock:
            held = sum(a.nbytes for a in slide._whole.values())
            if total + held > SHARED_DECODED_BYTES and total:
                slide._whole.clear()
                held = 0
        total += held


def slide_pixels(path: str | os.PathLike, plane_files: Sequence[str | os.PathLike] | None = None,
                 plane: int | str | None = None) -> SlideArray:
    """One plane of an image file as a :class:`SlideArray` (``plane`` None: the middle plane
    of a stack, the image itself otherwise)."""
    slide = shared_slide(path, plane_files)
    return SlideArray(slide, slide.planes // 2 if plane is None else plane)


def open_slide(path: str | os.PathLike, plane_files: Sequence[str | os.PathLike] | None = None) -> Slide:
    """:meth:`Slide.open` (errors in words as ``ImageReadError``)."""
    return Slide.open(path, plane_files=plane_files)


def is_whole_slide(path: str | os.PathLike) -> bool:
    """Whether a file is read tile by tile (a pyramidal or very large tiled TIFF)."""
    p = Path(path)
    if p.suffix.lower() not in _TIFF:
        return False
    try:
        with Slide.open(p) as s:
            return s.lazy
    except ImageReadError:
        return False
