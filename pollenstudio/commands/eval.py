"""`pollenstudio eval`: COCO metrics of a model on a project's reviewed images or a COCO file."""

from __future__ import annotations

import argparse

from pollenstudio.commands._console import positive_int
from pollenstudio.core.types import DEFAULT_CONF

HELP = "Score a model (mAP@.5, mAP@.5:.95, per-taxon AP, precision/recall) on a project or a COCO file."


def _conf(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"confidence must be between 0 and 1, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="PROJECT_OR_COCO",
                   help="project folder (or project.pollen), a server project postgresql://HOST/DB?project=NAME, "
                        "or a COCO .json file with ground-truth boxes")
    p.add_argument("--model", default=None, metavar="VERSION|FILE",
                   help="model version id (projects) or .safetensors file (default: the project's active model, "
                        "else the shipped default model)")
    p.add_argument("--images", default=None, metavar="DIR", help="image folder of a COCO file (default: the json's folder)")
    p.add_argument("--split", choices=("val", "all"), default="val",
                   help="project images to score: the validation split training holds out (default) or all reviewed")
    p.add_argument("--conf", type=_conf, default=DEFAULT_CONF,
                   help=f"operating confidence for precision/recall (default {DEFAULT_CONF})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--batch", type=positive_int, default=8, help="images per batch (default 8)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (map50, map50_95, per_class ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_path(args, project):
    from pollenstudio.engine.models import resolve_model

    r = resolve_model(project, args.model)
    return r.path, (None if r.kind == "file" else r.version_id)  # a file: scored as given, whatever version holds it


def run(args) -> int:
    import time
    from pathlib import Path

    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.dataset import DatasetError, data_from_coco, data_from_project, split_samples
    from pollenstudio.engine.evaluate import evaluate_model
    from pollenstudio.engine.predict import select_device

    t0 = time.perf_counter()
    from pollenstudio.commands._project import is_server, open_project

    target = Path(args.target)
    project = None
    if not is_server(args.target) and target.suffix.lower() == ".json":
        if not target.is_file():
            raise PollenStudioError(f"COCO file not found: {target}")
    else:
        project = open_project(args.target)
    try:
        path, version = _model_path(args, project)
        device = select_device(args.device)
        from pollenstudio.engine.classify import load_classifier

        model, mcfg, _ = load_checkpoint(path, device="cpu")
        taxa = load_classifier(path)  # a split version names grains with its classifier
        if project is None:
            data = data_from_coco(target, args.images)
            samples = data.samples
            scope = "all images of the COCO file"
        else:
            data = data_from_project(project, list(mcfg.class_names))
            # the images the version was validated on (as recorded; else the same split rule and
            # fraction: the split depends on the reviewed grains, which change after a training)
            frac, held = 0.2, None
            if version is not None:
                mv = project.model_version(version)
                frac = float(mv.config.get("train", {}).get("val_fraction", 0.2))
                held = mv.summary.get("val_image_ids")
            if held is not None:
                val = [s for s in data.samples if s.image_id in set(held)]
            else:
                _, val = split_samples(data.samples, frac)
            samples = val if args.split == "val" else data.samples
            scope = "validation split" if args.split == "val" else "all reviewed images"
        if not samples:
            raise DatasetError(
                "no images to score: " + ("the project has no reviewed image in this split; try --split all"
                                          if project is not None else "the COCO file lists no images")
            )
        missing = [s.path for s in samples if not Path(s.path).is_file()]
        if missing:
            hint = " (give --images DIR)" if project is None else ""
            raise DatasetError(f"{len(missing)} image file(s) not found, e.g. {missing[0]}{hint}")
        progress = ConsoleProgress("eval", quiet=args.quiet or args.json)
        res = evaluate_model(model, mcfg, samples, data.class_names, device, conf=args.conf, batch=args.batch,
                             progress=progress, taxa=taxa)
    finally:
        if project is not None:
            project.close()
    from pollenstudio.engine.evaluate import too_few_to_score

    out = res.to_dict()
    few = too_few_to_score(out)
    out.update(model=str(path), model_version=version, scope=scope, seconds=round(time.perf_counter() - t0, 1),
               too_few_to_score=few)
    if args.json:
        print_json(out)
    else:
        print(f"model {path}" + (f" (version {version})" if version else "") + f", {scope}")
        if few:  # asked for, so shown, but said to mean little
            print(f"note: {few}. The figures below mean little.")
        print(res.table())
    return 0
