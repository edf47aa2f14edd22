"""Longest GUI event-loop stall while the model works in the background: detection of a
project (Detect all), edge-map / Grad-CAM overlays, and a training run started from the
training dashboard (Model > Train..., live curves redrawn while it runs).

A 2 ms QTimer records the gap between its ticks: a gap well above 2 ms is time the GUI
thread could not react to input. Target: longest gap under 100 ms.

    python bench/ui_stall_model.py --model CHECKPOINT [--images 20] [--size 1024x768] [--threads N]
                                   [--train-epochs 3] [--train-imgsz 320]

(The tests' tiny model: ``ls .pytest_cache/d/pollenstudio-tiny-model/``.) Prints one line
per phase: wall time, longest gap, 99th percentile gap, gaps over 50 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--train-epochs", type=int, default=3, help="epochs of the training phase (0: skip it)")
    ap.add_argument("--train-imgsz", type=int, default=320, help="model input size of the training phase")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    import cv2
    import numpy as np
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer

    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.gui.app import create_app
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    app = create_app(["bench"])
    tmp = Path(tempfile.mkdtemp(prefix="ps_stall_model_"))
    try:
        folder = tmp / "proj"
        (folder / "images").mkdir(parents=True)
        cfg = SynthConfig(width=w, height=h, n_grains=(6, 10), difficulty="easy")
        truth = {}
        for i in range(args.images):
            img, truth[f"img{i:04d}.png"] = generate_image(100 + i, cfg)
            cv2.imwrite(str(folder / "images" / f"img{i:04d}.png"), img[..., ::-1].copy())
        Project.create(folder).add_folder(folder / "images")
        win = MainWindow(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
        win.show()
        win.open_project(str(folder))
        ctl = win.ctl
        ctl.choose_model(args.model)

        gaps: list[float] = []
        clock = QElapsedTimer()
        last = [0.0]

        def tick():
            now = clock.nsecsElapsed() / 1e6
            gaps.append(now - last[0])
            last[0] = now

        # Python's cyclic garbage collector holds the GIL for a whole collection: record each
        # one, so a stall can be told apart from the model's own work
        import gc

        collections: list[tuple[float, int]] = []
        gc_t0 = [0.0]

        def on_gc(phase, info):
            if phase == "start":
                gc_t0[0] = time.perf_counter()
            else:
                collections.append(((time.perf_counter() - gc_t0[0]) * 1e3, info["generation"]))

        gc.callbacks.append(on_gc)
        timer = QTimer()
        timer.setInterval(2)
        timer.timeout.connect(tick)

        def run_phase(name, start, done):
            gaps.clear()
            collections.clear()
            clock.start()
            last[0] = 0.0
            timer.start()
            t0 = time.perf_counter()
            start()
            while not done():
                app.processEvents()
                time.sleep(0.001)
                if time.perf_counter() - t0 > 600:
                    print(f"{name}: gave up after 600 s")
                    break
            wall = time.perf_counter() - t0
            timer.stop()
            g = np.array(gaps or [0.0])
            worst_gc = max(collections, default=(0.0, -1))
            print(f"  (longest gap ends at {np.cumsum(g)[int(g.argmax())] / 1000:.2f} s; {len(collections)} garbage "
                  f"collections, longest {worst_gc[0]:.1f} ms (generation {worst_gc[1]}))")
            print(f"{name:<28} wall {wall:7.2f} s  longest gap {g.max():6.1f} ms  p99 {np.percentile(g, 99):6.1f} ms  "
                  f"gaps > 50 ms: {int((g > 50).sum())}")

        t0 = time.perf_counter()
        while ctl.model_name() is None and time.perf_counter() - t0 < 60:
            app.processEvents()
            time.sleep(0.005)
        ended = []
        ctl.detectEnded.connect(ended.append)
        run_phase(f"detect {args.images} x {w}x{h}", lambda: ctl.detect_which("all"), lambda: bool(ended))
        print("  ", ended[-1] if ended else "")
        ended.clear()  # again: the model is loaded now (the first run paid for loading it)
        run_phase("detect again (model loaded)", lambda: ctl.detect_which("all"), lambda: bool(ended))
        ctl.show_image(ctl.project.images()[0].id)
        run_phase("edge map (E)", lambda: win.actions["edge_map"].trigger(),
                  lambda: win._overlay_exp is not None or not win.actions["edge_map"].isChecked())
        win.actions["edge_map"].trigger()
        ctl.set_threshold(0.0)
        anns = ctl.annotations()
        if anns:
            ctl.select(anns[0].id)
            run_phase("Grad-CAM (G)", lambda: win.actions["gradcam"].trigger(),
                      lambda: win._overlay_exp is not None or not win.actions["gradcam"].isChecked())
            win.actions["gradcam"].trigger()
        if args.train_epochs > 0:
            # half the images reviewed: their true grains drawn in by hand
            from pollenstudio.core.types import Box

            p = ctl.project
            recs = p.images()[: max(6, args.images // 2)]
            names = sorted({o["name"] for r in recs for o in truth[r.path.rsplit("/", 1)[-1]]})
            ids = p.ensure_categories(names)
            for r in recs:
                p.reject_all(r.id)
                for o in truth[r.path.rsplit("/", 1)[-1]]:
                    p.add_annotation(r.id, Box(*o["bbox"]), ids[o["name"]])
            dlg = win.training_dashboard()
            dlg.epochs.setValue(args.train_epochs)
            dlg.imgsz.setCurrentText(str(args.train_imgsz))
            dlg.device.setCurrentIndex(dlg.device.findData("cpu"))
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 1.0:  # the dashboard's first paint is not the run's
                app.processEvents()
                time.sleep(0.005)
            run_phase(f"train {args.train_epochs} epochs on {len(recs)} images", dlg.start, lambda: not dlg.running())
            for _ in range(50):  # the finished signal and the last feed events
                app.processEvents()
                time.sleep(0.01)
            print("  ", dlg.phase_label.text(), "|", dlg.time_label.text())
        win.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
