"""Time and memory of the synthetic generator: python bench/bench_synthetic.py [--large]"""

import argparse
import resource
import time

from pollenstudio.engine.synthetic import SynthConfig, generate_image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true", help="also time one 6000x6000 slide scan")
    args = ap.parse_args()
    for difficulty in ("easy", "default", "hard"):
        cfg = SynthConfig(width=640, height=480, difficulty=difficulty)
        generate_image(0, cfg)
        t0, c0 = time.perf_counter(), time.process_time()
        n = 20
        grains = sum(len(generate_image(s, cfg)[1]) for s in range(n))
        dt, dc = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        print(f"640x480 {difficulty:8s} {dt * 1000:6.1f} ms/image wall, {dc * 1000:6.1f} ms CPU  {grains / n:.1f} grains/image")
    if args.large:
        t0, c0 = time.perf_counter(), time.process_time()
        img, objs = generate_image(0, SynthConfig(width=6000, height=6000))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"6000x6000 default {dt:6.1f} s wall, {dc:6.1f} s CPU  {len(objs)} grains  peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
