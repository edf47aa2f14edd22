"""Detection throughput on a folder of synthetic micrographs.

Prints images per second and where the time goes: decoding the files, preprocessing
(intensity scaling, letterbox/tiles, host->device copy), the model, postprocessing
(decode + NMS + mapping boxes back + tile merge). Runs on the CPU, and on CUDA too where
there is a GPU (half precision, as the app uses it).

    python bench/throughput.py                       # hieraedgenet-n, random init, 640
    python bench/throughput.py --model path.safetensors --n 40 --size 1280x960
    python bench/throughput.py --tiny --imgsz 256 --size 256x256
    python bench/throughput.py --backend torch onnxruntime openvino --threads 2
                                                     # the same frames through each backend,
                                                     # round-robin (issue 21)
    python bench/throughput.py --scan 8000x6000 --cover 0.10 --backend torch openvino --threads 2
                                                     # one synthetic slide scan: today (PyTorch, every
                                                     # tile) vs blank-tile skipping on each backend

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


def make_scan(width: int, height: int, cover: float, seed: int = 0, clutter: float = 0.02):
    """A synthetic slide scan whose grains lie in a few patches that together cover about
    ``cover`` of its area (the rest: mounting medium with debris at ``clutter`` times the
    generator's default density), and its grains."""
    import numpy as np

    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    rng = np.random.default_rng(seed)
    side = 900  # a patch of grains about 900 px across
    n_patches = max(1, int(round(cover * width * height / side**2)))
    grains = []
    for _ in range(n_patches):
        x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
        for _ in range(int(rng.integers(40, 70))):
            d = float(rng.uniform(30, 72))
            grains.append((float(x0 + rng.uniform(d, side - d)), float(y0 + rng.uniform(d, side - d)), int(rng.integers(0, 6)), d))
    cfg = SynthConfig(width=width, height=height, n_grains=(0, 0), clutter=clutter, forced_grains=tuple(grains))
    return generate_image(seed, cfg)


def build_predictor(args, device: str, backend: str = "torch", skip_blank: bool = True):
    from pollenstudio.engine.predict import Predictor

    kw = dict(device=device, batch=args.batch, conf=args.conf, tile=args.tile, imgsz=args.imgsz, backend=backend,
              skip_blank=skip_blank)
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


def _same(a, b) -> str:
    """How detections ``a`` differ from the reference ``b``: 'identical', or, each box paired
    with the reference box it overlaps most (IoU >= 0.5, one-to-one), the largest box and
    score gaps and what found no partner."""
    if not a and not b:
        return "identical (none)"
    import numpy as np

    from pollenstudio.engine.evaluate import box_iou

    if len(a) == len(b) and all(x.box.xyxy() == y.box.xyxy() and x.score == y.score and x.label == y.label
                                for x, y in zip(a, b)):
        return "identical"
    ba = np.array([x.box.xyxy() for x in a], np.float64).reshape(-1, 4)
    bb = np.array([y.box.xyxy() for y in b], np.float64).reshape(-1, 4)
    iou = box_iou(ba, bb) if len(a) and len(b) else np.zeros((len(a), len(b)))
    pairs, used = [], set()
    for i in np.argsort(-iou.max(1)) if len(b) else []:
        j = next((int(j) for j in np.argsort(-iou[i]) if int(j) not in used and iou[i, j] >= 0.5), None)
        if j is not None:
            used.add(j)
            pairs.append((int(i), j))
    db = max((float(np.abs(ba[i] - bb[j]).max()) for i, j in pairs), default=0.0)
    ds = max((abs(a[i].score - b[j].score) for i, j in pairs), default=0.0)
    labels = sum(a[i].label != b[j].label for i, j in pairs)
    return (f"{len(pairs)} paired of {len(a)} vs {len(b)}, max box diff {db:.3f} px, max score diff {ds:.1e}, "
            f"{labels} labels differ")


def round_robin(rows: dict, paths, repeats: int, warm=None) -> dict:
    """Best wall time of each predictor over ``repeats`` rounds, one run of each in turn."""
    for pred in rows.values():
        pred.predict_many(warm if warm is not None else paths[: max(1, pred.batch)])  # warm-up
    best: dict = {}
    for _ in range(repeats):
        for name, pred in rows.items():
            pred.reset_timings()
            t0 = time.perf_counter()
            results = pred.predict_many(paths)
            wall = time.perf_counter() - t0
            if name not in best or wall < best[name]["wall"]:
                best[name] = {"wall": wall, **pred.timings, "results": results,
                              "tiles": sum(r.tiles for r in results), "skipped": sum(getattr(r, "skipped", 0) for r in results)}
    return best


def compare_backends(args, paths, label: str, rows: dict, warm=None) -> None:
    best = round_robin(rows, paths, args.repeats, warm)
    ref_name = next(iter(rows))
    ref = best[ref_name]
    print(f"\n{label}: {len(paths)} image(s), best of {args.repeats} round-robin round(s)")
    print(f"{'run':<34}{'s':>8}{'img/s':>8}{'model s':>9}{'tiles run':>11}{'speed-up':>10}  detections vs first row")
    for name, r in best.items():
        dets = [d for res in r["results"] for d in res.detections]
        ref_dets = [d for res in ref["results"] for d in res.detections]
        print(f"{name:<34}{r['wall']:>8.2f}{len(paths) / r['wall']:>8.2f}{r['model']:>9.2f}"
              f"{r['tiles'] - r['skipped']:>6}/{r['tiles']:<4}{ref['wall'] / r['wall']:>9.2f}x  {_same(dets, ref_dets)}")


def main_backends(args) -> None:
    import tempfile

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backend or ["torch"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.scan:
            import cv2

            w, h = (int(v) for v in args.scan.lower().split("x"))
            t0 = time.perf_counter()
            img, objs = make_scan(w, h, args.cover, clutter=args.clutter)
            p = Path(tmp) / "scan.png"
            cv2.imwrite(str(p), img[..., ::-1])
            print(f"synthetic scan {w}x{h}, {len(objs)} grains in patches covering ~{100 * args.cover:.0f} % of it, "
                  f"debris {args.clutter} x the generator's default density, made in {time.perf_counter() - t0:.1f} s")
            rows = {"torch, every tile (today)": build_predictor(args, "cpu", "torch", skip_blank=False)}
            for b in backends:
                rows[f"{b}, blank tiles skipped"] = build_predictor(args, "cpu", b, skip_blank=True)
            if args.int8:
                rows["openvino int8 (NNCF), skipped"] = int8_predictor(args, Path(tmp))
            warm = make_images(Path(tmp) / "warm", 1, 640, 480)  # warm-up on one frame, not the whole scan
            compare_backends(args, [p], f"scan, {torch.get_num_threads()} thread(s)", rows, warm)
        else:
            w, h = (int(v) for v in args.size.lower().split("x"))
            paths = make_images(Path(tmp), args.n, w, h)
            rows = {b: build_predictor(args, "cpu", b) for b in (["torch"] + [b for b in backends if b != "torch"])}
            compare_backends(args, paths, f"{w}x{h} frames, {torch.get_num_threads()} thread(s)", rows)
            yolo_row(args, paths)


def int8_predictor(args, tmp: Path):
    """A blank-skipping predictor whose forward pass is the model quantised to INT8 by NNCF for
    OpenVINO (what `export-model --format openvino --int8` writes), calibrated on 24 generated
    640x480 frames: not identical detections, so its row shows how far they move."""
    from pollenstudio.engine.export import cached_onnx, quantize_int8_openvino
    from pollenstudio.engine.export_job import letterboxed_inputs
    from pollenstudio.engine.runtime import OpenVINOBackend

    pred = build_predictor(args, "cpu", "torch", skip_blank=True)
    onnx32 = cached_onnx(pred.explain_model, pred.cfg, pred.imgsz, args.model, pred.meta)
    calib = letterboxed_inputs(make_images(tmp / "calib", 24, 640, 480, seed=101), pred.imgsz)
    xml = quantize_int8_openvino(onnx32, tmp / "int8.xml", calib)
    import torch

    pred.runtime, pred.backend = OpenVINOBackend(xml, torch.get_num_threads()), "openvino"
    return pred


def yolo_row(args, paths) -> None:
    """YOLO11n (ultralytics, PyTorch, random weights, fused) on the same frames letterboxed to
    the same input, batch 1, model only: its own pre/postprocessing is not ours, so only the
    forward passes compare with the table's "model s" column. Measured after the table, in
    the same process; printed only when ultralytics is installed (never a dependency)."""
    from pollenstudio.engine.export import installed

    if not installed("ultralytics"):
        print("(ultralytics not installed: no YOLO11n row)")
        return
    import torch
    from latency import _import_yolo

    from pollenstudio.engine.export_job import letterboxed_inputs

    y = _import_yolo()("yolo11n.yaml").model.eval()
    y = y.fuse() if hasattr(y, "fuse") else y
    xs = [torch.from_numpy(a).permute(2, 0, 1)[None].float().div(255.0).contiguous()
          for a in letterboxed_inputs(paths, args.imgsz or 640)]
    with torch.inference_mode():
        y(xs[0])  # warm-up
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for x in xs:
                y(x)
            t = time.perf_counter() - t0
            best = t if best is None else min(best, t)
    print(f"{'YOLO11n (ultralytics), model only':<34}{'':>8}{len(paths) / best:>8.2f}{best:>9.2f}")


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
    ap.add_argument("--backend", nargs="+", choices=("auto", "torch", "onnxruntime", "openvino"), default=None,
                    help="compare these backends on the CPU, round-robin (the first row is PyTorch)")
    ap.add_argument("--scan", default=None, metavar="WxH",
                    help="one synthetic slide scan of this size instead of frames: PyTorch on every tile (today) "
                         "vs blank-tile skipping on each --backend")
    ap.add_argument("--int8", action="store_true",
                    help="--scan: add a row with the model quantised to INT8 (NNCF, OpenVINO), blank tiles skipped")
    ap.add_argument("--cover", type=float, default=0.10, help="share of the scan covered by patches of grains (--scan)")
    ap.add_argument("--clutter", type=float, default=0.02,
                    help="debris on the scan, times the generator's default density (--scan; default 0.02: at 0.1 "
                         "every 640 px tile of an 8000x6000 scan holds some debris and nothing is skipped)")
    args = ap.parse_args()
    if args.backend or args.scan:
        main_backends(args)
        return

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
