"""Render the documentation screenshots from generated data (no display needed).

    python -m pollenstudio.gui.screenshots docs/screenshots [--model CHECKPOINT] [--only-model]

welcome.png: first start with two recent projects; review.png: synthetic micrographs with
proposals, some accepted / rejected, one selected with handles, the review queue beside;
large_zoom.png: a 16000 x 16000 slide scan zoomed in to pixel level.
--only-review-flow (issue #16): selected_on_scan.png (a 6000 x 4000 scan at fit zoom, then
Tab centres and zooms the grain), gallery.png (taxon gallery), and
duplicates_before_after.png (the shipped model on a crowded frame without / with the
same-grain rule).
With --model (a .safetensors checkpoint; the docs use the tiny test model of
tests/fixtures_models.py, whose two made-up taxa are "Roundum" and "Triangula"):
detection_in_progress.png, edge_map.png, gradcam.png, export_dialog.png, all from a real
run of that model on synthetic micrographs, and training_dashboard.png: a short real
fine-tuning run (started from the dashboard) next to the version it started from.
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


def _main_window(tmp: Path, recent: list[str] | None = None):
    """A shown 1400x900 main window whose settings live in ``tmp`` (never the user's)."""
    from PySide6.QtCore import QSettings

    from pollenstudio.gui.main_window import MainWindow

    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    if recent is not None:
        settings.setValue("recent", recent)
    win = MainWindow(settings)
    win.resize(1400, 900)
    win.show()
    return win


def model_shots(app, out: Path, model: str) -> None:
    """Screenshots of the model in the loop, with a real model run."""
    import cv2

    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="ps_model_shots_"))
    folder = tmp / "Honey samples (Ticino)"
    (folder / "images").mkdir(parents=True)
    cfg = SynthConfig(width=640, height=480, n_grains=(7, 10))  # the default model's frame size
    for i in range(10):
        img, _objs = generate_image(3000 + i, cfg)
        cv2.imwrite(str(folder / "images" / f"honey_{i + 1:02d}.png"), img[..., ::-1].copy())
    proj = Project.create(folder)
    proj.add_folder(folder / "images")
    proj.close()
    win = _main_window(tmp)
    win.open_project(str(folder))
    ctl, models = win.ctl, win.models
    import shutil

    (folder / "models").mkdir()
    model = str(shutil.copy(model, folder / "models" / Path(model).name))  # the version is named after the file
    models.choose_model(model)
    for _ in range(200):
        _settle(app, 50)
        if models.model_name() is not None and models.device_text:
            break
    win.queue.set_threshold(0.3)

    # 1. detection running: progress, ETA and Cancel in the status bar, first images done
    models.detect_batch = 1
    progress = []
    models.detectProgress.connect(lambda d, t, m: progress.append(d))
    models.detect_which("all")
    for _ in range(1200):
        _settle(app, 50)
        if progress and progress[-1] >= 4:
            break
    ctl.show_image(ctl.project.images()[0].id)
    _settle(app, 300)
    win.grab().save(str(out / "detection_in_progress.png"))
    for _ in range(2400):
        _settle(app, 50)
        if not models.detecting():
            break
    _settle(app, 300)

    # 2. edge map P3 over the first image
    win.actions["edge_map"].trigger()
    for _ in range(600):
        _settle(app, 50)
        if win.overlay.exp is not None:
            break
    _settle(app, 300)
    win.grab().save(str(out / "edge_map.png"))
    win.actions["edge_map"].trigger()

    # 3. Grad-CAM of one grain, zoomed in so the grain can be judged
    anns = sorted((a for a in ctl.annotations() if a.status.value == "proposed"), key=lambda a: -(a.score or 0))
    if anns:
        a = anns[min(1, len(anns) - 1)]
        ctl.select(a.id)
        win.canvas.set_zoom(2.0, a.box.center)
        win.actions["gradcam"].trigger()
        for _ in range(600):
            _settle(app, 50)
            if win.overlay.exp is not None and win.overlay.exp.kind == "gradcam":
                break
        _settle(app, 300)
        win.grab().save(str(out / "gradcam.png"))
        win.actions["gradcam"].trigger()

    # 4. export dialog after exporting the reviewed images
    p = ctl.project
    for rec in p.images()[:3]:
        for a in p.annotations(rec.id):
            (p.reject if (a.score or 0) < 0.4 else p.accept)(a.id)
    dlg = win.export_dialog()
    dlg.path.setText(str(folder / "exports" / "honey_reviewed.json"))
    dlg.start()
    for _ in range(200):
        _settle(app, 50)
        if dlg.summary is not None or dlg.error is not None:
            break
    _settle(app, 200)
    dlg.grab().save(str(out / "export_dialog.png"))
    dlg.close()
    win.close()
    print(f"wrote {out}/detection_in_progress.png, edge_map.png, gradcam.png, export_dialog.png")


def training_shot(app, out: Path, model: str, epochs: int = 12) -> None:
    """training_dashboard.png: reviewed synthetic micrographs (their true boxes as the
    palynologist's), a first version fine-tuned headless from ``model`` and made active,
    then a second run started from the dashboard, shown with its curves and comparison."""
    import cv2

    from pollenstudio.core.types import Box
    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.engine.train import TrainConfig, train_project
    from pollenstudio.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="ps_train_shot_"))
    folder = tmp / "Birch season 2024 - Station Basel"
    (folder / "images").mkdir(parents=True)
    taxa = ("Betula", "Pinus", "Poaceae")
    cfg = SynthConfig(width=640, height=480, n_grains=(5, 8), difficulty="easy", taxa=taxa, grain_size=(40.0, 80.0))
    truth = {}
    for i in range(36):
        img, objects = generate_image(7000 + i, cfg)
        name = f"basel_{i + 1:03d}.png"
        cv2.imwrite(str(folder / "images" / name), img[..., ::-1].copy())
        truth[name] = objects
    proj = Project.create(folder)
    ids = proj.ensure_categories(taxa)
    proj.add_folder(folder / "images")
    for rec in proj.images():
        for o in truth[rec.path.rsplit("/", 1)[-1]]:
            proj.add_annotation(rec.id, Box(*o["bbox"]), ids[o["name"]])
    # threads=1: on the shared 2-core dev VM one thread is the fastest (the trainer sets it)
    train_project(proj, TrainConfig(epochs=6, imgsz=320, batch=8, device="cpu", threads=1), base=model,
                  activate=True, name="v1 spring counts")
    proj.close()

    win = _main_window(tmp)
    win.open_project(str(folder))
    dlg = win.training_dashboard()
    dlg.resize(1180, 860)
    dlg.epochs.setValue(epochs)
    dlg.imgsz.setCurrentText("320")
    dlg.device.setCurrentIndex(dlg.device.findData("cpu"))
    dlg.threads = 1
    dlg.start()
    for _ in range(12000):
        _settle(app, 50)
        if not dlg.running():
            break
    _settle(app, 300)
    dlg.grab().save(str(out / "training_dashboard.png"))
    win.close()
    print(f"wrote {out}/training_dashboard.png")


def scan_selection_shot(app, out: Path) -> None:
    """selected_on_scan.png: a 6000 x 4000 scan opened at fit zoom (~12 %), then Tab: the
    least certain grain is centred and zoomed to a size one can judge (issue #16)."""
    import numpy as np
    import tifffile

    from pollenstudio.core.types import Box, Detection
    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="ps_scan_"))
    tile, objects = generate_image(21, SynthConfig(width=2000, height=2000, n_grains=(40, 50)))
    big = np.ascontiguousarray(np.tile(tile, (2, 3, 1)))
    (tmp / "images").mkdir()
    path = tmp / "images" / "scan_6000x4000.tif"
    tifffile.imwrite(path, big)
    p = Project.create(tmp)
    p.ensure_categories(sorted({o["name"] for o in objects}))
    p.add_images([path])
    rec = p.images()[0]
    rng = np.random.default_rng(4)
    dets = []
    for k in range(6):
        ox, oy = (k % 3) * 2000, (k // 3) * 2000
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            dets.append(Detection(Box(x1 + ox, y1 + oy, x2 + ox, y2 + oy), 0, o["name"], float(rng.uniform(0.3, 0.98))))
    p.write_proposals(rec.id, dets)
    p.close()
    win = _main_window(tmp)
    win.open_project(str(tmp))
    for _ in range(400):
        _settle(app, 50)
        if win.canvas.image is not None and win.canvas.image.width == 6000:
            break
    win.canvas.fit()
    _settle(app, 300)
    win.ctl.step_proposal(1)
    _settle(app, 500)
    win.grab().save(str(out / "selected_on_scan.png"))
    win.close()


def duplicates_shot(app, out: Path, seed: int = 34) -> None:
    """duplicates_before_after.png: the shipped model on a crowded synthetic frame, in the
    review window, without and with the same-grain rule (one grain, one box)."""
    import cv2
    import numpy as np

    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.project import Project

    img, _ = generate_image(seed, SynthConfig(width=1024, height=768, n_grains=(25, 30)))
    pred = Predictor.from_default(device="cpu")
    shots = []
    for merge in (False, True):
        pred.merge_same_grain = merge
        dets = pred.predict(img)
        tmp = Path(tempfile.mkdtemp(prefix="ps_dup_"))
        (tmp / "images").mkdir()
        cv2.imwrite(str(tmp / "images" / "crowded.png"), np.ascontiguousarray(img[..., ::-1]))
        p = Project.create(tmp)
        p.ensure_categories(pred.class_names)
        p.add_images([tmp / "images" / "crowded.png"])
        p.write_proposals(p.images()[0].id, dets, iou_threshold=1.01)
        p.close()
        win = _main_window(tmp)
        win.open_project(str(tmp))
        win.queue.slider.setValue(0)
        _settle(app, 300)
        for d in (win.images_dock, win.queue_dock, win.taxa_dock, win.topk_dock):
            d.hide()  # the frame itself, large enough to read the labels
        _settle(app, 100)
        win.canvas.set_zoom(1.6, (300, 230))  # the crowded part of the frame
        _settle(app, 300)
        shots.append(win.canvas.grab().toImage())
        win.close()
    from PySide6.QtGui import QColor, QFont, QImage, QPainter

    shots = [im.copy(0, 0, min(im.width(), 760), im.height()) for im in shots]
    w = shots[0].width() + shots[1].width() + 12
    h = max(s.height() for s in shots) + 34
    canvas = QImage(w, h, QImage.Format.Format_RGB32)
    canvas.fill(QColor("#ffffff"))
    painter = QPainter(canvas)
    f = QFont()
    f.setPixelSize(18)
    f.setBold(True)
    painter.setFont(f)
    painter.drawText(10, 24, "Before: boxes of several taxa on one grain")
    painter.drawText(shots[0].width() + 22, 24, "After: one box per grain (other taxa kept as alternatives)")
    painter.drawImage(0, 34, shots[0])
    painter.drawImage(shots[0].width() + 12, 34, shots[1])
    painter.end()
    canvas.save(str(out / "duplicates_before_after.png"))


def gallery_shot(app, out: Path) -> None:
    """gallery.png: the taxon gallery of a generated project, a few grains selected."""
    from PySide6.QtCore import QItemSelection, QItemSelectionModel

    from pollenstudio.gui.sample_project import make_review_project

    tmp = Path(tempfile.mkdtemp(prefix="ps_gallery_"))
    make_review_project(tmp / "proj", n_images=12, seed=3, width=1024, height=768, n_grains=(7, 10)).close()
    win = _main_window(tmp)
    win.open_project(str(tmp / "proj"))
    _settle(app, 200)
    p = win.ctl.project
    counts = p.category_counts()
    cid = max(counts, key=counts.get)
    for r in p.grain_rows(cid)[-6:]:
        p.accept(r[0])
    dlg = win.open_gallery(cid)
    dlg.resize(1000, 720)
    for _ in range(200):
        _settle(app, 50)
        if not dlg.loading() and dlg.model.crops_cached() >= min(dlg.model.total(), 40):
            break
    sel = QItemSelection(dlg.model.index(1), dlg.model.index(3))
    dlg.view.selectionModel().select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect)
    _settle(app, 300)
    dlg.grab().save(str(out / "gallery.png"))
    dlg.close()
    win.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pollenstudio.gui.screenshots")
    ap.add_argument("out", nargs="?", default="docs/screenshots")
    ap.add_argument("--model", help="checkpoint for the model screenshots")
    ap.add_argument("--only-model", action="store_true", help="only the model screenshots")
    ap.add_argument("--only-training", action="store_true", help="only the training dashboard (needs --model)")
    ap.add_argument("--only-review-flow", action="store_true",
                    help="only the review-flow shots (scan selection, gallery, duplicates before/after)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only_review_flow:
        from pollenstudio.gui.app import create_app

        app = create_app(["screenshots"])
        scan_selection_shot(app, out)
        gallery_shot(app, out)
        duplicates_shot(app, out)
        return 0
    if args.only_training:
        from pollenstudio.gui.app import create_app

        training_shot(create_app(["screenshots"]), out, args.model)
        return 0
    if args.only_model:
        from pollenstudio.gui.app import create_app

        app = create_app(["screenshots"])
        model_shots(app, out, args.model)
        training_shot(app, out, args.model)
        return 0
    import numpy as np

    from pollenstudio.gui.app import create_app
    from pollenstudio.gui.sample_project import make_review_project

    app = create_app(["screenshots"])
    tmp = Path(tempfile.mkdtemp(prefix="ps_shots_"))
    proj_dir = tmp / "Birch season 2024 - Station Basel"
    proj = make_review_project(proj_dir, n_images=12, seed=3, width=1024, height=768, n_grains=(7, 10))
    proj.close()
    other = tmp / "Honey samples (Ticino)"
    other.mkdir()
    win = _main_window(tmp, recent=[str(proj_dir), str(other)])
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
    if args.model:
        model_shots(app, out, args.model)
        training_shot(app, out, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
