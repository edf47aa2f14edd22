"""How the shipped model does on frames of its training size and on larger frames.

    python bench/model_frame_size.py [--model models/hieraedgenet-n.safetensors]

Generates unseen synthetic frames (seeds 777..), runs the Predictor and matches detections
to the true boxes (IoU >= 0.5, greedy by IoU per grain). Prints grains found, found with the
right taxon, and the number of detections for: 640x480 frames (the training size); 1280x960
frames as the app runs them (tile "auto": letterboxed or tiled, as the row says), cut into
tiles at native resolution, and shrunk to 640x480 first. Figures only.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from pollenstudio.core.types import Box
from pollenstudio.engine.predict import Predictor
from pollenstudio.engine.synthetic import SynthConfig, generate_image
from pollenstudio.engine.tiling import resolve_tile_size


def score(pred, img, objs, f: float = 1.0) -> np.ndarray:
    """(found, right taxon, grains, detections); detections scaled back by 1/f."""
    dets = pred.predict(np.ascontiguousarray(img))
    boxes = [(Box(d.box.x1 / f, d.box.y1 / f, d.box.x2 / f, d.box.y2 / f), d.label) for d in dets]
    found = right = 0
    for o in objs:
        truth = Box(*o["bbox"])
        best, label = max(((truth.iou(b), lab) for b, lab in boxes), default=(0.0, None))
        if best >= 0.5:
            found += 1
            right += label == o["name"]
    return np.array([found, right, len(objs), len(boxes)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/hieraedgenet-n.safetensors")
    a = ap.parse_args()
    pred = Predictor.from_checkpoint(a.model, device="cpu", conf=0.25)
    native = Predictor.from_checkpoint(a.model, device="cpu", conf=0.25, tile=pred.imgsz)
    auto = "tiled" if resolve_tile_size("auto", 1280, 960, pred.imgsz) else "letterboxed"
    big = f"1280x960 auto ({auto})"
    rows = {k: np.zeros(4, int) for k in ("640x480", big, "1280x960 native tiles", "1280x960 shrunk")}
    for s in range(777, 783):
        img, objs = generate_image(s, SynthConfig())
        rows["640x480"] += score(pred, img, objs)
    for s in range(777, 780):
        img, objs = generate_image(s, SynthConfig(width=1280, height=960))
        rows[big] += score(pred, img, objs)
        rows["1280x960 native tiles"] += score(native, img, objs)
        small = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
        rows["1280x960 shrunk"] += score(pred, small, objs, 0.5)
    print(f"model input {pred.imgsz} px")
    for k, (f, r, n, d) in rows.items():
        print(f"{k:<30} found {f}/{n} ({f / n:.2f})  right taxon {r}/{n} ({r / n:.2f})  detections {d}")


if __name__ == "__main__":
    main()
