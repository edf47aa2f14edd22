"""Render the documentation screenshots from generated data (no display needed).

    python -m pollenstudio.gui.screenshots docs/screenshots

welcome.png: first start with two recent projects; review.png: synthetic micrographs with
proposals, some accepted / rejected, one selected with handles, the review queue beside;
large_zoom.png: a 16000 x 16000 slide scan zoomed in to pixel level.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _thumbs_done(win) -> bool:
    m = win.images.model
    ids = [m.row_data(i).id for i in range(m.rowCount())]
    return all(i in m._thumbs or i in m.loader.failed for i in ids)


def _settle(app, ms: int = 200) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np
    from PySide6.QtCore import QSettings

    from pollenstudio.core.types import AnnotationStatus
    from pollenstudio.gui.app import create_app
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.gui.sample_project import make_review_project

    app = create_app(["screenshots"])
    tmp = Path(tempfile.mkdtemp(prefix="ps_shots_"))
    proj_dir = tmp / "Birch season 2024 - Station Basel"
    proj = make_review_project(proj_dir, n_images=12, seed=3, width=1024, height=768, n_grains=(7, 10))
    proj.close()
    other = tmp / "Honey samples (Ticino)"
    other.mkdir()
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("recent", [str(proj_dir), str(other)])

    win = MainWindow(settings)
    win.resize(1400, 900)
    win.show()
    _settle(app)
    win.grab().save(str(out / "welcome.png"))

    win.open_project(str(proj_dir))
    ctl = win.ctl
    p = ctl.project
    win.queue.set_threshold(0.3)
    # review part of the project so statuses and counts are mixed, as mid-session
    first = p.images()[0]
    for rec in p.images()[1:5]:
        for a in p.annotations(rec.id):
            (p.reject if (a.score or 0) < 0.45 else p.accept)(a.id)
    anns = sorted(p.annotations(first.id), key=lambda a: a.score or 0)
    for a in anns[-3:]:
        p.accept(a.id)
    p.reject(anns[0].id)
    # start the review as a user would: Tab goes to the most uncertain proposal
    ctl.within_image = True
    ctl.show_image(first.id)
    ctl.step_proposal(1)
    sel = ctl.selected_annotation()
    if sel is not None:  # grains must be big enough on screen to judge, as in real review
        win.canvas.set_zoom(1.25, sel.box.center)
    for _ in range(100):
        _settle(app, 50)
        if _thumbs_done(win):
            break
    _settle(app, 200)
    win.grab().save(str(out / "review.png"))

    # large slide scan: tile a synthetic field to 16000 x 16000 and zoom to pixel level
    import tifffile

    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    tile, objects = generate_image(11, SynthConfig(width=2000, height=2000, n_grains=(40, 50)))
    big = np.ascontiguousarray(np.tile(tile, (8, 8, 1)))
    big_path = proj_dir / "images" / "slide_scan_16000.tif"
    tifffile.imwrite(big_path, big)
    del big
    p = ctl.project
    p.add_images([big_path])
    rec = p.find_image(path=big_path)
    from pollenstudio.core.types import Box, Detection

    rng = np.random.default_rng(5)
    dets = []
    for k in range(64):
        ox, oy = (k % 8) * 2000, (k // 8) * 2000
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            s = float(rng.uniform(0.35, 0.98))
            dets.append(Detection(Box(x1 + ox, y1 + oy, x2 + ox, y2 + oy), 0, o["name"], s))
    p.write_proposals(rec.id, dets)
    win.images.set_rows(ctl.image_rows())
    ctl.show_image(rec.id)
    for _ in range(600):
        _settle(app, 50)
        if win.canvas.image is not None and win.canvas.image.width == 16000 and _thumbs_done(win):
            break
    # an isolated grain on tile (3, 3) at 800 %: exine pixels, the box edge and its label
    def crowding(o):
        b = Box(*o["bbox"]).expanded(1.6)
        return sum(1 for q in objects if q is not o and b.intersection(Box(*q["bbox"])) > 0)

    o = min(sorted(objects, key=lambda o: -o["area"])[:15], key=crowding)
    x1, y1, x2, y2 = o["bbox"]
    ann = next(a for a in p.annotations(rec.id) if abs(a.box.x1 - (x1 + 6000)) < 1 and abs(a.box.y1 - (y1 + 6000)) < 1)
    ctl.select(ann.id)
    win.canvas.set_zoom(8.0, (x1 + 6000 + 30, y1 + 6000 + 22))
    _settle(app, 500)
    win.grab().save(str(out / "large_zoom.png"))
    win.close()
    print(f"wrote {out}/welcome.png, review.png, large_zoom.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
