"""How long the classifier stage of training takes, beside what the auto recipe expects.

    python bench/classifier_stage_time.py [--configs 3x640x480 3x2592x1944 ...] [--repeat 2]
        [--threads N] [--out DIR]

Builds small projects of synthetic fields (COCO import: every grain reviewed), trains the
classifier stage from the shipped grain model (what Auto does on a new project, issue 28) and
prints, per project, the wall time of the run and of its phases: loading the base model,
embedding the reviewed grains, scoring the held-out images (detecting every candidate down to
conf 0.001 and naming each one), fitting; beside ``engine.recipe``'s expected_seconds. Needs
the shipped grain model (models/pollen-grain-n.safetensors). Times are the fastest of
``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _project(folder: Path, n: int, w: int, h: int, seed: int):
    from pollenstudio.engine.synthetic.dataset import generate_dataset
    from pollenstudio.project.transfer import import_to_folder

    data = generate_dataset(folder / "data", n, seed=seed, cfg=_cfg(w, h))
    project, _ = import_to_folder(folder / "proj", data)
    return project


def _cfg(w: int, h: int):
    from pollenstudio.engine.synthetic.config import SynthConfig

    return SynthConfig(width=w, height=h)


def _instrument(phases: dict, counts: dict):
    """Time the phases of engine.train._train_classifier_only by wrapping what it calls."""
    import pollenstudio.detector.checkpoint as ck
    import pollenstudio.engine.classify as cl
    import pollenstudio.engine.predict as pr
    import pollenstudio.engine.train as tr

    def timed(mod, name, phase):
        fn = getattr(mod, name)

        def wrapper(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                phases[phase] += time.perf_counter() - t
                phases[phase + " cpu"] += time.process_time() - c

        setattr(mod, name, wrapper)

    timed(ck, "load_checkpoint", "load")
    timed(cl, "embed_items", "embed")
    timed(cl, "fit_embedded", "fit")
    timed(tr, "_score_classifier", "score held-out")
    it = pr.Predictor.iter_predict

    def counting(self, *a, **k):
        for r in it(self, *a, **k):
            counts["val detections"] += len(r.detections)
            counts["val tiles"] += r.tiles or 1
            yield r

    pr.Predictor.iter_predict = counting


def _cli_run(project_dir: Path, grain: Path, threads: int | None) -> tuple[float, float]:
    """(wall s, CPU s) of `pollenstudio train PROJECT --stage classifier` in a fresh process,
    the comparison included: what a user waits for (imports, loading, training, comparing)."""
    import json
    import os
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "pollenstudio", "train", str(project_dir), "--base", str(grain), "--stage",
           "classifier", "--device", "cpu", "--json"] + (["--threads", str(threads)] if threads else [])
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    json.loads(r.stdout)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["3x640x480", "8x640x480", "3x2592x1944"],
                    help="N x W x H: N reviewed synthetic fields of W x H px")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="folder for the projects (default: a temporary one)")
    ap.add_argument("--cli", action="store_true",
                    help="also time `pollenstudio train --stage classifier` end to end in a fresh process "
                         "(imports, training and the comparison with the model in use)")
    args = ap.parse_args()

    from pollenstudio.engine.paths import default_model_path

    grain = default_model_path()
    if grain.name != "pollen-grain-n.safetensors":
        print("the shipped grain model is not installed: nothing to measure")
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pollenstudio.engine.recipe import auto_plan
    from pollenstudio.engine.train import TrainConfig, train_project

    phases: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    _instrument(phases, counts)
    root = Path(args.out or tempfile.mkdtemp(prefix="clf-time-"))
    print("phase columns: CPU seconds of this process (with --threads 1: the wall time of one free core); "
          "wall s: under the machine's load now")
    print(f"{'project':<14}{'imgs':>5}{'grains':>7}{'val':>4}{'val det':>8}{'tiles':>6}{'load':>6}{'embed':>7}"
          f"{'score':>7}{'fit':>5}{'cpu s':>7}{'wall s':>8}{'expected s':>11}"
          + (f"{'cli cpu':>9}{'cli wall':>9}" if args.cli else ""))
    for i, c in enumerate(args.configs):
        n, w, h = (int(v) for v in c.split("x"))
        project = _project(root / c, n, w, h, seed=100 + i)
        try:
            plan = auto_plan(project, str(grain), "cpu")
            best = None
            for _ in range(max(1, args.repeat)):
                phases.clear()
                counts.clear()
                t0, c0 = time.perf_counter(), time.process_time()
                res = train_project(project, TrainConfig(device="cpu"), base=str(grain), stage="classifier")
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                row = (cpu, wall, dict(phases), dict(counts), res)
                best = row if best is None or cpu < best[0] else best
            cpu, wall, ph, cn, res = best
            grains = sum(plan.grains.values()) + plan.unidentified
            print(f"{c:<14}{plan.images:>5}{grains:>7}{res.n_val_images:>4}{cn.get('val detections', 0):>8}"
                  f"{cn.get('val tiles', 0):>6}{ph.get('load cpu', 0):>6.1f}{ph.get('embed cpu', 0):>7.1f}"
                  f"{ph.get('score held-out cpu', 0):>7.1f}{ph.get('fit cpu', 0):>5.1f}{cpu:>7.1f}{wall:>8.1f}"
                  f"{plan.recipe.expected_seconds:>11.1f}", end="")
            if args.cli:
                runs = [_cli_run(root / c / "proj", grain, args.threads) for _ in range(max(1, args.repeat))]
                cli_wall, cli_cpu = min(runs, key=lambda r: r[1])
                print(f"{cli_cpu:>9.1f}{cli_wall:>9.1f}", end="")
            print(f"   ({plan.recipe.stage})")
        finally:
            project.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
