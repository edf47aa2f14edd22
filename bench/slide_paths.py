"""Peak memory of the app's non-canvas paths on a whole-slide scan (issue 29: "no full decode
anywhere"): the image-list thumbnail, gallery crops, grain embeddings (hand features),
outlines and click-to-box, an export-model input and training windows, all read by region
through core.slide. The slide decoded whole would be 804 MB (17,832 x 15,029 RGB); the goal
is a peak resident size under 600 MB for the whole run.

    QT_QPA_PLATFORM=offscreen python bench/slide_paths.py [--slide PATH] [--out bench/results/slide_paths.txt]

Skips cleanly when the slide is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _measure import DEFAULT_SLIDE, peak_mb, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    ap.add_argument("--boxes", type=int, default=200, help="random grain-sized boxes to crop (default 200)")
    ap.add_argument("--out", type=Path, default=None, help="append the figures to this file")
    args = ap.parse_args(argv)
    if not args.slide.is_file():
        print(f"skipped: no slide at {args.slide}")
        return 0
    from pollenstudio.core.slide import slide_pixels
    from pollenstudio.core.types import Box
    from pollenstudio.engine.classify import EmbedSpec, embed
    from pollenstudio.engine.dataset import Sample, TrainDataset
    from pollenstudio.engine.export_job import letterboxed_inputs
    from pollenstudio.engine.segment import box_around_point
    from pollenstudio.engine.shape import fit_outline
    from pollenstudio.gui.gallery import GrainRow, _open_pixels, make_crop
    from pollenstudio.gui.image_list import _make_thumbnail

    lines = [f"slide {args.slide.name}; peak RSS after imports {peak_mb():.0f} MB"]

    def step(name, fn):
        t = time.perf_counter()
        what = fn()
        lines.append(f"{name}: {time.perf_counter() - t:.2f} s, {what}; peak RSS so far {peak_mb():.0f} MB")

    step("image-list thumbnail", lambda: f"{_make_thumbnail(str(args.slide)).width()} px wide")
    pixels = _open_pixels(str(args.slide))
    h, w = pixels.shape[:2]
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(args.boxes):
        d = float(rng.uniform(30, 120))
        x, y = float(rng.uniform(0, w - d)), float(rng.uniform(0, h - d))
        boxes.append((x, y, x + d, y + d))
    step("gallery crops", lambda: f"{sum(make_crop(pixels, GrainRow(i, 1, b, 1, None, '')).size > 0 for i, b in enumerate(boxes))} crops")
    step("embeddings (hand features)", lambda: f"{embed(None, slide_pixels(args.slide), np.array(boxes[:100]), EmbedSpec(features='hand')).shape}")
    step("outlines", lambda: f"{sum(fit_outline(pixels, Box(*b)) is not None for b in boxes[:50])} of 50 boxes outlined")
    step("click-to-box", lambda: f"{sum(box_around_point(pixels, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2) is not None for b in boxes[:50])} of 50 clicks boxed")
    step("export-model input", lambda: f"{letterboxed_inputs([args.slide], 640)[0].shape}")
    sample = Sample(path=str(args.slide), width=w, height=h, boxes=np.array(boxes, np.float32),
                    classes=np.zeros(len(boxes), np.int64))
    ds = TrainDataset([sample], 640, augment=None)
    step("training windows", lambda: f"{sum(int(ds[0][0].shape[-1] == 640) for _ in range(20))} windows of 640 px")
    lines.append(f"peak RSS of the whole run: {peak_mb():.0f} MB (the slide decoded whole: {w * h * 3 / 1e6:.0f} MB)")
    report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
