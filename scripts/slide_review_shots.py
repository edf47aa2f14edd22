"""Screenshots of a slide's review (issue 29) from generated data: a pyramidal tiled TIFF
made of synthetic micrographs (grains thick in some parts of the slide, none in others),
proposals on its grains, a few fields traversed and grains accepted.

    python scripts/slide_review_shots.py OUT_DIR [--size 9000x6000]

Writes slide-review.png (the main window: a field of the slide with the Slide dock's
density map, visited fields and the field shown), slide-overview.png (the dock alone) and
slide-count.png (the Count dock with the fields traversed). No real data is read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _settle(app, ms: int) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def make_slide(path: Path, width: int, height: int, seed: int = 3):
    """A pyramidal BigTIFF of tiled synthetic fields; returns the grains' boxes (x1, y1, x2, y2, name)."""
    import cv2
    import numpy as np
    import tifffile

    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    grains = []
    tile = 1500
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            # more grains towards the upper left, few at the far right: a density to see
            fx, fy = tx / width, ty / height
            n = int(max(0, round(14 * (1.2 - fx - 0.5 * fy) + rng.normal(0, 1))))
            field, objects = generate_image(int(rng.integers(1 << 30)),
                                            SynthConfig(width=tile, height=tile, n_grains=(n, n)))
            h, w = min(tile, height - ty), min(tile, width - tx)
            img[ty:ty + h, tx:tx + w] = field[:h, :w]
            for o in objects:
                x1, y1, x2, y2 = o["bbox"]
                if x2 <= w and y2 <= h:
                    grains.append((x1 + tx, y1 + ty, x2 + tx, y2 + ty, o["name"]))
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(img, subifds=3, tile=(256, 256), compression="zlib", photometric="rgb")
        level = img
        for _k in range(3):
            level = cv2.resize(level, (level.shape[1] // 2, level.shape[0] // 2), interpolation=cv2.INTER_AREA)
            tw.write(level, subfiletype=1, tile=(256, 256), compression="zlib", photometric="rgb")
    return grains


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size", default="9000x6000")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from pollenstudio.core.types import Box, Detection
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="slide_shots_"))
    slide = tmp / "slide_scan.tif"
    grains = make_slide(slide, width, height)
    proj = Project.create(tmp / "project")
    iid = proj.add_images([slide], group="Slide 12 (Lake core 3.20 m)").added[0]
    rng = np.random.default_rng(1)
    dets = [Detection(Box(x1, y1, x2, y2), 0, "pollen", float(rng.uniform(0.3, 0.97))) for x1, y1, x2, y2, _n in grains]
    proj.write_proposals(iid, dets)
    proj.close()

    win = MainWindow(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    win.resize(1400, 900)
    win.show()
    win.open_project(str(tmp / "project"))
    if win.ctl.image_id != iid:
        win.ctl.show_image(iid)
    for _ in range(300):
        _settle(app, 50)
        if win.slide_review.active:
            break
    sr = win.slide_review
    win.slide_dock.raise_()
    # traverse the first fields, accepting the grains in them as a reviewer would
    p = win.ctl.project
    for _ in range(5):
        sr.step_field(1)
        _settle(app, 100)
        f = sr.fields[sr.current]
        for a in p.annotations(iid):
            if a.status.value == "proposed" and f.contains(*a.box.center) and (a.score or 0) > 0.45:
                p.accept(a.id)
    _settle(app, 300)
    win.ctl.step_proposal(1)  # the next grain along the slide
    for _ in range(100):
        _settle(app, 50)
        if not win.canvas.detail_pending():
            break
    _settle(app, 1500)
    win.grab().save(str(out / "slide-review.png"))
    sr.panel.grab().save(str(out / "slide-overview.png"))
    win.count_dock.raise_()
    win.counts.refresh()
    for _ in range(600):  # the count is read in a worker (behind model loads on the shared pool)
        _settle(app, 50)
        if "traversed" in win.counts.panel.note.text() and win.counts.panel.table.rowCount():
            break
    win.count_dock.setFloating(True)  # its own window, tall enough for the note under the table
    win.count_dock.resize(460, 330)
    _settle(app, 300)
    win.counts.panel.grab().save(str(out / "slide-count.png"))
    print("\n".join(str(out / n) for n in ("slide-review.png", "slide-overview.png", "slide-count.png")))
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
