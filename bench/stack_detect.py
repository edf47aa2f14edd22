"""Detection through focus on generated focal stacks: grains found, found once, and found on
their true plane (within one), for the EDF view and for every plane merged.

    python bench/stack_detect.py [--n 6] [--planes 9] [--seed 11] [--model models/hieraedgenet-n.safetensors]

Prints measured figures only (matching: IoU >= 0.5 with the generator's exact box).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--planes", type=int, default=9)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped default model)")
    args = ap.parse_args()

    from pollenstudio.core.types import Box
    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset
    from pollenstudio.project import Project

    work = Path(tempfile.mkdtemp(prefix="stack-detect-"))
    coco = json.loads(generate_stack_dataset(work / "s", args.n, args.planes, seed=args.seed).read_text())
    pred = Predictor.from_checkpoint(args.model, device="cpu") if args.model else Predictor.from_default(device="cpu")
    print(f"{args.n} stacks of {args.planes} planes (seed {args.seed}), model {Path(pred.source).name}")
    for mode in ("edf", "planes"):
        proj = Project.create(work / mode)
        proj.add_images([work / "s" / im["file_name"] for im in coco["images"]])
        s = detect_project(proj, pred, stack_mode=mode)
        total = found = once = on_plane = 0
        for rec, im in zip(proj.images(), coco["images"]):
            props = proj.annotations(rec.id)
            for g in (a for a in coco["annotations"] if a["image_id"] == im["id"]):
                total += 1
                gb = Box.from_xywh(*g["bbox"])
                hits = [a for a in props if a.box.iou(gb) >= 0.5]
                found += bool(hits)
                once += len(hits) == 1
                on_plane += bool(hits) and abs(max(hits, key=lambda a: a.box.iou(gb)).plane - g["plane"]) <= 1
        print(f"{mode:>6}: grains {total}, found {found}, found once {once}, true plane within one {on_plane} "
              f"({100 * on_plane / max(total, 1):.0f} %), proposals {s.proposals}, boxes merged {s.merged}, "
              f"{s.seconds:.1f} s")
        proj.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
