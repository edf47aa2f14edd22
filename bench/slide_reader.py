"""Slide readers compared: core.slide (tifffile + imagecodecs) against OpenSlide, on the real
whole-slide scan (issue 29: "OpenSlide through its wheels if it serves better: measure").

Reads the same N random 512 x 512 regions of level 0 with each reader, in one process, and
reports open time, total and median read time, peak resident memory and whether the
pixels agree (JPEG decoders may differ by a grey level or two). Skips cleanly when the
slide or OpenSlide (``pip install openslide-bin openslide-python``) is absent.

    python bench/slide_reader.py [--slide PATH] [--n 100] [--out bench/results/slide_reader.txt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _measure import DEFAULT_SLIDE, peak_mb, report


def rects(w: int, h: int, n: int, side: int = 512, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, w - side)), int(rng.integers(0, h - side))) for _ in range(n)]


def bench_core(path: Path, spots, side: int) -> tuple[dict, list[np.ndarray]]:
    from pollenstudio.core.slide import Slide

    t0 = time.perf_counter()
    s = Slide.open(path)
    opened = time.perf_counter() - t0
    times, out = [], []
    for x, y in spots:
        t = time.perf_counter()
        out.append(s.region(x, y, side, side))
        times.append(time.perf_counter() - t)
    s.close()
    return {"open_s": opened, "total_s": sum(times), "median_ms": 1000 * float(np.median(times))}, out


def bench_openslide(path: Path, spots, side: int) -> tuple[dict, list[np.ndarray]]:
    import openslide

    t0 = time.perf_counter()
    s = openslide.OpenSlide(str(path))
    opened = time.perf_counter() - t0
    times, out = [], []
    for x, y in spots:
        t = time.perf_counter()
        out.append(np.asarray(s.read_region((x, y), 0, (side, side)).convert("RGB")))
        times.append(time.perf_counter() - t)
    info = {"levels": s.level_count, "vendor": s.properties.get("openslide.vendor")}
    s.close()
    return {"open_s": opened, "total_s": sum(times), "median_ms": 1000 * float(np.median(times)), **info}, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--reader", choices=("both", "core", "openslide"), default="both",
                    help="one reader per process gives each its own peak memory figure")
    ap.add_argument("--out", type=Path, default=None, help="append the figures to this file")
    args = ap.parse_args(argv)
    if not args.slide.is_file():
        print(f"skipped: no slide at {args.slide}")
        return 0
    try:
        import openslide
        have_os = True
    except ImportError as exc:  # the wheels are not installed (or their library does not load)
        have_os = False
        why = str(exc)
    from pollenstudio.core.slide import Slide

    with Slide.open(args.slide) as s:
        w, h = s.width, s.height
    spots = rects(w, h, args.n, args.side)
    lines = [f"slide {args.slide.name}: {w} x {h} px; {args.n} random {args.side}x{args.side} level-0 regions, "
             f"one cold pass (each reader opens the file itself)"]
    results = {}
    if args.reader in ("both", "core"):
        results["core.slide"] = bench_core(args.slide, spots, args.side)
        lines.append(f"core.slide (tifffile {__import__('tifffile').__version__}): "
                     + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in results["core.slide"][0].items())
                     + f", peak RSS so far {peak_mb():.0f} MB")
    if args.reader in ("both", "openslide"):
        if not have_os:
            lines.append(f"OpenSlide: skipped ({why})")
        else:
            results["openslide"] = bench_openslide(args.slide, spots, args.side)
            lines.append(f"OpenSlide {openslide.__library_version__} (openslide-python {openslide.__version__}): "
                         + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in results["openslide"][0].items())
                         + f", peak RSS so far {peak_mb():.0f} MB")
    if len(results) == 2:
        a, b = results["core.slide"][1], results["openslide"][1]
        diffs = [np.abs(x.astype(int) - y.astype(int)) for x, y in zip(a, b)]
        lines.append(f"pixels: mean |difference| {np.mean([d.mean() for d in diffs]):.3f} grey levels, "
                     f"max {max(int(d.max()) for d in diffs)}")
        ta, tb = results["core.slide"][0]["total_s"], results["openslide"][0]["total_s"]
        lines.append(f"time ratio core.slide / OpenSlide: {ta / tb:.2f}")
    report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
