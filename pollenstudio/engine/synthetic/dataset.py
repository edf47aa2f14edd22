"""Public entry points: one image in memory, or a folder of images with a COCO file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.engine.synthetic.config import SynthConfig, SynthConfigError
from pollenstudio.engine.synthetic.scene import _seed_of, render

ANNOTATIONS = "annotations.json"
IMAGES = "images"
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]  # fixed, so the same pixels give the same bytes


def _encode(img: np.ndarray, jpeg_quality: int | None) -> tuple[bytes, str]:
    bgr = np.ascontiguousarray(img[..., ::-1])
    if jpeg_quality is None:
        ok, buf = cv2.imencode(".png", bgr, _PNG_PARAMS)
        ext = ".png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ext = ".jpg"
    if not ok:
        raise PollenStudioError("OpenCV could not encode a synthetic image")
    return buf.tobytes(), ext


def generate_image(seed: int, cfg: SynthConfig | None = None, return_masks: bool = False):
    """Draw one synthetic brightfield micrograph.

    Returns ``(img, objects)``: ``img`` uint8 (H, W, 3) RGB, C-contiguous; ``objects`` a list
    of dicts ``bbox`` (x1, y1, x2, y2) floats tight around the grain's visible mask in
    pixels, ``category`` (index into ``cfg.taxa_names``), ``name``, ``area`` (visible mask
    pixels), ``polygon`` (flat outer contour). Grains with under 30 % of their mask inside the
    image are drawn but not listed. ``return_masks`` adds ``mask``: bool array of the box's
    size, the visible grain mask (for tests). With ``cfg.jpeg_quality`` the pixels are those
    a decoder reads back from the JPEG. Same seed and config -> same pixels.
    """
    cfg = cfg or SynthConfig()
    img, objects = render(int(seed), cfg, return_masks=return_masks)
    if cfg.jpeg_quality is not None:
        data, _ = _encode(img, cfg.jpeg_quality)
        img = np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])
    return img, objects


def _image_seed(seed: int, index: int) -> int:
    return _seed_of(seed, 1000, index) >> 1  # stays a positive int64 for JSON readers


def generate_dataset(out_dir, n: int, seed: int = 0, cfg: SynthConfig | None = None, progress=None, class_agnostic: bool = False) -> Path:
    """Write ``n`` images under ``out_dir/images/`` and ``out_dir/annotations.json`` (COCO).

    File names in the json are relative to ``out_dir``; category ids are 1-based positions
    in ``cfg.taxa_names``; annotation ids are unique from 1. Same arguments -> same bytes.
    ``progress`` is a :class:`pollenstudio.core.progress.CancelToken`-like sink
    (``update``/``check``); on cancel the json is not written. ``class_agnostic`` names every
    grain "pollen" (one category). Returns the json path.
    """
    cfg = cfg or SynthConfig()
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SynthConfigError(f"number of images must be at least 1, got {n!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SynthConfigError(f"{out} exists and is not a folder")
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    names = cfg.taxa_names
    images, annotations = [], []
    ann_id = 1
    for i in range(int(n)):
        if progress is not None:
            progress.check()
        iseed = _image_seed(int(seed), i)
        img, objects = render(iseed, cfg)
        data, ext = _encode(img, cfg.jpeg_quality)
        rel = f"{IMAGES}/{i:06d}{ext}"
        (out / rel).write_bytes(data)
        images.append(dict(id=i + 1, file_name=rel, width=cfg.width, height=cfg.height, synth_seed=iseed,
                           review_status="reviewed"))  # complete ground truth: an empty frame is a true negative
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            annotations.append(
                dict(
                    id=ann_id,
                    image_id=i + 1,
                    category_id=1 if class_agnostic else o["category"] + 1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=float(o["area"]),
                    iscrowd=0,
                    segmentation=[o["polygon"]] if len(o["polygon"]) >= 6 else [],
                )
            )
            ann_id += 1
        if progress is not None:
            progress.update(i + 1, int(n), rel)
    coco = dict(
        info=dict(description="PollenStudio synthetic brightfield pollen micrographs", seed=int(seed), config=cfg.to_dict()),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=1, name="pollen", supercategory="pollen")] if class_agnostic
        else [dict(id=k + 1, name=name, supercategory="pollen") for k, name in enumerate(names)],
    )
    path = out / ANNOTATIONS
    from pollenstudio.core.atomic import write_text

    write_text(path, json.dumps(coco, indent=1) + "\n")  # unique temp file + rename
    return path
