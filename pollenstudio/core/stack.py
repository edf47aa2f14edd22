"""Focal stacks: one field of view imaged at several focal planes.

A stack is one image of a project with ``planes`` (issue 19). Its planes come from

- one TIFF file: a multi-page TIFF (every full-size page a plane), an ImageJ hyperstack or
  an OME-TIFF with a Z axis (T and C other than RGB are read at index 0); or
- a list of plane files (a folder of planes, or files grouped by a name pattern such as
  ``*_z{z}.png``, see :func:`group_plane_files`).

Planes are read lazily, one page (or one file) at a time: opening a stack reads headers
only, so a 20-plane 2048x2048 16-bit stack (160 MB) opens without decoding any plane, and
every read holds one plane in memory. Views that combine planes - the best-focus plane and
the extended-depth-of-field (EDF, all-in-focus) composite - stream through the planes and
keep at most three plane-sized arrays.

Sharpness (``focus_measure``) is the mean squared Laplacian of the lightly smoothed grey
plane: defocus removes high spatial frequencies, so it peaks at the plane in focus. Box
sharpness over the planes gives the plane where a grain is sharpest.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pollenstudio.core.errors import ImageReadError, ImportFormatError
from pollenstudio.core.imageio import (
    ImageInfo,
    _decode,
    _normalise_layout,
    _quiet,
    closed_on_error,
    float_peak,
    image_info,
    open_tiff,
)

_TIFF = (".tif", ".tiff")
EDF = "edf"  # view name: the extended-depth-of-field composite
MAX_PLANES = 1000  # most focal planes one imported stack may have (a z-series of a slide has tens)
BEST = "best"  # view name: the plane sharpest over the whole field
STACK_PATTERN_HELP = ("file-name pattern of focal planes: '{z}' marks the plane number, '*' any text "
                      "(e.g. '*_z{z}.png', '{z}z.png'); files that differ only in '{z}' and sit in the "
                      "same folder are one stack. Plane numbers may be signed as microscopes write them "
                      "relative to focus (z-8, z+2), zero-padded (z003) and have gaps; planes are ordered by "
                      "their number")


class StackPatternError(ImportFormatError):
    """A ``--stack-pattern`` that cannot describe plane files."""


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackInfo:
    width: int
    height: int
    bit_depth: int
    channels: int
    planes: int


def _page_layout(series) -> tuple[int, list[list[int]]]:
    """For a tifffile series: (planes, page indices per plane). A plane is one page, or three
    pages (a planar RGB channel axis C of 3). Axes other than the plane axis and C are read at
    index 0. Returns planes = 1 for a series that is one image."""
    axes = series.axes
    shape = series.shape
    page_axes = [(a, n) for a, n in zip(axes, shape) if a not in "YXS"]
    # pages in a series are stored in row-major order of the non-YX(S) axes
    if not page_axes:
        return 1, [[0]]
    names = [a for a, _ in page_axes]
    sizes = [n for _, n in page_axes]
    # an axis of size 3 named C whose channels are pages: compose RGB from three pages
    rgb_c = "C" in names and sizes[names.index("C")] == 3 and "S" not in axes
    zaxis = None
    if "Z" in names:
        zaxis = names.index("Z")
    else:
        for k, (a, n) in enumerate(page_axes):
            if a != "C" and n > 1:
                zaxis = k
                break
    n_pages = int(np.prod(sizes))
    if len(series.pages) < n_pages:  # pages missing (truncated file): use what is there
        n_pages = len(series.pages)
    planes = sizes[zaxis] if zaxis is not None else 1
    out = []
    for z in range(planes):
        idx = [0] * len(sizes)
        if zaxis is not None:
            idx[zaxis] = z
        chans = [0, 1, 2] if rgb_c else [0]
        pages = []
        for c in chans:
            if "C" in names:
                idx[names.index("C")] = c
            flat = int(np.ravel_multi_index(idx, sizes))
            if flat >= n_pages:
                raise ImageReadError(f"plane {z + 1} of {planes} is missing from the file (truncated?)")
            pages.append(flat)
        out.append(pages)
    return planes, out


_PEAKS: dict[tuple, float] = {}  # float stacks: (file, mtime, size)... -> peak over all planes


class _WholePage:
    """Planes that are samples of one TIFF page: tifffile writes a (3, H, W) or (4, H, W)
    array as one page of 3 or 4 samples, its series axes naming the plane axis (ZYX)."""

    def __init__(self, axes: str, shape: tuple, zpos: int):
        self.axes, self.shape, self.zpos = axes, shape, zpos

    def plane(self, whole: np.ndarray, z: int) -> np.ndarray:
        idx = []
        for k, a in enumerate(self.axes):
            if k == self.zpos:
                idx.append(z)
            elif a in "YX" or (a in "SC" and self.shape[k] in (3, 4)):
                idx.append(slice(None))  # the picture, and colour samples
            else:
                idx.append(0)
        return whole[tuple(idx)]


def _one_page_stack(series) -> tuple[StackInfo, _WholePage] | None:
    """(info, layout) when a series of several planes is stored in one TIFF page, else None."""
    axes, shape = series.axes, tuple(int(n) for n in series.shape)
    if len(series.pages) != 1 or "Y" not in axes or "X" not in axes:
        return None
    cands = [k for k, a in enumerate(axes) if a not in "YXSC" and shape[k] > 1]
    if not cands:
        return None
    zpos = axes.index("Z") if "Z" in axes else cands[0]
    colour = any(a in "SC" and shape[k] in (3, 4) and k != zpos for k, a in enumerate(axes))
    dtype = np.dtype(series.dtype)
    info = StackInfo(shape[axes.index("X")], shape[axes.index("Y")], 8 if dtype.itemsize == 1 else 16,
                     3 if colour else 1, shape[zpos])
    return info, _WholePage(axes, shape, zpos)


def _describe(bits: int, channels: int) -> str:
    return f"{bits}-bit {'colour (RGB)' if channels == 3 else 'greyscale'}"


class FocalStack:
    """Lazy planes of one field. ``plane(i)`` decodes plane ``i`` (0-based) only; the TIFF
    stays open until :meth:`close` (use as a context manager). Thread-safe: reads take a
    lock (one file handle)."""

    def __init__(self, name: str, info: StackInfo, tif=None, pages=None, series=None, files=None):
        self.name = name
        self.info = info
        self._tif = tif
        self._pages = pages
        self._series = series
        self._files = [Path(f) for f in files] if files is not None else None
        self._lock = threading.Lock()
        self._whole = None  # a stack inside one TIFF page: that page, decoded once
        self._peak = None  # float pixels: the peak over all planes (one scale for the stack)
        self._peak_lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, plane_files: Sequence[str | os.PathLike] | None = None) -> "FocalStack":
        """A stack from a TIFF file, or from ``plane_files`` (``path`` is then the first of
        them). A single-plane file is a stack of one plane."""
        p = Path(path)
        if plane_files:
            files = [Path(f) for f in plane_files]
            for f in files:
                if not f.is_file():
                    raise ImageReadError(f"{p.name}: plane file {f.name} not found ({f})")
            first = image_info(files[0])
            return cls(p.name, StackInfo(first.width, first.height, first.bit_depth, first.channels, len(files)),
                       files=files)
        if not p.is_file():
            raise ImageReadError(f"{p.name}: file not found ({p})")
        if p.suffix.lower() not in _TIFF:
            info = image_info(p)
            return cls(p.name, StackInfo(info.width, info.height, info.bit_depth, info.channels, 1), files=[p])
        tif = open_tiff(p)
        with closed_on_error(tif, p.name, "TIFF stack"):
            series = tif.series[0]
            whole = _one_page_stack(series)
            if whole is not None:
                return cls(p.name, whole[0], tif=tif, series=series, pages=whole[1])
            planes, pages = _page_layout(series)
            source = series.pages
            if planes == 1 and len(tif.pages) > 1:
                # pages written one by one (no shaped / OME / ImageJ metadata): every page of
                # the first page's size is a plane; smaller ones are thumbnails or levels
                shape0 = tif.pages[0].shape
                full = [k for k, pg in enumerate(tif.pages) if getattr(pg, "shape", None) == shape0]
                if len(full) > 1:
                    planes, pages, source = len(full), [[k] for k in full], tif.pages
            page0 = source[pages[0][0]]
            shape = page0.shape
            dtype = np.dtype(page0.dtype)
            if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
                shape = (shape[1], shape[2], shape[0])
            h, w = int(shape[0]), int(shape[1])
            c = 3 if len(pages[0]) == 3 else (1 if len(shape) == 2 else min(shape[2], 3))
            c = 1 if c == 2 else c
            bits = 8 if dtype.itemsize == 1 else 16
            return cls(p.name, StackInfo(w, h, bits, c, int(planes)), tif=tif, pages=pages, series=source)

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> "FocalStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- planes -------------------------------------------------------------------------
    @property
    def n_planes(self) -> int:
        return self.info.planes

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.n_planes:
            raise ImageReadError(f"{self.name}: plane {i + 1} does not exist (the stack has {self.n_planes})")
        return i

    def _raw_plane(self, i: int) -> np.ndarray:
        """Plane ``i`` as stored (any dtype; planar or interleaved)."""
        if self._files is not None:
            return _decode(self._files[i])
        with self._lock:
            if self._tif is None:
                raise ImageReadError(f"{self.name}: the stack is closed")
            try:
                with _quiet():
                    if isinstance(self._pages, _WholePage):
                        if self._whole is None:
                            self._whole = self._series.asarray()
                        return self._pages.plane(self._whole, i)
                    arrs = [self._series[k].asarray() for k in self._pages[i]]
            except MemoryError:
                raise ImageReadError(f"{self.name}: plane {i + 1} is too large for the available memory") from None
            except Exception as exc:
                raise ImageReadError(f"{self.name}: plane {i + 1} is not readable ({exc})") from exc
        return np.stack(arrs, axis=-1) if len(arrs) == 3 else arrs[0]

    def _float_peak(self) -> float:
        """Float planes (e.g. a deconvolved 32-bit stack) are scaled by the peak of the
        whole stack, so a plane keeps its brightness relative to the others. Found by one
        pass over the planes, remembered per file version (views reopen the stack)."""
        with self._peak_lock:
            if self._peak is None:
                key = self._peak_key()
                self._peak = _PEAKS.get(key) if key is not None else None
                if self._peak is None:
                    self._peak = max(float_peak(a) if np.issubdtype(a.dtype, np.floating) else 1.0
                                     for a in (self._raw_plane(k) for k in range(self.n_planes)))
                    if key is not None:
                        if len(_PEAKS) >= 256:
                            _PEAKS.pop(next(iter(_PEAKS)))
                        _PEAKS[key] = self._peak
            return self._peak

    def _peak_key(self) -> tuple | None:
        files = self._files if self._files is not None else ([Path(self._tif.filehandle.path)] if self._tif else [])
        try:
            return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files) or None
        except (OSError, AttributeError):
            return None

    def plane(self, i: int) -> np.ndarray:
        """Plane ``i`` as (H, W) or (H, W, 3), uint8 or uint16 (like ``read_image``; float
        planes become uint16 on the stack's common scale)."""
        i = self._check_index(i)
        arr = self._raw_plane(i)
        name = self._files[i].name if self._files is not None else self.name
        arr = _normalise_layout(arr, name, self._float_peak() if np.issubdtype(arr.dtype, np.floating) else None)
        if arr.shape[0] != self.info.height or arr.shape[1] != self.info.width:
            raise ImageReadError(f"{self.name}: plane {i + 1} is {arr.shape[1]}x{arr.shape[0]}, "
                                 f"not {self.info.width}x{self.info.height} like the first")
        if self._files is not None:  # plane files: each one can have been replaced since import
            bits, channels = (8 if arr.dtype == np.uint8 else 16), (1 if arr.ndim == 2 else 3)
            if (bits, channels) != (self.info.bit_depth, self.info.channels):
                raise ImageReadError(f"{self.name}: plane {i + 1} ({name}) is {_describe(bits, channels)}, not "
                                     f"{_describe(self.info.bit_depth, self.info.channels)} like plane 1; the planes "
                                     "of one focal stack must be alike")
        return arr

    def planes(self) -> Iterable[np.ndarray]:
        for i in range(self.n_planes):
            yield self.plane(i)

    def view(self, which: int | str) -> np.ndarray:
        """A plane index, ``"best"`` (sharpest plane over the field) or ``"edf"``."""
        if which == EDF:
            return edf_composite(self.planes())
        if which == BEST:
            return self.plane(best_plane(self))
        return self.plane(int(which))


def stack_info(path: str | os.PathLike) -> StackInfo:
    """Size, bit depth, channels and plane count of an image file (1 plane for a single
    image), from headers only."""
    with FocalStack.open(path) as st:
        return st.info


def import_info(path: str | os.PathLike, plane_files: Sequence[str | os.PathLike] | None = None) -> StackInfo:
    """Header facts of an image, TIFF stack or plane-file stack about to be imported, after
    the rules every import path applies (folder, COCO, the app; relink too): at most
    ``MAX_PLANES`` planes; plane files listed once each (2 or more), readable, and all of
    plane 1's pixel size, bit depth and colour channels (a stack's planes are one field
    seen at several depths: anything else would break every view of it). Reads headers
    only. Raises ImageReadError in words."""
    if not plane_files:
        info = stack_info(path)
        if info.planes > MAX_PLANES:
            raise ImageReadError(f"{Path(path).name}: {info.planes} focal planes; at most {MAX_PLANES} planes "
                                 "per stack can be imported")
        return info
    files = [Path(f) for f in plane_files]
    name = files[0].name
    if len(files) < 2:
        raise ImageReadError(f"{name}: a focal stack needs two or more plane files")
    if len(files) > MAX_PLANES:
        raise ImageReadError(f"{name}: a stack of {len(files)} plane files; at most {MAX_PLANES} planes per "
                             "stack can be imported")
    seen: dict[str, int] = {}
    for k, f in enumerate(files):
        key = os.path.normcase(os.path.abspath(f))
        try:
            key = os.path.normcase(str(f.resolve()))
        except (OSError, RuntimeError):
            pass
        if key in seen:
            raise ImageReadError(f"{name}: plane {k + 1} ({f.name}) is the same file as plane {seen[key] + 1}; "
                                 "a focal stack lists each plane file once")
        seen[key] = k
    first = None
    for k, f in enumerate(files):
        info = image_info(f)  # refuses a missing file, and a multi-page TIFF as one plane
        if first is None:
            first = info
            continue
        if (info.width, info.height) != (first.width, first.height):
            raise ImageReadError(f"{name}: plane {k + 1} ({f.name}) is {info.width}x{info.height} pixels, plane 1 "
                                 f"({name}) {first.width}x{first.height}; the planes of one focal stack must all "
                                 "be the same size")
        if (info.bit_depth, info.channels) != (first.bit_depth, first.channels):
            raise ImageReadError(f"{name}: plane {k + 1} ({f.name}) is {_describe(info.bit_depth, info.channels)}, "
                                 f"plane 1 ({name}) {_describe(first.bit_depth, first.channels)}; the planes of one "
                                 "focal stack must have the same bit depth and colour channels")
    return StackInfo(first.width, first.height, first.bit_depth, first.channels, len(files))


def stack_hash(files: Sequence[str | os.PathLike]) -> str:
    """Content hash of a stack kept as plane files: SHA-256 of its planes' SHA-256s in order."""
    import hashlib

    from pollenstudio.core.imageio import file_sha256

    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()


def is_stack_file(path: str | os.PathLike) -> bool:
    """True for a TIFF with more than one focal plane (readable headers only)."""
    p = Path(path)
    if p.suffix.lower() not in _TIFF:
        return False
    try:
        return stack_info(p).planes > 1
    except ImageReadError:
        return False


# ----------------------------------------------------------------------------------------
# file-name patterns
# ----------------------------------------------------------------------------------------


_PLANE_NUMBER = r"(?P<z>[+-]?\d+)"  # what '{z}' matches: 3, 003, -8, +2 (relative to focus)


def pattern_regex(pattern: str) -> re.Pattern:
    """``*_z{z}.png`` -> a regex on file names with the plane number as group ``z``: digits
    with an optional sign (``z-8``, ``z+2``, ``z003``, ``-8``), as microscopes number planes
    relative to focus."""
    if not isinstance(pattern, str) or pattern.count("{z}") != 1:
        raise StackPatternError(f"stack pattern {pattern!r} must contain '{{z}}' once, where the plane number is "
                                "(e.g. '*_z{z}.png' or '{z}z.png')")
    if "/" in pattern or "\\" in pattern:
        raise StackPatternError(f"stack pattern {pattern!r} is a file-name pattern: leave folders out "
                                "(planes in one folder per stack are found by '{z}.png')")
    out = []
    for part in re.split(r"(\{z\}|\*|\?)", pattern):
        if part == "{z}":
            out.append(_PLANE_NUMBER)
        elif part == "*":
            out.append(r"(.*?)")
        elif part == "?":
            out.append(r"(.)")
        elif part:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


def _plane_text(z: int, signed: bool) -> str:
    return f"{z:+d}" if signed and z else str(z)


def group_plane_files(files: Iterable[str | os.PathLike], pattern: str) -> tuple[list[list[Path]], list[Path]]:
    """Split ``files`` into stacks (lists of plane files ordered by plane number) and the
    files the pattern does not match (single images). Files are one stack when they sit in
    the same folder and their names differ only where ``{z}`` is. A group of one file is a
    single image.

    Plane numbers are signed numbers (``z-8``, ``z-3``, ``z+2``, ``z15``: planes relative to
    focus), compared by value: zero padding does not count (``z003`` is plane 3), gaps are
    allowed, and a stack's planes are ordered by their number (-8, -3, 1, 15), not by text.
    Two files with the same number in one stack (``z03`` and ``z3``, ``z+2`` and ``z2``) are
    an error. Where ``{z}`` follows ``*`` or ``?`` in the pattern the text cannot tell a
    separator from a sign: a '-' that every plane of a group carries (``field-01.png``,
    ``field-02.png`` for ``*{z}.png``) is read as a separator; put it in the pattern
    (``*-{z}.png``) to say so, or (``*_{z}.png``) to leave the sign to the number."""
    rx = pattern_regex(pattern)
    sign_after_wildcard = re.search(r"[*?]\{z\}", pattern) is not None
    groups: dict[tuple, list[tuple[str, Path]]] = {}
    singles: list[Path] = []
    for f in files:
        f = Path(f)
        m = rx.match(f.name)
        if m is None:
            singles.append(f)
            continue
        key = (str(f.parent), tuple(g for k, g in enumerate(m.groups()) if k != rx.groupindex["z"] - 1))
        groups.setdefault(key, []).append((m.group("z"), f))
    stacks = []
    for key in sorted(groups):
        members = groups[key]
        dash_separator = sign_after_wildcard and all(t.startswith("-") for t, _ in members)
        signed = not dash_separator and any(t[0] in "+-" for t, _ in members)
        planes: dict[int, Path] = {}
        for text, f in members:
            z = int(text.lstrip("-") if dash_separator else text)
            if z in planes:
                raise StackPatternError(
                    f"{planes[z].name} and {f.name} are both plane {_plane_text(z, signed)} of one stack for the "
                    f"pattern {pattern!r} (plane numbers count by value: z03 is z3, z+2 is z2); remove one of "
                    "them, or make the pattern tell them apart")
            planes[z] = f
        ordered = [planes[z] for z in sorted(planes)]
        if len(ordered) == 1:
            singles.append(ordered[0])
        else:
            stacks.append(ordered)
    return stacks, sorted(singles)


_PLANE_PART = re.compile(r"[+-]?\d+")
_PLANE_TAG = re.compile(r"(?:^|(?<=[^A-Za-z]))[A-Za-z]{1,5}$")


def plane_labels(files: Sequence[str | os.PathLike] | None) -> list[str] | None:
    """The planes' own names from their file names, in the stack's order: ``z-8``, ``z-3``,
    ``z1`` ... for ``f_z-8.png``, ``f_z-3.png``, ``f_z1.png`` (the letters before the number,
    else ``z``; the number as the file writes it). None when the names do not number the
    planes in the stack's order (then planes go by their 1-based index). Needs no pattern:
    the number is where the names differ; digits and a sign next to it belong to it."""
    if not files or len(files) < 2:
        return None
    names = [Path(f).name for f in files]
    pre = os.path.commonprefix(names).rstrip("0123456789")
    if pre.endswith(("+", "-")):
        pre = pre[:-1]  # a sign every plane carries is still each number's sign
    suf = os.path.commonprefix([n[::-1] for n in names])[::-1].lstrip("0123456789")
    if len(pre) + len(suf) > min(len(n) for n in names):
        return None
    parts = [n[len(pre): len(n) - len(suf)] for n in names]
    if not all(_PLANE_PART.fullmatch(t) for t in parts):
        return None

    def ascending(values: list[int]) -> bool:
        return all(a < b for a, b in zip(values, values[1:]))

    if not ascending([int(t) for t in parts]):
        # a '-' every name has before the number, read as a separator at import (field-01, field-02)
        if all(t.startswith("-") for t in parts) and ascending([int(t[1:]) for t in parts]):
            pre, parts = pre + "-", [t[1:] for t in parts]
        else:
            return None  # named in another order than the stack's (e.g. a COCO file's list)
    tag = _PLANE_TAG.search(pre)
    return [f"{tag.group(0) if tag else 'z'}{t}" for t in parts]


# ----------------------------------------------------------------------------------------
# focus
# ----------------------------------------------------------------------------------------


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2

    g = img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    g = g.astype(np.float32)
    if img.dtype == np.uint16:
        g *= np.float32(1 / 257.0)  # the same scale as 8-bit
    return g


def focus_map(img: np.ndarray, window: float = 0.0) -> np.ndarray:
    """Per-pixel squared Laplacian of the smoothed grey image (float32, H x W); with
    ``window`` > 0 averaged over a Gaussian window of that sigma (px)."""
    import cv2

    g = cv2.GaussianBlur(_grey(img), (0, 0), 1.0)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=3)
    np.multiply(lap, lap, out=lap)
    if window > 0:
        lap = cv2.GaussianBlur(lap, (0, 0), window)
    return lap


def focus_measure(img: np.ndarray, box=None) -> float:
    """Sharpness of an image, or of a box ``(x1, y1, x2, y2)`` in it (mean squared
    Laplacian; higher is sharper)."""
    if box is not None:
        h, w = img.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1 = max(0, x1 - 2), max(0, y1 - 2)
        x2, y2 = min(w, x2 + 2), min(h, y2 + 2)
        if x2 - x1 < 3 or y2 - y1 < 3:
            return 0.0
        img = img[y1:y2, x1:x2]
    return float(focus_map(img).mean())


def box_sharpness(planes: Iterable[np.ndarray], boxes: Sequence) -> np.ndarray:
    """(planes, boxes) sharpness table; reads each plane once."""
    rows = [[focus_measure(p, b) for b in boxes] for p in planes]
    return np.asarray(rows, np.float64).reshape(len(rows), len(boxes))


def sharpest_planes(stack: "FocalStack", boxes: Sequence) -> list[int]:
    """For each box, the plane where it is sharpest (0 for every box of a single plane)."""
    if not len(boxes):
        return []
    if stack.n_planes == 1:
        return [0] * len(boxes)
    table = box_sharpness(stack.planes(), boxes)
    return [int(k) for k in np.argmax(table, axis=0)]


def best_plane(stack: "FocalStack") -> int:
    """The plane sharpest over the whole field."""
    if stack.n_planes == 1:
        return 0
    scores = [focus_measure(p) for p in stack.planes()]
    return int(np.argmax(scores))


def edf_composite(planes: Iterable[np.ndarray], window: float = 3.0, return_index: bool = False):
    """Extended depth of field: every pixel from the plane where its neighbourhood is
    sharpest (squared Laplacian averaged over a Gaussian window). Streams through the planes:
    memory is the composite, the best-focus map and one plane. Returns the composite with the
    planes' dtype and layout (and the plane index map with ``return_index``)."""
    out = best = index = None
    for k, p in enumerate(planes):
        f = focus_map(p, window)
        if out is None:
            out = p.copy()
            best = f
            index = np.zeros(f.shape, np.uint16)
            continue
        if p.shape != out.shape or p.dtype != out.dtype:
            raise ImageReadError(f"plane {k + 1} is {p.shape} {p.dtype}, not {out.shape} {out.dtype} like the first")
        better = f > best
        out[better] = p[better]
        best[better] = f[better]
        index[better] = k
    if out is None:
        raise ImageReadError("a stack without planes has no EDF view")
    return (out, index) if return_index else out


__all__ = [
    "BEST", "EDF", "MAX_PLANES", "FocalStack", "ImageInfo", "STACK_PATTERN_HELP", "StackInfo", "StackPatternError",
    "best_plane", "box_sharpness", "edf_composite", "focus_map", "focus_measure", "group_plane_files", "import_info",
    "is_stack_file",
    "pattern_regex", "plane_labels", "sharpest_planes", "stack_hash", "stack_info",
]
