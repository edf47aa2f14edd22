"""Write a copy of a checkpoint with the grain sizes its training images held.

    python scripts/record_grain_sizes.py PROJECT WEIGHTS OUT [--imgsz 640] [--only-class pollen]

Training records ``grain_size_px`` itself (engine.scale.grain_size_range over the training
split); this adds it to a checkpoint trained before it did, from the same project and the
same deterministic train/val split. Tensors are copied unchanged, except with
``--only-class``: the head keeps that one class's rows and drops the others (classes that had
no example in training, so only ever learnt "not this"). Class scores are independent
sigmoids, so the kept class scores exactly as before.
"""

from __future__ import annotations

import argparse
import json
import sys

from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
from pollenstudio.engine.dataset import data_from_project, split_samples
from pollenstudio.engine.scale import grain_size_range
from pollenstudio.project import Project


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project")
    ap.add_argument("weights")
    ap.add_argument("out")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--only-class", default=None, help="keep only this class of the head")
    args = ap.parse_args(argv)
    model, cfg, meta = load_checkpoint(args.weights)
    if args.only_class:
        from pollenstudio.detector.checkpoint import load_for_finetune

        if args.only_class not in cfg.class_names:
            raise SystemExit(f"{args.weights} has no class {args.only_class!r} ({', '.join(cfg.class_names)})")
        model, cfg, _ = load_for_finetune(args.weights, [args.only_class])
        model.eval()
    with Project.open(args.project) as proj:
        data = data_from_project(proj, list(cfg.class_names))
    train, _ = split_samples(data.samples, args.val_fraction)
    rng = grain_size_range(train, args.imgsz)
    keep = {k: v for k, v in meta.items() if k not in ("training", "format_version")}
    keep["grain_size_px"] = rng
    save_checkpoint(args.out, model, cfg, keep, meta.get("training") or {})
    print(json.dumps({"out": args.out, "grain_size_px": rng, "train_images": len(train)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
