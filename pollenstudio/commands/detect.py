"""`pollenstudio detect PROJECT_OR_FOLDER`: run a model over a project's images as proposals."""

from __future__ import annotations

from pollenstudio.core.types import DEFAULT_STACK_MODE, STACK_MODES

HELP = "detect pollen grains on a project's images (a folder of images becomes a project) and store them as proposals"

SOME_FAILED = 3  # exit status: some images could not be used, the others have their proposals

EPILOG = f"""exit status:
  0    every image asked for was detected
  1    an error (said in words), or not one image could be read
  {SOME_FAILED}    some images could not be read or no longer match the project (each named above the
       summary line, which says how many); the other images have their proposals
  130  cancelled (images finished before the cancel keep their proposals)"""


def _tile(text: str) -> str:
    """argparse type for --tile: auto, off, or a size of at least 64 px (a usage error otherwise)."""
    import argparse

    t = text.strip().lower()
    if t in ("auto", "off", "none", "0"):
        return t
    try:
        n = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, off or a tile size in pixels, got {text!r}") from None
    if n < 64 or n > 1_000_000:
        raise argparse.ArgumentTypeError(f"tile size must be from 64 to 1000000 px, got {n}")
    return t


def add_arguments(parser) -> None:
    from pollenstudio.commands._console import model_imgsz, number_in, positive_int
    from pollenstudio.core.types import DEFAULT_CONF

    parser.add_argument("target", metavar="PROJECT_OR_FOLDER", help="project folder, a folder of images (a project is created in it), or one image file such as a slide scan (detected in its folder's project, which is created when there is none)")
    parser.add_argument(
        "--model",
        help="model file (.safetensors) or model version id of the project (default: the project's active model, else the shipped default)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default=None,
                        help="what runs the model: auto (PyTorch on a GPU, else the fastest installed CPU runtime: "
                             "OpenVINO, ONNX Runtime, PyTorch), torch, onnxruntime or openvino (CPU; "
                             "pip install 'pollenstudio[cpu-fast]'); the detections are the same. "
                             "Default: $POLLENSTUDIO_BACKEND, else auto")
    parser.add_argument("--conf", type=number_in(0.0, 1.0), default=DEFAULT_CONF,
                        help=f"confidence threshold (default {DEFAULT_CONF})")
    parser.add_argument("--iou", type=number_in(0.0, 1.0, lo_open=True), default=0.7, help="NMS IoU threshold (default 0.7)")
    parser.add_argument(
        "--tile", default="auto", type=_tile, help="auto (tile images over twice the model input), off, or tile size in pixels"
    )
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="model inputs per batch (default: 8 on a GPU, 1 on a CPU, where batches are no "
                             "faster and cost memory)")
    parser.add_argument("--imgsz", type=model_imgsz, default=None,
                        help="model input size, a multiple of 32 (default: the model's own)")
    parser.add_argument(
        "--images", choices=("all", "unreviewed", "new"), default="all", help="which images to run on (default all)"
    )
    cal = parser.add_mutually_exclusive_group()
    cal.add_argument("--grain-size", type=float, default=None, metavar="PX",
                     help="typical grain diameter on these images, in pixels: images are resampled so grains have the "
                          "size the model was trained on (default: each image's µm/px or the project's calibration, if any)")
    cal.add_argument("--um-per-px", type=float, default=None, metavar="X",
                     help="pixel scale of these images (µm per pixel); grains are taken as 30 µm across")
    parser.add_argument("--stack-mode", choices=STACK_MODES, default=DEFAULT_STACK_MODE,
                        help="focal stacks: detect on the all-in-focus EDF composite ('edf'), on every plane "
                        "('planes') or on both ('both'), the boxes of one grain merged across planes; either way "
                        f"each grain records its sharpest plane (default {DEFAULT_STACK_MODE!r}, the best measured "
                        "on generated stacks: bench/stack_mode.py)")
    parser.add_argument("--flip-pass", action="store_true",
                        help="run the model a second time on each horizontally flipped image, so the app's "
                             "\"Review this next\" order also weighs where the two passes disagree "
                             "(doubles the model time)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys
    from pathlib import Path

    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.project import Project
    from pollenstudio.project.schema import DB_NAME

    if not 0.0 <= args.conf <= 1.0 or not 0.0 < args.iou <= 1.0:
        raise ProjectError("--conf must be within 0..1 and --iou within 0..1 (exclusive of 0)")
    if args.batch is not None and args.batch < 1:
        raise ProjectError("--batch must be at least 1")
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.engine.predict import select_device
    from pollenstudio.engine.tiling import resolve_tile_size

    try:  # settings first: a bad one must not leave a half-made project behind
        resolve_tile_size(args.tile, 10**6, 10**6, 640)
    except ValueError as exc:
        raise PollenStudioError(f"--tile: {exc}") from None
    if not args.target.strip() or "\x00" in args.target:
        raise ProjectError(f"{args.target!r} is not a project or folder name")
    from pollenstudio.engine.scale import typical_grain_px

    typical_grain_px(args.grain_size, args.um_per_px)  # CalibrationError in words
    from pollenstudio.commands._project import is_image_argument, is_server, open_project, project_with_image

    server = is_server(args.target)  # a project on a lab server: opened, never created here
    target = Path(args.target)
    if not server and not target.exists():
        raise ProjectError(f"{target}: no such project or folder")
    dev = select_device(args.device)
    from pollenstudio.engine.runtime import default_backend, resolve_backend

    backend = args.backend or default_backend()
    resolve_backend(backend, dev.type)  # not installed / not for this device: say so before any change
    quiet = args.quiet or args.json
    created = False
    only = None  # one image file given: detect that image only
    if server:
        proj = open_project(args.target)
    elif is_image_argument(target):
        _check_model_before_creating(args.model)  # bad input changes nothing: no half-made project
        proj, only, created = project_with_image(target)
        target = proj.folder
    elif target.is_file() or (target / DB_NAME).exists():
        proj = Project.open(target)
        adding = proj.get_meta(_ADDING)
        if not adding and target.is_dir() and proj.image_count() == 0 and not proj.runs():
            adding = str(target.resolve())  # killed even before it could leave the marker
        if adding:  # a run that created this project was killed while registering its images
            print(f"adding the images of {adding} that an interrupted run had not registered yet", file=sys.stderr)
            _add_images(proj, Path(adding), quiet)
    elif target.is_dir():
        from pollenstudio.core.imageio import is_image_file

        if not any(p.is_file() and is_image_file(p) for p in target.rglob("*")):
            raise ProjectError(f"{target} holds neither a project nor any image (JPEG, PNG, TIFF)")
        _check_model_before_creating(args.model)  # bad input changes nothing: no half-made project
        proj = Project.create(target)
        created = True
        try:
            proj.set_meta(_ADDING, str(target.resolve()))  # cleared once every image is in
            _add_images(proj, target, quiet)
        except BaseException:
            if proj.image_count() == 0:  # nothing worth keeping: no half-made project
                _remove_created(proj, target)
            raise
    else:
        raise ProjectError(f"{target}: no such project or folder")

    from pollenstudio.engine.detect_job import detect_project, select_images
    from pollenstudio.engine.predict import Predictor

    with proj:
        try:
            predictor = Predictor.from_project(
                proj,
                args.model,
                device=args.device,
                conf=args.conf,
                iou=args.iou,
                tile=args.tile,
                batch=args.batch,
                imgsz=args.imgsz,
                grain_size=args.grain_size,
                um_per_px=args.um_per_px,
                backend=backend,
            )
        except BaseException:
            if created:  # the model did not load: leave the folder as it was
                _remove_created(proj, target)
            raise
        if not quiet:
            print(f"model: {predictor.source} on {predictor.device_description}", file=sys.stderr)
        ids = select_images(proj, args.images) if only is None else [only]
        summary = detect_project(proj, predictor, ids, progress=ConsoleProgress("detect", quiet=quiet),
                                 stack_mode=args.stack_mode, flip_pass=args.flip_pass)
        if not quiet and summary.calibration != "none":
            print(f"grain-size calibration: {summary.calibration}", file=sys.stderr)
        hint = uncalibrated_hint(predictor, summary, proj.folder)
    out = {"project": str(proj.folder), "created": created, **summary.to_dict()}
    if args.json:
        print_json(out)
    else:
        for path, reason in summary.failed:
            print(f"could not use: {reason}", file=sys.stderr)
        for path, words in summary.size_warnings:
            print(f"warning: {words}", file=sys.stderr)
        if hint:
            print(hint, file=sys.stderr)
        for path, kept, dropped in summary.capped:
            print(
                f"warning: {path}: detection cap hit, kept {kept}"
                + (f", dropped {dropped} weaker" if dropped else ", a tile was full")
                + ": some grains may have no box",
                file=sys.stderr,
            )
        taxa = ", ".join(f"{k} {v}" for k, v in sorted(summary.per_taxon.items(), key=lambda kv: -kv[1]))
        print(
            f"{summary.done}/{summary.images} images, {summary.proposals} proposals"
            + (f" ({taxa})" if taxa else "")
            + (f", {summary.skipped} already decided by a person" if summary.skipped else "")
            + (f", {summary.size_dropped} box(es) far larger or smaller than the calibrated grain size dropped"
               if summary.size_dropped else "")
            + (f", {len(summary.failed)} of {summary.images} image(s) failed (named above)" if summary.failed else "")
            + (f", {summary.tiles_skipped} of {summary.tiles} tiles skipped as blank "
               f"({100.0 * summary.tiles_skipped / summary.tiles:.0f} %)" if summary.tiles_skipped else "")
            + (f", {summary.tiles_resumed} tiles kept from an interrupted run" if summary.tiles_resumed else "")
            + f" in {summary.seconds:.1f} s"
        )
    if summary.cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    if summary.failed:  # scripts must be able to tell: all failed -> 1, some -> SOME_FAILED
        return SOME_FAILED if summary.done else 1
    return 0 if summary.done or not summary.images else 1


def uncalibrated_hint(predictor, summary, folder) -> str | None:
    """On a project with no grain-size calibration (and a model that can use one): calibrating
    is the first step, and how."""
    rng = getattr(predictor, "grain_range", None)
    if summary.calibration != "none" or not rng or not summary.done:
        return None
    return (f"note: the grain size is not calibrated, so the model looks for grains of {rng[0]:.0f}-{rng[1]:.0f} px "
            "on each image as it is and may box debris instead of grains on other magnifications. Calibrating "
            f"it is the first step: pollenstudio calibrate {folder} --grain-size PX --all (PX = the diameter "
            "of a typical grain in pixels), or Model > Calibrate grain size... in the app")


_ADDING = "detect_adding_images"  # meta key: the folder whose images are being registered


def _add_images(proj, folder, quiet: bool) -> None:
    import sys

    from pollenstudio.commands._console import ConsoleProgress

    res = proj.add_folder(folder, progress=ConsoleProgress("add images", quiet=quiet))
    for p, reason in res.errors:
        print(f"warning: {reason}", file=sys.stderr)
    proj.set_meta(_ADDING, None)


def _remove_created(proj, folder) -> None:
    from pollenstudio.project.transfer import _remove_project

    proj.close()
    _remove_project(folder, remove_folder=False)


def _check_model_before_creating(model) -> None:
    from pathlib import Path

    from pollenstudio.core.errors import CheckpointError, ProjectError

    if model is None:
        from pollenstudio.engine.paths import default_model_path

        default_model_path()  # raises with what to do when none is installed
    elif str(model).isdigit():
        raise ProjectError("a new project has no model versions yet; give a model file with --model PATH")
    elif not Path(model).is_file():
        raise CheckpointError(f"model file not found: {model}")
    else:  # the whole file, checked without building the model: damaged, foreign, absurd
        from pollenstudio.detector.checkpoint import read_checkpoint

        read_checkpoint(model)
