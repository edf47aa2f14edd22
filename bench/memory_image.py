"""Memory of the app after working on one large image (issue 28 item 15: "about 4 GB after
one 2592 x 1944 image").

Drives a real main window (offscreen Qt) the way a user does: opens a project holding one
generated 2592 x 1944 RGB image (the synthetic generator; no real image is read), detects
on it with the grain model (Ctrl+D), shows the edge map (E), then Grad-CAM of a box (G),
and prints after each step the process's resident memory (VmRSS), its peak during the step
(VmHWM, reset before each step where the kernel allows it) and, with ``--tracemalloc``,
what Python and numpy hold (current / peak) with the largest allocation sites.

    python bench/memory_image.py [--size 2592x1944] [--model models/pollen-grain-n.safetensors]
                                 [--threads 1] [--tracemalloc] [--repeat 1]

To compare with the code before a change, run the same script from a worktree of the older
commit (``git worktree add /tmp/oldtree COMMIT``), with that tree first on the path:
``PYTHONPATH=/tmp/oldtree python bench/memory_image.py`` (it prints the package it ran).
Figures are measured, never pass/fail; Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _measure import proc_status, reset_peak

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2592x1944")
    ap.add_argument("--model", default=str(ROOT / "models" / "pollen-grain-n.safetensors"),
                    help="default: the grain model, what a new project detects with")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python/numpy allocations (slower)")
    ap.add_argument("--repeat", type=int, default=1, help="run detect + edge map + Grad-CAM this many times")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds the app idles after each step before it is measured (default 1)")
    ap.add_argument("--big-box", type=int, default=0, metavar="PX",
                    help="also Grad-CAM on a PX x PX box drawn at the centre, named as the detection's "
                         "taxon (the real field's junk boxes reached 1523 px; 0: skip)")
    ap.add_argument("--trim", action="store_true",
                    help="diagnosis: also print RSS after glibc's malloc_trim(0), i.e. without the heap "
                         "memory freed but kept by the allocator")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    import tracemalloc

    if args.tracemalloc:
        tracemalloc.start(12)
    rows: list[tuple[str, dict, float, tuple[int, int] | None]] = []
    resettable = reset_peak()

    def record(step: str, t0: float) -> None:
        gc.collect()
        st = proc_status()
        tm = tracemalloc.get_traced_memory() if args.tracemalloc else None
        rows.append((step, st, time.perf_counter() - t0, tm))
        extra = f"  python/numpy {tm[0] / 2**20:7.1f} MB (peak {tm[1] / 2**20:7.1f})" if tm else ""
        if args.trim:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            extra += f"  after malloc_trim {proc_status()['VmRSS']:6d} MB"
        print(f"{step:<34} RSS {st['VmRSS']:6d} MB  peak in step {st['VmHWM']:6d} MB  {time.perf_counter() - t0:6.1f} s"
              + extra, flush=True)
        if tm:
            tracemalloc.reset_peak()
        reset_peak()

    t0 = time.perf_counter()
    import cv2
    import numpy as np
    import torch
    from PySide6.QtCore import QSettings

    import pollenstudio
    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.gui.app import create_app
    from pollenstudio.gui.main_window import MainWindow
    from pollenstudio.project import Project

    print(f"package: {Path(pollenstudio.__file__).parent}   image {w} x {h}   model {args.model}"
          f"   peak reset per step: {'yes' if resettable else 'no (peaks are since start)'}")
    if args.threads:
        torch.set_num_threads(args.threads)
    app = create_app(["bench"])
    record("imports + QApplication", t0)

    def wait(cond, what: str, limit: float = 900.0) -> None:
        t = time.perf_counter()
        while not cond():
            app.processEvents()
            time.sleep(0.002)
            if time.perf_counter() - t > limit:
                raise SystemExit(f"gave up waiting for {what} after {limit:.0f} s")
        t = time.perf_counter()
        while time.perf_counter() - t < args.settle:  # the result drawn, the user looks at it
            app.processEvents()
            time.sleep(0.01)

    tmp = Path(tempfile.mkdtemp(prefix="ps_memory_"))
    try:
        folder = tmp / "proj"
        (folder / "images").mkdir(parents=True)
        img, _objs = generate_image(11, SynthConfig(width=w, height=h, n_grains=(25, 35), grain_size=(60.0, 140.0)))
        cv2.imwrite(str(folder / "images" / "field.png"), img[..., ::-1].copy())
        del img
        Project.create(folder).add_folder(folder / "images")

        t0 = time.perf_counter()
        win = MainWindow(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
        win.show()
        ctl = win.ctl
        shown = []
        ctl.imageShown.connect(shown.append)
        win.open_project(str(folder))
        wait(lambda: bool(shown) and win.canvas.image is not None, "the image")
        record("window + project, image shown", t0)

        def overlay(action: str, on: bool) -> None:
            """E / G as the keys do: the checkable action toggled."""
            if win.actions[action].isChecked() != on:
                win.actions[action].trigger()

        if Path(args.model).resolve() != (ROOT / "models" / "pollen-grain-n.safetensors").resolve():
            win.models.choose_model(args.model)  # else the new project's default: the grain model
            wait(lambda: win.models.model_name() is not None, "the model")
        for rep in range(args.repeat):
            tag = f" #{rep + 1}" if args.repeat > 1 else ""
            t0 = time.perf_counter()
            ended = []
            win.models.detectEnded.connect(ended.append)
            win.models.detect_which("image")
            wait(lambda: bool(ended), "detection")
            win.models.detectEnded.disconnect(ended.append)
            n = len(ctl.annotations())
            record(f"detect (Ctrl+D): {n} boxes{tag}", t0)

            t0 = time.perf_counter()
            ov = win.overlay
            overlay("edge_map", True)
            wait(lambda: ov.exp is not None or ov.kind is None, "the edge map")
            record(f"edge map (E){tag}" + ("" if ov.exp is not None else " FAILED"), t0)
            overlay("edge_map", False)

            anns = sorted(ctl.annotations(), key=lambda a: -(a.score or 0.0))
            if not anns:
                print("no box to explain: Grad-CAM skipped")
                continue
            t0 = time.perf_counter()
            ctl.select(anns[0].id)
            overlay("gradcam", True)
            wait(lambda: (ov.exp is not None and ov.exp.kind == "gradcam") or ov.kind is None, "Grad-CAM")
            record(f"Grad-CAM (G){tag}" + ("" if ov.exp is not None else " FAILED"), t0)
            overlay("gradcam", False)
            t0 = time.perf_counter()
            for a in anns[1:4]:  # Tab-Tab-Tab with G on: three more maps
                ctl.select(a.id)
                overlay("gradcam", True)
                wait(lambda: (ov.exp is not None and ov.exp.kind == "gradcam" and ov.exp.key == a.id)
                     or ov.kind is None, "Grad-CAM")
                overlay("gradcam", False)
            record(f"Grad-CAM on 3 more boxes{tag}", t0)
            if args.big_box:
                from pollenstudio.core.types import Box

                t0 = time.perf_counter()
                r = args.big_box / 2
                big = ctl.project.add_annotation(ctl.image_id, Box(w / 2 - r, h / 2 - r, w / 2 + r, h / 2 + r),
                                                 anns[0].category_id)
                ctl.show_image(ctl.image_id, select=big)
                for _ in range(20):
                    app.processEvents()
                ctl.select(big)
                overlay("gradcam", True)
                wait(lambda: (ov.exp is not None and ov.exp.kind == "gradcam" and ov.exp.key == big)
                     or ov.kind is None, "Grad-CAM")
                record(f"Grad-CAM, {args.big_box} px box{tag}" + ("" if ov.exp is not None else " FAILED"), t0)
                overlay("gradcam", False)
                ctl.project.reject(big)  # out of the next round's way

        if args.tracemalloc:
            snap = tracemalloc.take_snapshot()
            print("largest Python/numpy holders now:")
            for stat in snap.statistics("traceback")[:6]:
                frames = [f"{Path(fr.filename).name}:{fr.lineno}" for fr in stat.traceback[-4:]]
                print(f"  {stat.size / 2**20:7.1f} MB  {' < '.join(reversed(frames))}")
        win.close()
        first = rows[0][1]["VmRSS"]
        print(f"grown since the app started: {rows[-1][1]['VmRSS'] - first} MB; highest peak in any step: "
              f"{max(r[1]['VmHWM'] for r in rows)} MB")
        del np
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
