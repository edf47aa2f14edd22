"""Focal stacks: how long a 20-plane 2048 x 2048 16-bit stack takes to open and to focus.

Writes the stack (one TIFF page per plane, 160 MB; ``--compress`` for zlib pages) into a
temporary project and measures, in the main window (offscreen) with its StackController:

- open: ``FocalStack.open`` (headers only);
- first view: from ``show_image`` to the middle plane's pixels on the canvas;
- step, read: Page Down to a plane not in the cache (the cache emptied first);
- step, cached: Page Down / Page Up between planes already read (the prefetch fills the
  neighbours of the plane shown), median and worst of 20;
- EDF view: the all-in-focus composite of 20 planes, from the key to the canvas;
- resident memory after all of it, against the 160 MB stack.

    python bench/stack_open.py [--planes 20] [--size 2048] [--compress] [--keep DIR]

Targets (issue 19): a step under 100 ms once the plane is cached, first view under 1 s.
Prints measured figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_stack(path: Path, planes: int, size: int, compress: bool) -> None:
    import cv2
    import tifffile

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.normal(20000, 6000, (size, size)).astype(np.float32), (0, 0), 3)
    with tifffile.TiffWriter(path) as w:
        for k in range(planes):
            sigma = 0.5 + abs(k - planes // 2) * 0.6
            plane = cv2.GaussianBlur(base, (0, 0), sigma) + rng.normal(0, 300, (size, size)).astype(np.float32)
            w.write(np.clip(plane, 0, 65535).astype(np.uint16), photometric="minisblack",
                    compression="zlib" if compress else None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--planes", type=int, default=20)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--compress", action="store_true", help="zlib-compressed pages (default: uncompressed)")
    ap.add_argument("--keep", help="work in this folder and keep it")
    args = ap.parse_args()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from pollenstudio.core.stack import FocalStack
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="stack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stack = work / "stack.tif"
    t = time.perf_counter()
    write_stack(stack, args.planes, args.size, args.compress)
    print(f"stack: {args.planes} planes x {args.size}x{args.size} 16-bit, {stack.stat().st_size / 1e6:.0f} MB on disk "
          f"({'zlib' if args.compress else 'uncompressed'}), written in {time.perf_counter() - t:.1f} s")
    if (work / "p").exists():
        shutil.rmtree(work / "p")
    proj = Project.create(work / "p")
    res = proj.add_images([stack])
    assert res.added, res.errors
    proj.close()

    t = time.perf_counter()
    with FocalStack.open(stack) as st:
        n = st.n_planes
    print(f"open (headers, {n} planes): {1000 * (time.perf_counter() - t):.1f} ms")

    app = QApplication.instance() or QApplication([])
    win = MainWindow(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    win.resize(1400, 900)
    win.show()

    def wait(cond, timeout=60.0):
        end = time.perf_counter() + timeout
        while not cond():
            app.processEvents()
            if time.perf_counter() > end:
                raise TimeoutError("the view did not arrive")
            time.sleep(0.0005)

    rss0 = rss_mb()
    win.open_project(str(work / "p"))  # warm-up: imports and first-use costs of the app
    wait(lambda: win.canvas.image is not None)
    st = win.stacks
    win.close_project()  # the open measured below starts with an empty plane cache
    t = time.perf_counter()
    win.open_project(str(work / "p"))
    wait(lambda: win.canvas.image is not None and st.view is not None)
    first_view = time.perf_counter() - t
    opened = [sec for what, sec in st.timings if what.startswith("open")]
    print(f"first view (open project -> middle plane on the canvas): {1000 * first_view:.0f} ms "
          f"(of which reading the plane and its display pyramid: {1000 * opened[-1]:.0f} ms)")

    # step to a plane not read yet
    wait(lambda: not st.jobs.busy("prefetch"))
    st.cache.clear()
    t = time.perf_counter()
    shown = win.canvas.image
    win.actions["plane_next"].trigger()
    wait(lambda: win.canvas.image is not shown)
    print(f"step, plane read from disk: {1000 * (time.perf_counter() - t):.0f} ms")

    # cached steps: go back and forth over planes the prefetch has read
    wait(lambda: not st.jobs.busy("prefetch"))
    times = []
    for k in range(20):
        key = "plane_prev" if k % 2 == 0 else "plane_next"
        shown = win.canvas.image
        t = time.perf_counter()
        win.actions[key].trigger()
        wait(lambda: win.canvas.image is not shown)
        app.processEvents()  # the swap's repaint
        times.append(time.perf_counter() - t)
    print(f"step, cached: median {1000 * statistics.median(times):.1f} ms, worst {1000 * max(times):.1f} ms "
          f"(20 steps)")

    shown = win.canvas.image
    t = time.perf_counter()
    win.actions["edf_view"].trigger()
    wait(lambda: win.canvas.image is not shown, timeout=300)
    print(f"EDF view of {n} planes (first time): {1000 * (time.perf_counter() - t):.0f} ms")
    print(f"plane cache: {st.cache.nbytes / 1e6:.0f} MB; process resident memory grew {rss_mb() - rss0:.0f} MB "
          f"(stack {n * args.size * args.size * 2 / 1e6:.0f} MB)")
    win.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
