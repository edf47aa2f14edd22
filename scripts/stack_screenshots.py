"""Screenshots of focusing through a focal stack (issue 19), into docs/img/.

A generated 9-plane stack (``synth --planes 9``: each grain in focus on its own plane) is
detected with the shipped six-taxon model on its EDF view, then shown in the main window
(offscreen):

- ``stack-focus-through.png``: the same grains at three planes (Page Down between them);
- ``stack-edf.png``: the all-in-focus EDF view with the detections;
- ``stack-box-plane.png``: a selected grain shown on its own plane (Focus bar and the
  Selected box panel say which).

    python scripts/stack_screenshots.py [--out docs/img] [--seed 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--seed", type=int, default=4)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import cv2
    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic import SynthConfig
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    work = Path(tempfile.mkdtemp(prefix="stack-shots-"))
    generate_stack_dataset(work / "s", 1, 9, seed=args.seed, cfg=SynthConfig())
    proj = Project.create(work / "p")
    proj.add_images([work / "s" / "images" / "000000.tif"])
    detect_project(proj, Predictor.from_default(device="cpu"))
    proj.close()

    app = QApplication.instance() or QApplication([])
    win = MainWindow(QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat))
    win.resize(1400, 900)
    win.show()

    def settle(cond=lambda: True, ms=300):
        end = time.perf_counter() + 30
        while not cond() and time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)
        t = time.perf_counter() + ms / 1000
        while time.perf_counter() < t:
            app.processEvents()
            time.sleep(0.005)

    win.open_project(str(work / "p"))
    settle(lambda: win.canvas.image is not None)
    st = win.stacks
    p = win.ctl.project
    anns = sorted(p.annotations(win.ctl.image_id), key=lambda a: -a.box.area)
    # a grain near others on other planes: zoom there so focusing shows grains coming and going
    target = anns[0]
    cx, cy = target.box.center
    win.ctl.select(None)

    def grab_canvas(label: str) -> np.ndarray:
        tmp = work / "canvas.png"
        win.canvas.grab().save(str(tmp))
        arr = cv2.imread(str(tmp))  # BGR
        cv2.rectangle(arr, (0, 0), (arr.shape[1], 34), (40, 40, 40), -1)
        cv2.putText(arr, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (230, 230, 230), 2, cv2.LINE_AA)
        return arr

    from pollenstudio.core.types import Box

    def zoom_to(box: Box) -> None:
        # the canvas' own aspect (the view keeps pixels square), then kept on the image
        vw, vh = win.canvas.vb.width(), win.canvas.vb.height()
        cx0, cy0 = box.center
        half_w = box.width / 2
        half_h = half_w * vh / max(vw, 1.0)
        box = Box(cx0 - half_w, cy0 - half_h, cx0 + half_w, cy0 + half_h)
        dx = max(0.0, -box.x1) - max(0.0, box.x2 - 640)
        dy = max(0.0, -box.y1) - max(0.0, box.y2 - 480)
        box = box.translated(dx, dy)
        win.canvas.vb.setRange(xRange=(box.x1, box.x2), yRange=(box.y1, box.y2), padding=0)
        settle()

    zoom_to(Box(cx - 170, cy - 130, cx + 170, cy + 130))
    tiles = []
    for plane in (1, 4, 7):
        st.set_view(plane)
        settle(lambda pl=plane: st.view == pl and str(pl + 1) in win.canvas.image.name)
        tiles.append(grab_canvas(f"Plane {plane + 1} / 9 (Page Down to go deeper)"))
    h = min(t.shape[0] for t in tiles)
    w = min(t.shape[1] for t in tiles)
    sheet = np.hstack([cv2.resize(t[:h, :w], (w // 2, h // 2), interpolation=cv2.INTER_AREA) for t in tiles])
    cv2.imwrite(str(out / "stack-focus-through.png"), sheet)

    win.canvas.fit()
    win.actions["edf_view"].trigger()
    settle(lambda: st.view == "edf" and "EDF" in win.canvas.image.name, ms=500)
    win.grab().save(str(out / "stack-edf.png"))

    win.actions["edf_view"].trigger()  # back to a plane
    settle(lambda: st.view != "edf")
    win.ctl.select(target.id, centre=True)  # as Tab does: the grain on its own plane
    settle(lambda: st.view == target.plane, ms=500)
    zoom_to(Box(cx - 220, cy - 160, cx + 220, cy + 160))
    win.grab().save(str(out / "stack-box-plane.png"))
    win.close()
    print(f"wrote {out}/stack-focus-through.png, stack-edf.png, stack-box-plane.png "
          f"(selected grain on plane {target.plane + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
