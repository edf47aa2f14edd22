"""`pollenstudio export-model VERSION|FILE`: the detector as ONNX or OpenVINO, optionally INT8."""

from __future__ import annotations

HELP = "export a model (version or file) to ONNX or OpenVINO for other tools and faster CPU inference"

EPILOG = """\
examples:
  pollenstudio export-model models/pollen-grain-n.safetensors --format onnx --out grain.onnx
  pollenstudio export-model 3 --project myproject --format onnx --yolo --out grain-yolo.onnx
      (one output (1, 4 + classes, anchors), decoded boxes: X-AnyLabeling's yolov8 loader;
       an X-AnyLabeling config grain-yolo.yaml is written next to it, see docs/DEPLOY.md)
  pollenstudio export-model 3 --project myproject --format openvino --int8 --out grain-int8.xml
      (INT8 calibrated on the project's reviewed images; prints the mAP change)
needs the optional runtimes: pip install 'pollenstudio[cpu-fast]'
"""


def add_arguments(parser) -> None:
    from pollenstudio.commands._console import model_imgsz, positive_int

    parser.add_argument("model", metavar="VERSION|FILE", help="model version id or name of --project, or a .safetensors file")
    parser.add_argument("--project", default=None, metavar="PROJECT",
                        help="project whose model version to export, and whose reviewed images calibrate --int8")
    parser.add_argument("--format", choices=("onnx", "openvino"), required=True, help="onnx (.onnx) or openvino (IR .xml + .bin)")
    parser.add_argument("--out", required=True, metavar="PATH", help="output file (.onnx, or .xml for openvino)")
    parser.add_argument("--imgsz", type=model_imgsz, default=None, help="model input size, a multiple of 32 (default: the model's own)")
    parser.add_argument("--yolo", action="store_true",
                        help="the common YOLO layout: one output (1, 4 + classes, anchors) of xywh boxes in input pixels "
                             "and class scores (X-AnyLabeling and other YOLOv8 tools); default: the three raw level outputs "
                             "PollenStudio itself runs")
    parser.add_argument("--int8", action="store_true",
                        help="INT8 post-training quantisation calibrated on the --project's reviewed images; prints the mAP change")
    parser.add_argument("--calib-images", type=positive_int, default=64, metavar="N",
                        help="reviewed images used to calibrate INT8 (default 64)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def run(args) -> int:
    import sys
    from pathlib import Path

    import torch

    from pollenstudio.commands._console import print_json
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.export import file_sha256, require
    from pollenstudio.engine.export_job import export_model, xanylabeling_config
    from pollenstudio.engine.models import resolve_model

    require("onnx", "onnxscript", *(["openvino"] if args.format == "openvino" else []),
            *(["onnxruntime"] if args.int8 else []), what=f"export-model --format {args.format}")
    if args.int8 and args.project is None:
        raise PollenStudioError("--int8 is calibrated on a project's reviewed images: give --project PROJECT")
    out = Path(args.out)
    if args.format == "onnx" and out.suffix.lower() not in (".onnx",):
        raise PollenStudioError(f"--out for ONNX must end in .onnx, got {out.name}")
    if args.format == "openvino" and out.suffix.lower() != ".xml":
        raise PollenStudioError(f"--out for OpenVINO must end in .xml (the .bin is written next to it), got {out.name}")
    if out.exists() and out.is_dir():
        raise PollenStudioError(f"{out} is a folder; give a file name")
    if not out.parent.exists():
        raise PollenStudioError(f"folder {out.parent} does not exist")
    log = (lambda m: None) if (args.quiet or args.json) else (lambda m: print(m, file=sys.stderr))
    project = None
    if args.project is not None:
        from pollenstudio.commands._project import open_project

        project = open_project(args.project)
    try:
        resolved = resolve_model(project, args.model)
        model, cfg, meta = load_checkpoint(resolved.path, device="cpu")
        samples, names = None, None
        if args.int8:
            from pollenstudio.engine.dataset import data_from_project

            data = data_from_project(project, list(cfg.class_names))
            samples = [s for s in data.samples if Path(s.path).is_file()]
            names = data.class_names
            if not samples:
                raise PollenStudioError("the project has no reviewed image to calibrate INT8 on; review some images first")
        log(f"model {resolved.path}" + (f" (version {resolved.version_id})" if resolved.version_id else ""))
        summary = export_model(model, cfg, out, args.format, args.imgsz, args.yolo, args.int8, samples, names,
                               meta, file_sha256(resolved.path), threads=torch.get_num_threads(),
                               calib_limit=args.calib_images, log=log)
    finally:
        if project is not None:
            project.close()
    summary["model"] = str(resolved.path)
    if args.yolo and args.format == "onnx":
        yaml = out.with_suffix(".yaml")
        yaml.write_text(xanylabeling_config(out, cfg), encoding="utf-8")
        summary["xanylabeling_config"] = str(yaml)
    if args.json:
        print_json(summary)
        return 0
    for f in summary["files"]:
        print(f"wrote {f}")
    if "xanylabeling_config" in summary:
        print(f"wrote {summary['xanylabeling_config']} (X-AnyLabeling model config)")
    if args.int8:
        print(
            f"INT8 vs float32 on {summary['scored_images']} reviewed image(s) (calibrated on "
            f"{summary['calibration_images']} of them): mAP@.5 {summary['map50_fp32']:.4f} -> {summary['map50_int8']:.4f} "
            f"({summary['map50_change']:+.4f}), mAP@.5:.95 {summary['map50_95_fp32']:.4f} -> "
            f"{summary['map50_95_int8']:.4f} ({summary['map50_95_change']:+.4f})"
        )
    return 0
