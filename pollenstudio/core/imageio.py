"""Reading microscope images: JPEG/PNG/TIFF, 8- or 16-bit, grey or RGB.

``read_image`` returns a C-contiguous array (H, W) or (H, W, 3) in RGB order with the
file's own dtype (uint8 or uint16), so the display and the model decide how to scale.
``image_info`` reads only the header where the format allows, so listing a folder of
10,000 slide scans does not decode them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pollenstudio.core.errors import ImageReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_TIFF = (".tif", ".tiff")


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    bit_depth: int
    channels: int


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def float_peak(arr: np.ndarray) -> float:
    """The largest finite value of a float image (1.0 when it has none): what float pixels
    are scaled by (``_normalise_layout``). A focal stack takes the peak over all its planes,
    so every plane gets the same scale."""
    finite = arr[np.isfinite(arr)]
    return float(finite.max()) if finite.size else 1.0


def _normalise_layout(arr: np.ndarray, name: str, float_max: float | None = None) -> np.ndarray:
    """Bring an array to (H, W) or (H, W, 3), uint8 or uint16. Float pixels become uint16:
    [0, 1] data (or data whose peak ``float_max``, default this array's own, is at most 1)
    times 65535, else scaled so the peak is 65535; negative values and NaN become 0."""
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(arr.dtype, np.floating):
            hi = float_peak(arr) if float_max is None else float(float_max)
            scale = 65535.0 / hi if hi > 1.0 else 65535.0
            arr = np.clip(np.nan_to_num(arr) * scale, 0, 65535).astype(np.uint16)
        elif np.issubdtype(arr.dtype, np.integer):
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        else:
            raise ImageReadError(f"{name}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF (C, H, W)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # drop alpha
    if arr.ndim == 3 and arr.shape[2] == 2:
        arr = arr[:, :, 0]  # grey + alpha
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3):
        return np.ascontiguousarray(arr)
    raise ImageReadError(
        f"{name}: pixel layout {tuple(arr.shape)} is not an image with 1 or 3 channels"
        " (multi-page stacks: export one focal plane)"
    )


def _quiet():
    """Library warnings (tifffile's log, PIL's) are not for the user's terminal: a file we
    cannot use raises ImageReadError in words instead. Filters are set once, globally
    (``warnings.catch_warnings`` is not thread-safe and images are read in workers)."""
    global _QUIETED
    if not _QUIETED:
        import logging
        import warnings

        logging.getLogger("tifffile").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"tifffile(\..*)?$")
        warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
        _QUIETED = True
    return contextlib.nullcontext()


def open_tiff(p: Path):
    """``tifffile.TiffFile`` kept open for reading by region (the caller closes it); a file
    tifffile cannot parse raises ImageReadError in words."""
    import tifffile

    try:
        with _quiet():
            tif = tifffile.TiffFile(p)
    except Exception as exc:
        raise ImageReadError(f"{p.name}: not a readable TIFF ({exc})") from exc
    if not tif.series or not len(tif.pages):  # a header with no image in it (cut short, or empty)
        tif.close()
        raise ImageReadError(f"{p.name}: a TIFF file holding no image (cut short or damaged?)")
    return tif


@contextlib.contextmanager
def closed_on_error(tif, name: str, what: str):
    """Reading an open TIFF's layout: on any error the file is closed, and an error that is
    not yet in words becomes ImageReadError ``{name}: not a readable {what} (...)``."""
    try:
        yield
    except ImageReadError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise ImageReadError(f"{name}: not a readable {what} ({exc})") from exc


_QUIETED = False


def _check_single_image(tif, name: str) -> None:
    """A TIFF of several full-size pages (a focal or time stack) is not one image: say so
    instead of silently using its first page. Reduced-size pages (thumbnails, pyramid
    levels) are fine."""
    pages = tif.pages
    if len(pages) > 1:
        first = pages[0].shape
        full = sum(1 for pg in pages if getattr(pg, "shape", None) == first)
        if full > 1:
            raise ImageReadError(f"{name}: a TIFF stack of {full} images (focal planes), not one picture; import "
                                 "it into a project, where it is one image with its planes")


def read_image(path: str | os.PathLike, float_max: float | None = None) -> np.ndarray:
    """Decode an image file to (H, W) or (H, W, 3) RGB, uint8 or uint16 (``float_max``: the
    peak a float file is scaled by, see ``_normalise_layout``)."""
    return _normalise_layout(_decode(path), Path(path).name, float_max)


def _decode(path: str | os.PathLike) -> np.ndarray:
    """The file's pixels as stored (any dtype and layout); errors in words."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise ImageReadError(f"{name}: file not found ({p})")
    try:
        if p.suffix.lower() in _TIFF:
            import tifffile

            with _quiet(), tifffile.TiffFile(p) as tif:
                _check_single_image(tif, name)
                arr = tif.pages[0].asarray()
        else:
            import cv2

            data = np.fromfile(p, dtype=np.uint8)  # handles non-ASCII paths
            arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
            if arr.ndim == 3 and arr.shape[2] >= 3:
                arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{name}: too large to decode in the available memory") from None
    except Exception as exc:  # codec errors come in many types; report them by name
        raise ImageReadError(f"{name}: not a readable image ({exc})") from exc
    return arr


def image_info(path: str | os.PathLike) -> ImageInfo:
    """Size, bit depth and channel count, from the header where possible."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise ImageReadError(f"{name}: file not found ({p})")
    try:
        if p.suffix.lower() in _TIFF:
            import tifffile

            with _quiet(), tifffile.TiffFile(p) as tif:
                _check_single_image(tif, name)
                page = tif.pages[0]
                shape = page.shape
                dtype = np.dtype(page.dtype)
            if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
                shape = (shape[1], shape[2], shape[0])
            h, w = shape[0], shape[1]
            c = 1 if len(shape) == 2 else min(shape[2], 3)
            c = 1 if c == 2 else c
            bits = 8 if dtype.itemsize == 1 else 16
            return ImageInfo(int(w), int(h), bits, int(c))
        from PIL import Image

        with _quiet(), Image.open(p) as im:
            w, h = im.size
            mode = im.mode
        bits = 16 if mode.startswith("I;16") or mode in ("I", "F") or _png_bit_depth(p) == 16 else 8
        channels = 1 if mode in ("1", "L", "LA", "P", "I", "F") or mode.startswith("I;16") else 3
        if mode == "P":
            channels = 3
        return ImageInfo(int(w), int(h), bits, channels)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{name}: not a readable image ({exc})") from exc


def _png_bit_depth(p: Path) -> int | None:
    """Bit depth from a PNG's IHDR (PIL opens 16-bit colour PNGs as 8-bit "RGB", while
    they decode to uint16), None for other files."""
    try:
        with open(p, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def to_uint8(img: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Scale to uint8. 8-bit passes through; 16-bit maps [low, high] (default: the
    0.1 / 99.9 percentiles, so a 12-bit camera in a 16-bit container is not left black)."""
    if img.dtype == np.uint8 and low is None and high is None:
        return img
    if low is None or high is None:
        sample = img[:: max(1, img.shape[0] // 512), :: max(1, img.shape[1] // 512)]
        lo, hi = np.percentile(sample, (0.1, 99.9))
        low = lo if low is None else low
        high = hi if high is None else high
    if high <= low:
        high = low + 1.0
    out = (img.astype(np.float32) - float(low)) * (255.0 / (float(high) - float(low)))
    return np.clip(out, 0, 255).astype(np.uint8)
