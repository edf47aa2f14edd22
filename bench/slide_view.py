"""Opening and panning a whole-slide scan in the main window (issue 29 item 1).

Drives a real main window (offscreen Qt) as a user does: a temporary project holding one
slide file (registered with ``Project.add_images``, headers only), the image opened from
the list, then the view zoomed to about 100 % and panned across the slide in the order a
microscopist traverses it (rows left to right, right to left). Prints the time to first
view (overview on the canvas), to the first full-resolution cut, per-pan wait for the cut
to land, how long the GUI thread was blocked at most, and the process's resident memory:
peak (VmHWM) while opening and while panning, sampled every pan.

    python bench/slide_view.py [SLIDE.tif] [--pans 40] [--zoom 1.0]

Default slide: ../shared/data/slides/palynoslides_C.tif (skipped when absent). Figures are
measured, never pass/fail; Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _measure import DEFAULT_SLIDE, proc_status, reset_peak

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slide", nargs="?", default=str(DEFAULT_SLIDE))
    ap.add_argument("--pans", type=int, default=40)
    ap.add_argument("--zoom", type=float, default=1.0, help="screen px per image px while panning")
    args = ap.parse_args()
    slide = Path(args.slide)
    if not slide.is_file():
        print(f"skipped: {slide} is absent")
        return 0

    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="slide_view_"))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    proj = Project.create(tmp / "project")
    res = proj.add_images([slide])
    if not res.added:
        print(f"not registered: {res.errors}")
        return 1
    image_id = res.added[0]
    proj.close()
    win = MainWindow(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    win.resize(1600, 1000)
    win.show()
    win.open_project(str(tmp / "project"))
    app.processEvents()

    # GUI-thread stalls: a 5 ms timer; the longest gap between its ticks
    gaps = []
    tick = QElapsedTimer()
    tick.start()

    def on_tick():
        gaps.append(tick.restart())

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(on_tick)

    def wait(cond, limit=30.0):
        t0 = time.perf_counter()
        while not cond():
            app.processEvents()
            time.sleep(0.002)
            if time.perf_counter() - t0 > limit:
                return False
        return True

    print(f"package: {Path(sys.modules['pollenstudio'].__file__).parent}")
    print(f"slide: {slide.name}  RSS before opening: {proc_status()['VmRSS']} MB")
    reset_peak()
    timer.start()
    t0 = time.perf_counter()
    win.ctl.show_image(image_id)
    ok = wait(lambda: win.canvas.image is not None and win.canvas.image.width > 0)
    first_view = time.perf_counter() - t0
    c = win.canvas
    print(f"first view (overview on the canvas): {first_view:.2f} s  ({type(c.image).__name__}, "
          f"{c.image.width} x {c.image.height}){'' if ok else '  NOT SHOWN'}")
    app.processEvents()
    W, H = c.image.width, c.image.height
    t1 = time.perf_counter()
    c.set_zoom(args.zoom, (W / 2, H / 2))
    app.processEvents()
    wait(lambda: not c.detail_pending() and c.detail.isVisible())
    print(f"first cut at {args.zoom * 100:.0f} %: {time.perf_counter() - t1:.2f} s")
    st = proc_status()
    open_peak = st["VmHWM"]
    print(f"peak RSS while opening: {open_peak} MB (now {st['VmRSS']} MB)")
    gaps.clear()
    reset_peak()

    # meander across the slide: rows of view-sized steps
    vw, vh = c.vb.width() / args.zoom, c.vb.height() / args.zoom
    cols = max(2, int(W // vw))
    rows = max(2, int(H // vh))
    centres = []
    for r in range(rows):
        xs = [vw / 2 + i * (W - vw) / (cols - 1) for i in range(cols)]
        for x in (xs if r % 2 == 0 else xs[::-1]):
            centres.append((x, vh / 2 + r * (H - vh) / (rows - 1)))
    step = max(1, len(centres) // args.pans)
    centres = centres[::step][: args.pans]
    waits, rss = [], []
    for cx, cy in centres:
        tp = time.perf_counter()
        c.set_zoom(args.zoom, (cx, cy))
        app.processEvents()
        wait(lambda: not c.detail_pending())
        waits.append(time.perf_counter() - tp)
        rss.append(proc_status()["VmRSS"])
    timer.stop()
    st = proc_status()
    waits.sort()
    print(f"pans: {len(centres)} across {cols} x {rows} views; cut landed after median {waits[len(waits) // 2]:.3f} s, "
          f"max {waits[-1]:.3f} s; detail reads {c.detail_reads}")
    print(f"GUI thread: longest gap between 5 ms ticks while panning {max(gaps) if gaps else 0} ms")
    print(f"RSS while panning: min {min(rss)} MB, max {max(rss)} MB; peak RSS (VmHWM) while panning {st['VmHWM']} MB")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
