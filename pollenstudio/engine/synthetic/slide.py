"""Synthetic whole-slide scans: pyramidal tiled TIFFs as slide scanners write them.

A generated slide is one image of any size up to 40,000 px a side: a BigTIFF with 256 px
tiles (JPEG or deflate), the full resolution and reduced copies (each half the one before,
down to a level of at most ``MIN_LEVEL_SIDE`` px) in SubIFDs, and optionally focal planes
as an OME-TIFF Z axis (every grain sharp on a plane of its own and defocused on the others,
as in :mod:`pollenstudio.engine.synthetic.stack`). Its ground truth (boxes, outlines,
``plane``) is in level-0 pixels.

Nothing holds the whole slide: the scene is rendered in strips
(:func:`~pollenstudio.engine.synthetic.scene.render_strips`), tiles go to tifffile's tile
iterator as they are made, and the reduced levels are 2x2 means of the level above, kept in
raw scratch files beside the output until they are written (plain file reads, so they do
not grow the resident memory). A focal stack renders the in-focus scene once into such a
scratch file and makes each plane from it band by band, reading the band and the margin
its widest defocus blur needs. Memory is a few bands of the slide's width, whatever its
height and plane count (a 9-plane 17,832 x 15,029 px slide: bench/results/slide_open.txt).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from pollenstudio.engine.synthetic.config import SynthConfig, SynthConfigError
from pollenstudio.engine.synthetic.dataset import ANNOTATIONS, IMAGES, _image_seed
from pollenstudio.engine.synthetic.scene import STRIP, _seed_of, render_strips
from pollenstudio.engine.synthetic.stack import MAX_PLANES, defocus_grain, defocus_reach

TILE = 256  # tile side of every level (and the band height level 0 is made in)
MIN_LEVEL_SIDE = 1024  # the pyramid goes down to a level whose longer side is at most this
COMPRESSIONS = ("jpeg", "zlib")

assert STRIP == TILE  # a rendered strip is one row of tiles


def level_sizes(width: int, height: int, min_side: int = MIN_LEVEL_SIDE) -> list[tuple[int, int]]:
    """(width, height) of every level: level 0, then halves (floor) until the longer side is
    at most ``min_side``."""
    sizes = [(int(width), int(height))]
    while max(sizes[-1]) > min_side and min(sizes[-1]) >= 4:
        w, h = sizes[-1]
        sizes.append((w // 2, h // 2))
    return sizes


def _halve(rows: np.ndarray) -> np.ndarray:
    """2x2 means (rounded) of an even-height band; an odd last column is dropped."""
    h, w = rows.shape[0] // 2 * 2, rows.shape[1] // 2 * 2
    a = rows[:h, :w].astype(np.uint16)
    s = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return ((s + 2) >> 2).astype(np.uint8)


class _Pyramid:
    """Reduced levels of one plane, made band by band from level 0 into raw scratch files."""

    def __init__(self, folder: Path, plane: int, sizes: list[tuple[int, int]]):
        self.sizes = sizes
        self.paths = [folder / f"level{k}_plane{plane}.raw" for k in range(len(sizes))]
        self.files = [open(p, "wb") for p in self.paths[1:]]
        self.carry: list[np.ndarray | None] = [None] * len(sizes)  # an odd row waiting for its pair

    def add(self, band: np.ndarray) -> None:
        """Feed the next rows of level 0."""
        rows = band
        for k in range(1, len(self.sizes)):
            if self.carry[k - 1] is not None:
                rows = np.concatenate([self.carry[k - 1], rows])
                self.carry[k - 1] = None
            if rows.shape[0] % 2:
                self.carry[k - 1] = rows[-1:].copy()
                rows = rows[:-1]
            if not rows.shape[0]:
                return
            rows = _halve(rows)
            w = self.sizes[k][0]
            self.files[k - 1].write(np.ascontiguousarray(rows[:, :w]).tobytes())

    def close(self) -> None:
        for f in self.files:
            f.close()


def _raw_rows(path: Path, width: int, y0: int, y1: int) -> np.ndarray:
    """Rows [y0, y1) of a raw uint8 (H, width, 3) scratch file (an ordinary read)."""
    row = width * 3
    with open(path, "rb") as f:
        f.seek(y0 * row)
        data = f.read((y1 - y0) * row)
    return np.frombuffer(data, np.uint8).reshape(y1 - y0, width, 3)


def _tiles_of_band(band: np.ndarray, tile: int = TILE):
    """The tiles of one band (a row of tiles), left to right, zero-padded to full tiles."""
    h, w = band.shape[:2]
    for x in range(0, w, tile):
        t = band[:, x:x + tile]
        if t.shape[0] != tile or t.shape[1] != tile:
            full = np.zeros((tile, tile, 3), np.uint8)
            full[:t.shape[0], :t.shape[1]] = t
            t = full
        yield np.ascontiguousarray(t)


class _Defocus:
    """Plane ``p`` of a focal-stack slide, band by band, from the in-focus scene (raw file):
    every grain not on ``p`` blurred by its distance in planes, as ``render_stack`` does."""

    def __init__(self, base: Path, width: int, height: int, objects: list[dict], seed: int):
        self.base, self.W, self.H, self.seed = base, width, height, seed
        self.objects = objects

    def regions(self, planes: int):
        """Per object: (x1, y1, x2, y2) of the area its widest blur touches (any plane)."""
        return [defocus_reach(o, max(o["plane"], planes - 1 - o["plane"]), self.W, self.H)[1] for o in self.objects]

    def plane_bands(self, p: int, planes: int):
        """Yields (first_row, uint8 band) of plane ``p``, ``TILE`` rows each."""
        W, H = self.W, self.H
        reach = self.regions(planes)
        margin = max([r[3] - r[1] for r in reach] or [0])
        order = sorted(range(len(self.objects)), key=lambda i: reach[i][1])
        cache: dict[int, tuple] = {}  # object -> (ay1, ax1, blurred, alpha) while bands still need it
        nxt = 0
        live: list[int] = []
        for bi, sy0 in enumerate(range(0, H, TILE)):
            sy1 = min(H, sy0 + TILE)
            by0, by1 = max(0, sy0 - margin), min(H, sy1 + margin)
            buf = None
            while nxt < len(order) and reach[order[nxt]][1] < sy1:
                live.append(order[nxt])
                nxt += 1
            live = [i for i in live if reach[i][3] > sy0]
            keep = set(live)
            for i in [i for i in cache if i not in keep]:
                del cache[i]
            band = None
            for i in live:
                o = self.objects[i]
                d = p - o["plane"]
                if d == 0:
                    continue
                if i not in cache:
                    if buf is None:
                        buf = _raw_rows(self.base, W, by0, by1)
                    cache[i] = defocus_grain(o, d, buf, by0, W, H, blur=_blur)
                ay1, ax1, blurred, alpha = cache[i]
                ya, yb = max(sy0, ay1), min(sy1, ay1 + blurred.shape[0])
                if yb <= ya:
                    continue
                if band is None:
                    band = (buf[sy0 - by0:sy1 - by0] if buf is not None else _raw_rows(self.base, W, sy0, sy1)).astype(np.float32)
                xb = ax1 + blurred.shape[1]
                dst = band[ya - sy0:yb - sy0, ax1:xb]
                a = alpha[ya - ay1:yb - ay1]
                dst *= 1.0 - a
                dst += a * blurred[ya - ay1:yb - ay1]
            if band is None:
                band = (buf[sy0 - by0:sy1 - by0] if buf is not None else _raw_rows(self.base, W, sy0, sy1)).astype(np.float32)
            noise = np.random.default_rng(_seed_of(self.seed, 8, p, bi)).standard_normal(band.shape, dtype=np.float32)
            noise *= np.float32(1.2)
            band += noise
            band += np.float32(0.5)
            np.clip(band, 0, 255, out=band)
            yield sy0, band.astype(np.uint8)


def _blur(img: np.ndarray, sigma: float, border: int) -> np.ndarray:
    """A Gaussian blur of ``sigma`` px; a wide one at reduced resolution (a defocused
    grain has no detail finer than a third of its blur), which keeps a slide of thousands of
    grains on many planes to seconds per plane instead of minutes."""
    f = int(sigma // 3)
    h, w = img.shape[:2]
    if f < 2 or min(h, w) < 4 * f:
        return cv2.GaussianBlur(img, (0, 0), sigma, borderType=border)
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f, borderType=border)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(img.shape)


def write_slide(path, seed: int, cfg: SynthConfig, planes: int = 1, compression: str = "zlib",
                jpeg_quality: int = 90, progress=None, min_level_side: int = MIN_LEVEL_SIDE) -> list[dict]:
    """Render one synthetic slide of ``cfg.width`` x ``cfg.height`` px into ``path`` (a
    pyramidal tiled BigTIFF; an OME-TIFF with a Z axis of ``planes`` focal planes when
    ``planes`` > 1) and return its objects as :func:`~pollenstudio.engine.synthetic.scene.render`
    does (level-0 pixels), with ``plane`` (0-based, where the grain is sharp) on a stack.
    ``compression``: "jpeg" (at ``jpeg_quality``) or "zlib" (deflate, lossless).
    ``progress``: ``update``/``check`` sink (a cancel leaves no file behind)."""
    import tifffile

    if compression not in COMPRESSIONS:
        raise SynthConfigError(f"slide tiles are compressed with one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    if not isinstance(planes, (int, np.integer)) or not 1 <= planes <= MAX_PLANES:
        raise SynthConfigError(f"a slide has 1..{MAX_PLANES} focal planes, got {planes!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise SynthConfigError(f"JPEG quality must be 1..100, got {jpeg_quality!r}")
    path = Path(path)
    W, H = cfg.width, cfg.height
    sizes = level_sizes(W, H, min_level_side)
    planes = int(planes)
    _check_disk(path.parent, W, H, planes, compression)
    bands = -(-H // TILE)
    steps = bands * (planes + (1 if planes > 1 else 0))
    done = [0]

    def step(msg):
        done[0] += 1
        if progress is not None:
            progress.check()
            progress.update(done[0], steps, msg)

    level_arg = int(jpeg_quality) if compression == "jpeg" else 6
    opts = dict(tile=(TILE, TILE), compression=compression, compressionargs={"level": level_arg},
                photometric="rgb", dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix=".synth-slide-", dir=path.parent) as scratch:
        scratch = Path(scratch)
        pyramids = [_Pyramid(scratch, p, sizes) for p in range(planes)]
        objects: list[dict] = []
        if planes > 1:
            # the in-focus scene once, to a raw scratch file; the planes are made from it
            base = scratch / "base.raw"
            strips, found = render_strips(int(seed), cfg, return_masks=True)
            with open(base, "wb") as f:
                for sy0, strip in strips:
                    f.write(strip.tobytes())
                    step(f"scene rows {sy0}-{sy0 + strip.shape[0]}")
            objects = found()
            rng = np.random.default_rng(_seed_of(seed, 7))
            for o in objects:
                o["plane"] = int(rng.integers(0, planes))
            defocus = _Defocus(base, W, H, objects, int(seed))

            def level0():
                for p in range(planes):
                    for sy0, band in defocus.plane_bands(p, planes):
                        pyramids[p].add(band)
                        yield from _tiles_of_band(band)
                        step(f"plane {p + 1}/{planes} rows {sy0}-{sy0 + band.shape[0]}")
                    pyramids[p].close()
        else:
            strips, found = render_strips(int(seed), cfg, return_masks=False)

            def level0():
                for sy0, strip in strips:
                    pyramids[0].add(strip)
                    yield from _tiles_of_band(strip)
                    step(f"rows {sy0}-{sy0 + strip.shape[0]}")
                pyramids[0].close()

        def level(k):
            w, h = sizes[k]
            for p in range(planes):
                for y in range(0, h, TILE):
                    yield from _tiles_of_band(_raw_rows(pyramids[p].paths[k], w, y, min(h, y + TILE)))

        shape = lambda k: ((planes,) if planes > 1 else ()) + (sizes[k][1], sizes[k][0], 3)  # noqa: E731
        tmp = path.with_name(f".{path.name}.part")
        try:
            with tifffile.TiffWriter(tmp, bigtiff=True, ome=planes > 1) as tw:
                meta = {"axes": "ZYXS"} if planes > 1 else None
                tw.write(level0(), shape=shape(0), subifds=len(sizes) - 1, metadata=meta, **opts)
                if planes == 1:
                    objects = found()
                for k in range(1, len(sizes)):
                    tw.write(level(k), shape=shape(k), subfiletype=1, metadata=None, **opts)
            os.replace(tmp, path)
        finally:
            for pyr in pyramids:
                pyr.close()
            if tmp.exists():
                tmp.unlink()
    for o in objects:
        o.pop("mask", None)
    return objects


def disk_needed(width: int, height: int, planes: int, compression: str) -> int:
    """Bytes of disk a slide takes while it is written: the in-focus scene (stacks), the
    reduced levels of every plane (a third of a plane each) and the file itself (deflate
    barely shrinks camera noise; JPEG takes about a tenth)."""
    plane = width * height * 3
    scratch = (plane if planes > 1 else 0) + planes * plane // 3
    return int(scratch + planes * plane * 4 / 3 * (1.0 if compression == "zlib" else 0.12))


def _free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent)."""
    import shutil

    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _check_disk(folder: Path, width: int, height: int, planes: int, compression: str, n: int = 1) -> None:
    need = n * disk_needed(width, height, planes, compression)
    free = _free_bytes(folder)
    if free is not None and need > free:
        raise SynthConfigError(f"{n} slide(s) of {width} x {height} px and {planes} plane(s) need about "
                               f"{need / 1e9:.1f} GB of free disk in {folder} (scratch levels and the files); "
                               f"{free / 1e9:.1f} GB are free")


def slide_name(index: int, planes: int) -> str:
    return f"{IMAGES}/slide{index:03d}" + (".ome.tif" if planes > 1 else ".tif")


def generate_slide_dataset(out_dir, n: int, cfg: SynthConfig, planes: int = 1, seed: int = 0,
                           compression: str = "zlib", jpeg_quality: int = 90, progress=None,
                           class_agnostic: bool = False) -> Path:
    """``n`` slides (``images/slideNNN.tif``, or ``.ome.tif`` with planes) and their COCO
    ground truth (``annotations.json``; boxes in level-0 pixels, ``plane`` per grain and
    ``planes`` per image on stacks). Returns the json's path."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SynthConfigError(f"number of slides must be at least 1, got {n!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SynthConfigError(f"{out} exists and is not a folder")
    _check_disk(out, cfg.width, cfg.height, planes, compression, int(n))  # before anything is written
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(int(n)):
        iseed = _image_seed(int(seed), i)
        rel = slide_name(i, planes)
        sub = _Sub(progress, i, int(n), rel)
        objects = write_slide(out / rel, iseed, cfg, planes=planes, compression=compression,
                              jpeg_quality=jpeg_quality, progress=sub)
        image = dict(id=i + 1, file_name=rel, width=cfg.width, height=cfg.height, synth_seed=iseed,
                     review_status="reviewed")
        if planes > 1:
            image["planes"] = int(planes)
        images.append(image)
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            ann = dict(id=ann_id, image_id=i + 1, category_id=1 if class_agnostic else o["category"] + 1,
                       bbox=[x1, y1, x2 - x1, y2 - y1], area=float(o["area"]), iscrowd=0,
                       segmentation=[o["polygon"]] if len(o["polygon"]) >= 6 else [])
            if planes > 1:
                ann["plane"] = o["plane"]
            annotations.append(ann)
            ann_id += 1
    coco = dict(
        info=dict(description="PollenStudio synthetic whole-slide scans (pyramidal tiled TIFF)", seed=int(seed),
                  planes=int(planes), compression=compression, config=cfg.to_dict()),
        licenses=[], images=images, annotations=annotations,
        categories=[dict(id=1, name="pollen", supercategory="pollen")] if class_agnostic
        else [dict(id=k + 1, name=name, supercategory="pollen") for k, name in enumerate(cfg.taxa_names)],
    )
    from pollenstudio.core.atomic import write_text

    path = out / ANNOTATIONS
    write_text(path, json.dumps(coco, indent=1) + "\n")
    return path


class _Sub:
    """Progress of one slide inside a set of ``n``."""

    def __init__(self, progress, index: int, n: int, name: str):
        self.progress, self.index, self.n, self.name = progress, index, n, name

    def check(self):
        if self.progress is not None:
            self.progress.check()

    def update(self, done, total, msg=""):
        if self.progress is not None:
            self.progress.update(self.index * total + done, self.n * total, f"{self.name}: {msg}")


__all__ = ["COMPRESSIONS", "MIN_LEVEL_SIDE", "TILE", "disk_needed", "generate_slide_dataset", "level_sizes",
           "write_slide"]
