"""The export job behind ``pollenstudio export-model``: a model version or file to ONNX or
OpenVINO, optionally INT8 calibrated on a project's reviewed images with the mAP change
measured by the target runtime. Graph export and quantisation are :mod:`.export`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from pollenstudio.engine.export import (
    ExportError,
    copy_atomic,
    export_onnx,
    export_openvino,
    installed,
    quantize_int8,
    quantize_int8_openvino,
    require,
)


# ----------------------------------------------------------------------------------------
# the export job: model version or file -> ONNX / OpenVINO, optionally INT8 with its mAP change
# ----------------------------------------------------------------------------------------


def letterboxed_inputs(paths, imgsz: int, limit: int = 64) -> list[np.ndarray]:
    """Model inputs (S, S, 3) uint8 the way the predictor makes them: whole frames
    letterboxed; a scan over twice the input gives its centre tile (native resolution), read
    by region (a whole-slide file is never decoded whole)."""
    from pollenstudio.core.slide import slide_pixels
    from pollenstudio.engine.tiling import intensity_range, letterbox, to_model_uint8

    out = []
    for p in list(paths)[:limit]:
        img = slide_pixels(p, plane=0)
        h, w = img.shape[:2]
        rng = intensity_range(img)  # a strided sample (from a reduced level of a slide)
        if max(h, w) > 2 * imgsz:
            y0, x0 = max(0, h // 2 - imgsz // 2), max(0, w // 2 - imgsz // 2)
            img = img[y0 : y0 + imgsz, x0 : x0 + imgsz]
        else:
            img = img[:, :]
        out.append(letterbox(to_model_uint8(img, rng), imgsz)[0])
    return out


def evaluate_runtime(model_path, runtime: str, model, cfg, samples, class_names, imgsz: int, threads: int = 1):
    """COCO metrics (engine.evaluate) of an exported raw-form model run by ``runtime`` over
    ``samples``, with the predictor's own pre- and post-processing (mAP protocol: conf 0.001)."""
    from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, evaluate_detections
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.runtime import open_runtime

    pred = Predictor(model, cfg, device="cpu", conf=0.001, iou=0.7, max_det=300, tile="auto", fuse=False,
                     imgsz=imgsz, backend="torch")
    pred.merge_same_grain = False
    pred.runtime = open_runtime(runtime, model_path, threads)
    pred.backend = runtime
    names = list(class_names)
    for n in cfg.class_names:
        if n not in names:
            names.append(n)
    remap = np.array([names.index(n) for n in cfg.class_names], np.int64)
    preds = []
    for res in pred.iter_predict([s.path for s in samples]):
        d = [x for x in res.detections if x.class_index >= 0 and not x.withdrawn]  # named grains only
        cls = np.array([x.class_index for x in d], np.int64)
        preds.append(ImagePreds(np.array([x.box.xyxy() for x in d], np.float64).reshape(-1, 4),
                                np.array([x.score for x in d], np.float64), remap[cls] if len(cls) else cls))
    truths = [ImageTruth(s.boxes, s.classes, s.width, s.height) for s in samples]
    return evaluate_detections(truths, preds, names)


def export_model(model, cfg, out, fmt: str = "onnx", imgsz: int | None = None, yolo: bool = False,
                 int8: bool = False, samples=None, class_names=None, meta: dict | None = None, sha: str = "",
                 threads: int = 1, calib_limit: int = 64, log=None) -> dict:
    """Write ``model`` to ``out`` as ONNX (``fmt="onnx"``) or OpenVINO IR (``"openvino"``).

    ``yolo``: the YOLO-convention graph (one decoded output) instead of the raw one.
    ``int8``: static INT8 quantisation calibrated on ``samples`` (reviewed images: objects
    with ``path``, ``boxes``, ``classes``, ``width``, ``height``; ``class_names`` indexes
    them); mAP@.5 and mAP@.5:.95 are measured with the target runtime on those same images
    for the float32 and the INT8 model (raw form; the YOLO form is quantised with the same
    calibration). For OpenVINO the quantiser is NNCF when installed, else ONNX Runtime
    (``summary["quantizer"]``). Returns a summary dict (paths, sizes, metrics).
    """
    log = log or (lambda msg: None)
    if fmt not in ("onnx", "openvino"):
        raise ExportError(f"unknown format {fmt!r}; use onnx or openvino")
    # INT8 for OpenVINO: NNCF, OpenVINO's own quantiser, when installed (faster INT8 models
    # on OpenVINO, see quantize_int8_openvino); otherwise ONNX Runtime's QDQ, which both run
    use_nncf = bool(int8) and fmt == "openvino" and installed("nncf")
    need = ["onnx", "onnxscript"] + (["openvino"] if fmt == "openvino" else []) + (["onnxruntime"] if int8 and not use_nncf else [])
    require(*need, what=f"export to {fmt}" + (" with INT8" if int8 else ""))
    imgsz = int(imgsz or cfg.imgsz)
    if int8 and not samples:
        raise ExportError("INT8 needs reviewed images to calibrate on: give a project with reviewed images")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name")
    form = "yolo" if yolo else "raw"
    summary: dict = {"format": fmt, "form": form, "imgsz": imgsz, "int8": bool(int8), "classes": list(cfg.class_names)}
    runtime = "openvino" if fmt == "openvino" else "onnxruntime"
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        log(f"exporting the deploy form to ONNX ({form}, {imgsz} px)")
        raw32 = export_onnx(model, cfg, td / "raw32.onnx", imgsz, "raw", meta, sha)
        final = raw32 if form == "raw" else export_onnx(model, cfg, td / "yolo32.onnx", imgsz, "yolo", meta, sha)
        if int8:
            calib = letterboxed_inputs([s.path for s in samples], imgsz, calib_limit)
            log(f"quantising to INT8 ({'NNCF' if use_nncf else 'ONNX Runtime'}), calibrated on {len(calib)} reviewed image(s)")
            quantize = quantize_int8_openvino if use_nncf else quantize_int8
            ext = ".xml" if use_nncf else ".onnx"
            raw8 = quantize(raw32, td / f"raw8{ext}", calib)
            final = raw8 if form == "raw" else quantize(final, td / f"yolo8{ext}", calib)
            summary["quantizer"] = "nncf" if use_nncf else "onnxruntime"

            def scored(path):
                if runtime == "openvino" and path.suffix != ".xml":
                    path = export_openvino(path, path.with_suffix(".xml"))
                return evaluate_runtime(path, runtime, model, cfg, samples, class_names, imgsz, threads)

            log(f"measuring mAP of float32 and INT8 on {len(samples)} reviewed image(s) with {runtime}")
            r32, r8 = scored(raw32), scored(raw8)
            summary.update(
                map50_fp32=r32.map50, map50_int8=r8.map50, map50_change=r8.map50 - r32.map50,
                map50_95_fp32=r32.map50_95, map50_95_int8=r8.map50_95, map50_95_change=r8.map50_95 - r32.map50_95,
                scored_images=len(samples), calibration_images=len(calib),
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "onnx":
            if out.suffix.lower() != ".onnx":
                out = out.with_suffix(out.suffix + ".onnx") if out.suffix else out.with_suffix(".onnx")
            copy_atomic(final, out)
            summary["files"] = [str(out)]
        elif final.suffix == ".xml":  # already OpenVINO IR (NNCF INT8)
            xml = out if out.suffix == ".xml" else out.with_suffix(".xml")
            copy_atomic(final.with_suffix(".bin"), xml.with_suffix(".bin"))
            copy_atomic(final, xml)
            summary["files"] = [str(xml), str(xml.with_suffix(".bin"))]
        else:
            xml = export_openvino(final, out)
            summary["files"] = [str(xml), str(xml.with_suffix(".bin"))]
    summary["bytes"] = sum(Path(f).stat().st_size for f in summary["files"])
    return summary


def xanylabeling_config(onnx_path, cfg, conf: float = 0.25, iou: float = 0.45) -> str:
    """The X-AnyLabeling model config (YAML) that loads a YOLO-form export as a ``yolov8`` model."""
    p = Path(onnx_path)
    lines = [
        "type: yolov8",
        f"name: {p.stem}",
        "provider: PollenStudio",
        f"display_name: HieraEdgeNet ({p.stem})",
        f"model_path: {p.name}",
        f"nms_threshold: {iou}",
        f"confidence_threshold: {conf}",
        "classes:",
        *[f"  - {json.dumps(n)}" for n in cfg.class_names],
    ]
    return "\n".join(lines) + "\n"
