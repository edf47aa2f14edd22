"""Time one training step (forward + backward) per model variant on the CPU.

    python bench/train_step.py [--threads 1] [--imgsz 320] [--batch 8] [--steps 4]

Prints milliseconds per step for base / edge / cspokm / full HieraEdgeNet-n, and for the
OmniKernel variants also with the 31x31 depthwise branches computed directly (the form
before the training-time FFT), so the ratio is measured in the same run. Figures only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pollenstudio.detector import omnikernel
from pollenstudio.detector.config import ModelConfig
from pollenstudio.detector.model import HieraEdgeNet


def step_ms(variant: str, imgsz: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    m = HieraEdgeNet(ModelConfig.variant(variant, scale="n", nc=6)).train()
    x = torch.randn(batch, 3, imgsz, imgsz)
    times = []
    for _ in range(steps + 1):  # the first step warms allocator caches: dropped
        t = time.perf_counter()
        out = m(x)
        sum(o.float().mean() for o in out).backward()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"train step, batch {a.batch} x {a.imgsz}px, {a.threads} thread(s), median of {a.steps}")
    base = step_ms("base", a.imgsz, a.batch, a.steps)
    print(f"  base    {base:8.0f} ms  1.00x")
    for v in ("edge", "cspokm", "full"):
        fft = step_ms(v, a.imgsz, a.batch, a.steps)
        line = f"  {v:<7} {fft:8.0f} ms  {fft / base:.2f}x"
        if v != "edge":
            saved = omnikernel.CPU_FFT_MIN_PIXELS
            omnikernel.CPU_FFT_MIN_PIXELS = 1 << 60  # force the four direct depthwise convs
            try:
                direct = step_ms(v, a.imgsz, a.batch, a.steps)
            finally:
                omnikernel.CPU_FFT_MIN_PIXELS = saved
            line += f"   (direct 31x31: {direct:.0f} ms, {direct / base:.2f}x; FFT saves {direct / fft:.2f}x)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
