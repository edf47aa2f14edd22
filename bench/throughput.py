"""Detection throughput on a folder of synthetic micrographs.

Prints images per second and where the time goes: decoding the files, preprocessing
(intensity scaling, letterbox/tiles, host->device copy), the model, postprocessing
(decode + NMS + mapping boxes back + tile merge). Runs on the CPU, and on CUDA too where
there is a GPU (half precision, as the app uses it).

    python bench/throughput.py                       # hieraedgenet-n, random init, 640
    python bench/throughput.py --model path.safetensors --n 40 --size 1280x960
    python bench/throughput.py --tiny --imgsz 256 --size 256x256

Random weights detect nothing, so postprocessing is cheaper than with a trained model;
the model share is what matters for them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def make_images(folder: Path, n: int, width: int, height: int, seed: int = 0) -> list[Path]:
    from pollenstudio.engine.synthetic.config import SynthConfig
    from pollenstudio.engine.synthetic.dataset import generate_dataset

    generate_dataset(folder, n, seed=seed, cfg=SynthConfig(width=width, height=height))
    return sorted((folder / "images").iterdir())


def build_predictor(args, device: str):
    from pollenstudio.engine.predict import Predictor

    kw = dict(device=device, batch=args.batch, conf=args.conf, tile=args.tile, imgsz=args.imgsz)
    if args.model:
        return Predictor.from_checkpoint(args.model, **kw)
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.engine.synthetic.config import TAXA

    import torch

    torch.manual_seed(0)
    if args.tiny:
        cfg = ModelConfig.tiny("full", nc=len(TAXA), class_names=list(TAXA), imgsz=args.imgsz or 256)
    else:
        cfg = ModelConfig(scale=args.scale, nc=len(TAXA), class_names=list(TAXA), imgsz=args.imgsz or 640)
    return Predictor(build_model(cfg), cfg, **kw)


def run(paths, pred, repeats: int) -> dict:
    pred.predict_many(paths[: max(1, pred.batch)])  # warm-up: allocator, kernels, caches
    best = None
    for _ in range(repeats):
        pred.reset_timings()
        t0 = time.perf_counter()
        results = pred.predict_many(paths)
        wall = time.perf_counter() - t0
        t = dict(pred.timings)
        if best is None or wall < best["wall"]:
            best = {"wall": wall, **t, "dets": sum(len(r.detections) for r in results), "tiles": sum(r.tiles for r in results)}
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint; default: a randomly initialised model of --scale")
    ap.add_argument("--scale", default="n", choices=("n", "s"))
    ap.add_argument("--tiny", action="store_true", help="the tiny test architecture (random weights)")
    ap.add_argument("--imgsz", type=int, default=None)
    ap.add_argument("--n", type=int, default=24, help="number of images")
    ap.add_argument("--size", default="640x480", help="image size WxH")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tile", default="auto")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--device", action="append", help="device(s) to measure; default cpu, plus cuda where available")
    args = ap.parse_args()

    import torch

    from pollenstudio.engine.predict import describe_device

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_images(Path(tmp), args.n, w, h)
        print(f"{args.n} synthetic images {w}x{h} generated in {time.perf_counter() - t0:.1f} s")
        for dev in devices:
            pred = build_predictor(args, dev)
            r = run(paths, pred, args.repeats)
            parts = ("decode", "preprocess", "model", "postprocess")
            total = sum(r[k] for k in parts)
            desc = pred.device_description
            if dev == "cpu":
                desc = describe_device(pred.device)
            print(
                f"\n[{desc}] model {pred.source or pred.cfg.variant_name + '-' + (pred.cfg.scale if not args.tiny else 'tiny')}"
                f" input {pred.imgsz} batch {pred.batch} tile {pred.tile}: "
                f"{args.n / r['wall']:.2f} images/s ({r['wall'] / args.n * 1000:.1f} ms/image, "
                f"{r['tiles']} model inputs, {r['dets']} detections)"
            )
            for k in parts:
                print(f"  {k:<12} {r[k]:8.3f} s  {100 * r[k] / total:5.1f} %")
            other = r["wall"] - total
            print(f"  {'other':<12} {other:8.3f} s  (result assembly, progress, Python overhead)")


if __name__ == "__main__":
    main()
