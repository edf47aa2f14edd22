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
    proj = make_review_project(proj_dir, n_images=12, seed=3, width=1280, height=960, n_grains=(6, 9))
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
    ctl.show_image(first.id)
    undecided = [a for a in p.annotations(first.id) if a.status is AnnotationStatus.PROPOSED]
    if undecided:
        ctl.select(undecided[0].id)
    win.canvas.fit()
    _settle(app, 400)
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
    win.images.set_rows(ctl.image_rows())
    ctl.show_image(rec.id)
    for _ in range(600):
        _settle(app, 50)
        if win.canvas.image is not None and win.canvas.image.width == 16000:
            break
    o = max(objects, key=lambda o: o["area"])
    x1, y1, x2, y2 = o["bbox"]
    win.canvas.set_zoom(12.0, (x1 + 6000 + 12, (y1 + y2) / 2 + 6000))
    _settle(app, 500)
    win.grab().save(str(out / "large_zoom.png"))
    win.close()
    print(f"wrote {out}/welcome.png, review.png, large_zoom.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
