"""Which stack detection mode to default to: EDF view, every plane, or both merged, measured on
generated focal stacks with the shipped grain model.

    python bench/stack_mode.py [--n 24] [--planes 9] [--size 640x480] [--seed 29] [--model PATH]
                               [--difficulty default,hard] [--out bench/results/stack_mode.txt]

The generator (``engine.synthetic.stack``) renders each field once and puts every grain in
focus on a plane of its own, drawn at random, defocused by distance on the others; the true
boxes are the in-focus outlines. Every mode runs ``detect_stack`` (what ``pollenstudio detect``
runs on a stack) on the same stacks with the same model. Scored class-agnostic (a grain model
names every grain "pollen") with ``engine.evaluate.evaluate_detections``: recall and precision
at the default confidence (IoU >= 0.5 with the true box) and mAP@.5 from every proposal down
to ``--min-conf``, per generator difficulty and over all stacks (the default mode is the one
of the highest mAP@.5 over all stacks, then recall); seconds per stack (model, planes, EDF,
merge, sharpest plane) as wall time and as the process's CPU time (all its threads; steadier
than wall time on a shared machine; ``--threads 1`` keeps idle threads from spinning).
Prints measured figures only and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

MODES = ("edf", "planes", "both")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="stacks per difficulty (default 24)")
    ap.add_argument("--planes", type=int, default=9, help="planes per stack (default 9)")
    ap.add_argument("--size", default="640x480", help="plane size WxH (default 640x480)")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--difficulty", default="default,hard",
                    help="generator presets to measure, comma-separated (default 'default,hard')")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped default model)")
    ap.add_argument("--min-conf", type=float, default=0.01, help="lowest score kept for mAP (default 0.01)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "stack_mode.txt"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    import numpy as np
    import torch

    from pollenstudio.core.types import DEFAULT_CONF
    from pollenstudio.engine.detect_job import DEFAULT_STACK_MODE, detect_stack
    from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, evaluate_detections
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic.config import SynthConfig
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset
    from pollenstudio.project import Project

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="stack-mode-"))
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    header = (f"{'mode':<7} {'recall':>7} {'precision':>9} {'mAP@.5':>7} {'found':>7} {'false':>6} {'s/stack':>8} "
              f"{'cpu s/stack':>11} {'merged':>7}")

    def table(runs: dict) -> str:
        """Print one row per mode of ``runs`` (mode -> truths, preds, wall s, cpu s, merged);
        returns the mode of the highest mAP@.5 (then recall)."""
        say(header)
        scores = {}
        for mode, (truths, preds, seconds, cpu, merged) in runs.items():
            n_gt = sum(len(t.boxes) for t in truths)
            ev = evaluate_detections(truths, preds, ["pollen"], conf=DEFAULT_CONF, iou_match=0.5)
            found = round(ev.recall * n_gt)
            kept = sum(int((p.scores >= DEFAULT_CONF).sum()) for p in preds)
            scores[mode] = (round(ev.map50, 3), round(ev.recall, 3))
            say(f"{mode:<7} {ev.recall:>7.3f} {ev.precision:>9.3f} {ev.map50:>7.3f} {found:>3}/{n_gt:<3} "
                f"{kept - found:>6} {seconds / len(truths):>8.2f} {cpu / len(truths):>11.2f} {merged:>7}")
        return max(scores, key=scores.get)

    def run(difficulty: str) -> dict:
        t0 = time.perf_counter()
        coco = json.loads(generate_stack_dataset(work / difficulty / "s", args.n, args.planes, seed=args.seed,
                                                 cfg=SynthConfig(width=w, height=h, difficulty=difficulty)).read_text())
        gen_s = time.perf_counter() - t0
        proj = Project.create(work / difficulty / "p")
        proj.add_images([work / difficulty / "s" / im["file_name"] for im in coco["images"]])
        recs = proj.images()
        truths = []
        for im in coco["images"]:
            gts = [a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"]]
            boxes = np.asarray([[x, y, x + bw, y + bh] for x, y, bw, bh in gts], np.float64).reshape(-1, 4)
            truths.append(ImageTruth(boxes, np.zeros(len(boxes), int), im["width"], im["height"]))
        planes_of = [a["plane"] for a in coco["annotations"]]
        say("")
        say(f"## difficulty {difficulty}: {args.n} generated stacks of {args.planes} planes, {w}x{h} px, seed "
            f"{args.seed} ({len(planes_of)} grains, in focus on planes {min(planes_of) + 1}..{max(planes_of) + 1}; "
            f"generated in {gen_s:.1f} s)")
        detect_stack(proj, pred, recs[0], mode="edf")  # warm-up (first-call costs) outside the timing
        runs = {}
        for mode in MODES:
            preds, seconds, cpu, merged = [], 0.0, 0.0, 0
            for rec in recs:
                t, c = time.perf_counter(), time.process_time()
                res = detect_stack(proj, pred, rec, mode=mode)
                seconds += time.perf_counter() - t
                cpu += time.process_time() - c
                if res.error:
                    raise SystemExit(f"{rec.path}: {res.error}")
                merged += res.merged
                preds.append(ImagePreds(
                    np.asarray([d.box.xyxy() for d in res.detections], np.float64).reshape(-1, 4),
                    np.asarray([d.score for d in res.detections], np.float64),
                    np.zeros(len(res.detections), int)))
            runs[mode] = (truths, preds, seconds, cpu, merged)
        say(f"highest mAP@.5 (then recall): {table(runs)}")
        proj.close()
        return runs

    kw = dict(device="cpu", conf=args.min_conf)
    pred = Predictor.from_checkpoint(args.model, **kw) if args.model else Predictor.from_default(**kw)
    say(f"# bench/stack_mode.py: model {Path(pred.source).name}, CPU, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}; default confidence {DEFAULT_CONF}, IoU >= 0.5; "
        f"default stack mode when measured: {DEFAULT_STACK_MODE}")
    difficulties = [d.strip() for d in args.difficulty.split(",") if d.strip()]
    try:
        pooled: dict = {}
        for difficulty in difficulties:
            for mode, (truths, preds, seconds, cpu, merged) in run(difficulty).items():
                t0, p0, s0, c0, m0 = pooled.get(mode, ([], [], 0.0, 0.0, 0))
                pooled[mode] = (t0 + truths, p0 + preds, s0 + seconds, c0 + cpu, m0 + merged)
        if len(difficulties) > 1:
            say("")
            say(f"## all {len(difficulties) * args.n} stacks ({', '.join(difficulties)})")
            say(f"highest mAP@.5 (then recall) over all stacks: {table(pooled)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
