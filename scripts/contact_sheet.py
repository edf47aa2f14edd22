"""Write docs/contact_sheet.png: 12 synthetic micrographs (rows: easy, default, hard).

    python scripts/contact_sheet.py [--out docs/contact_sheet.png] [--boxes /tmp/boxes.png]

``--boxes`` also writes the same sheet with the annotation boxes drawn, to check by eye
that they are tight around the grains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pollenstudio.engine.synthetic import SynthConfig, generate_image

COLS, TILE_W, TILE_H, GAP = 4, 464, 348, 6
# a few colours per taxon index, visible on beige
_COLOURS = [(230, 40, 40), (40, 120, 230), (30, 170, 60), (200, 40, 200), (240, 140, 0), (0, 170, 170)]


def sheet(boxes: bool) -> np.ndarray:
    rows = []
    for r, difficulty in enumerate(("easy", "default", "hard")):
        tiles = []
        for c in range(COLS):
            seed = 100 + 10 * r + c
            cfg = SynthConfig(width=800, height=600, difficulty=difficulty, jpeg_quality=90 if c == 3 else None)
            img, objs = generate_image(seed, cfg)
            if boxes:
                img = img.copy()
                for o in objs:
                    x1, y1, x2, y2 = (int(round(v)) for v in o["bbox"])
                    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), _COLOURS[o["category"] % 6], 1)
                    cv2.putText(img, o["name"][:3], (x1 + 2, y1 + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, _COLOURS[o["category"] % 6], 1, cv2.LINE_AA)
            else:
                img = cv2.resize(img, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA)
            tiles.append(img)
        h = tiles[0].shape[0]
        gap = np.full((h, GAP, 3), 255, np.uint8)
        row = [x for t in tiles for x in (t, gap)][:-1]
        rows.append(np.hstack(row))
        rows.append(np.full((GAP, rows[-1].shape[1], 3), 255, np.uint8))
    return np.vstack(rows[:-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "contact_sheet.png"))
    ap.add_argument("--boxes", default=None, help="also write a full-resolution sheet with boxes drawn here")
    args = ap.parse_args()
    img = sheet(boxes=False)
    cv2.imwrite(args.out, img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{args.out}: {img.shape[1]}x{img.shape[0]}, {Path(args.out).stat().st_size / 1e6:.1f} MB")
    if args.boxes:
        cv2.imwrite(args.boxes, sheet(boxes=True)[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(args.boxes)


if __name__ == "__main__":
    main()
