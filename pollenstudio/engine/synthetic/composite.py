"""Training micrographs built from real single-grain crops pasted on generated or real backgrounds.

The generator's grains are drawn, and a detector trained only on them meets real slides with
too few grains found and many boxes on debris. This module keeps the generator's exactness
(every box known to the pixel) but uses real grains and real debris:

- grains: cut out of real single-grain crops (:mod:`.cutout`), one folder per taxon, and
  pasted as optical density, so they darken any background as they darkened their own;
- backgrounds: a grain-free frame of the generator (its mount, light, dust, fibres, bubbles)
  and/or tiles of a real slide's debris, pasted as density too; the mount is tinted (grey,
  beige, lilac, blue, pink) as real mounting media are;
- per grain: diameter drawn log-uniformly over a wide range (12-250 px by default), any
  rotation, flips, focus blur, stain (kept, fuchsin pink, safranin, unstained yellow-brown,
  grey, purple) and density (pale to dark), touching and overlapping grains, grains cut by
  the frame edge;
- per frame: an illumination gradient, camera noise, optional JPEG.

Boxes come from the pasted alpha (its 0.5 level, i.e. the mask outline), clipped to the frame;
grains with under 30 % of their mask inside the frame are drawn but not listed, as in the
generator. Same seed, inputs and settings give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.engine.synthetic.config import SynthConfig, SynthConfigError
from pollenstudio.engine.synthetic.cutout import REJECT_REASONS, Cutout, CutoutRejected, cut_out
from pollenstudio.engine.synthetic.dataset import ANNOTATIONS, IMAGES, _encode
from pollenstudio.engine.synthetic.scene import MIN_VISIBLE, _seed_of, render

F = np.float32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
AGNOSTIC_NAME = "pollen"

# Optical density per unit stain (RGB): what each stain absorbs. Normalised to mean 1.
STAINS = {
    "fuchsin": (0.25, 1.0, 0.45),  # basic fuchsin: absorbs green -> pink-magenta
    "safranin": (0.15, 0.85, 0.95),  # absorbs green and blue -> red-orange
    "unstained": (0.35, 0.6, 1.25),  # sporopollenin: absorbs blue -> yellow-brown
    "grey": (1.0, 1.0, 1.0),
    "purple": (0.55, 1.0, 0.3),  # gentian-violet-like
}
# Mount colours (multipliers of the light): neutral, warm, lilac (as fuchsin-stained
# glycerine jelly), cool blue-grey, pale pink.
TINTS = ((1.0, 1.0, 1.0), (1.02, 0.99, 0.93), (1.0, 0.9, 1.02), (0.94, 0.98, 1.03), (1.03, 0.95, 0.97))


@dataclass(frozen=True)
class CompositeConfig:
    """How a composited frame looks. ``grain_size`` is the diameter range on the frame (px)."""

    width: int = 640
    height: int = 640
    grain_size: tuple[float, float] = (12.0, 250.0)
    grains_per_frame: tuple[int, int] = (1, 14)
    max_upscale: float = 2.0  # a crop is never enlarged more than this (it would look soft)
    crowding: float = 0.3  # chance a grain is placed touching/overlapping another
    debris: tuple[float, float] = (0.0, 1.6)  # real debris tiles per 256x256 px of frame (range)
    generated_background: float = 0.7  # chance the mount is a generator frame (else plain)
    restain: float = 0.6  # chance a grain's stain is replaced
    density: tuple[float, float] = (0.4, 1.4)  # multiplier of a grain's optical density
    blur: float = 1.2  # mean per-grain focus blur (Gaussian sigma, px, before size scaling)
    noise: tuple[float, float] = (0.002, 0.02)  # camera noise std at full light (range)
    class_agnostic: bool = False
    jpeg_quality: int | None = None
    # one microscope, one magnification: a grain is pasted at its crop's own size times this
    # (+-10 %), so taxa keep their relative sizes as on a lab's slides (None: ``grain_size``)
    magnification: float | None = None

    def __post_init__(self):
        for name in ("grain_size", "grains_per_frame", "debris", "density", "noise"):
            v = getattr(self, name)
            if not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        self.validate()

    def validate(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 32 <= v <= 20000:
                raise SynthConfigError(f"frame {name} must be a whole number of pixels 32..20000, got {v!r}")
        lo, hi = self.grain_size
        if not 6 <= lo <= hi <= 2000:
            raise SynthConfigError(f"grain size must be (min, max) diameters with 6 <= min <= max <= 2000 px, got {self.grain_size!r}")
        lo, hi = self.grains_per_frame
        if not 0 <= lo <= hi <= 10000:
            raise SynthConfigError(f"grains per frame must be (min, max) with 0 <= min <= max, got {self.grains_per_frame!r}")
        if not 1.0 <= self.max_upscale <= 8.0:
            raise SynthConfigError(f"max_upscale must be 1..8, got {self.max_upscale!r}")
        for name in ("crowding", "generated_background", "restain"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SynthConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}")
        if not 0 <= self.debris[0] <= self.debris[1] <= 20:
            raise SynthConfigError(f"debris must be (min, max) tiles per 256x256 px, 0..20, got {self.debris!r}")
        if not 0 < self.density[0] <= self.density[1] <= 5:
            raise SynthConfigError(f"density must be (min, max) with 0 < min <= max <= 5, got {self.density!r}")
        if not 0 <= self.noise[0] <= self.noise[1] <= 0.5:
            raise SynthConfigError(f"noise must be (min, max) with 0 <= min <= max <= 0.5, got {self.noise!r}")
        if self.blur < 0:
            raise SynthConfigError(f"blur must be >= 0, got {self.blur!r}")
        if self.magnification is not None and not 0.01 <= self.magnification <= 10:
            raise SynthConfigError(f"magnification must be 0.01..10, got {self.magnification!r}")
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise SynthConfigError(f"JPEG quality must be 1..100, got {self.jpeg_quality!r}")

    def with_(self, **changes) -> "CompositeConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# -- sources ----------------------------------------------------------------------------


def _stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (same on every machine and Python run)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


@dataclass
class GrainLibrary:
    """Real single-grain crops: ``files[i]`` of taxon ``taxa[labels[i]]``; ``rejected`` counts
    crops whose cut-out failed its quality check (by reason), found when first used."""

    taxa: list[str]
    files: list[Path]
    labels: list[int]
    rejected: Counter = field(default_factory=Counter)

    @classmethod
    def from_folders(
        cls,
        roots,
        split: str | None = None,
        split_by: str = "crop",
        test_fraction: float = 0.2,
        split_salt: str = "",
    ) -> "GrainLibrary":
        """Crops from folders: each subfolder of a root is a taxon (its name); image files
        lying directly in a root form one taxon named after that root.

        ``split`` ("train" | "test" | None) keeps a deterministic share of the crops
        (``split_by="crop"``: by each crop's path inside its root; ``"taxon"``: whole taxa, by
        name) for held-out sets: "test" takes ``test_fraction`` of them, "train" the rest, so
        the two never share a crop (nor a taxon with split_by="taxon").
        """
        if split not in (None, "train", "test"):
            raise SynthConfigError(f"split must be train or test, got {split!r}")
        if split_by not in ("crop", "taxon"):
            raise SynthConfigError(f"split_by must be crop or taxon, got {split_by!r}")
        if not 0.0 < test_fraction < 1.0:
            raise SynthConfigError(f"test fraction must be between 0 and 1, got {test_fraction!r}")
        by_taxon: dict[str, list[Path]] = {}
        for root in roots:
            root = Path(root)
            if not root.is_dir():
                raise SynthConfigError(f"grain folder {root} does not exist or is not a folder")
            for p in sorted(root.rglob("*")):
                if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                rel = p.relative_to(root)
                taxon = rel.parts[0] if len(rel.parts) > 1 else root.name
                key = taxon if split_by == "taxon" else rel.as_posix()
                if split is not None:
                    is_test = _stable_fraction(split_salt + "|" + key) < test_fraction
                    if is_test != (split == "test"):
                        continue
                by_taxon.setdefault(taxon, []).append(p)
        if not by_taxon:
            where = ", ".join(str(r) for r in roots)
            raise SynthConfigError(f"no grain images (jpg/png/tif) found in {where}" + (f" for split {split!r}" if split else ""))
        taxa = sorted(by_taxon)
        files, labels = [], []
        for i, t in enumerate(taxa):
            files += by_taxon[t]
            labels += [i] * len(by_taxon[t])
        return cls(taxa=taxa, files=files, labels=labels)

    _usable: list | None = None

    def usable(self) -> list[int]:
        """Indices of the crops whose cut-out passes its quality check (all are checked once;
        the others are counted in ``rejected`` by reason and never pasted)."""
        if self._usable is None:
            good = []
            for i, f in enumerate(self.files):
                try:
                    _cut(str(f))
                    good.append(i)
                except CutoutRejected as e:
                    self.rejected[e.reason] += 1
            self._usable = good
        return self._usable

    def cutout(self, index: int) -> Cutout:
        return _cut(str(self.files[index]))


@lru_cache(maxsize=192)  # a 1000 px crop's cut-out is ~16 MB of float32: bound the memory
def _cut(path: str) -> Cutout:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise PollenStudioError(f"cannot read grain image {path}")
    return cut_out(np.ascontiguousarray(img[..., ::-1]), Path(path).name)


def _natural_key(path: Path) -> list:
    """Sort key reading runs of digits as numbers: tile_9_3 < tile_10_0."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def debris_tiles(folder, split: str | None = None, test_fraction: float = 0.2) -> list[Path]:
    """Debris tiles of a folder, optionally one side of a deterministic held-out split.

    Tiles cut from one slide scan are named by their place on it (``scan_<x>_<y>.jpg``), and
    neighbouring tiles share the same particles at their edges. A random split would put
    halves of one particle on both sides, so the split is one contiguous block instead: the
    last ``test_fraction`` of the tiles in natural name order ("test"), the rest ("train").
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthConfigError(f"debris folder {folder} does not exist or is not a folder")
    if split not in (None, "train", "test"):
        raise SynthConfigError(f"split must be train or test, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise SynthConfigError(f"test fraction must be between 0 and 1, got {test_fraction!r}")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: _natural_key(p.relative_to(folder)))
    if split is not None and len(files) >= 2:
        cut = min(len(files) - 1, max(1, round(len(files) * (1.0 - test_fraction))))
        files = files[:cut] if split == "train" else files[cut:]
    if not files:
        raise SynthConfigError(f"no debris images found in {folder}")
    return files


@lru_cache(maxsize=320)  # 256 px tiles: ~0.8 MB each, the whole debris folder fits
def _debris_od(path: str) -> np.ndarray:
    """A debris tile as optical density over its own mount (the bright mode of its pixels)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise PollenStudioError(f"cannot read debris image {path}")
    rgb = img[..., ::-1].astype(F) / 255.0
    lum = rgb.mean(-1)
    bright = rgb[lum >= np.percentile(lum, 90)]
    mount = np.median(bright, axis=0)
    od = -np.log(np.clip(rgb, 1 / 255.0, None) / np.clip(mount, 1 / 255.0, None))
    return np.clip(od, 0.0, 4.0).astype(F)


# -- one frame ---------------------------------------------------------------------------


def _ragged_window(rng: np.random.Generator, h: int, w: int, edge: int) -> np.ndarray:
    """A tile's alpha: 1 inside, fading to 0 at its border along an irregular, torn-looking
    line (smooth noise added to the distance from the border), so debris cut by the tile's
    edge does not end in a straight line."""
    e = max(2, min(edge, h // 2, w // 2))
    ys, xs = np.mgrid[0:h, 0:w]
    dist = np.minimum(np.minimum(ys, h - 1 - ys), np.minimum(xs, w - 1 - xs)).astype(F) / F(e)
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(F), (0, 0), max(1.0, e / 3))
    noise /= max(1e-6, float(noise.std()))
    a = np.clip((dist + F(0.35) * noise - F(0.5)) * F(3), 0, 1)
    return cv2.GaussianBlur(a, (0, 0), 1.0) * np.clip(dist * 4, 0, 1)


def _add(acc: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> None:
    """acc[y0:, x0:] += patch, clipped to the frame (patch may hang over any edge)."""
    H, W = acc.shape[:2]
    h, w = patch.shape[:2]
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if xa < xb and ya < yb:
        acc[ya:yb, xa:xb] += patch[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _transform(c: Cutout, scale: float, angle: float, flip: bool, blur: float):
    """Scale, flip, rotate (canvas grows to hold it) and blur a cut-out: (od, alpha)."""
    od, alpha = c.od, c.alpha
    if flip:
        od, alpha = od[:, ::-1], alpha[:, ::-1]
    h, w = alpha.shape
    cx, cy = w / 2, h / 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * cos + h * sin)) + 4, int(np.ceil(w * sin + h * cos)) + 4
    m[0, 2] += nw / 2 - cx
    m[1, 2] += nh / 2 - cy
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if scale < 0.7:
        # pre-shrink with area averaging: warpAffine alone would alias fine sculpture
        f = scale / 0.7
        od = cv2.resize(np.ascontiguousarray(od), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(np.ascontiguousarray(alpha), (od.shape[1], od.shape[0]), interpolation=cv2.INTER_AREA)
        m = cv2.getRotationMatrix2D((od.shape[1] / 2, od.shape[0] / 2), angle, 0.7)
        m[0, 2] += nw / 2 - od.shape[1] / 2
        m[1, 2] += nh / 2 - od.shape[0] / 2
        interp = cv2.INTER_LINEAR
    od = cv2.warpAffine(np.ascontiguousarray(od), m, (nw, nh), flags=interp, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(np.ascontiguousarray(alpha), m, (nw, nh), flags=interp, borderMode=cv2.BORDER_CONSTANT)
    if blur > 0.3:
        od = cv2.GaussianBlur(od, (0, 0), blur)
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    return od, alpha


MIN_DENSITY = 0.05  # mean optical density of a grain never goes below this (it would be invisible)


def _restain(od: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, cfg: CompositeConfig) -> np.ndarray:
    if rng.uniform() < cfg.restain:
        names = list(STAINS)
        stain = np.array(STAINS[names[int(rng.integers(len(names)))]], F)
        stain = stain * np.exp(rng.normal(0, 0.12, 3)).astype(F)
        stain /= stain.mean()
        amount = od.mean(-1, keepdims=True)
        mix = F(rng.uniform(0.6, 1.0))
        od = (1 - mix) * od + mix * amount * stain
    lo, hi = cfg.density
    od = od * F(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    inside = alpha >= 0.5
    mean = float(np.abs(od[inside]).mean()) if inside.any() else 0.0
    if 0 < mean < MIN_DENSITY:
        od = od * F(MIN_DENSITY / mean)
    return od


def _background(rng, seed: int, cfg: CompositeConfig) -> np.ndarray:
    """Mount and light, float32 RGB 0..1: a grain-free generator frame or a plain lit mount."""
    W, H = cfg.width, cfg.height
    tint = np.array(TINTS[int(rng.integers(len(TINTS)))], F) * F(rng.uniform(0.9, 1.05))
    if rng.uniform() < cfg.generated_background:
        difficulty = ("easy", "default", "hard")[int(rng.integers(3))]
        gcfg = SynthConfig(width=W, height=H, difficulty=difficulty, n_grains=(0, 0), clutter=float(rng.uniform(0.0, 1.0)) * {"easy": 0.3, "default": 0.7, "hard": 1.3}[difficulty])
        img, _ = render(_seed_of(seed, 11), gcfg)
        bg = img.astype(F) / 255.0
    else:
        bg = np.ones((H, W, 3), F) * F(rng.uniform(0.78, 0.92))
    return bg * tint


def _light(rng, H: int, W: int) -> np.ndarray:
    """Smooth illumination: a linear gradient and an off-centre vignette (multiplier)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(F)
    ang = rng.uniform(0, 2 * np.pi)
    g = F(rng.uniform(0, 0.18)) * ((xs / W - 0.5) * F(np.cos(ang)) + (ys / H - 0.5) * F(np.sin(ang)))
    cx, cy = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H
    r2 = (np.square(xs - F(cx)) + np.square(ys - F(cy))) / F((W * W + H * H) / 4)
    v = np.exp(-F(rng.uniform(0.0, 0.4)) * r2)
    return ((1 + g) * v)[..., None]


def composite_image(seed: int, library: GrainLibrary, cfg: CompositeConfig | None = None, debris: list | None = None):
    """One composited frame: ``(img uint8 (H, W, 3) RGB, objects)``.

    ``objects``: dicts ``bbox`` (x1, y1, x2, y2) float px, ``category`` (index into
    ``library.taxa``, or 0 with ``class_agnostic``), ``name``, ``area`` (visible mask px),
    ``source`` (the crop's file name). Same seed, library, debris and config -> same pixels.
    """
    cfg = cfg or CompositeConfig()
    W, H = cfg.width, cfg.height
    rng = np.random.default_rng(_seed_of(seed, 21))
    base = _background(rng, seed, cfg)
    od = np.zeros((H, W, 3), F)

    if debris:
        lo, hi = cfg.debris
        lam = rng.uniform(lo, hi) * W * H / (256.0 * 256.0)
        for _ in range(int(rng.poisson(lam))):
            tile = _debris_od(str(debris[int(rng.integers(len(debris)))]))
            s = float(np.exp(rng.uniform(np.log(0.5), np.log(1.6))))
            tile = cv2.resize(tile, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            tile = np.rot90(tile, int(rng.integers(4)))
            if rng.uniform() < 0.5:
                tile = tile[:, ::-1]
            th, tw = tile.shape[:2]
            tile = tile * _ragged_window(rng, th, tw, max(6, int(0.3 * min(th, tw))))[..., None]
            tile = tile * F(rng.uniform(0.5, 1.1))
            _add(od, np.ascontiguousarray(tile, dtype=F), int(rng.integers(-tw // 2, W - tw // 2 + 1)), int(rng.integers(-th // 2, H - th // 2 + 1)))

    lo_n, hi_n = cfg.grains_per_frame
    good = library.usable()
    n = int(rng.integers(lo_n, hi_n + 1)) if good else 0
    lo_d, hi_d = cfg.grain_size
    placed: list[tuple[float, float, float]] = []
    objects = []
    for k in range(n):
        # each grain draws from its own stream: the frame's own draws (light, noise) do not
        # depend on how many grains it holds
        grng = np.random.default_rng(_seed_of(seed, 22, k))
        idx = good[int(grng.integers(len(good)))]
        c = library.cutout(idx)
        d = float(np.exp(grng.uniform(np.log(lo_d), np.log(hi_d))))
        if cfg.magnification is not None:
            d = c.diameter * cfg.magnification * float(np.exp(grng.uniform(np.log(0.9), np.log(1.1))))
        d = min(d, c.diameter * cfg.max_upscale)
        scale = d / c.diameter
        blur = float(grng.exponential(cfg.blur)) * max(0.5, d / 60.0) ** 0.5 if cfg.blur > 0 else 0.0
        god, alpha = _transform(c, scale, float(grng.uniform(0, 360)), bool(grng.uniform() < 0.5), blur)
        god = _restain(god, alpha, grng, cfg)
        h, w = alpha.shape
        if placed and grng.uniform() < cfg.crowding:
            px, py, pd = placed[int(grng.integers(len(placed)))]
            ang = grng.uniform(0, 2 * np.pi)
            dist = (pd + d) / 2 * grng.uniform(0.65, 1.02)
            cx, cy = px + dist * np.cos(ang), py + dist * np.sin(ang)
        else:
            m = 0.35 * d  # some centres beyond the edge: grains cut by the frame
            cx, cy = grng.uniform(-m, W + m), grng.uniform(-m, H + m)
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        placed.append((cx, cy, d))
        _add(od, god, x0, y0)
        box = _visible_box(alpha >= 0.5, x0, y0, W, H)
        if box is None:
            continue
        (x1, y1, x2, y2), area, frac = box
        if frac < MIN_VISIBLE:
            continue
        ti = library.labels[idx]
        name = AGNOSTIC_NAME if cfg.class_agnostic else library.taxa[ti]
        objects.append(dict(bbox=(x1, y1, x2, y2), category=0 if cfg.class_agnostic else ti, name=name, area=area, source=library.files[idx].name))

    img = base * np.exp(-od) * _light(rng, H, W)
    sd = F(rng.uniform(*cfg.noise))
    img += np.random.default_rng(_seed_of(seed, 23)).standard_normal(img.shape, dtype=F) * sd * np.sqrt(np.clip(img, 0, None) + F(0.05))
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if cfg.jpeg_quality is not None:
        data, _ = _encode(out, cfg.jpeg_quality)
        out = np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])
    return out, objects


def _visible_box(mask: np.ndarray, x0: int, y0: int, W: int, H: int):
    total = int(mask.sum())
    if total == 0:
        return None
    h, w = mask.shape
    ya, yb, xa, xb = max(0, -y0), min(h, H - y0), max(0, -x0), min(w, W - x0)
    if ya >= yb or xa >= xb:
        return None
    vis = mask[ya:yb, xa:xb]
    area = int(vis.sum())
    if area == 0:
        return None
    rows, cols = np.flatnonzero(vis.any(1)), np.flatnonzero(vis.any(0))
    box = (float(x0 + xa + cols[0]), float(y0 + ya + rows[0]), float(x0 + xa + cols[-1] + 1), float(y0 + ya + rows[-1] + 1))
    return box, area, area / total


# -- a dataset ---------------------------------------------------------------------------


def composite_dataset(out_dir, n: int, library: GrainLibrary, seed: int = 0, cfg: CompositeConfig | None = None, debris: list | None = None, progress=None) -> Path:
    """Write ``n`` composited frames and a COCO json, as :func:`generate_dataset` does.

    The json's ``info`` records the settings, the crops used and the crops skipped (by
    reason, with REJECT_REASONS' words). On cancel nothing is written for the json.
    """
    cfg = cfg or CompositeConfig()
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SynthConfigError(f"number of images must be at least 1, got {n!r}")
    if not library.usable():
        raise SynthConfigError(f"none of the {len(library.files)} grain crops could be cut out cleanly; nothing to paste")
    out = Path(out_dir)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    names = [AGNOSTIC_NAME] if cfg.class_agnostic else list(library.taxa)
    images, annotations, used = [], [], Counter()
    for i in range(int(n)):
        if progress is not None:
            progress.check()
        iseed = _seed_of(int(seed), 2000, i) >> 1
        img, objects = composite_image(iseed, library, cfg, debris)
        data, ext = _encode(img, cfg.jpeg_quality)
        rel = f"{IMAGES}/{i:06d}{ext}"
        (out / rel).write_bytes(data)
        images.append(dict(id=i + 1, file_name=rel, width=cfg.width, height=cfg.height, synth_seed=iseed,
                           review_status="reviewed"))  # complete ground truth: an empty frame is a true negative
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            used[o["source"]] += 1
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=o["category"] + 1, bbox=[x1, y1, x2 - x1, y2 - y1], area=float(o["area"]), iscrowd=0))
        if progress is not None:
            progress.update(i + 1, int(n), rel)
    skipped = {REJECT_REASONS[k]: v for k, v in sorted(library.rejected.items())}
    coco = dict(
        info=dict(
            description="PollenStudio composited micrographs: real grain crops on generated/real backgrounds",
            seed=int(seed),
            config=cfg.to_dict(),
            crops=len(library.files),
            crops_used=len(used),
            crops_skipped=sum(library.rejected.values()),
            skipped_by_reason=skipped,
            debris_tiles=len(debris or []),
        ),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=k + 1, name=name, supercategory="pollen") for k, name in enumerate(names)],
    )
    path = out / ANNOTATIONS
    from pollenstudio.core.atomic import write_text

    write_text(path, json.dumps(coco, indent=1) + "\n")  # unique temp file + rename
    return path
