"""How well models find *real* pollen: held-out composited fields, real debris, scale, fragments.

    python bench/real_grains.py [--models A.safetensors B.safetensors ...] [--data ../shared/data]
                                [--fields 60] [--seed 99] [--out DIR]

Needs the real imagery in ../shared/data (POLLEN73S crops, debris tiles, one real field);
without it the script says so and exits 0. Prints, for each model side by side:

1. class-agnostic AP@.5 and AP@.5:.95 (pycocotools; per-class boxes as `pollenstudio eval`
   scores them, without the review-time same-grain fold) on composited 640x640 fields made of
   crops of POLLEN73S taxa that the grain model's training never used (the compositor's
   ``--split test --split-by taxon``: whole taxa held out), pasted on generated mounts and
   real debris; every prediction counts as "pollen" whatever taxon a model names;
2. false detections per 640x640 at confidence 0.25 on fields made only of real debris tiles
   (3x3 mosaics of 256 px tiles, 768x768; the tiles are noisy negatives: a few hold a folded
   palynomorph). Only the held-out block of tiles (``debris_tiles(split="test")``) is used here
   and in the composited fields of 1, 3 and 4;
3. scale: the same held-out grains rendered at 0.3x, 1x and 3x of the middle of the training
   range, recall@.5 without and with calibration (the true typical grain size given). Two
   constructions: "grains only" pastes the grains at that size on a mount and debris kept
   at their native scale (grains small among full-size debris and full-strength pixel
   noise: harder than any real slide); "whole field" renders a 1x field and reduces all of
   it to 0.3x with fresh camera noise, as a lower-magnification objective shows a slide, and
   compares with the same fields at 1x;
4. fragmentation: grains of 150-300 px on 1920x1080 frames, the share reported as one box with
   IoU >= 0.7, without and with calibration;
5. the real field (fields/*.jpg): the boxes each model draws at 0.25, saved as PNG overlays in
   --out for a person to look at and count.

Each model's figures come from the same frames in the same run. Wall time is printed per part.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pollenstudio.core.types import DEFAULT_CONF  # noqa: E402
from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, box_iou, evaluate_detections  # noqa: E402
from pollenstudio.engine.predict import Predictor  # noqa: E402
from pollenstudio.engine.synthetic.composite import (  # noqa: E402
    CompositeConfig,
    GrainLibrary,
    composite_image,
    debris_tiles,
)


def _boxes(dets):
    return np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets], np.float64).reshape(-1, 4)


def _recall(truth_boxes, dets, conf, thr=0.5):
    """Share of true boxes matched one-to-one by a detection >= conf with IoU >= thr."""
    found = total = 0
    for t, d in zip(truth_boxes, dets):
        p = _boxes([x for x in d if x.score >= conf])
        total += len(t)
        if not len(t) or not len(p):
            continue
        ious = box_iou(np.asarray(t), p)
        taken = set()
        for i in np.argsort(-ious.max(1)):
            j = int(np.argmax(np.where([k in taken for k in range(len(p))], -1, ious[i])))
            if ious[i, j] >= thr and j not in taken:
                taken.add(j)
                found += 1
    return found / max(1, total)


def _frames(n, seed, library, cfg, debris=None):
    out = []
    for i in range(n):
        img, objs = composite_image(seed * 1000 + i, library, cfg, debris)
        out.append((img, np.array([o["bbox"] for o in objs], np.float64).reshape(-1, 4)))
    return out


def _run(pred: Predictor, imgs, grain_sizes=None):
    return [r.detections for r in pred.iter_predict(imgs, grain_sizes=grain_sizes)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=[str(ROOT / "models/hieraedgenet-n.safetensors"),
                                                   str(ROOT / "models/pollen-grain-n.safetensors")])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--fields", type=int, default=60, help="held-out composited fields (default 60)")
    ap.add_argument("--debris-mosaics", type=int, default=40, help="debris-only mosaics (default 40)")
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--scale-fields", type=int, default=12, help="fields per row of the scale part (default 12)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="/tmp/real_grains")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: ap debris scale fragments field")
    ap.add_argument("--field-grain-px", type=float, default=None,
                    help="also run the real fields calibrated to this typical grain diameter (px)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "pollen73s").is_dir():
        print(f"real imagery not found in {data} (needs pollen73s/, debris/, fields/): nothing measured")
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    models = [Path(m) for m in args.models if Path(m).is_file()]
    for m in args.models:
        if not Path(m).is_file():
            print(f"(model {m} not found: left out)")
    if not models:
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m.stem for m in models]
    preds = {m.stem: Predictor.from_checkpoint(m, device="cpu", conf=0.001, max_det=300) for m in models}
    print(f"models: {', '.join(names)}; torch threads {torch.get_num_threads()}")
    for n, p in preds.items():
        print(f"  {n}: classes {p.class_names}, trained grain sizes (model-input px) {p.grain_range}")

    test_lib = GrainLibrary.from_folders([data / "pollen73s"], split="test", split_by="taxon")
    print(f"held-out crops: {len(test_lib.files)} of {len(test_lib.taxa)} taxa ({', '.join(test_lib.taxa)}); "
          f"usable {len(test_lib.usable())}")
    # the tiles the grain model's training never saw (its recipe composites with --split train)
    debris = debris_tiles(data / "debris", split="test")
    print(f"held-out debris tiles: {len(debris)} (a contiguous block of the scan's tiles)")

    if "ap" not in args.skip:
        t0 = time.time()
        frames = _frames(args.fields, args.seed, test_lib, CompositeConfig(class_agnostic=True), debris)
        truths = [ImageTruth(boxes=b, classes=np.zeros(len(b), np.int64), width=640, height=640) for _, b in frames]
        print(f"\n1. held-out composited fields: {len(frames)} x 640x640, {sum(len(b) for _, b in frames)} grains "
              f"(generated in {time.time() - t0:.0f} s)")
        print(f"   {'model':32s} {'AP@.5':>7s} {'AP@.5:.95':>9s} {'P@.25':>6s} {'R@.25':>6s} {'s':>5s}")
        for n, p in preds.items():
            t0 = time.time()
            p.merge_same_grain = False  # the COCO protocol of `pollenstudio eval` and the model cards
            dets = _run(p, [f for f, _ in frames])
            p.merge_same_grain = True  # everything below: what the app shows
            ip = [ImagePreds(boxes=_boxes(d), scores=np.array([x.score for x in d]), classes=np.zeros(len(d), np.int64)) for d in dets]
            r = evaluate_detections(truths, ip, ["pollen"], conf=DEFAULT_CONF)
            print(f"   {n:32s} {r.map50:7.3f} {r.map50_95:9.3f} {r.precision:6.3f} {r.recall:6.3f} {time.time() - t0:5.0f}")

    if "debris" not in args.skip:
        rng = np.random.default_rng(args.seed)
        mosaics = []
        for _ in range(args.debris_mosaics):
            pick = rng.choice(len(debris), 9, replace=False)
            tiles = [cv2.imread(str(debris[k]))[..., ::-1] for k in pick]
            rows = [np.hstack([cv2.resize(t, (256, 256)) for t in tiles[r * 3:(r + 1) * 3]]) for r in range(3)]
            mosaics.append(np.ascontiguousarray(np.vstack(rows)))
        per = (768 * 768) / (640 * 640)
        print(f"\n2. real debris only: {len(mosaics)} mosaics of 3x3 debris tiles (768x768); false detections per 640x640 at {DEFAULT_CONF}")
        for n, p in preds.items():
            dets = _run(p, mosaics)
            fp = sum(sum(x.score >= DEFAULT_CONF for x in d) for d in dets)
            print(f"   {n:32s} {fp / len(mosaics) / per:6.2f}   ({fp} boxes on {len(mosaics)} mosaics)")

    if "scale" not in args.skip:
        print("\n3. scale: held-out grains at 0.3x / 1x / 3x of each model's typical trained size; recall@.5 (conf 0.25)")
        for n, p in preds.items():
            if not p.grain_range:
                print(f"   {n:32s} records no grain-size range: calibration not possible")
                continue
            mid = float(np.sqrt(p.grain_range[0] * p.grain_range[1]))
            row = []
            for k, f in enumerate((0.3, 1.0, 3.0)):
                d = mid * f
                size = int(min(2400, max(640, 640 * f)))
                cfg = CompositeConfig(width=size, height=size, class_agnostic=True, grain_size=(0.8 * d, 1.25 * d),
                                      grains_per_frame=(4, 10), max_upscale=8.0)
                frames = _frames(args.scale_fields, args.seed + 7 + k, test_lib, cfg, debris)
                tb = [b for _, b in frames]
                plain = _recall(tb, _run(p, [f for f, _ in frames]), DEFAULT_CONF)
                cal = _recall(tb, _run(p, [f for f, _ in frames], grain_sizes=[d] * len(frames)), DEFAULT_CONF)
                row.append(f"{f}x ({d:.0f} px): {plain:.3f} -> {cal:.3f}")
            print(f"   {n:32s} grains only:  " + "; ".join(row) + "   (without -> with calibration)")
            # whole field at 0.3x: what a 0.3x objective gives - grains, debris and mount all
            # smaller. A 1x field of 640/0.3 px is averaged down to 640 px and camera noise of
            # the compositor's range is added at the new pixel scale; the 1x figure is the
            # same fields at full size (tiled).
            f, big = 0.3, int(round(640 / 0.3))
            cfg = CompositeConfig(width=big, height=big, class_agnostic=True, grain_size=(0.8 * mid, 1.25 * mid),
                                  grains_per_frame=(int(4 / f**2), int(10 / f**2)), max_upscale=8.0)
            frames = _frames(args.scale_fields, args.seed + 13, test_lib, cfg, debris)
            nrng = np.random.default_rng(args.seed)
            small = []
            for fr, _ in frames:
                im = cv2.resize(fr, (640, 640), interpolation=cv2.INTER_AREA).astype(np.float64)
                im += nrng.normal(0.0, 255 * nrng.uniform(*CompositeConfig().noise), im.shape)
                small.append(np.clip(im, 0, 255).astype(np.uint8))
            tb = [b * (640 / big) for _, b in frames]
            plain = _recall(tb, _run(p, small), DEFAULT_CONF)
            cal = _recall(tb, _run(p, small, grain_sizes=[mid * f] * len(small)), DEFAULT_CONF)
            ref = _recall([b for _, b in frames], _run(p, [fr for fr, _ in frames]), DEFAULT_CONF)
            print(f"   {n:32s} whole field:  0.3x ({mid * f:.0f} px): {plain:.3f} -> {cal:.3f}; the same "
                  f"{len(frames)} fields ({sum(len(b) for b in tb)} grains) at 1x: {ref:.3f}")

    if "fragments" not in args.skip:
        cfg = CompositeConfig(width=1920, height=1080, class_agnostic=True, grain_size=(150, 300), grains_per_frame=(3, 6),
                              max_upscale=4.0, crowding=0.0)
        frames = _frames(10, args.seed + 11, test_lib, cfg, debris)
        # only grains wholly inside the frame: a grain cut by the frame is a fragment by nature
        tb = [b[(b[:, 0] > 1) & (b[:, 1] > 1) & (b[:, 2] < 1919) & (b[:, 3] < 1079)] for _, b in frames]
        print(f"\n4. fragments: {sum(len(b) for b in tb)} whole grains of 150-300 px on {len(frames)} frames 1920x1080; "
              "share found as one box with IoU >= 0.7 (conf 0.25)")
        for n, p in preds.items():
            plain = _recall(tb, _run(p, [f for f, _ in frames]), DEFAULT_CONF, thr=0.7)
            txt = f"   {n:32s} uncalibrated {plain:.3f}"
            if p.grain_range:
                sizes = [float(np.median(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))) if len(b) else None for b in tb]
                cal = _recall(tb, _run(p, [f for f, _ in frames], grain_sizes=sizes), DEFAULT_CONF, thr=0.7)
                txt += f", calibrated (median true grain size per frame) {cal:.3f}"
            print(txt)

    if "field" not in args.skip:
        print(f"\n5. real fields: overlays in {out}")
        for f in sorted((data / "fields").glob("*.jpg")):
            img = cv2.imread(str(f))[..., ::-1].copy()
            for n, p in preds.items():
                runs = [("", None)]
                if args.field_grain_px and p.grain_range:
                    runs.append((f"-calibrated{args.field_grain_px:.0f}", args.field_grain_px))
                for tag, g in runs:
                    res = next(iter(p.iter_predict([img], grain_sizes=[g])))
                    dets = [d for d in res.detections if d.score >= DEFAULT_CONF]
                    vis = img[..., ::-1].copy()
                    for d in dets:
                        cv2.rectangle(vis, (int(d.box.x1), int(d.box.y1)), (int(d.box.x2), int(d.box.y2)), (0, 255, 0), 4)
                        cv2.putText(vis, f"{d.score:.2f}", (int(d.box.x1), int(d.box.y1) - 6), 0, 1.2, (0, 255, 0), 3)
                    path = out / f"{f.stem}-{n}{tag}.png"
                    cv2.imwrite(str(path), cv2.resize(vis, (vis.shape[1] // 2, vis.shape[0] // 2)))
                    sizes = [round(float(np.sqrt((d.box.x2 - d.box.x1) * (d.box.y2 - d.box.y1)))) for d in dets]
                    how = f"calibrated to {g:.0f} px grains" if g else "uncalibrated"
                    print(f"   {f.name} {n} {how}: {len(dets)} boxes >= {DEFAULT_CONF} (sizes px {sorted(sizes)}) -> {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
