"""Things on a slide that are not pollen: debris, specks, fibres, air bubbles, blurred blobs
and amorphous organic clouds. Never annotated; they are what a detector must learn to ignore."""

from __future__ import annotations

import cv2
import numpy as np

from pollenstudio.engine.synthetic.patch import Patch, blur, gauss, local_grid, smooth_noise, voronoi_net

F = np.float32
_K_DARK = np.array([0.85, 0.95, 1.1], dtype=F)  # charcoal / opaque debris: almost neutral
_K_ORGANIC = np.array([0.35, 0.6, 1.0], dtype=F)  # brownish organic matter
_K_GREY = np.array([1.0, 1.0, 1.0], dtype=F)


def _poly_cov(pts: np.ndarray, shape) -> np.ndarray:
    """Antialiased coverage (float32 0..1) of a polygon in patch pixel coordinates."""
    img = np.zeros(shape, np.uint8)
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return img.astype(F) / F(255)


def debris(rng, cx, cy, size, blur_sigma) -> Patch:
    """Dark angular fragment (charcoal, mineral grain)."""
    half = int(np.ceil(size + 3 * blur_sigma + 3))
    n = 2 * half + 1
    k = int(rng.integers(4, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = size * rng.uniform(0.35, 1.0, k) * 0.5
    elong = rng.uniform(0.4, 1.0)
    rot = rng.uniform(0, np.pi)
    x, y = rad * np.cos(ang), rad * np.sin(ang) * elong
    pts = np.stack([x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)], 1)
    pts += np.array([cx - np.floor(cx) + half, cy - np.floor(cy) + half])
    cov = _poly_cov(pts, (n, n))
    dens = rng.uniform(0.8, 3.0)
    k_col = _K_DARK if rng.uniform() < 0.6 else _K_ORGANIC * F(1.3)
    od = blur((cov[..., None] * (k_col * F(dens))).astype(F), blur_sigma)
    halo = blur(F(0.1) * (blur(cov, 1.5) - cov).clip(0, 1), blur_sigma)
    return Patch(int(np.floor(cx)) - half, int(np.floor(cy)) - half, od, halo)


def fibre(rng, cx, cy, length, blur_sigma) -> Patch:
    """A translucent fibre: a curved band with darker edges and a light core."""
    w = rng.uniform(1.5, 5.5)
    steps = max(4, int(length / 3))
    heading = rng.uniform(0, 2 * np.pi)
    # gentle bends: a smoothed random walk of the heading, not a spiral
    turn = cv2.GaussianBlur(rng.normal(0, 0.12, (steps, 1)), (0, 0), 4).ravel()
    ang = heading + np.cumsum(turn)
    pts = np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * 3.0, 0)
    pts -= pts.mean(0)
    half = int(np.ceil(np.abs(pts).max() + w + 3 * blur_sigma + 4))
    n = 2 * half + 1
    pts += np.array([cx - np.floor(cx) + half, cy - np.floor(cy) + half])
    img = np.zeros((n, n), np.uint8)
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, 255, int(round(w)), cv2.LINE_AA, shift=4)
    inside = (img > 127).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3).astype(F)
    cov = img.astype(F) / F(255)
    dens = rng.uniform(0.25, 0.7)
    edge = cov * gauss(dist - 0.7, 1.0)
    od = (cov * F(0.25 * dens) + edge * F(dens))[..., None] * (_K_ORGANIC * F(0.8))
    halo = F(0.05) * cov * gauss(dist - w / 2, max(0.8, w / 4))
    x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
    return Patch(x0, y0, blur(od.astype(F), blur_sigma), blur(halo.astype(F), blur_sigma))


def bubble(rng, cx, cy, radius, blur_sigma) -> Patch:
    """An air bubble: a thick dark ring with a sharp outer edge around a bright interior."""
    half = int(np.ceil(radius + 3 * blur_sigma + 4))
    x0, y0, X, Y = local_grid(cx, cy, half)
    rho = np.sqrt(X * X + Y * Y)
    d = F(radius) - rho
    band = max(2.0, radius * rng.uniform(0.18, 0.35))
    cov = np.clip(d + 0.5, 0, 1)
    # total internal reflection makes the rim of a bubble black, sharp outside, soft inside
    ring = cov * np.clip(1 - d / F(band), 0, 1) ** 1.2
    od = (F(rng.uniform(1.3, 2.4)) * ring)[..., None] * _K_GREY
    inner = cov * np.clip(d / F(band) - 1, 0, 1).clip(0, 1)
    halo = 0.06 * inner + 0.18 * gauss(d - 1.25 * band, 0.3 * band) + 0.18 * gauss(rho, max(1.0, 0.1 * radius))
    halo += 0.08 * gauss(d + 1.2, 1.0)
    return Patch(x0, y0, blur(od.astype(F), blur_sigma), blur(halo.astype(F), blur_sigma))


def blob(rng, cx, cy, size, blur_sigma) -> Patch:
    """Something out of the focal plane: a soft round shadow, sometimes with a faint rim."""
    sig = max(3.0, size / 4 + blur_sigma)
    half = int(np.ceil(size / 2 + 2.5 * sig + 2))
    x0, y0, X, Y = local_grid(cx, cy, half)
    rho = np.sqrt(X * X + Y * Y)
    disc = np.clip(F(size / 2) - rho + 0.5, 0, 1)
    disc = blur(disc.astype(F), sig)
    dens = rng.uniform(0.05, 0.3)
    od = (disc * F(dens))[..., None] * (_K_ORGANIC if rng.uniform() < 0.7 else _K_GREY)
    halo = F(rng.uniform(-0.05, 0.08)) * blur(gauss(rho - F(size / 2), sig * 0.5), sig * 0.3)
    return Patch(x0, y0, od.astype(F), halo.astype(F))


def cloud(rng, cx, cy, size, blur_sigma) -> Patch:
    """Amorphous organic matter: a faint, granular, irregular brownish patch."""
    half = int(np.ceil(size / 2 + 4))
    x0, y0, X, Y = local_grid(cx, cy, half)
    rn = np.sqrt(X * X + Y * Y) / F(size / 2)
    shape = smooth_noise(rng, X.shape, max(2.0, size / 8)) + 1.2 * (1 - rn)
    # the fade keeps the cloud inside its patch (no square edges)
    cov = np.clip((shape - 0.8) * 1.5, 0, 1) * np.clip((1 - rn) * 4, 0, 1)
    grain = smooth_noise(rng, X.shape, 0.8)
    dens = rng.uniform(0.08, 0.35)
    od = (cov * F(dens) * (1 + 0.4 * grain)).clip(0, None)[..., None] * _K_ORGANIC
    return Patch(x0, y0, blur(od.astype(F), blur_sigma + 0.5), None)


def tissue(rng, cx, cy, size, blur_sigma) -> Patch:
    """A fragment of plant tissue: an irregular translucent brown sheet of cells, roughly
    grain-sized, the distractor most easily mistaken for a grain."""
    half = int(np.ceil(size * 0.6 + 3 * blur_sigma + 3))
    x0, y0, X, Y = local_grid(cx, cy, half)
    k = int(rng.integers(5, 10))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = size * 0.5 * rng.uniform(0.45, 1.0, k)
    stretch, rot = rng.uniform(0.35, 1.0), rng.uniform(0, np.pi)
    x, y = rad * np.cos(ang), rad * np.sin(ang) * stretch
    pts = np.stack([x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)], 1)
    pts += np.array([cx - x0, cy - y0])
    cov = _poly_cov(pts, X.shape)
    cell = size * rng.uniform(0.12, 0.3)
    sx = F(rng.uniform(1.0, 2.5))  # elongated cells
    net = voronoi_net(rng, X / sx, Y, size, cell=cell, wall=max(0.6, 0.08 * cell))
    dens = rng.uniform(0.1, 0.35)
    tex = smooth_noise(rng, X.shape, 1.0)
    od = (cov * (F(dens) * (1 + 0.3 * tex) + F(dens * 1.5) * net)).clip(0, None)[..., None] * _K_ORGANIC
    halo = F(0.06) * (blur(cov, 1.5) - cov).clip(0, 1)
    return Patch(x0, y0, blur(od.astype(F), blur_sigma), blur(halo.astype(F), blur_sigma))
