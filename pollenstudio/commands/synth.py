"""`pollenstudio synth`: write synthetic brightfield pollen micrographs plus a COCO json."""

from __future__ import annotations

import argparse

from pollenstudio.commands._console import positive_int

HELP = "Generate synthetic brightfield pollen images with COCO annotations (for demos, tests, training)."

EPILOG = """With --grains, frames are composited from real single-grain crops (one subfolder per
taxon; images lying directly in a folder are one taxon named after it) instead of drawn:
each grain is cut out of its crop (a crop whose cut-out fails its quality check is skipped
and counted), and pasted on grain-free generated backgrounds and on tiles of --debris, at
--grain-size diameters, rotated, flipped, blurred, restained. --split keeps a deterministic
share of the crops (or whole taxa with --split-by taxon) for held-out sets.

With --slide WxH, each image is a whole-slide scan as slide scanners write it: a pyramidal
tiled BigTIFF (256 px tiles, deflate or --jpeg Q, reduced levels down to 1024 px or less;
with --planes N an OME-TIFF with N focal planes), written tile row by tile row so a slide
of any size is never held in memory; its ground truth is in level-0 pixels."""

_KEEP = {"images", "annotations.json"}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480 (width x height), got {text!r}") from None
    if not (16 <= w <= 40000 and 16 <= h <= 40000):
        raise argparse.ArgumentTypeError(f"width and height must be 16..40000 pixels, got {text!r}")
    return w, h


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 12,250), got {text!r}") from None
    return lo, hi


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return v


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
    p.add_argument("--n", type=positive_int, default=None, help="number of images (default 200; 1 with --slide)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and options give identical files")
    p.add_argument("--size", type=_size, default=(640, 480), metavar="WxH", help="image size in pixels (default 640x480)")
    p.add_argument("--difficulty", choices=("easy", "default", "hard"), default="default",
                   help="blur, noise, clutter and contrast preset (default: default)")
    p.add_argument("--jpeg", type=_quality, default=None, metavar="Q", help="write JPEG at quality Q instead of PNG")
    p.add_argument("--class-agnostic", action="store_true", help='name every grain "pollen" (one class)')
    p.add_argument("--planes", type=positive_int, default=None, metavar="N",
                   help="focal stacks of N planes (2..64): each image a multi-page TIFF, every grain in focus on "
                        "its own plane (recorded as 'plane' in the COCO file) and defocused on the others")
    p.add_argument("--slide", type=_size, default=None, metavar="WxH",
                   help="write whole-slide scans of WxH px (e.g. 12000x9000) as pyramidal tiled TIFFs instead of "
                        "fields (with --planes: focal planes as an OME-TIFF Z axis; --jpeg Q: JPEG tiles)")
    g = p.add_argument_group("real grains (compositor)")
    g.add_argument("--grains", action="append", metavar="DIR", help="folder of real single-grain crops, one subfolder per taxon (repeatable)")
    g.add_argument("--debris", metavar="DIR", help="folder of real debris tiles (slide background without grains) to paste")
    g.add_argument("--grain-size", type=_range, default=(12.0, 250.0), metavar="MIN,MAX", help="grain diameter on the frame, px (default 12,250)")
    g.add_argument("--grains-per-frame", type=_range, default=(1, 14), metavar="MIN,MAX", help="grains per frame (default 1,14)")
    g.add_argument("--debris-density", type=_range, default=(0.0, 1.6), metavar="MIN,MAX",
                   help="real debris tiles pasted per 256x256 px of frame (default 0,1.6)")
    g.add_argument("--split", choices=("train", "test"), help="use only this deterministic share of the crops (and of the --debris tiles: "
                   "a contiguous block of them in name order, so neighbouring tiles of one scan stay together)")
    g.add_argument("--split-by", choices=("crop", "taxon"), default="crop", help="split whole crops (default) or whole taxa")
    g.add_argument("--test-fraction", type=_fraction, default=0.2, metavar="F", help="share of crops/taxa in the test split (default 0.2)")
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
            if old.is_file() and (old.suffix in (".png", ".jpg", ".tif") or old.name.endswith(".tif.part")):
                old.unlink()  # so a smaller --n leaves no stale images behind (nor a killed run's part)
            elif old.is_dir() and old.name.startswith(".synth-slide-"):
                import shutil

                shutil.rmtree(old, ignore_errors=True)  # scratch levels of a killed slide run (gigabytes)
    w, h = args.size
    progress = ConsoleProgress("synth", quiet=args.quiet or args.json)
    extra = {}
    if args.grains and args.planes is not None:
        raise PollenStudioError("--planes draws its own grains; it cannot be combined with --grains")
    if args.slide is not None and (args.grains or args.debris or args.split):
        raise PollenStudioError("--slide draws its own grains; it cannot be combined with --grains, --debris or --split")
    n = args.n if args.n is not None else (1 if args.slide is not None else 200)
    if args.slide is not None:
        from pollenstudio.engine.synthetic.slide import generate_slide_dataset

        if args.planes is not None and args.planes < 2:
            raise PollenStudioError("--planes needs 2 or more focal planes")
        sw, sh = args.slide
        cfg = SynthConfig(width=sw, height=sh, difficulty=args.difficulty)
        path = generate_slide_dataset(out, n, cfg, planes=args.planes or 1, seed=args.seed,
                                      compression="zlib" if args.jpeg is None else "jpeg",
                                      jpeg_quality=args.jpeg or 90, progress=progress,
                                      class_agnostic=args.class_agnostic)
    elif args.grains:
        from pollenstudio.engine.synthetic.composite import CompositeConfig, GrainLibrary, composite_dataset, debris_tiles

        library = GrainLibrary.from_folders(args.grains, split=args.split, split_by=args.split_by, test_fraction=args.test_fraction)
        debris = debris_tiles(args.debris, split=args.split, test_fraction=args.test_fraction) if args.debris else None
        lo, hi = args.grains_per_frame
        ccfg = CompositeConfig(width=w, height=h, grain_size=args.grain_size, grains_per_frame=(int(lo), int(hi)),
                               debris=args.debris_density, class_agnostic=args.class_agnostic, jpeg_quality=args.jpeg)
        path = composite_dataset(out, n, library, seed=args.seed, cfg=ccfg, debris=debris, progress=progress)
        extra = dict(crops=len(library.files), crops_skipped=sum(library.rejected.values()), taxa=len(library.taxa))
    else:
        if args.debris or args.split or args.debris_density != (0.0, 1.6):
            raise PollenStudioError("--debris and --split need --grains (a folder of real grain crops)")
        cfg = SynthConfig(width=w, height=h, difficulty=args.difficulty, jpeg_quality=args.jpeg)
        if args.planes is not None:
            from pollenstudio.engine.synthetic.stack import generate_stack_dataset

            if args.jpeg is not None:
                raise PollenStudioError("--planes writes TIFF stacks; leave out --jpeg")
            path = generate_stack_dataset(out, n, args.planes, seed=args.seed, cfg=cfg, progress=progress,
                                          class_agnostic=args.class_agnostic)
        else:
            path = generate_dataset(out, n, seed=args.seed, cfg=cfg, progress=progress,
                                    class_agnostic=args.class_agnostic)

    import json

    coco = json.loads(path.read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names[a["category_id"]] for a in coco["annotations"])
    summary = dict(
        annotations=str(path),
        images=len(coco["images"]),
        grains=len(coco["annotations"]),
        per_taxon={name: counts.get(name, 0) for name in names.values()},
        **extra,
    )
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {summary['images']} images with {summary['grains']} grains to {out}", file=sys.stderr)
        if extra:
            print(f"{extra['crops']} crops of {extra['taxa']} taxa; {extra['crops_skipped']} skipped (cut-out failed its quality check)", file=sys.stderr)
        print(str(path))
    return 0
