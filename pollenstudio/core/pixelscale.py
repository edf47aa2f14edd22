"""Pixel scale (micrometres per pixel): from a file's metadata, from a line drawn over a
scale bar, and the round length a scale bar on screen shows.

Plain Python + tifffile; no other part of the package. A scale outside
``PLAUSIBLE_UM_PER_PX`` is not a microscope's (a TIFF's default 72 dpi is 353 µm/px) and is
ignored, so an image never silently gets a nonsense calibration.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pollenstudio.core.errors import ScaleError

# from a 100x objective on a camera (~0.02 µm/px) to a low-power slide scan (~50 µm/px)
PLAUSIBLE_UM_PER_PX = (0.005, 50.0)

_UNIT_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
            "micrometer": 1.0, "micrometre": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "in": 25400.0, "inch": 25400.0}


def plausible(um_per_px: float | None) -> bool:
    return um_per_px is not None and math.isfinite(um_per_px) and \
        PLAUSIBLE_UM_PER_PX[0] <= um_per_px <= PLAUSIBLE_UM_PER_PX[1]


def _ome_scale(xml: str) -> float | None:
    """PhysicalSizeX of the first Pixels element of OME-XML, in µm (unit default µm)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels":
            size = el.get("PhysicalSizeX")
            if size is None:
                return None
            unit = el.get("PhysicalSizeXUnit", "µm")
            try:
                return float(size) * _UNIT_UM[unit]
            except (KeyError, ValueError):
                return None
    return None


def _resolution_scale(page, imagej_unit: str | None) -> float | None:
    """µm/px from XResolution (pixels per unit) and ResolutionUnit (2 inch, 3 cm; 1 none:
    ImageJ then names the unit in its description)."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    px_per_unit = num / den
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    if unit == 2:
        unit_um = 25400.0
    elif unit == 3:
        unit_um = 10000.0
    elif imagej_unit is not None and imagej_unit in _UNIT_UM:
        unit_um = _UNIT_UM[imagej_unit]
    else:
        return None
    return unit_um / px_per_unit


def um_per_px_from_file(path: str | os.PathLike) -> float | None:
    """The pixel scale a TIFF states (OME-XML PhysicalSizeX first, then the resolution tags,
    ImageJ's unit when ResolutionUnit is none), or None: not a TIFF, no scale, unreadable,
    or not plausible for a microscope. Never raises for a bad file."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            value = None
            if tif.is_ome and tif.ome_metadata:
                value = _ome_scale(tif.ome_metadata)
            if value is None:
                ij = tif.imagej_metadata or {}
                unit = ij.get("unit")
                if isinstance(unit, str):
                    unit = {"\\u00B5m": "µm"}.get(unit, unit)
                value = _resolution_scale(page, unit if isinstance(unit, str) else None)
    except Exception:  # noqa: BLE001 - a damaged header only means "no scale"; the image reader reports it
        return None
    return value if plausible(value) else None


def um_per_px_from_line(x1: float, y1: float, x2: float, y2: float, length_um: float) -> float:
    """Scale from a line drawn over a scale bar (or a stage micrometer) of known length:
    ``length_um`` / the line's length in image pixels."""
    if not (isinstance(length_um, (int, float)) and math.isfinite(length_um) and length_um > 0):
        raise ScaleError(f"the scale bar's length must be a positive number of micrometres, got {length_um!r}")
    px = math.hypot(x2 - x1, y2 - y1)
    if not math.isfinite(px) or px < 1.0:
        raise ScaleError("draw the line along the scale bar, from one end to the other (it is shorter than a pixel)")
    return float(length_um) / px


def nice_length(um: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``um`` (a scale bar's label)."""
    if not um > 0 or not math.isfinite(um):
        raise ScaleError(f"no scale bar for a length of {um!r} µm")
    k = math.floor(math.log10(um))
    for m in (5, 2, 1):
        v = m * 10.0 ** k
        if v <= um * (1 + 1e-9):
            return v
    return 10.0 ** k


def scale_bar(um_per_px: float, screen_px_per_image_px: float, max_screen_px: float = 150.0) -> tuple[float, float]:
    """(length in µm, length in screen pixels) of a scale bar at most ``max_screen_px`` long,
    for an image shown at ``screen_px_per_image_px`` (the canvas zoom)."""
    if not (um_per_px > 0 and screen_px_per_image_px > 0):
        raise ScaleError("a scale bar needs a positive pixel scale and zoom")
    um_per_screen_px = um_per_px / screen_px_per_image_px
    um = nice_length(max_screen_px * um_per_screen_px)
    return um, um / um_per_screen_px


def format_um(um: float) -> str:
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} µm"


