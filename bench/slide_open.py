"""Opening a whole-slide scan and reading random regions: time and peak resident memory
(issue 29: "a 9-plane generated slide of the same size opens within the same memory").

Make the slide first (about 10 minutes on 2 cores; 9 planes of 17,832 x 15,029 px):

    pollenstudio synth --out /tmp/big9 --slide 17832x15029 --planes 9 --jpeg 90
    python bench/slide_open.py /tmp/big9/images/slide000.ome.tif [--n 50] [--out bench/results/slide_open.txt]

Reads ``--n`` random 512 x 512 level-0 regions, each of a random plane, then an overview
(thumbnail of 1024 px) and one EDF region; prints the figures after each step. Skips when
the file is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _measure import peak_mb, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide", type=Path)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None, help="append the figures to this file")
    args = ap.parse_args(argv)
    if not args.slide.is_file():
        print(f"skipped: no slide at {args.slide}")
        return 0
    from pollenstudio.core.slide import Slide

    lines = [f"{args.slide.name}: {args.slide.stat().st_size / 1e6:.0f} MB file; peak RSS after imports {peak_mb():.0f} MB"]
    t = time.perf_counter()
    s = Slide.open(args.slide)
    lines.append(f"open: {time.perf_counter() - t:.3f} s, {s.width} x {s.height} px, {s.planes} planes, "
                 f"{len(s.levels)} levels, lazy={s.lazy}; peak RSS {peak_mb():.0f} MB")
    rng = np.random.default_rng(0)
    times = []
    for _ in range(args.n):
        x, y = int(rng.integers(0, s.width - args.side)), int(rng.integers(0, s.height - args.side))
        p = int(rng.integers(0, s.planes))
        t = time.perf_counter()
        arr = s.region(x, y, args.side, args.side, 0, p)
        times.append(time.perf_counter() - t)
        assert arr.shape[:2] == (args.side, args.side)
    lines.append(f"{args.n} random {args.side}x{args.side} regions (random planes): total {sum(times):.2f} s, "
                 f"median {1000 * float(np.median(times)):.1f} ms; peak RSS {peak_mb():.0f} MB")
    t = time.perf_counter()
    th = s.thumbnail(1024, plane=s.planes // 2)
    lines.append(f"overview {th.shape[1]}x{th.shape[0]}: {time.perf_counter() - t:.2f} s; peak RSS {peak_mb():.0f} MB")
    t = time.perf_counter()
    s.region(s.width // 2, s.height // 2, args.side, args.side, 0, "edf")
    lines.append(f"one EDF region over {s.planes} planes: {time.perf_counter() - t:.2f} s; peak RSS {peak_mb():.0f} MB")
    s.close()
    decoded = s.width * s.height * 3 * s.planes / 1e6
    lines.append(f"peak RSS of the run: {peak_mb():.0f} MB (every plane decoded whole: {decoded:,.0f} MB)")
    report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
