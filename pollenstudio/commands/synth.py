"""`pollenstudio synth`: write synthetic brightfield pollen micrographs plus a COCO json."""

from __future__ import annotations

import argparse

from pollenstudio.commands._console import positive_int

HELP = "Generate synthetic brightfield pollen images with COCO annotations (for demos, tests, training)."

_KEEP = {"images", "annotations.json"}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480 (width x height), got {text!r}") from None
    if not (16 <= w <= 40000 and 16 <= h <= 40000):
        raise argparse.ArgumentTypeError(f"width and height must be 16..40000 pixels, got {text!r}")
    return w, h


def _quality(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"JPEG quality must be a whole number 1..100, got {text!r}") from None
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be 1..100, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (created; images/ and annotations.json inside)")
    p.add_argument("--n", type=positive_int, default=200, help="number of images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and options give identical files")
    p.add_argument("--size", type=_size, default=(640, 480), metavar="WxH", help="image size in pixels (default 640x480)")
    p.add_argument("--difficulty", choices=("easy", "default", "hard"), default="default",
                   help="blur, noise, clutter and contrast preset (default: default)")
    p.add_argument("--jpeg", type=_quality, default=None, metavar="Q", help="write JPEG at quality Q instead of PNG")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys
    from collections import Counter
    from pathlib import Path

    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.engine.synthetic import SynthConfig, generate_dataset

    out = Path(args.out)
    if out.exists():
        if not out.is_dir():
            raise PollenStudioError(f"{out} exists and is not a folder; choose another --out")
        # Only overwrite an earlier synth output, never someone's own folder.
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _KEEP)
        if foreign:
            raise PollenStudioError(
                f"{out} is not empty and not an earlier synth output (has {', '.join(foreign[:3])}); choose an empty or new --out"
            )
        for old in (out / "images").glob("*"):
            if old.is_file() and old.suffix in (".png", ".jpg"):
                old.unlink()  # so a smaller --n leaves no stale images behind
    w, h = args.size
    cfg = SynthConfig(width=w, height=h, difficulty=args.difficulty, jpeg_quality=args.jpeg)
    progress = ConsoleProgress("synth", quiet=args.quiet or args.json)
    path = generate_dataset(out, args.n, seed=args.seed, cfg=cfg, progress=progress)

    import json

    coco = json.loads(path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names[a["category_id"]] for a in coco["annotations"])
    summary = dict(
        annotations=str(path),
        images=len(coco["images"]),
        grains=len(coco["annotations"]),
        per_taxon={name: counts.get(name, 0) for name in names.values()},
    )
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {summary['images']} images with {summary['grains']} grains to {out}", file=sys.stderr)
        print(str(path))
    return 0
