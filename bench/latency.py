"""Latency, parameters and GFLOPs of base-n vs HieraEdgeNet-n, training and deploy form.

    python bench/latency.py                 # CPU, 640x640, batch 1, nc 120
    python bench/latency.py --threads 1 2   # one table per intra-op thread count
    python bench/latency.py --dwconv        # also: 31x31 depthwise conv, direct vs FFT
    python bench/latency.py --all-variants --forms deploy --threads 1 --nc 6
                                            # the ablation's four rows: base, +edge, +CSPOKM, full
    python bench/latency.py --backends --threads 2 --runs 10
                                            # the shipped model on one 640 frame: PyTorch deploy
                                            # form (today), ONNX Runtime and OpenVINO, float32
                                            # and INT8 (+ YOLO11n when ultralytics is installed),
                                            # round-robin; then INT8's mAP change (--map-images)

All four models are timed round-robin (one run of each in turn, repeated), so a load
change on a shared machine hits them alike and the ratios stay meaningful; medians are
reported. GFLOPs = 2 x multiply-accumulates (torch.utils.flop_counter, the convention of
the published YOLO11n figure of 6.5); FFTs are not counted by the counter.
GPU figures (float32 and float16 autocast) are printed when CUDA is available.
On a machine whose cores are shared with other jobs, compare --threads 1 figures: with
more intra-op threads than free cores PyTorch threads spin-wait for each other and the
numbers become noise (measured 4-10x slower than one thread on the shared 2-core VM).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pollenstudio.detector import ModelConfig, build_model, count_parameters, deploy_model  # noqa: E402
from pollenstudio.detector.deploy import fft_depthwise_conv2d  # noqa: E402


def gflops(model, x) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_round_robin(fns: dict, runs: int, warmup: int, device, cpu_time: dict | None = None) -> dict:
    """Median wall milliseconds of each callable, interleaved. If ``cpu_time`` is a dict it
    receives the median process CPU milliseconds too (with one thread on a busy machine a
    steadier measure of the work than wall time, which includes waiting for a core)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    _sync(device)
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            _sync(device)
            c0 = time.process_time()
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
    if cpu_time is not None:
        cpu_time.update({k: statistics.median(v) for k, v in cpu.items()})
    return {k: statistics.median(v) for k, v in times.items()}


LABELS = {"base": "base-n", "edge": "base+edge-n", "cspokm": "base+CSPOKM-n", "full": "HieraEdgeNet-n"}


def bench_models(device, imgsz, nc, runs, warmup, amp=False, variants=("base", "full"), forms=("train", "deploy")):
    models = {}
    for variant in variants:
        label = LABELS[variant]
        torch.manual_seed(0)
        m = build_model(ModelConfig.variant(variant, nc=nc)).to(device).eval()
        models[(label, "train")] = m
        if "deploy" in forms:
            models[(label, "deploy")] = deploy_model(m)
        if "train" not in forms:
            # kept for parameters/GFLOPs (counted on the training form), not timed
            models[(label, "train")] = None
    x = torch.rand(1, 3, imgsz, imgsz, device=device)

    def runner(m):
        def f():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                m(x)

        return f

    cpu: dict = {}
    ms = time_round_robin({k: runner(m) for k, m in models.items() if m is not None}, runs, warmup, device, cpu)
    return models, x, ms, cpu


def print_table(models, x, ms, cpu, title, ref="base-n"):
    """One row per (model, form); ratios of every other model against ``ref`` (base-n)."""
    print(f"\n{title}")
    print(f"{'model':<16}{'form':<8}{'params':>11}{'GFLOPs':>9}{'median ms':>11}{'CPU ms':>9}")
    flops, params = {}, {}
    train_forms = {label: m for (label, form), m in models.items() if form == "train"}
    for label, m in train_forms.items():
        if m is None:  # deploy-only run: count on a fresh training-form model
            variant = next(v for v, lb in LABELS.items() if lb == label)
            torch.manual_seed(0)
            m = build_model(ModelConfig.variant(variant, nc=models_nc(models))).to(x.device).eval()
        flops[label], params[label] = gflops(m, x), count_parameters(m)
    for (label, form), m in models.items():
        if (label, form) not in ms:
            continue
        print(f"{label:<16}{form:<8}{params[label]:>11,}{flops[label]:>9.2f}{ms[(label, form)]:>11.1f}"
              f"{cpu[(label, form)]:>9.1f}")
    for label in flops:
        if label == ref or ref not in flops:
            continue
        for form in ("train", "deploy"):
            if (label, form) not in ms or (ref, form) not in ms:
                continue
            r = ms[(label, form)] / ms[(ref, form)]
            rc = cpu[(label, form)] / cpu[(ref, form)]
            print(f"ratio {label}/{ref} ({form}): latency {r:.2f}x (CPU time {rc:.2f}x), "
                  f"params {params[label] / params[ref]:.2f}x, GFLOPs {flops[label] / flops[ref]:.2f}x")
    speedups = [f"{label} {ms[(label, 'train')] / ms[(label, 'deploy')]:.2f}x" for label in flops
                if (label, "train") in ms and (label, "deploy") in ms]
    if speedups:
        print("deploy speed-up: " + ", ".join(speedups))


def models_nc(models) -> int:
    for m in models.values():
        if m is not None:
            return int(getattr(m, "nc", 0) or m.cfg.nc)
    raise ValueError("no model")


def bench_dwconv(device, runs):
    print(f"\n31x31 depthwise conv, 16 channels, batch 1, {device} (median ms)")
    print(f"{'size':>8}{'direct':>10}{'fft':>10}")
    for s in (20, 40, 80, 160):
        x = torch.randn(1, 16, s, s, device=device)
        w = torch.randn(16, 1, 31, 31, device=device)
        b = torch.randn(16, device=device)
        cache: dict = {}
        fns = {
            "direct": lambda: F.conv2d(x, w, b, padding=15, groups=16),
            "fft": lambda: fft_depthwise_conv2d(x, w, b, cache),
        }
        with torch.inference_mode():
            ms = time_round_robin(fns, runs, 2, device)
        print(f"{s:>5}^2 {ms['direct']:>10.2f}{ms['fft']:>10.2f}")


def _synthetic_samples(folder, n, seed, w=640, h=480):
    from pollenstudio.engine.dataset import data_from_coco
    from pollenstudio.engine.synthetic import SynthConfig, generate_dataset

    js = generate_dataset(folder, n, seed=seed, cfg=SynthConfig(width=w, height=h))
    return data_from_coco(js).samples


def _import_yolo():
    """``ultralytics.YOLO``. Ultralytics imports torchvision at module level, but building
    YOLO11n from its yaml and running its forward pass use none of it; where torchvision
    cannot load (the only wheels for this torch are CUDA builds, which fail with the CPU
    torch: "operator torchvision::nms does not exist") an empty stand-in module is given to
    ultralytics for this timing, and the row says so."""
    try:
        import torchvision  # noqa: F401  (only whether it loads)
    except Exception as exc:  # a broken install raises RuntimeError, not ImportError
        import importlib.machinery
        import importlib.metadata as md
        import types

        print(f"(torchvision cannot load here ({type(exc).__name__}): YOLO11n runs with an empty stand-in for it)")
        for name in ("torchvision", *(f"torchvision.{s}" for s in ("ops", "transforms", "datasets", "models", "utils", "io"))):
            m = types.ModuleType(name)
            m.__spec__ = importlib.machinery.ModuleSpec(name, None)
            m.__version__ = "0.28.0"  # the release that pairs with torch 2.13
            sys.modules[name] = m
            if "." in name:
                setattr(sys.modules["torchvision"], name.split(".")[1], m)
        real_version = md.version
        md.version = lambda dist: "0.28.0" if dist == "torchvision" else real_version(dist)
    from ultralytics import YOLO

    return YOLO


def bench_backends(args, nt: int) -> None:
    """Issue 21: one 640 frame through every installed backend, round-robin, plus INT8 mAP."""
    import tempfile

    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.export import cached_onnx, installed, quantize_int8, quantize_int8_openvino
    from pollenstudio.engine.export_job import evaluate_runtime, letterboxed_inputs
    from pollenstudio.engine.paths import taxa_model_path
    from pollenstudio.engine.runtime import OnnxRuntimeBackend, OpenVINOBackend, installed_runtimes

    path = Path(args.model) if args.model else taxa_model_path()
    model, cfg, meta = load_checkpoint(path)
    imgsz = args.imgsz
    rts = installed_runtimes()
    print(f"\nbackends: model {path.name}, {imgsz}x{imgsz}, batch 1, {nt} thread(s); runtimes installed: "
          f"{', '.join(rts) or 'none'}")
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        calib_s = _synthetic_samples(td / "calib", args.calib, seed=101)
        frame = letterboxed_inputs([calib_s[0].path], imgsz)[0]  # a real-looking frame, not noise
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255.0).contiguous()
        xn = x.numpy()
        today = deploy_model(model)  # what Predictor runs now on the CPU (large kernel by FFT)
        direct = deploy_model(model, method="direct")
        fns = {"torch deploy (today)": lambda: today(x), "torch deploy, direct conv": lambda: direct(x)}
        onnx32 = onnx8 = ov8 = None
        if rts:
            onnx32 = cached_onnx(model, cfg, imgsz, path, meta)
            onnx8 = quantize_int8(onnx32, td / "int8.onnx", letterboxed_inputs([s.path for s in calib_s], imgsz))
            for name, cls in (("onnxruntime", OnnxRuntimeBackend), ("openvino", OpenVINOBackend)):
                if name in rts:
                    b32, b8 = cls(onnx32, nt), cls(onnx8, nt)
                    fns[f"{name} float32"] = lambda b=b32: b(xn)
                    fns[f"{name} int8"] = lambda b=b8: b(xn)
            if "openvino" in rts and installed("nncf"):  # what export-model --format openvino --int8 writes
                ov8 = quantize_int8_openvino(onnx32, td / "nncf8.xml", letterboxed_inputs([s.path for s in calib_s], imgsz))
                bn = OpenVINOBackend(ov8, nt)
                fns["openvino int8 (NNCF)"] = lambda b=bn: b(xn)
            else:
                print("(nncf not installed: no OpenVINO int8 (NNCF) row)")
        if installed("ultralytics"):
            YOLO = _import_yolo()  # optional comparison only, never a dependency
            y = YOLO("yolo11n.yaml").model.eval()  # architecture only: no download, random weights
            y = y.fuse() if hasattr(y, "fuse") else y
            fns["YOLO11n (ultralytics, torch)"] = lambda: y(x)
        else:
            print("(ultralytics not installed: no YOLO11n row)")
        with torch.inference_mode():
            cpu_ms: dict = {}
            ms = time_round_robin(fns, args.runs, args.warmup, torch.device("cpu"), cpu_ms)
        ref = ms["torch deploy (today)"]
        print(f"{'backend':<32}{'median ms':>11}{'CPU ms':>9}{'speed-up':>10}")
        for k, v in ms.items():
            print(f"{k:<32}{v:>11.1f}{cpu_ms[k]:>9.1f}{ref / v:>9.2f}x")
        if onnx32 is not None and args.map_images:
            val = _synthetic_samples(td / "val", args.map_images, seed=202)
            names = list(cfg.class_names)
            for name in rts + (["openvino (NNCF)"] if ov8 is not None else []):
                r32 = evaluate_runtime(onnx32, name.split()[0], model, cfg, val, names, imgsz, nt)
                r8 = evaluate_runtime(ov8 if "NNCF" in name else onnx8, name.split()[0], model, cfg, val, names, imgsz, nt)
                print(f"INT8 mAP with {name} on {len(val)} synthetic 640x480 frames (calibrated on {len(calib_s)} others): "
                      f"mAP@.5 {r32.map50:.4f} -> {r8.map50:.4f} ({r8.map50 - r32.map50:+.4f}), "
                      f"mAP@.5:.95 {r32.map50_95:.4f} -> {r8.map50_95:.4f} ({r8.map50_95 - r32.map50_95:+.4f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--nc", type=int, default=120)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="intra-op thread counts to try")
    ap.add_argument("--dwconv", action="store_true", help="also time the 31x31 depthwise conv alone")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--all-variants", action="store_true",
                    help="time all four ablation variants (base, edge, cspokm, full) instead of base and full")
    ap.add_argument("--forms", nargs="+", choices=("train", "deploy"), default=["train", "deploy"],
                    help="model forms to time (parameters and GFLOPs always come from the training form)")
    ap.add_argument("--backends", action="store_true",
                    help="only the backend comparison (issue 21): PyTorch deploy form vs ONNX Runtime / OpenVINO, "
                         "float32 and INT8, YOLO11n when ultralytics is installed")
    ap.add_argument("--model", default=None, help="checkpoint for --backends (default: the shipped six-taxon model)")
    ap.add_argument("--calib", type=int, default=32, help="synthetic frames INT8 is calibrated on (--backends)")
    ap.add_argument("--map-images", type=int, default=48,
                    help="synthetic frames INT8's mAP change is measured on (--backends; 0: skip)")
    args = ap.parse_args(argv)

    if args.backends:
        for nt in args.threads or [torch.get_num_threads()]:
            torch.set_num_threads(nt)
            bench_backends(args, nt)
        return
    variants = tuple(LABELS) if args.all_variants else ("base", "full")
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, CPU threads available {torch.get_num_threads()}")
    for nt in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(nt)
        models, x, ms, cpu_ms = bench_models(cpu, args.imgsz, args.nc, args.runs, args.warmup,
                                             variants=variants, forms=args.forms)
        print_table(models, x, ms, cpu_ms, f"CPU, {nt} thread(s), {args.imgsz}x{args.imgsz}, batch 1, nc={args.nc}")
        if args.dwconv:
            bench_dwconv(cpu, max(args.runs // 2, 5))

    if torch.cuda.is_available() and not args.no_cuda:
        gpu = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        print(f"\nGPU: {torch.cuda.get_device_name(0)}")
        for amp in (False, True):
            models, x, ms, cpu_ms = bench_models(gpu, args.imgsz, args.nc, max(args.runs, 50), 10, amp=amp,
                                                 variants=variants, forms=args.forms)
            print_table(models, x, ms, cpu_ms, f"CUDA {'float16 autocast' if amp else 'float32'}, {args.imgsz}x{args.imgsz}, batch 1")
        if args.dwconv:
            bench_dwconv(gpu, 50)


if __name__ == "__main__":
    main()
