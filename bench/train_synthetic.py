"""Train HieraEdgeNet on a synthetic project and print validation mAP per epoch.

    python bench/train_synthetic.py --out /tmp/bench-train --n 200 --size 320 --imgsz 320 \
        --scale n --epochs 20 --taxa Poaceae,Betula,Pinus

Builds a project from synthetic micrographs (every grain entered as a human-added box, so
every image is reviewed), trains with ``train_project`` and prints one line per epoch
(loss, mAP@.5, mAP@.5:.95, seconds) and the final figures of the registered version, then
re-scores it with ``pollenstudio eval``'s code path. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_project(out: Path, n: int, size: int, taxa: tuple[str, ...], seed: int, difficulty: str):
    import cv2

    from pollenstudio.core.types import Box
    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.project.store import Project

    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(width=size, height=size, difficulty=difficulty, taxa=taxa)
    pr = Project.create(out / "project")
    cats = pr.ensure_categories(list(taxa))
    items = []
    for i in range(n):
        img, objs = generate_image(seed * 100000 + i, cfg)
        p = img_dir / f"im{i:05d}.png"
        cv2.imwrite(str(p), img[..., ::-1])
        items.append((p, objs))
    pr.add_images([p for p, _ in items])
    recs = {Path(r.path).name: r for r in pr.images()}
    with pr.batch("synthetic ground truth"):
        for p, objs in items:
            for o in objs:
                pr.add_annotation(recs[p.name].id, Box(*o["bbox"]), cats[o["name"]])
    return pr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--scale", default="n")
    ap.add_argument("--variant", default="full")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr0", type=float, default=None)
    ap.add_argument("--taxa", default="Poaceae,Betula,Pinus")
    ap.add_argument("--difficulty", default="easy")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch

    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.engine.train import TrainConfig, train_project

    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.perf_counter()
    pr = build_project(out, a.n, a.size, tuple(a.taxa.split(",")), a.seed, a.difficulty)
    print(f"project: {a.n} images {a.size}x{a.size}, {pr.annotation_count()} grains, built in {time.perf_counter() - t0:.1f} s", flush=True)
    make = ModelConfig.tiny if a.tiny else ModelConfig.variant
    mcfg = make(a.variant, scale=a.scale)
    cfg = TrainConfig(epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, lr0=a.lr0, device="cpu", threads=a.threads, seed=a.seed)
    t1 = time.perf_counter()

    def on_epoch_end(trainer, epoch, m):
        print(f"epoch {epoch + 1:3d}/{a.epochs}  loss {m['loss']:.3f}  mAP@.5 {m.get('map50', 0):.4f}  "
              f"mAP@.5:.95 {m.get('map50_95', 0):.4f}  P {m.get('precision', 0):.3f}  R {m.get('recall', 0):.3f}  "
              f"{m.get('seconds', 0):.1f} s  (total {time.perf_counter() - t1:.0f} s)", flush=True)

    res = train_project(pr, cfg, model_cfg=mcfg, callbacks={"on_epoch_end": on_epoch_end})
    m = res.metrics
    print(f"version {res.version_id}: {res.n_train_images} train / {res.n_val_images} val images, "
          f"best epoch {res.result.best_epoch + 1}, mAP@.5 {m.get('map50', 0):.4f}, mAP@.5:.95 {m.get('map50_95', 0):.4f}, "
          f"train time {time.perf_counter() - t1:.0f} s ({a.scale if not a.tiny else 'tiny'} {a.variant}, imgsz {a.imgsz}, "
          f"{torch.get_num_threads()} threads)")
    for row in m.get("per_class", []):
        print(f"  {row['name']:<12} grains {row['n_gt']:4d}  AP50 {row['ap50'] if row['ap50'] is None else round(row['ap50'], 4)}")
    pr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
