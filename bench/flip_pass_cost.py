"""What the flipped second pass of "review this next" costs: detection over a project with
and without ``flip_pass`` (same model, images, device), wall time per image.

    OMP_NUM_THREADS=1 python bench/flip_pass_cost.py [--images DIR] [--n 6] [--model FILE] [--device cpu]

Without --images it writes N synthetic 1024 px frames (engine.synthetic). Prints seconds per
image for both runs and the ratio; never pass/fail.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=None)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped grain model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each kind, interleaved; the fastest is kept")
    args = ap.parse_args()

    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="flipbench-"))
    try:
        src = tmp / "images"
        src.mkdir()
        if args.images is not None:
            for p in sorted(args.images.iterdir())[: args.n]:
                shutil.copy(p, src / p.name)
        else:
            import cv2

            from pollenstudio.engine.synthetic import SynthConfig, generate_image

            for i in range(args.n):
                img = generate_image(i, SynthConfig(width=1024, height=1024))[0]
                cv2.imwrite(str(src / f"s{i:02d}.png"), img[..., ::-1])
        proj = Project.create(tmp / "proj")
        proj.add_folder(src)
        model = args.model or str(Path(__file__).resolve().parents[1] / "models" / "pollen-grain-n.safetensors")
        pred = Predictor.from_checkpoint(model, device=args.device)
        n = proj.image_count()
        detect_project(proj, pred)  # warm-up: model load, first allocations
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeat):
            for flip in (False, True):
                t0 = time.perf_counter()
                s = detect_project(proj, pred, flip_pass=flip)
                best[flip] = min(best[flip], time.perf_counter() - t0)
                assert s.done == n
        print(f"{n} images ({'given' if args.images else 'synthetic 1024 px'}), model {Path(model).name}, "
              f"device {pred.device_description}")
        print(f"detect:              {best[False] / n:.3f} s/image")
        print(f"detect + flip pass:  {best[True] / n:.3f} s/image")
        print(f"ratio:               {best[True] / best[False]:.2f}x")
        proj.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
