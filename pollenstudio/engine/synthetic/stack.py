"""Synthetic focal stacks (issue 19): every grain in focus on a plane of its own.

A field is rendered once with every grain sharp (:func:`render`, exact boxes and masks);
each grain then gets a focal plane, and plane ``p`` shows grain ``g`` blurred by a Gaussian
whose sigma grows with the distance ``|p - z_g|`` in planes (and with the grain's size, as
a thicker grain spans more depth). The blur spreads the grain beyond its outline, as
defocus does; the box stays the in-focus outline. Background, debris and bubbles stay as
rendered. Each plane gets its own faint camera noise, so no two planes are identical.

The sharpest plane of every grain is therefore known exactly (its ``plane``), which lets
tests check plane assignment and detection through focus without downloaded stacks.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pollenstudio.engine.synthetic.config import SynthConfig, SynthConfigError
from pollenstudio.engine.synthetic.dataset import ANNOTATIONS, IMAGES, _image_seed
from pollenstudio.engine.synthetic.scene import _seed_of, render

MAX_PLANES = 64


def defocus_sigma(distance: int, diameter: float) -> float:
    """Blur sigma (px) of a grain ``distance`` planes from its focus."""
    return float(abs(distance)) * max(1.2, 0.06 * float(diameter))


def defocus_reach(o: dict, distance: int, width: int, height: int) -> tuple[float, tuple[int, int, int, int]]:
    """(sigma, (x1, y1, x2, y2)): the blur sigma of grain ``o`` (an object of ``render`` with
    its ``mask``) ``distance`` planes from its focus, and the area of a ``width`` x ``height``
    image that blur touches."""
    x1, y1, x2, y2 = o["bbox"]
    sigma = defocus_sigma(distance, max(x2 - x1, y2 - y1))
    pad = int(np.ceil(3 * sigma)) + 2
    ix1, iy1 = int(np.floor(x1)), int(np.floor(y1))
    mh, mw = o["mask"].shape
    return sigma, (max(0, ix1 - pad), max(0, iy1 - pad), min(width, ix1 + mw + pad), min(height, iy1 + mh + pad))


def _gaussian(img: np.ndarray, sigma: float, border: int) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=border)


def defocus_grain(o: dict, distance: int, rows: np.ndarray, top: int, width: int, height: int, blur=_gaussian):
    """(top, left, blurred region, alpha) of grain ``o`` seen ``distance`` planes from its
    focus; ``rows`` holds the in-focus image from row ``top`` down (the whole image: 0) and
    covers the grain's reach. Plane ``p`` is then ``(1 - alpha) * image + alpha * blurred``
    over that region. ``blur(img, sigma, border)``: the Gaussian blur to use."""
    sigma, (ax1, ay1, ax2, ay2) = defocus_reach(o, distance, width, height)
    x1, y1 = o["bbox"][:2]
    ix1, iy1 = int(np.floor(x1)), int(np.floor(y1))
    mask = o["mask"].astype(np.float32)
    region = rows[ay1 - top:ay2 - top, ax1:ax2].astype(np.float32, copy=False)
    alpha = np.zeros(region.shape[:2], np.float32)
    mh, mw = mask.shape
    alpha[iy1 - ay1:iy1 - ay1 + mh, ix1 - ax1:ix1 - ax1 + mw] = mask[:ay2 - iy1, :ax2 - ix1]
    alpha = np.clip(blur(alpha, sigma + 1.0, cv2.BORDER_DEFAULT) * 2.0, 0.0, 1.0)[..., None]
    return ay1, ax1, blur(region, sigma, cv2.BORDER_REFLECT), alpha


def render_stack(seed: int, cfg: SynthConfig, planes: int):
    """Render one stack: ``(planes_list, objects)``. ``planes_list`` holds ``planes`` uint8
    (H, W, 3) RGB arrays; ``objects`` are those of :func:`render` plus ``plane`` (0-based, the
    grain's in-focus plane)."""
    if not isinstance(planes, (int, np.integer)) or not 2 <= planes <= MAX_PLANES:
        raise SynthConfigError(f"a stack needs 2..{MAX_PLANES} planes, got {planes!r}")
    base, objects = render(int(seed), cfg, return_masks=True)
    rng = np.random.default_rng(_seed_of(seed, 7))
    for o in objects:
        o["plane"] = int(rng.integers(0, planes))
    H, W = base.shape[:2]
    basef = base.astype(np.float32)
    out = []
    for p in range(planes):
        img = basef.copy()
        for o in objects:
            d = p - o["plane"]
            if d == 0:
                continue
            ay1, ax1, blurred, alpha = defocus_grain(o, d, basef, 0, W, H)
            dst = img[ay1:ay1 + blurred.shape[0], ax1:ax1 + blurred.shape[1]]
            dst *= 1.0 - alpha
            dst += alpha * blurred
        noise = np.random.default_rng(_seed_of(seed, 8, p)).standard_normal(img.shape, dtype=np.float32)
        img += noise * np.float32(1.2)
        out.append(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    for o in objects:
        o.pop("mask", None)
    return out, objects


def write_stack_tiff(path, planes: list[np.ndarray]) -> None:
    """A multi-page RGB TIFF, one page per plane, with ImageJ-readable Z axis (deterministic bytes)."""
    import tifffile

    arr = np.stack(planes)
    tifffile.imwrite(path, arr, photometric="rgb", compression="zlib", metadata={"axes": "ZYXS"})


def generate_stack_dataset(out_dir, n: int, planes: int, seed: int = 0, cfg: SynthConfig | None = None,
                           progress=None, class_agnostic: bool = False) -> Path:
    """Like :func:`generate_dataset` with focal stacks: ``images/NNNNNN.tif`` multi-page TIFFs
    and a COCO file whose images carry ``planes`` and annotations ``plane`` (the PollenStudio
    stack extra fields, read back by ``pollenstudio import``)."""
    cfg = cfg or SynthConfig()
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SynthConfigError(f"number of images must be at least 1, got {n!r}")
    out = Path(out_dir)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(int(n)):
        if progress is not None:
            progress.check()
        iseed = _image_seed(int(seed), i)
        stack, objects = render_stack(iseed, cfg, int(planes))
        rel = f"{IMAGES}/{i:06d}.tif"
        write_stack_tiff(out / rel, stack)
        images.append(dict(id=i + 1, file_name=rel, width=cfg.width, height=cfg.height, planes=int(planes),
                           synth_seed=iseed))
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            annotations.append(dict(
                id=ann_id, image_id=i + 1, category_id=1 if class_agnostic else o["category"] + 1,
                bbox=[x1, y1, x2 - x1, y2 - y1], area=float(o["area"]), iscrowd=0,
                segmentation=[o["polygon"]] if len(o["polygon"]) >= 6 else [], plane=o["plane"]))
            ann_id += 1
        if progress is not None:
            progress.update(i + 1, int(n), rel)
    names = cfg.taxa_names
    coco = dict(
        info=dict(description="PollenStudio synthetic focal stacks", seed=int(seed), planes=int(planes),
                  config=cfg.to_dict()),
        licenses=[], images=images, annotations=annotations,
        categories=[dict(id=1, name="pollen", supercategory="pollen")] if class_agnostic
        else [dict(id=k + 1, name=name, supercategory="pollen") for k, name in enumerate(names)],
    )
    from pollenstudio.core.atomic import write_text

    path = out / ANNOTATIONS
    write_text(path, json.dumps(coco, indent=1) + "\n")
    return path
