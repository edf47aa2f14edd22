"""Python parts of bench/gpu_check.sh (run that, not this). Each subcommand prints one line
``RESULT <text>`` for the summary table and ``PEAK_MB <n>`` (CUDA peak memory of the step).

    python bench/gpu_check.py fp16 --device cuda        # fp16 vs fp32 detections agree?
    python bench/gpu_check.py throughput --device cuda  # images/s, batch 1 and 16, fp16
    python bench/gpu_check.py train --project P --device cuda  # 2 epochs, AMP
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _model(args):
    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.paths import taxa_model_path

    if args.tiny:
        from pollenstudio.detector.config import ModelConfig
        from pollenstudio.detector.model import build_model
        from pollenstudio.engine.synthetic import TAXA

        cfg = ModelConfig.tiny("full", nc=len(TAXA), class_names=list(TAXA), imgsz=args.imgsz)
        import torch

        torch.manual_seed(0)
        return build_model(cfg).eval(), cfg, {}
    return load_checkpoint(taxa_model_path())


def _frames(n, w=640, h=480, seed=0):
    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    return [generate_image(seed + i, SynthConfig(width=w, height=h))[0] for i in range(n)]


def _peak(dev) -> None:
    import torch

    if dev.type == "cuda":
        print(f"PEAK_MB {torch.cuda.max_memory_allocated(dev) / 2**20:.0f}")
        torch.cuda.reset_peak_memory_stats(dev)


def fp16(args) -> int:
    """The same frames in float32 and float16 autocast: matched detections (IoU >= 0.9, same
    taxon), the largest score gap, and whether any detection is missing either way."""
    import numpy as np

    from pollenstudio.engine.evaluate import box_iou
    from pollenstudio.engine.predict import Predictor

    model, cfg, meta = _model(args)
    frames = _frames(args.n)
    p32 = Predictor(model, cfg, device=args.device, half=False, conf=0.25, meta=meta, imgsz=args.imgsz)
    p16 = Predictor(model, cfg, device=args.device, half=True, conf=0.25, meta=meta, imgsz=args.imgsz)
    a = p32.predict_many(frames)
    b = p16.predict_many(frames)
    n32 = n16 = matched = 0
    gaps = []
    for ra, rb in zip(a, b):
        da, db = ra.detections, rb.detections
        n32, n16 = n32 + len(da), n16 + len(db)
        if not da or not db:
            continue
        iou = box_iou(np.array([d.box.xyxy() for d in da]), np.array([d.box.xyxy() for d in db]))
        for i, d in enumerate(da):
            j = int(iou[i].argmax())
            if iou[i, j] >= 0.9 and db[j].label == d.label:
                matched += 1
                gaps.append(abs(db[j].score - d.score))
    share = matched / max(n32, 1)
    ok = (n32 == n16 == 0) or (share >= 0.95 and abs(n32 - n16) <= max(1, 0.05 * n32))
    half = "fp16 autocast" if p16.half else "fp16 not available on this device: both runs fp32"
    print(f"RESULT {'agree' if ok else 'DISAGREE'}: {n32} fp32 vs {n16} fp16 detections on {len(frames)} frames, "
          f"{100 * share:.1f} % matched (IoU>=0.9, same taxon), max score gap {max(gaps, default=0):.4f} ({half})")
    _peak(p32.device)
    return 0 if ok else 1


def throughput(args) -> int:
    """Forward-pass images/s at batch 1 and 16 (fp16 autocast on CUDA), the whole detection
    pipeline at batch 16, and YOLO11n (ultralytics, random weights) when it is installed."""
    import torch

    from pollenstudio.engine.predict import Predictor

    model, cfg, meta = _model(args)
    pred = Predictor(model, cfg, device=args.device, conf=0.25, meta=meta, imgsz=args.imgsz, batch=16)
    dev = pred.device
    parts = []

    def rate(fn, batch, runs):
        for _ in range(3):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
        return batch / statistics.median(times)

    for bs in (1, 16):
        x = torch.rand(bs, 3, args.imgsz, args.imgsz, device=dev)
        parts.append(f"HieraEdgeNet b{bs} {rate(lambda: pred.forward(x), bs, args.runs):.0f} img/s")
    try:
        import ultralytics  # noqa: F401  (optional comparison, never a dependency)
        from ultralytics import YOLO

        y = YOLO("yolo11n.yaml").model.to(dev).eval()
        for bs in (1, 16):
            x = torch.rand(bs, 3, args.imgsz, args.imgsz, device=dev)

            def fy():
                with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                    y(x)

            parts.append(f"YOLO11n b{bs} {rate(fy, bs, args.runs):.0f} img/s")
    except ImportError:
        parts.append("YOLO11n: ultralytics not installed")
    frames = _frames(32)
    pred.predict_many(frames[:16])
    t0 = time.perf_counter()
    pred.predict_many(frames)
    parts.append(f"pipeline 640x480 b16 {len(frames) / (time.perf_counter() - t0):.0f} img/s")
    prec = "fp16" if pred.half else "fp32"
    print(f"RESULT {prec}, {args.imgsz}px: " + "; ".join(parts))
    _peak(dev)
    return 0


def train(args) -> int:
    """2 epochs on a project (AMP: float16 autocast + GradScaler on CUDA, the trainer's default)."""
    import torch

    from pollenstudio.engine.models import scratch_model_config
    from pollenstudio.engine.train import TrainConfig, train_project
    from pollenstudio.project.store import Project

    proj = Project.open(Path(args.project))
    try:
        cfg = TrainConfig(epochs=2, imgsz=args.imgsz, batch=args.batch, device=args.device, patience=0)
        t0 = time.perf_counter()
        res = train_project(proj, cfg, model_cfg=scratch_model_config(args.imgsz, tiny=args.tiny))
        secs = time.perf_counter() - t0
    finally:
        proj.close()
    amp = "AMP fp16" if args.device.startswith("cuda") else "fp32 (no CUDA)"
    print(f"RESULT {amp}: version {res.version_id}, {res.n_train_images} train / {res.n_val_images} val images, "
          f"mAP@.5 {res.metrics.get('map50', 0):.3f}, {secs:.0f} s")
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        _peak(torch.device(args.device))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("fp16", "throughput", "train"))
    ap.add_argument("--project", default=None, help="project to train on (train)")
    ap.add_argument("--batch", type=int, default=16, help="training batch (train)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--n", type=int, default=16, help="frames for fp16")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--tiny", action="store_true", help="the tiny architecture, random weights (dry runs)")
    args = ap.parse_args()
    return {"fp16": fp16, "throughput": throughput, "train": train}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
