"""Pollen grains: one shape function per morphotype plus a shared brightfield look.

A shape function works in grain-centred, rotated pixel coordinates (U, V) and returns the
signed inside distance ``d`` (px, > 0 inside the outline) and optional extra fields:
``wall`` (dark exine features: annulus, colpus margins, muri), ``light`` (bright features:
pore openings, lumina) and ``body`` (a multiplier on the cytoplasm density, e.g. pale air
sacs). :func:`render_grain` turns them into a translucent, refractive grain.
"""

from __future__ import annotations

import numpy as np

from pollenstudio.engine.synthetic.patch import (
    Patch,
    blur,
    dot_field,
    gauss,
    local_grid,
    rotate,
    smooth_noise,
    voronoi_net,
)

F = np.float32


def _ellipse_d(U, V, a: float, b: float):
    """Approximate signed distance inside an ellipse with semi-axes a (U) and b (V)."""
    q = np.sqrt(np.square(U / a) + np.square(V / b)) + F(1e-6)
    grad = np.sqrt(np.square(U / (a * a)) + np.square(V / (b * b))) + F(1e-6)
    d = (1 - q) * q / grad
    return np.minimum(d, F(min(a, b))).astype(F)


def _wobble(rng, theta, amp: float, orders=(2, 3, 5)):
    w = np.zeros_like(theta)
    for k in orders:
        w += F(rng.normal(0, amp / k)) * np.cos(k * theta + F(rng.uniform(0, 2 * np.pi)))
    return w


def _poaceae(rng, U, V, R, t):
    e = rng.uniform(0.86, 1.0)
    rho = np.sqrt(U * U + np.square(V / e))
    theta = np.arctan2(V, U)
    if rng.uniform() < 0.25:
        # pore seen in profile: a small collar on the outline (the annulus edge on)
        dth = np.abs(np.angle(np.exp(1j * theta.astype(np.float64)))).astype(F)  # pore at angle 0
        d = R * (1 + _wobble(rng, theta, 0.05) + F(0.07) * gauss(dth, 0.13)) - rho
        collar = gauss(dth, 0.16) * gauss(d - 0.8 * t, 1.0 * t)
        notch = gauss(dth, 0.045) * gauss(d - 0.3 * t, 0.9 * t)
        return dict(d=d, wall=0.9 * collar - 0.9 * notch, light=0.1 * notch)
    d = R * (1 + _wobble(rng, theta, 0.05)) - rho
    # the single pore with its thick annulus, seen anywhere on the visible hemisphere
    ang, rr = rng.uniform(0, 2 * np.pi), R * np.sqrt(rng.uniform(0.02, 0.6))
    pu, pv = rr * np.cos(ang), rr * np.sin(ang) * e
    rp = max(1.4, R * rng.uniform(0.08, 0.13))
    aw = max(1.3, R * rng.uniform(0.07, 0.11))
    # foreshortening: a pore near the rim looks like an ellipse squeezed towards the centre
    squeeze = np.sqrt(max(0.25, 1 - (rr / R) ** 2))
    cu, sv = np.cos(ang), np.sin(ang)
    pr = (U - pu) * cu + (V - pv) * sv
    pt = -(U - pu) * sv + (V - pv) * cu
    dp = np.sqrt(np.square(pr / squeeze) + pt * pt)
    wall = 1.3 * gauss(dp - rp - 0.5 * aw, 0.6 * aw)
    light = 0.16 * gauss(dp, 0.8 * rp) + 0.08 * gauss(dp - rp - 1.2 * aw, 0.45 * aw)
    return dict(d=d, wall=wall, light=light)


def _betula_side(rng, U, V, R, t):
    # equatorial view: a lens with a pore at each end
    b = R * rng.uniform(0.55, 0.7)
    taper = 1 - F(0.2) * np.square(np.clip(U / F(R), -1, 1))
    d = _ellipse_d(U, V / taper, R, b) * taper
    wall = np.zeros_like(d)
    light = np.zeros_like(d)
    for side in (-1, 1):
        cu = F(side * 0.8 * R)
        dist = np.sqrt(np.square(U - cu) + V * V)
        wall += 0.8 * gauss(dist - F(0.1 * R), 0.45 * t) * (d > 0.5 * t)
        light += 0.12 * gauss(dist, F(0.07 * R))
        tip = gauss(U - F(side * R), F(0.08 * R)) * gauss(V, F(0.12 * R))
        wall -= 0.6 * tip * gauss(d - 0.4 * t, 0.8 * t)
    return dict(d=d, wall=wall, light=light)


def _betula(rng, U, V, R, t):
    if rng.uniform() < 0.2:
        return _betula_side(rng, U, V, R, t)
    theta = np.arctan2(V, U)
    rho = np.sqrt(U * U + V * V)
    a = rng.uniform(0.05, 0.09)
    # angle (radians) to the nearest of the three corners at 0, 120, 240 degrees
    dth = np.abs(((theta + np.pi / 3) % (2 * np.pi / 3)) - np.pi / 3)
    bump = rng.uniform(0.06, 0.1) * gauss(dth, 0.13)  # the pores stick out a little (aspidate)
    norm = 1 + a + 0.08
    r = R * (1 + a * np.cos(3 * theta) + bump + _wobble(rng, theta, 0.015, (2, 4))) / F(norm)
    d = r - rho
    corner = gauss(dth, 0.3)
    # exine thickened towards each pore, interrupted at the pore itself
    wall = 0.5 * corner * gauss(d - 0.8 * t, 0.9 * t) - 0.6 * gauss(dth, 0.05) * gauss(d - 0.4 * t, 0.8 * t)
    light = np.zeros_like(d)
    rc = R * (1 + a + 0.08) / norm  # radius at a corner tip
    for k in range(3):
        ang = 2 * np.pi * k / 3
        # vestibulum: a small dark ring just inside the pore, the pore a light slit at the tip
        cu, cv = F((rc - 0.2 * R) * np.cos(ang)), F((rc - 0.2 * R) * np.sin(ang))
        dist = np.sqrt(np.square(U - cu) + np.square(V - cv))
        wall += 0.8 * gauss(dist - F(0.11 * R), 0.45 * t) * (d > 0.5 * t)
        light += 0.12 * gauss(dist, F(0.08 * R))
    return dict(d=d, wall=wall, light=light)


def _pinus(rng, U, V, R, t):
    # equatorial view: corpus on top with a thick cap, two large air sacs hanging at its
    # lower sides; overall width is the grain diameter
    ab, bb = R * rng.uniform(0.46, 0.54), R * rng.uniform(0.38, 0.46)
    vb = F(-rng.uniform(0.08, 0.16) * R)
    d_body = _ellipse_d(U, V - vb, ab, bb)
    rs = R * rng.uniform(0.42, 0.5)
    sacs = []
    for side in (-1, 1):
        cu = side * (R - rs * rng.uniform(0.98, 1.04))
        cv = R * rng.uniform(0.14, 0.26)
        tilt = side * rng.uniform(0.1, 0.5)
        su, sv = rotate(U - F(cu), V - F(cv), tilt)
        sacs.append(_ellipse_d(su, sv, rs * F(rng.uniform(0.95, 1.1)), rs * F(rng.uniform(0.8, 0.95))))
    d_sac = np.maximum(sacs[0], sacs[1])
    d = np.maximum(d_body, d_sac)
    in_body = np.clip(d_body + 0.5, 0, 1)
    in_sac = np.clip(d_sac + 0.5, 0, 1) * (1 - in_body)
    # the cap: thick dark exine on the top of the corpus, away from the sacs
    top = np.clip(-(V - vb) / F(0.5 * bb), 0, 1)
    cap = in_body * top * gauss(d_body - 1.6 * t, 1.4 * t)
    net = voronoi_net(rng, U, V, R, cell=max(3.0, 0.12 * R), wall=max(0.5, 0.018 * R))
    wall = 0.9 * cap + 0.2 * net * in_sac
    # outlines seen through each other: sac walls over the body, body outline over the sacs
    for ds in sacs:
        wall += 0.55 * gauss(ds - 0.5 * t, 0.6 * t) * in_body
    wall += 0.45 * gauss(d_body, 0.8 * t) * (1 - in_body) * np.clip(d_sac, 0, 1)
    light = 0.06 * (1 - net) * in_sac
    body = 1.25 * in_body + 0.45 * (1 - in_body)
    return dict(d=d, wall=wall, light=light, body=body)


def _asteraceae(rng, U, V, R, t):
    theta = np.arctan2(V, U)
    rho = np.sqrt(U * U + V * V)
    Rc = R * rng.uniform(0.76, 0.84)
    n = int(np.clip(round(2 * np.pi * Rc / (Rc * rng.uniform(0.34, 0.48))), 10, 22))
    phase = theta * F(n / (2 * np.pi)) + F(rng.uniform(0, 1))
    frac = np.abs(phase - np.round(phase))
    spine = np.power(np.clip(1 - frac / F(0.3), 0, 1), 1.6)
    d = Rc + (R - Rc) * spine - rho
    # spines seen face on: small dark dots with a bright centre, fading near the rim
    dist = dot_field(rng, U, V, Rc * 0.92, spacing=Rc * rng.uniform(0.34, 0.46))
    sr = max(1.0, 0.07 * R)
    fade = np.clip(1 - np.power(rho / F(Rc), 4), 0, 1)
    wall = 0.9 * gauss(dist - 0.6 * sr, 0.7 * sr) * fade + 0.35 * gauss(d - 1.8 * t, 0.9 * t)
    light = 0.12 * gauss(dist, 0.5 * sr) * fade
    return dict(d=d, wall=wall, light=light)


def _quercus(rng, U, V, R, t):
    if rng.uniform() < 0.65:  # equatorial view: ellipse with one furrow in the middle, two at the sides
        a, b = R, R * rng.uniform(0.66, 0.82)
        d = _ellipse_d(U, V, a, b) + F(0.015 * R) * _wobble(rng, np.arctan2(V, U), 1.0, (3, 5))
        w = max(0.9, 0.05 * b)
        taper = np.clip(1 - np.power(np.abs(U) / F(0.8 * a), 4), 0, 1)
        off = F(rng.uniform(-0.15, 0.15) * b)
        wall = 0.75 * taper * gauss(np.abs(V - off) - 1.6 * w, 0.6 * w)
        light = 0.14 * taper * gauss(V - off, w)
        side = np.clip(1 - np.power(np.abs(U) / F(0.7 * a), 4), 0, 1)
        wall += 0.55 * side * gauss(d - 0.2 * b, 0.5 * t)
        return dict(d=d, wall=wall, light=light)
    # polar view: three-lobed outline with three short furrows running in from the notches
    theta = np.arctan2(V, U)
    rho = np.sqrt(U * U + V * V)
    dth = np.abs(((theta + np.pi / 3) % (2 * np.pi / 3)) - np.pi / 3)
    r = R * (1 - 0.1 * gauss(dth, 0.16) + _wobble(rng, theta, 0.02, (2, 4)))
    d = r - rho
    w = max(0.9, 0.045 * R)
    wall = np.zeros_like(d)
    light = np.zeros_like(d)
    for k in range(3):
        ang = 2 * np.pi * k / 3
        s = U * F(np.cos(ang)) + V * F(np.sin(ang))
        n = -U * F(np.sin(ang)) + V * F(np.cos(ang))
        along = np.clip((s - F(0.5 * R)) / F(0.15 * R), 0, 1) * (d > 0)
        wall += 0.7 * along * gauss(np.abs(n) - 1.6 * w, 0.6 * w)
        light += 0.14 * along * gauss(n, w)
    return dict(d=d, wall=wall, light=light)


def _olea(rng, U, V, R, t):
    e = rng.uniform(0.88, 1.0)
    rho = np.sqrt(U * U + np.square(V / e))
    theta = np.arctan2(V, U)
    cell = max(3.0, R * rng.uniform(0.26, 0.38))
    # muri seen in profile make the outline finely crenulate
    n = max(8, int(2 * np.pi * R / cell))
    cren = np.abs(np.cos(theta * F(n / 2) + F(rng.uniform(0, np.pi))))
    d = R * (1 + _wobble(rng, theta, 0.03)) * (1 - F(0.04) + F(0.04) * cren) - rho
    net = voronoi_net(rng, U, V / F(e), R, cell=cell, wall=max(0.7, 0.1 * cell))
    fade = np.clip(1 - np.power(rho / F(R), 6), 0, 1)
    wall = 0.7 * net * fade
    light = 0.07 * (1 - net) * fade * (d > 0)
    return dict(d=d, wall=wall, light=light)


SHAPES = {
    "Poaceae": _poaceae,
    "Betula": _betula,
    "Pinus": _pinus,
    "Asteraceae": _asteraceae,
    "Quercus": _quercus,
    "Olea": _olea,
}

# Where in the configured size range each taxon tends to fall (0 = min, 1 = max).
SIZE_BIAS = {
    "Poaceae": (0.1, 0.9),
    "Betula": (0.0, 0.6),
    "Pinus": (0.55, 1.0),
    "Asteraceae": (0.0, 0.6),
    "Quercus": (0.2, 0.9),
    "Olea": (0.0, 0.5),
}

# absorbance per channel (R, G, B) of pale yellow, amber and brown grains; hue 0..1 runs
# through them (grains absorb blue most, red least)
_K_STOPS = np.array([[0.04, 0.2, 0.9], [0.1, 0.42, 1.0], [0.45, 0.72, 1.05]], dtype=F)


def _spectrum(hue: float) -> np.ndarray:
    x = float(np.clip(hue, 0, 1)) * 2
    i = min(int(x), 1)
    return (_K_STOPS[i] * F(1 - (x - i)) + _K_STOPS[i + 1] * F(x - i)).astype(F)
_K_WALL = np.array([0.62, 0.80, 1.0], dtype=F)


def grain_half(diameter: float, sigma: float) -> int:
    """Half the side of a grain's square patch (px): outline, blur and halo fit inside."""
    return int(np.ceil(1.12 * diameter / 2 + 3 * sigma + 2 * (1.0 + 0.9 * sigma) + 3))


def render_grain(rng: np.random.Generator, taxon: str, cx: float, cy: float, diameter: float, look: dict) -> Patch:
    """Render one grain of ``taxon`` centred at (cx, cy) with outer diameter ``diameter`` px.

    ``look`` carries per-image style: hue (0 pale yellow .. 1 brown), density, blur sigma,
    focus (-1 below .. +1 above focus), contrast.
    """
    R = diameter / 2.0
    sigma = look["blur"]
    halo_w = 1.0 + 0.9 * sigma
    half = grain_half(diameter, sigma)
    x0, y0, X, Y = local_grid(cx, cy, half)
    U, V = rotate(X, Y, rng.uniform(0, 2 * np.pi))
    if rng.uniform() < 0.5:  # mirror image: grains land on either face
        V = -V
    t = max(1.3, R * rng.uniform(0.06, 0.1))  # exine thickness
    f = SHAPES[taxon](rng, U, V, F(R), F(t))
    d = f["d"].astype(F)
    cov = np.clip(d + 0.5, 0, 1).astype(F)
    rho_n = np.clip(np.sqrt(U * U + V * V) / F(R), 0, 1)

    # cytoplasm / intine: pale, granular, a little denser towards the rim (longer path
    # through the shell)
    tex = smooth_noise(rng, d.shape, 0.7) * F(0.65) + smooth_noise(rng, d.shape, max(1.5, 0.1 * R)) * F(0.35)
    body_dens = look["density"] * (0.78 + 0.3 * rho_n**3) * np.clip(1 + look["granule"] * tex, 0.2, None)
    wall_extra = f.get("wall", 0.0)
    if "body" not in f:
        # the protoplast often shrinks away from the wall: a denser content with its own
        # faint outline some way inside the exine
        if rng.uniform() < 0.5:
            gap = F(R * rng.uniform(0.08, 0.16) + 1.5 * t)
            content = np.clip((d - gap) / F(max(1.0, 0.05 * R)), 0, 1)
            body_dens = body_dens * (0.75 + 0.5 * content)
            wall_extra = wall_extra + 0.22 * gauss(d - gap, 0.6 * t)
        # a few inclusions (oil drops, starch): soft darker spots
        for _ in range(int(rng.poisson(2.5))):
            ang, rr = rng.uniform(0, 2 * np.pi), R * 0.6 * np.sqrt(rng.uniform())
            size = max(1.0, R * rng.uniform(0.04, 0.11))
            spot = gauss(np.hypot(U - F(rr * np.cos(ang)), V - F(rr * np.sin(ang))), size)
            body_dens = body_dens + F(look["density"] * rng.uniform(0.3, 0.9)) * spot
    body = cov * body_dens * f.get("body", 1.0)
    # the exine: a crisp dark band just inside the outline, a little uneven in thickness
    theta = np.arctan2(V, U)
    tv = F(t) * (1 + F(0.18) * np.cos(2 * theta + F(rng.uniform(0, 6.3))) + F(0.1) * np.cos(3 * theta + F(rng.uniform(0, 6.3))))
    wall = cov * gauss(d - 0.45 * tv, 0.55 * tv) + wall_extra
    if rng.uniform() < 0.2:
        # a fold: flattened grains often crease along a curved line
        alpha, off = rng.uniform(0, np.pi), rng.uniform(-0.5, 0.5) * R
        along = -U * F(np.sin(alpha)) + V * F(np.cos(alpha))
        n = U * F(np.cos(alpha)) + V * F(np.sin(alpha)) - F(off) + F(rng.normal(0, 0.25) / R) * along * along
        crease = gauss(n, 0.5 * t) * np.clip(d / F(2 * t), 0, 1)
        wall = wall + F(rng.uniform(0.3, 0.7)) * crease
        f["light"] = f.get("light", 0.0) + 0.05 * gauss(n - 1.2 * t, 0.5 * t) * np.clip(d / F(2 * t), 0, 1)
    # refraction: a thin bright line outside the rim and inside the wall, a lens-like centre
    focus = look["focus"]
    light = (
        (0.08 + 0.1 * max(focus, 0)) * gauss(d + 0.9 * halo_w, 0.7 * halo_w) * (d < 0.5)
        + 0.07 * gauss(d - 1.5 * t, 0.45 * t)
        + 0.12 * focus * cov * np.square(1 - rho_n * rho_n)
        + f.get("light", 0.0)
    )
    hue = look["hue"]
    k_body = _spectrum(hue)
    contrast = look["contrast"]
    od = body[..., None] * (k_body * F(contrast)) + wall[..., None] * (_K_WALL * F(look["wall"] * contrast))
    halo = light.astype(F) * F(min(1.0, 0.4 + 0.6 * contrast))
    od = blur(od.astype(F), sigma)
    halo = blur(halo, sigma * 1.2)
    return Patch(x0, y0, od, halo, mask=d >= 0)
