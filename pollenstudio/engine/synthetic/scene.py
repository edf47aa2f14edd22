"""Scene layout and compositing: one brightfield image with its grain annotations."""

from __future__ import annotations

import cv2
import numpy as np

from pollenstudio.engine.synthetic import clutter
from pollenstudio.engine.synthetic.config import SynthConfig
from pollenstudio.engine.synthetic.grains import SIZE_BIAS, grain_half, render_grain
from pollenstudio.engine.synthetic.patch import Patch

F = np.float32
STRIP = 256  # rows composited at once; fixed so the noise (seeded per strip) never changes
MIN_VISIBLE = 0.3  # grains with less of their mask inside the image are not annotated
_REF_AREA = 640 * 480
_GRAINS_PER_REF = (4, 16)  # at 50 px diameter on a 640x480 field


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0])


def _image_style(rng: np.random.Generator, cfg: SynthConfig) -> dict:
    blur = cfg.knob("blur")
    warm = rng.uniform(0, 1)
    # background from neutral grey to warm beige, brightness from a slightly dim exposure
    bg = np.array([0.80 + 0.07 * warm, 0.785 + 0.01 * warm, 0.765 - 0.08 * warm]) * rng.uniform(0.86, 1.04)
    bg += rng.normal(0, 0.012, 3)
    return dict(
        bg=bg.astype(F),
        vignette=rng.uniform(0.15, 0.45),
        chroma=rng.uniform(0.0, 1.2),  # lateral chromatic aberration at the corners, px
        vig_centre=(rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)),
        uneven=rng.uniform(0.02, 0.07),
        mottle=rng.uniform(0.003, 0.01),
        focus_blur=blur * rng.uniform(0.6, 1.4),
        focus=rng.uniform(-0.6, 1.0),
        hue=rng.uniform(0.1, 0.85),
        density=rng.uniform(0.3, 0.55),
        wall=rng.uniform(1.0, 1.5),
        granule=rng.uniform(0.3, 0.6),
    )


def _grain_look(rng, style, cfg) -> dict:
    return dict(
        hue=float(np.clip(style["hue"] + rng.normal(0, 0.12), 0, 1)),
        density=style["density"] * rng.uniform(0.75, 1.3),
        wall=style["wall"] * rng.uniform(0.85, 1.15),
        granule=style["granule"],
        blur=0.35 + style["focus_blur"] * rng.uniform(0.5, 1.6),
        focus=float(np.clip(style["focus"] + rng.normal(0, 0.3), -1, 1)),
        contrast=cfg.knob("contrast") * rng.uniform(0.85, 1.1),
    )


def _layout(rng: np.random.Generator, cfg: SynthConfig):
    """Grain list: (cx, cy, taxon_index, diameter, seed); clustered and cut by the border."""
    W, H = cfg.width, cfg.height
    taxa = cfg.taxa_names
    lo_d, hi_d = cfg.grain_size
    if cfg.n_grains is None:
        scale = (W * H / _REF_AREA) * (50.0 / ((lo_d + hi_d) / 2)) ** 2
        lo, hi = (max(0, int(round(v * scale))) for v in _GRAINS_PER_REF)
        hi = max(hi, 1)
    else:
        lo, hi = cfg.n_grains
    n = int(rng.integers(lo, hi + 1))
    abundance = rng.dirichlet(np.full(len(taxa), 2.0))
    crowd = cfg.knob("crowding")
    grains = []
    for _ in range(n):
        ti = int(rng.choice(len(taxa), p=abundance))
        b0, b1 = SIZE_BIAS[taxa[ti]]
        diam = lo_d + (hi_d - lo_d) * rng.uniform(b0, b1)
        if grains and rng.uniform() < crowd:
            # touching or overlapping a previous grain: clusters as on real slides
            px, py, _, pd, _ = grains[int(rng.integers(len(grains)))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = (pd + diam) / 2 * rng.uniform(0.7, 1.02)
            cx, cy = px + dist * np.cos(ang), py + dist * np.sin(ang)
        else:
            m = 0.35 * diam  # some centres beyond the edge: grains cut by the border
            cx, cy = rng.uniform(-m, W + m), rng.uniform(-m, H + m)
        grains.append((float(cx), float(cy), ti, float(diam), int(rng.integers(2**62))))
    return grains


def _distractors(rng: np.random.Generator, cfg: SynthConfig, style: dict):
    W, H = cfg.width, cfg.height
    c = cfg.knob("clutter") * W * H / _REF_AREA
    mean_d = sum(cfg.grain_size) / 2
    kinds = [
        (clutter.debris, 10 * c, (3, 0.45 * mean_d)),
        (clutter.debris, 45 * c, (1.2, 3.5)),  # specks of dust
        (clutter.fibre, 1.2 * c, (0.8 * mean_d, 5 * mean_d)),
        (clutter.bubble, 0.5 * c, (0.2 * mean_d, 1.2 * mean_d)),
        (clutter.blob, 3 * c, (0.4 * mean_d, 1.5 * mean_d)),
        (clutter.cloud, 1.5 * c, (0.8 * mean_d, 3 * mean_d)),
        (clutter.tissue, 0.8 * c, (0.6 * mean_d, 2.5 * mean_d)),
    ]
    out = []
    for fn, lam, (s0, s1) in kinds:
        for _ in range(int(rng.poisson(lam))):
            size = float(np.exp(rng.uniform(np.log(s0), np.log(s1))))
            cx, cy = rng.uniform(-0.2 * size, W + 0.2 * size), rng.uniform(-0.2 * size, H + 0.2 * size)
            sigma = 0.3 + style["focus_blur"] * rng.uniform(0.3, 2.0)
            out.append((fn, float(cx), float(cy), size, float(sigma), int(rng.integers(2**62))))
    return out


def _interp_weights(pos: np.ndarray, k: int) -> np.ndarray:
    """(n, k) smooth partition-of-unity weights of k control points at positions 0..k-1."""
    w = np.exp(-np.square(pos[:, None] - np.arange(k)[None, :]) / 0.8)
    return w / w.sum(1, keepdims=True)


def _visible(patch: Patch, W: int, H: int):
    """Bounding box (x1, y1, x2, y2), visible pixel count and visible fraction of a grain mask."""
    m = patch.mask
    total = int(m.sum())
    ya, yb = max(0, -patch.y0), min(m.shape[0], H - patch.y0)
    xa, xb = max(0, -patch.x0), min(m.shape[1], W - patch.x0)
    if total == 0 or ya >= yb or xa >= xb:
        return None, 0, 0.0, None
    vis = m[ya:yb, xa:xb]
    area = int(vis.sum())
    if area == 0:
        return None, 0, 0.0, None
    rows = np.flatnonzero(vis.any(1))
    cols = np.flatnonzero(vis.any(0))
    x1, y1 = patch.x0 + xa + cols[0], patch.y0 + ya + rows[0]
    box = (float(x1), float(y1), float(patch.x0 + xa + cols[-1] + 1), float(patch.y0 + ya + rows[-1] + 1))
    crop = vis[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return box, area, area / total, crop


def _polygon(crop: np.ndarray, x1: float, y1: float) -> list[float]:
    cs, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cs:
        return []
    c = max(cs, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    if len(c) < 3:
        h, w = crop.shape
        return [x1, y1, x1 + w, y1, x1 + w, y1 + h, x1, y1 + h]
    c += np.array([x1 + 0.5, y1 + 0.5])
    return [round(float(v), 2) for v in c.ravel()]


def render(seed: int, cfg: SynthConfig, return_masks: bool = False):
    """Render the raw (pre-JPEG) image and its objects; see :func:`generate_image`."""
    strips, objects = render_strips(seed, cfg, return_masks)
    img = np.empty((cfg.height, cfg.width, 3), np.uint8)
    for sy0, strip in strips:
        img[sy0:sy0 + strip.shape[0]] = strip
    return img, objects()


def render_strips(seed: int, cfg: SynthConfig, return_masks: bool = False):
    """The image of :func:`render` as ``STRIP``-row strips, so a whole-slide scan is never
    held at once: ``(strips, objects)`` where ``strips`` yields ``(first_row, uint8 (rows,
    W, 3))`` top to bottom and ``objects()`` returns the objects once the strips are all
    read (a grain is listed when the strips reach it). Same pixels as :func:`render`."""
    rng = np.random.default_rng(_seed_of(seed, 1))
    style = _image_style(rng, cfg)
    grains = _layout(rng, cfg)
    # forced grains get their own streams so adding one does not move anything else
    for k, (cx, cy, ti, diam) in enumerate(cfg.forced_grains):
        grains.append((float(cx), float(cy), int(ti), float(diam), _seed_of(seed, 2, k)))
    extras = _distractors(rng, cfg, style)

    # Patches are rendered when the strip loop first reaches them and dropped after, so a
    # slide scan never holds all of them at once. ``top`` is a row at or above the patch.
    taxa = cfg.taxa_names
    found: dict[int, dict] = {}
    specs = []
    for gi, (cx, cy, ti, diam, gseed) in enumerate(grains):
        grng = np.random.default_rng(gseed)
        look = _grain_look(grng, style, cfg)
        top = int(np.floor(cy)) - grain_half(diam, look["blur"])

        def make(gi=gi, cx=cx, cy=cy, ti=ti, diam=diam, grng=grng, look=look):
            p = render_grain(grng, taxa[ti], cx, cy, diam, look)
            box, area, frac, crop = _visible(p, cfg.width, cfg.height)
            if box is not None and frac >= MIN_VISIBLE:
                obj = dict(bbox=box, category=ti, name=taxa[ti], area=area, polygon=_polygon(crop, box[0], box[1]))
                if return_masks:
                    obj["mask"] = crop
                found[gi] = obj
            p.mask = None
            return p

        specs.append((top, make))
    for fn, cx, cy, size, sigma, dseed in extras:
        top = int(np.floor(cy)) - int(np.ceil(1.2 * size + 3 * sigma + 12))
        specs.append((top, lambda fn=fn, cx=cx, cy=cy, size=size, sigma=sigma, dseed=dseed: fn(np.random.default_rng(dseed), cx, cy, size, sigma)))

    def objects():
        return [found[k] for k in sorted(found)]

    return _composite(seed, cfg, style, specs), objects


def _illumination(rng, style: dict, W: int, H: int, mf: int) -> np.ndarray:
    """Light reaching the camera without a specimen, at 1/mf resolution: (H/mf+6, W/mf+6, 3).

    Everything in it is smooth (uneven lamp, off-centre vignette, faint mottle of the mount
    and optics), so the strips enlarge it with a cubic resize instead of computing per pixel.
    """
    gh, gw = H // mf + 6, W // mf + 6
    # full-resolution coordinates of the low-resolution pixel centres under cv2.resize
    ys = (np.arange(gh) + 0.5) * mf
    xs = (np.arange(gw) + 0.5) * mf
    gk = 5
    field = 1 + rng.normal(0, style["uneven"], (gk, gk, 1)) + rng.normal(0, style["uneven"] * 0.25, (gk, gk, 3))
    wy = _interp_weights(ys / H * (gk - 1), gk)
    wx = _interp_weights(xs / W * (gk - 1), gk)
    lamp = np.einsum("yi,ijc,xj->yxc", wy, field, wx)
    diag = np.hypot(W, H) / 2
    vx = np.exp(-style["vignette"] * np.square((xs - style["vig_centre"][0] * W) / diag))
    vy = np.exp(-style["vignette"] * np.square((ys - style["vig_centre"][1] * H) / diag))
    mottle = cv2.GaussianBlur(rng.standard_normal((gh, gw)), (0, 0), 2.0)
    mottle *= style["mottle"] / max(1e-6, float(mottle.std()))
    light = lamp * (np.outer(vy, vx) * (1 + mottle))[..., None] * style["bg"].astype(np.float64)
    return light.astype(F)


def _chromatic(p: Patch, strength: float, W: int, H: int) -> Patch:
    """Lateral chromatic aberration: red imaged a little further out than blue, growing
    towards the corners, so off-centre edges get colour fringes as in real objectives."""
    if strength <= 0:
        return p
    h, w = p.od.shape[:2]
    ox = (p.x0 + w / 2 - W / 2) / (np.hypot(W, H) / 2)
    oy = (p.y0 + h / 2 - H / 2) / (np.hypot(W, H) / 2)
    dx, dy = strength * ox, strength * oy
    if abs(dx) < 0.05 and abs(dy) < 0.05:
        return p
    for c, sign in ((0, 0.5), (2, -0.5)):
        m = np.float32([[1, 0, sign * dx], [0, 1, sign * dy]])
        p.od[..., c] = cv2.warpAffine(np.ascontiguousarray(p.od[..., c]), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return p


def _composite(seed: int, cfg: SynthConfig, style: dict, specs: list):
    """Yields ``(first_row, uint8 strip)`` of ``STRIP`` rows, top to bottom."""
    W, H = cfg.width, cfg.height
    rng = np.random.default_rng(_seed_of(seed, 3))
    mf = 16
    light = _illumination(rng, style, W, H, mf)
    noise = cfg.knob("noise")
    sd_bg = (0.6 + 8.0 * noise) / 255.0 if noise > 0 else 0.0  # noise std at the background
    read = 0.35 * sd_bg
    gain = max(0.0, (sd_bg**2 - read**2) / 0.8)
    k1 = cv2.getGaussianKernel(7, 0.55)
    corr = float(np.square(k1).sum())  # std left after the slight demosaic-like smoothing
    # colour noise partly shared between channels, as after demosaicing (unit variance)
    mix = (np.eye(3) * 0.62 + 0.3).astype(F)

    order = sorted(range(len(specs)), key=lambda i: (specs[i][0], i))
    nxt = 0
    active: list[Patch] = []
    for si, sy0 in enumerate(range(0, H, STRIP)):
        sy1 = min(H, sy0 + STRIP)
        rows = sy1 - sy0
        # render what reaches into this strip (also those ending above the image: grains
        # cut by the top border still need their annotation)
        while nxt < len(order) and (specs[order[nxt]][0] < sy1 or sy1 == H):
            p = _chromatic(specs[order[nxt]][1](), style["chroma"], W, H)
            nxt += 1
            if p.x1 > 0 and p.y1 > sy0 and p.x0 < W and p.y0 < H:
                active.append(p)
        active = [p for p in active if p.y1 > sy0]
        od = np.zeros((rows, W, 3), F)
        halo = np.zeros((rows, W), F)
        for p in active:
            if p.y0 >= sy1:
                continue
            ya, yb = max(sy0, p.y0), min(sy1, p.y1)
            xa, xb = max(0, p.x0), min(W, p.x1)
            od[ya - sy0 : yb - sy0, xa:xb] += p.od[ya - p.y0 : yb - p.y0, xa - p.x0 : xb - p.x0]
            if p.halo is not None:
                halo[ya - sy0 : yb - sy0, xa:xb] += p.halo[ya - p.y0 : yb - p.y0, xa - p.x0 : xb - p.x0]
        # enlarge the rows of the low-resolution light this strip needs, with margins so the
        # cubic kernel sees what a full-frame resize would (no seams between strips)
        lb = max(0, sy0 // mf - 2)
        le = min(light.shape[0], -(-sy1 // mf) + 3)
        block = cv2.resize(light[lb:le], (light.shape[1] * mf, (le - lb) * mf), interpolation=cv2.INTER_CUBIC)
        illum = block[sy0 - lb * mf : sy1 - lb * mf, :W]
        # cv2 element-wise ops, in place where possible: numpy broadcasting over a trailing
        # axis of 3 is several times slower, and temporaries set the peak memory of a scan
        np.negative(od, out=od)
        img = cv2.exp(od, dst=od)
        cv2.add(img, cv2.cvtColor(halo, cv2.COLOR_GRAY2RGB), dst=img)
        cv2.multiply(img, illum, dst=img)
        del halo, illum, block
        srng = np.random.default_rng(_seed_of(seed, 4, si))
        n = cv2.transform(srng.standard_normal((rows, W, 3), dtype=F), mix)
        n = cv2.GaussianBlur(n, (7, 7), 0.55, borderType=cv2.BORDER_REFLECT)
        sd = np.maximum(img, 0)
        sd *= F(gain)
        sd += F(read * read)
        np.sqrt(sd, out=sd)
        sd *= F(1 / corr)
        sd *= n
        del n
        img += sd
        del sd
        img *= F(255)
        img += F(0.5)
        np.clip(img, 0, 255, out=img)
        yield sy0, img.astype(np.uint8)
