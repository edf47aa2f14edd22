"""`pollenstudio calibrate PROJECT`: the typical grain size detection resizes each image for.

A calibration belongs to a magnification (an objective): it is set for images, a sample or
the whole project, and detection uses the most specific one (engine.scale.image_grain_px).
"""

from __future__ import annotations

from pollenstudio.commands._project import PROJECT_HELP

HELP = "show or set the typical grain size (pixels) per image, sample or project, which detection calibrates to"
EPILOG = """Detection resizes each image so that its typical grain has the size the model was
trained on. Images taken with different objectives need their own value: set it for the
images or the sample taken at that magnification. Each image uses its own value, else its
pixel scale (µm/px, grains taken as 30 µm), else the project's value (--default).

  pollenstudio calibrate myproject                                  # what each image uses
  pollenstudio calibrate myproject --grain-size 287 --sample "slide 1"
  pollenstudio calibrate myproject --grain-size 60 --image small_grains.png
  pollenstudio calibrate myproject --grain-size 290 --default       # images without their own
  pollenstudio calibrate myproject --clear --image small_grains.png

The typical grain size is the diameter in pixels of a typical pollen grain on those images
(for a box, the square root of width x height)."""

LIST_LIMIT = 40  # images listed in the text output (--json lists all)


def add_arguments(parser) -> None:
    parser.add_argument("project", help=PROJECT_HELP)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--grain-size", type=float, default=None, metavar="PX",
                      help="typical grain diameter in pixels (2 to 20000) for the images chosen below")
    what.add_argument("--clear", action="store_true", help="remove the calibration of the images chosen below")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--image", action="append", default=None, metavar="IMAGE",
                       help="an image, by id, path as listed, or file name (repeat for several)")
    scope.add_argument("--sample", action="append", default=None, metavar="NAME",
                       help="every image of this sample (repeat for several)")
    scope.add_argument("--all", action="store_true", help="every image of the project, each its own value")
    scope.add_argument("--default", action="store_true",
                       help="the project's value: every image without its own, images added later included")
    parser.add_argument("--json", action="store_true", help="print the calibration of every image as JSON")


def run(args) -> int:
    from pollenstudio.commands._console import print_json
    from pollenstudio.core.errors import PollenStudioError, ProjectError
    from pollenstudio.commands._project import open_project
    from pollenstudio.engine.scale import typical_grain_px

    setting = args.grain_size is not None or args.clear
    scoped = bool(args.image or args.sample or args.all or args.default)
    if setting and not scoped:
        raise PollenStudioError("say which images the calibration is for: --image, --sample, --all or --default "
                                "(a calibration belongs to one magnification)")
    if scoped and not setting:
        raise PollenStudioError("give --grain-size PX to set, or --clear to remove, the calibration of those images")
    if args.grain_size is not None:
        typical_grain_px(args.grain_size)  # CalibrationError in words: nothing opened yet
    changed = 0
    with open_project(args.project) as proj:
        if setting:
            px = None if args.clear else float(args.grain_size)
            if args.default:
                before = _using_default(proj)
                proj.set_grain_size_px(px)
                changed = before if args.clear else _using_default(proj)
            else:
                ids = _chosen(proj, args)
                if not ids:
                    raise ProjectError("no image to calibrate: the project has no images yet")
                proj.set_grain_size_px(px, ids)
                changed = len(ids)
        report = calibration_report(proj)
    report["changed"] = changed
    if args.json:
        print_json(report)
        return 0
    print(_text(report))
    if setting:
        print(f"{'cleared' if args.clear else 'set'} for {changed} image(s)"
              + (" (the project's value: images without their own)" if args.default else ""))
    return 0


def _using_default(proj) -> int:
    """Images that take the project's value (no own value, no usable pixel scale)."""
    from pollenstudio.engine.scale import image_grain_px

    return sum(1 for r in proj.images() if image_grain_px(r, 1.0)[1] == "project")


def _chosen(proj, args) -> list[int]:
    """Image ids of --image / --sample / --all; an unknown or ambiguous name is refused."""
    from pollenstudio.core.errors import ProjectError

    images = proj.images()
    if args.all:
        return [r.id for r in images]
    if args.sample:
        ids = []
        samples = {r.group for r in images if r.group}
        for name in args.sample:
            if name not in samples:
                known = ", ".join(sorted(samples)[:10]) or "none: this project's images have no sample"
                raise ProjectError(f"no sample named {name!r} in this project (samples: {known})")
            ids += [r.id for r in images if r.group == name]
        return sorted(set(ids))
    ids = []
    for name in args.image:
        by_id = [r for r in images if name.isdigit() and r.id == int(name)]
        hits = by_id or [r for r in images if r.path == name] or \
            [r for r in images if r.path.rsplit("/", 1)[-1] == name]
        if not hits:
            raise ProjectError(f"no image {name!r} in this project (give its id, its path as "
                               "'pollenstudio calibrate PROJECT' lists it, or its file name)")
        if len(hits) > 1:
            raise ProjectError(f"{len(hits)} images are named {name!r}: give the path or id instead "
                               f"({', '.join(f'{r.id}: {r.path}' for r in hits[:5])})")
        ids.append(hits[0].id)
    return sorted(set(ids))


def calibration_report(proj) -> dict:
    """What detection calibrates each image to, where that comes from, and the model's range."""
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.engine.models import resolve_model
    from pollenstudio.engine.scale import checkpoint_grain_range, image_grain_px

    try:
        model = resolve_model(proj)
        model_name, model_range = model.label, checkpoint_grain_range(model.path)
    except PollenStudioError:
        model_name, model_range = None, None
    default = proj.grain_size_px
    rows = []
    for r in proj.images():
        px, src = image_grain_px(r, default)
        rows.append({"id": r.id, "path": r.path, "sample": r.group, "grain_px": px, "from": src,
                     "own_grain_px": r.grain_px, "um_per_px": r.um_per_px})
    return {"project": str(proj.folder), "default_grain_px": default, "model": model_name,
            "model_grain_range_px": model_range, "images": rows}


_FROM = {"image": "its own", "scale": "its µm/px", "project": "project's", "none": "-"}


def _text(report: dict) -> str:
    lines = []
    d = report["default_grain_px"]
    lines.append(f"project's typical grain size: {f'{d:.0f} px (images without their own)' if d else 'not set'}")
    if report["model"]:
        rng = report["model_grain_range_px"]
        lines.append(f"model in use: {report['model']}, "
                     + (f"trained on grains of {rng[0]:.0f}-{rng[1]:.0f} px" if rng else
                        "records no training grain sizes (detection with it stays uncalibrated)"))
    rows = report["images"]
    if not rows:
        lines.append("no images yet")
        return "\n".join(lines)
    w = min(max(len(r["path"]) for r in rows), 60)
    lines.append(f"{'id':>5}  {'image':<{w}}  {'sample':<16}  {'grain size':>10}  from")
    for r in rows[:LIST_LIMIT]:
        size = f"{r['grain_px']:.0f} px" if r["grain_px"] else "not set"
        lines.append(f"{r['id']:>5}  {r['path'][-w:]:<{w}}  {(r['sample'] or '-')[:16]:<16}  {size:>10}  {_FROM[r['from']]}")
    if len(rows) > LIST_LIMIT:
        lines.append(f"... and {len(rows) - LIST_LIMIT} more image(s) (--json lists all)")
    n = sum(1 for r in rows if not r["grain_px"])
    if n:
        lines.append(f"{n} of {len(rows)} image(s) not calibrated: detection looks at them at their own size; "
                     "set the grain size with --grain-size PX and --image, --sample, --all or --default")
    return "\n".join(lines)
