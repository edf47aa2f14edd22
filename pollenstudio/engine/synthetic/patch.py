"""Local patches: the unit every grain and distractor is rendered into.

Brightfield is a transmission image, so a patch carries an optical density ``od`` (H, W, 3)
that adds up where objects overlap, plus ``halo`` (H, W), the extra light that refraction
throws around edges (bright rims, lens-like centres). The scene multiplies the illumination
by ``exp(-od) + halo``. Patches are small, so a 6000x6000 scan never holds a full-frame
stack per object.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Patch:
    x0: int  # image column of the patch's left edge
    y0: int  # image row of the patch's top edge
    od: np.ndarray  # (h, w, 3) float32 optical density, RGB
    halo: np.ndarray | None  # (h, w) float32 added transmission
    mask: np.ndarray | None = None  # (h, w) bool, grains only: the annotated outline

    @property
    def y1(self) -> int:
        return self.y0 + self.od.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.od.shape[1]


def local_grid(cx: float, cy: float, half: int):
    """Pixel-centre offsets from (cx, cy) over a square patch: returns x0, y0, X, Y (float32)."""
    x0 = int(np.floor(cx)) - half
    y0 = int(np.floor(cy)) - half
    n = 2 * half + 1
    xs = (np.arange(n, dtype=np.float32) + np.float32(x0 + 0.5 - cx)).astype(np.float32)
    ys = (np.arange(n, dtype=np.float32) + np.float32(y0 + 0.5 - cy)).astype(np.float32)
    X, Y = np.meshgrid(xs, ys)
    return x0, y0, X, Y


def rotate(X, Y, angle: float):
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return X * c + Y * s, -X * s + Y * c


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.15:
        return a
    return cv2.GaussianBlur(a, (0, 0), float(sigma), borderType=cv2.BORDER_REPLICATE)


def smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Band-limited noise with unit standard deviation (granules, clouds)."""
    n = rng.standard_normal(shape, dtype=np.float32)
    n = blur(n, sigma)
    sd = float(n.std())
    return n / sd if sd > 0 else n


def gauss(x, w):
    return np.exp(-np.square(x / np.float32(w))).astype(np.float32)


def voronoi_net(rng: np.random.Generator, X, Y, radius: float, cell: float, wall: float) -> np.ndarray:
    """Cell walls (1 on a wall, 0 in a lumen) of a random net with cells about ``cell`` px.

    Seeds are a jittered grid, so the two nearest seeds of a pixel are among the 5x5 grid
    cells around it: cost per pixel stays constant however many cells the grain has.
    """
    n = max(3, int(np.ceil(2 * radius / cell)) + 3)
    c0 = (n - 1) / 2
    jx = rng.uniform(-0.35, 0.35, (n, n)).astype(np.float32)
    jy = rng.uniform(-0.35, 0.35, (n, n)).astype(np.float32)
    gx = (np.arange(n, dtype=np.float32) - c0)[None, :] + jx  # in cell units
    gy = (np.arange(n, dtype=np.float32) - c0)[:, None] + jy
    xu, yu = X / np.float32(cell), Y / np.float32(cell)
    ci = np.clip(np.rint(xu + c0).astype(np.int32), 2, n - 3)
    cj = np.clip(np.rint(yu + c0).astype(np.int32), 2, n - 3)
    f1 = np.full(X.shape, 1e6, np.float32)
    f2 = np.full(X.shape, 1e6, np.float32)
    for dj in (-2, -1, 0, 1, 2):
        for di in (-2, -1, 0, 1, 2):
            jj, ii = cj + dj, ci + di
            d = np.square(xu - gx[jj, ii]) + np.square(yu - gy[jj, ii])
            f2 = np.minimum(f2, np.maximum(f1, d))
            f1 = np.minimum(f1, d)
    edge = (np.sqrt(f2) - np.sqrt(f1)) * np.float32(cell)
    return gauss(edge, wall)


def dot_field(rng: np.random.Generator, X, Y, radius: float, spacing: float):
    """Distance to the nearest of jittered points spread over a disc (spines seen face on)."""
    n = max(2, int(np.ceil(2 * radius / spacing)) + 1)
    g = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing
    px, py = np.meshgrid(g, g)
    px = px.ravel() + rng.uniform(-0.3, 0.3, px.size).astype(np.float32) * spacing
    py = py.ravel() + rng.uniform(-0.3, 0.3, py.size).astype(np.float32) * spacing
    keep = np.hypot(px, py) < radius
    px, py = px[keep], py[keep]
    best = np.full(X.shape, 1e6, dtype=np.float32)
    for x, y in zip(px, py):
        np.minimum(best, np.hypot(X - x, Y - y), out=best)
    return best
