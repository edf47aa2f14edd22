"""Whole-slide scan, read and detected from the file (issue 29): the real slide's figures.

    python bench/whole_slide.py [--slide PATH] [--band 4096] [--full] [--out bench/results/whole_slide.txt]
                                [--project DIR] [--sheet build/whole_slide_top50.png]

On ``../shared/data/slides/palynoslides_C.tif`` (17,832 x 15,029 px, 256 px JPEG tiles,
5 levels; skipped cleanly when absent). Each phase runs in a process of its own, so its peak
RSS (``ru_maxrss``) is that phase's alone:

- ``view``: open + thumbnail (1024 px) + the first 1600 x 1000 view (level 0, slide centre):
  time to first view and peak RSS while opening;
- ``pan``: 1600 x 1000 level-0 views across the whole slide (a meander, 800 px steps):
  regions read, time, peak RSS while panning;
- ``limits``: what limits blank-tile skipping: the share of the slide with content (the
  content map from the file's low level) and the pixel work left at finer tile grains than
  the model's (tiles x their area; a tile needs the overlap of the largest trained grain);
- ``detect``: the shipped grain model (``models/``, backend as the CLI's default) on a
  ``--band`` px square of the slide's centre, tile by tile from the file, with and without
  blank-tile skipping (the ratio is from one run of this script; a band because a full-slide
  detection takes minutes on this shared 2-core machine); ``--full`` also detects the whole
  slide with skipping;
- ``project`` (``--project DIR``): the proposals of a project holding the slide (made by
  ``pollenstudio import`` / ``detect``): boxes per megapixel and a contact sheet of the 50
  highest-scoring boxes (``--sheet``, never committed: real data) to look at and count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _measure import DEFAULT_SLIDE, ROOT, peak_mb

sys.path.insert(0, str(ROOT))


def phase_view(path: str) -> dict:
    from pollenstudio.core.slide import Slide

    t0 = time.perf_counter()
    s = Slide.open(path)
    t1 = time.perf_counter()
    th = s.thumbnail(1024)
    t2 = time.perf_counter()
    x, y = s.width // 2 - 800, s.height // 2 - 500
    view = s.region(x, y, 1600, 1000)
    t3 = time.perf_counter()
    return {"open_s": t1 - t0, "thumbnail_s": t2 - t1, "view_s": t3 - t2, "first_view_s": t3 - t0,
            "thumbnail": list(th.shape), "view": list(view.shape), "levels": len(s.levels),
            "size": [s.width, s.height], "peak_rss_mb": peak_mb()}


def phase_pan(path: str) -> dict:
    from pollenstudio.core.slide import Slide

    s = Slide.open(path)
    t0 = time.perf_counter()
    n = 0
    ys = range(0, max(1, s.height - 1000) + 1, 800)
    for r, y in enumerate(ys):
        xs = list(range(0, max(1, s.width - 1600) + 1, 800))
        for x in (xs if r % 2 == 0 else xs[::-1]):
            s.region(x, y, 1600, 1000)
            n += 1
    return {"regions": n, "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_mb()}


def phase_detect(path: str, band: int, skip: bool, full: bool) -> dict:
    import tempfile

    import cv2
    import tifffile

    from pollenstudio.core.slide import Slide
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.runtime import default_backend

    src = path
    if not full:  # the centre band, written as a pyramidal tiled file of its own (read back tile by tile)
        with Slide.open(path) as s:
            x0, y0 = (s.width - band) // 2, (s.height - band) // 2
            tmp = Path(tempfile.mkdtemp()) / "band.tif"
            with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
                img = s.region(x0, y0, band, band)
                tw.write(img, subifds=3, tile=(256, 256), compression="jpeg", compressionargs={"level": 95},
                         photometric="rgb")
                for k in range(1, 4):
                    tw.write(cv2.resize(img, (band >> k, band >> k), interpolation=cv2.INTER_AREA), subfiletype=1,
                             tile=(256, 256), compression="jpeg", compressionargs={"level": 95}, photometric="rgb")
                del img
        src = str(tmp)
    rss_before = peak_mb()
    pred = Predictor.from_default(device="cpu", skip_blank=skip, backend=default_backend())
    rss_model = peak_mb()
    t0 = time.perf_counter()
    res = next(iter(pred.iter_predict([src])))
    dt = time.perf_counter() - t0
    scores = sorted((d.score for d in res.detections), reverse=True)
    mp = res.width * res.height / 1e6
    return {"source": "whole slide" if full else f"centre {band}x{band} px", "skip_blank": skip,
            "seconds": dt, "tiles": res.tiles, "skipped": res.skipped, "run": res.tiles - res.skipped,
            "boxes": len(res.detections), "boxes_per_mp": len(res.detections) / mp, "megapixels": mp,
            "device": pred.device_description, "timings": {k: round(v, 2) for k, v in pred.timings.items()},
            "top_scores": [round(float(v), 3) for v in scores[:5]], "error": res.error,
            "peak_rss_mb": peak_mb(), "rss_before_model_mb": rss_before, "rss_after_model_mb": rss_model}


def phase_limits(path: str) -> dict:
    """What limits blank-tile skipping on this slide: share of the slide with content, and
    the pixel work (tiles run x their area, relative to every 640 px tile) at finer tile
    grains than the model's, with the overlap the largest trained grain needs."""
    from pollenstudio.core.slide import Slide
    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.paths import default_model_path
    from pollenstudio.engine.predict import SlideReader, slide_content_map
    from pollenstudio.engine.tiling import blank_tiles, plan_tiles

    _, cfg, meta = load_checkpoint(default_model_path(), device="cpu")
    lo, hi = meta.get("grain_size_px") or (None, None)
    with Slide.open(path) as s:
        t0 = time.perf_counter()
        cmap, step = slide_content_map(SlideReader(s, s.width, s.height), min_extent=0.8 * lo if lo else None)
        t_map = time.perf_counter() - t0
        w, h = s.width, s.height
    full = plan_tiles(w, h, cfg.imgsz, cfg.imgsz // 4)
    base = len(full) * cfg.imgsz ** 2
    rows = []
    for side, overlap in ((cfg.imgsz, cfg.imgsz // 4), (cfg.imgsz // 2, cfg.imgsz // 4), (cfg.imgsz // 2, cfg.imgsz // 8),
                          (cfg.imgsz // 4, cfg.imgsz // 8)):
        tiles = plan_tiles(w, h, side, overlap)
        blank = blank_tiles(tiles, cmap, step)
        run = int((~blank).sum())
        rows.append({"tile": side, "overlap": overlap, "tiles": len(tiles), "blank": int(blank.sum()),
                     "work_vs_every_640_tile": run * side ** 2 / base})
    return {"map_step": step, "map_seconds": t_map, "content_share": float(cmap.mean()), "grain_range": [lo, hi],
            "grains": rows}


def phase_project(project: str, sheet: str) -> dict:
    import cv2
    import numpy as np

    from pollenstudio.core.slide import Slide
    from pollenstudio.core.types import AnnotationStatus
    from pollenstudio.project import Project

    with Project.open(project) as proj:
        recs = [r for r in proj.images() if r.path.lower().endswith((".tif", ".tiff"))]
        rec = recs[0]
        anns = [a for a in proj.annotations(rec.id) if a.status is AnnotationStatus.PROPOSED]
        path = proj.image_path(rec)
        run = proj.runs()[-1] if proj.runs() else None
    anns.sort(key=lambda a: -(a.score or 0.0))
    top = anns[:50]
    cols, cell, per_page = 5, 256, 25  # two pages of 25, large enough to tell a grain from debris
    pages = []
    with Slide.open(path) as s:
        for start in range(0, len(top), per_page):
            page = top[start:start + per_page]
            canvas = np.full((-(-len(page) // cols) * (cell + 20), cols * cell, 3), 255, np.uint8)
            for k, a in enumerate(page):
                x1, y1, x2, y2 = a.box.x1, a.box.y1, a.box.x2, a.box.y2
                side = max(x2 - x1, y2 - y1) * 2.5  # the box and its surroundings
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                X0, Y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
                crop = s.region(X0, Y0, max(1, int(side)), max(1, int(side)))
                f = cell / max(crop.shape[:2])
                crop = np.ascontiguousarray(cv2.resize(crop, (max(1, int(crop.shape[1] * f)), max(1, int(crop.shape[0] * f))),
                                                       interpolation=cv2.INTER_CUBIC))
                cv2.rectangle(crop, (int((x1 - X0) * f), int((y1 - Y0) * f)), (int((x2 - X0) * f), int((y2 - Y0) * f)),
                              (255, 0, 0), 1)
                r, q = divmod(k, cols)
                canvas[r * (cell + 20):r * (cell + 20) + crop.shape[0], q * cell:q * cell + crop.shape[1]] = crop
                cv2.putText(canvas, f"{start + k + 1} {a.score:.2f} {int(x2 - x1)}x{int(y2 - y1)}px",
                            (q * cell + 3, r * (cell + 20) + cell + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 160), 1)
            out = Path(sheet)
            out = out.with_name(f"{out.stem}_{start + 1}-{start + len(page)}{out.suffix}")
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), canvas[:, :, ::-1])
            pages.append(str(out))
        mp = s.width * s.height / 1e6
    summary = run.summary if run is not None and hasattr(run, "summary") else {}
    return {"proposals": len(anns), "boxes_per_mp": len(anns) / mp, "megapixels": mp, "sheet": ", ".join(pages),
            "top50_min_score": round(float(top[-1].score), 3) if top else None,
            "run": {k: summary.get(k) for k in ("seconds", "tiles", "tiles_skipped", "tiles_resumed", "device")}
            if isinstance(summary, dict) else {}}


def child(args) -> int:
    if args.phase == "view":
        out = phase_view(args.slide)
    elif args.phase == "pan":
        out = phase_pan(args.slide)
    elif args.phase == "limits":
        out = phase_limits(args.slide)
    elif args.phase == "detect":
        out = phase_detect(args.slide, args.band, args.skip == "on", args.full)
    else:
        out = phase_project(args.project, args.sheet)
    print(json.dumps(out))
    return 0


def run_phase(*argv) -> dict:
    p = subprocess.run([sys.executable, __file__, "--phase", *argv], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"phase {argv[0]} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", default=str(DEFAULT_SLIDE))
    ap.add_argument("--band", type=int, default=4096, help="side of the centre square detected (px)")
    ap.add_argument("--full", action="store_true", help="also detect the whole slide (with blank-tile skipping)")
    ap.add_argument("--project", default=None, help="a project holding the slide, already detected")
    ap.add_argument("--sheet", default=str(ROOT / "build" / "whole_slide_top50.png"))
    ap.add_argument("--out", default=None, help="append the figures to this file")
    ap.add_argument("--phase", choices=("view", "pan", "limits", "detect", "project"), help=argparse.SUPPRESS)
    ap.add_argument("--skip", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        return child(args)
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        print("skipped: reading the JPEG-tiled slide needs imagecodecs (pip install imagecodecs)")
        return 0
    if not Path(args.slide).is_file():
        print(f"skipped: {args.slide} is not here (real data, see ../shared/data/README.md)")
        return 0
    lines = [f"# bench/whole_slide.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{Path(args.slide).name}; this machine's 2 shared CPU cores (other jobs running)"]

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    v = run_phase("view", "--slide", args.slide)
    say(f"first view: open {v['open_s']:.3f} s + thumbnail {v['thumbnail_s']:.3f} s + 1600x1000 view "
        f"{v['view_s']:.3f} s = {v['first_view_s']:.3f} s; peak RSS while opening {v['peak_rss_mb']:.0f} MB "
        f"(slide {v['size'][0]}x{v['size'][1]}, {v['levels']} levels)")
    p = run_phase("pan", "--slide", args.slide)
    say(f"panning: {p['regions']} level-0 views of 1600x1000 across the slide in {p['seconds']:.1f} s "
        f"({1000 * p['seconds'] / p['regions']:.0f} ms each); peak RSS {p['peak_rss_mb']:.0f} MB")
    lim = run_phase("limits", "--slide", args.slide)
    say(f"content map (file level nearest 1/{lim['map_step']}, specks under 0.8 x {lim['grain_range'][0]} px dropped): "
        f"{lim['map_seconds']:.1f} s; content on {100 * lim['content_share']:.1f} % of the slide's area")
    for g in lim["grains"]:
        say(f"  tiles of {g['tile']} px, overlap {g['overlap']}: {g['tiles']} tiles, {g['blank']} blank "
            f"({100 * g['blank'] / g['tiles']:.0f} %); pixel work {g['work_vs_every_640_tile']:.2f} x every "
            f"{lim['grains'][0]['tile']} px tile")
    runs = {}
    for skip in ("off", "on"):
        d = run_phase("detect", "--slide", args.slide, "--band", str(args.band), "--skip", skip)
        runs[skip] = d
        say(f"detect {d['source']}, blank skipping {skip}: {d['seconds']:.1f} s, tiles {d['tiles']} "
            f"(run {d['run']}, skipped {d['skipped']}), {d['boxes']} boxes ({d['boxes_per_mp']:.2f}/MP), "
            f"peak RSS {d['peak_rss_mb']:.0f} MB (model loaded: {d['rss_after_model_mb']:.0f} MB); {d['device']}; "
            f"timings {d['timings']}")
    say(f"blank skipping: {runs['off']['seconds'] / max(runs['on']['seconds'], 1e-9):.2f}x faster than every tile "
        f"({runs['on']['skipped']} of {runs['on']['tiles']} tiles skipped) on the {runs['on']['source']}")
    if args.full:
        d = run_phase("detect", "--slide", args.slide, "--skip", "on", "--full")
        say(f"detect whole slide, blank skipping on: {d['seconds']:.1f} s, tiles {d['tiles']} (run {d['run']}, "
            f"skipped {d['skipped']}), {d['boxes']} boxes ({d['boxes_per_mp']:.2f}/MP), peak RSS "
            f"{d['peak_rss_mb']:.0f} MB; {d['device']}; timings {d['timings']}")
    if args.project:
        q = run_phase("project", "--project", args.project, "--sheet", args.sheet)
        say(f"project {args.project}: {q['proposals']} proposals on {q['megapixels']:.0f} MP = "
            f"{q['boxes_per_mp']:.2f} boxes/MP at the default threshold; run {q['run']}; contact sheet of the "
            f"top 50 (scores down to {q['top50_min_score']}): {q['sheet']}")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
