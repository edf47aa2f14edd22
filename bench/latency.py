"""Latency, parameters and GFLOPs of base-n vs HieraEdgeNet-n, training and deploy form.

    python bench/latency.py                 # CPU, 640x640, batch 1, nc 120
    python bench/latency.py --threads 1 2   # one table per intra-op thread count
    python bench/latency.py --dwconv        # also: 31x31 depthwise conv, direct vs FFT

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


def bench_models(device, imgsz, nc, runs, warmup, amp=False):
    models = {}
    for variant, label in (("base", "base-n"), ("full", "HieraEdgeNet-n")):
        torch.manual_seed(0)
        m = build_model(ModelConfig.variant(variant, nc=nc)).to(device).eval()
        models[(label, "train")] = m
        models[(label, "deploy")] = deploy_model(m)
    x = torch.rand(1, 3, imgsz, imgsz, device=device)

    def runner(m):
        def f():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                m(x)

        return f

    cpu: dict = {}
    ms = time_round_robin({k: runner(m) for k, m in models.items()}, runs, warmup, device, cpu)
    return models, x, ms, cpu


def print_table(models, x, ms, cpu, title):
    print(f"\n{title}")
    print(f"{'model':<16}{'form':<8}{'params':>11}{'GFLOPs':>9}{'median ms':>11}{'CPU ms':>9}")
    flops = {}
    for (label, form), m in models.items():
        if form == "train":
            flops[label] = gflops(m, x)
        print(f"{label:<16}{form:<8}{count_parameters(m):>11,}{flops[label]:>9.2f}{ms[(label, form)]:>11.1f}"
              f"{cpu[(label, form)]:>9.1f}")
    for form in ("train", "deploy"):
        r = ms[("HieraEdgeNet-n", form)] / ms[("base-n", form)]
        rc = cpu[("HieraEdgeNet-n", form)] / cpu[("base-n", form)]
        print(f"ratio HieraEdgeNet/base ({form}): latency {r:.2f}x (CPU time {rc:.2f}x)", end="")
        if form == "train":
            print(f", params {count_parameters(models[('HieraEdgeNet-n', 'train')]) / count_parameters(models[('base-n', 'train')]):.2f}x,"
                  f" GFLOPs {flops['HieraEdgeNet-n'] / flops['base-n']:.2f}x")
        else:
            print()
    print(f"deploy speed-up: base {ms[('base-n', 'train')] / ms[('base-n', 'deploy')]:.2f}x, "
          f"HieraEdgeNet {ms[('HieraEdgeNet-n', 'train')] / ms[('HieraEdgeNet-n', 'deploy')]:.2f}x")


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--nc", type=int, default=120)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="intra-op thread counts to try")
    ap.add_argument("--dwconv", action="store_true", help="also time the 31x31 depthwise conv alone")
    ap.add_argument("--no-cuda", action="store_true")
    args = ap.parse_args(argv)

    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, CPU threads available {torch.get_num_threads()}")
    for nt in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(nt)
        models, x, ms, cpu_ms = bench_models(cpu, args.imgsz, args.nc, args.runs, args.warmup)
        print_table(models, x, ms, cpu_ms, f"CPU, {nt} thread(s), {args.imgsz}x{args.imgsz}, batch 1, nc={args.nc}")
        if args.dwconv:
            bench_dwconv(cpu, max(args.runs // 2, 5))

    if torch.cuda.is_available() and not args.no_cuda:
        gpu = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        print(f"\nGPU: {torch.cuda.get_device_name(0)}")
        for amp in (False, True):
            models, x, ms, cpu_ms = bench_models(gpu, args.imgsz, args.nc, max(args.runs, 50), 10, amp=amp)
            print_table(models, x, ms, cpu_ms, f"CUDA {'float16 autocast' if amp else 'float32'}, {args.imgsz}x{args.imgsz}, batch 1")
        if args.dwconv:
            bench_dwconv(gpu, 50)


if __name__ == "__main__":
    main()
