"""Export a detector for other runtimes: ONNX (raw or the common YOLO convention), OpenVINO IR,
INT8 by post-training quantisation, and the export cache the CPU backends use.

Two ONNX forms, both of the *deploy* model (Conv+BN folded, OmniKernel branches folded into
one kxk depthwise kernel computed as a direct convolution: ONNX Runtime runs that faster than
the FFT form, issue 21):

- ``raw``: input ``images`` (B, 3, S, S) float RGB in [0, 1]; outputs ``p3``, ``p4``, ``p5``,
  the three raw level tensors (B, 4*reg_max + nc, S/s, S/s) exactly as the PyTorch model gives
  them. :class:`pollenstudio.engine.predict.Predictor` runs its own post-processing on them,
  so a runtime backend gives the same detections as PyTorch. Batch is dynamic.
- ``yolo``: one output ``output0`` (1, 4 + nc, anchors): per anchor the box as centre x,
  centre y, width, height in input pixels, then nc sigmoid class scores: what X-AnyLabeling's
  YOLO loader and most YOLOv8-style tools decode (see docs/DEPLOY.md). Batch 1.

Metadata (``metadata_props``) of both: ``names`` ({index: name} as Ultralytics writes it),
``imgsz``, ``stride``, ``task`` (detect), ``preprocessing`` (JSON: RGB, /255, letterbox with
grey 114 padding, 16-bit scaling), ``pollenstudio`` (JSON: form, class names, grain sizes the
model was trained on, source sha256).

Needs the optional extra ``pip install pollenstudio[cpu-fast]`` (onnx, onnxscript,
onnxruntime, openvino); without it every entry point raises :class:`RuntimeMissingError`
saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from pollenstudio.core.atomic import new_file_mode
from pollenstudio.core.errors import PollenStudioError

OPSET = 18
EXPORT_VERSION = 1  # bump when the exported graph changes: old cache entries are not reused
PREPROCESSING = {
    "layout": "NCHW",
    "channels": "RGB",
    "dtype": "float32",
    "scale": "1/255 (pixel values 0..1)",
    "resize": "letterbox: keep aspect ratio, scale to fit imgsz x imgsz, centre, pad with grey 114",
    "16bit": "linear map of the 0.1..99.9 percentiles of the whole image to 0..255, then as 8-bit",
    "tiling": "images over twice imgsz: imgsz tiles at native resolution, 25 % overlap",
}


class RuntimeMissingError(PollenStudioError):
    """An optional inference runtime (ONNX, ONNX Runtime, OpenVINO) is not installed."""


class ExportError(PollenStudioError):
    """A model could not be exported or quantised."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(*modules: str, what: str = "this") -> None:
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise RuntimeMissingError(
            f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            "install the CPU runtimes with: pip install 'pollenstudio[cpu-fast]'"
        )


# ----------------------------------------------------------------------------------------
# graphs
# ----------------------------------------------------------------------------------------


def _wrappers():
    import torch
    from torch import nn

    from pollenstudio.detector.head import decode

    class RawOutputs(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return tuple(self.model(x))

    class YoloOutputs(nn.Module):
        """(B, 4 + nc, A): xywh in input pixels, then sigmoid class scores."""

        def __init__(self, model, strides, reg_max):
            super().__init__()
            self.model = model
            self.strides = [int(s) for s in strides]
            self.reg_max = int(reg_max)

        def forward(self, x):
            boxes, logits, _ = decode(self.model(x), self.strides, self.reg_max)
            xy = (boxes[..., :2] + boxes[..., 2:]) * 0.5
            wh = boxes[..., 2:] - boxes[..., :2]
            return torch.cat((xy, wh, logits.sigmoid()), -1).transpose(1, 2)

    return RawOutputs, YoloOutputs


def deploy_for_export(model):
    """The deploy form with the large kernel as a direct convolution (what ONNX runtimes run fast)."""
    from pollenstudio.detector.deploy import deploy_model

    model = model.to("cpu")
    return model if getattr(model, "deployed", False) else deploy_model(model, method="direct")


def metadata(cfg, imgsz: int, form: str, meta: dict | None = None, sha: str = "") -> dict[str, str]:
    names = {i: n for i, n in enumerate(cfg.class_names)}
    own = {
        "form": form,
        "class_names": list(cfg.class_names),
        "grain_size_px": (meta or {}).get("grain_size_px"),
        "source_sha256": sha,
        "export_version": EXPORT_VERSION,
        "reg_max": int(cfg.reg_max),
        "strides": [8, 16, 32],
    }
    return {
        "names": repr(names),
        "imgsz": repr([int(imgsz), int(imgsz)]),
        "stride": "32",
        "task": "detect",
        "batch": "1" if form == "yolo" else "dynamic",
        "description": "HieraEdgeNet pollen detector (PollenStudio)",
        "author": "PollenStudio",
        "preprocessing": json.dumps(PREPROCESSING),
        "pollenstudio": json.dumps(own),
    }


def export_onnx(model, cfg, path, imgsz: int | None = None, form: str = "raw", meta: dict | None = None,
                sha: str = "") -> Path:
    """Write the deploy form of ``model`` (training or deploy form) as ONNX to ``path``.

    form: "raw" (three level outputs, dynamic batch) or "yolo" (one decoded output, batch 1).
    Written atomically (a temporary file renamed into place)."""
    require("onnx", "onnxscript", what="ONNX export")
    import warnings

    import onnx
    import torch

    imgsz = int(imgsz or cfg.imgsz)
    if imgsz % 32 or imgsz < 32:
        raise ExportError(f"export size must be a positive multiple of 32, got {imgsz}")
    if form not in ("raw", "yolo"):
        raise ExportError(f"unknown ONNX form {form!r}; use raw or yolo")
    path = Path(path)
    RawOutputs, YoloOutputs = _wrappers()
    dm = deploy_for_export(model)
    if form == "raw":
        net, outputs = RawOutputs(dm).eval(), ["p3", "p4", "p5"]
    else:
        net, outputs = YoloOutputs(dm, getattr(dm, "strides", (8, 16, 32)), cfg.reg_max).eval(), ["output0"]
    x = torch.rand(2 if form == "raw" else 1, 3, imgsz, imgsz)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if form == "raw" else None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _quiet_loggers():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (x,), tmp, dynamo=True, opset_version=OPSET, input_names=["images"], output_names=outputs,
                dynamic_shapes=dynamic, verbose=False, external_data=False,
            )
        m = onnx.load(tmp)
        for k, v in metadata(cfg, imgsz, form, meta, sha).items():
            e = m.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(m, tmp)
        os.chmod(tmp, new_file_mode(path))  # like any other file of the user's, not mkstemp's 0600
        os.replace(tmp, path)
    except PollenStudioError:
        raise
    except Exception as exc:
        raise ExportError(f"could not export the model to ONNX: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def _quiet_loggers(names=("onnxscript", "torch.onnx", "torch.export")):
    """The exporter's rewriter logs every rule it tries at INFO (hundreds of lines on the
    app's stderr at a first detection): keep those loggers at WARNING while it runs."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def export_openvino(onnx_path, out_xml) -> Path:
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin``), metadata kept in rt_info."""
    require("openvino", "onnx", what="OpenVINO export")
    import onnx
    import openvino as ov

    out_xml = Path(out_xml)
    if out_xml.suffix != ".xml":
        out_xml = out_xml.with_suffix(".xml")
    ovm = ov.convert_model(str(onnx_path))
    for e in onnx.load(str(onnx_path), load_external_data=False).metadata_props:
        ovm.set_rt_info(e.value, ["model_info", e.key])
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ovm, str(out_xml), compress_to_fp16=False)
    return out_xml


def read_metadata(onnx_path) -> dict[str, str]:
    require("onnx", what="reading ONNX metadata")
    import onnx

    return {e.key: e.value for e in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


# ----------------------------------------------------------------------------------------
# INT8
# ----------------------------------------------------------------------------------------


def quantize_int8(onnx_in, onnx_out, calibration: list[np.ndarray]) -> Path:
    """Static post-training INT8 quantisation (ONNX Runtime, QDQ, per-channel weights,
    8-bit activations calibrated by min/max on ``calibration``: model inputs (S, S, 3)
    uint8 as the predictor feeds them). The output runs in ONNX Runtime and OpenVINO."""
    require("onnxruntime", "onnx", what="INT8 quantisation")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportError("INT8 calibration needs at least one image")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            arr = next(self.items, None)
            if arr is None:
                return None
            x = np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
            return {"images": x}

    onnx_out = Path(onnx_out)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        try:
            quant_pre_process(str(onnx_in), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantise the original when it fails
            pre = Path(onnx_in)
        import onnx

        # depthwise convolutions (the 31x31 OmniKernel and the head's 3x3) stay float: they
        # are a small share of the arithmetic, and quantised they were slower, not faster
        # (measured on the shipped model, 640 px, 1 thread: OpenVINO int8 with them quantised
        # took over 45 s per frame instead of 0.13 s; ONNX Runtime 0.167 vs 0.174 s)
        depthwise = [
            n.name for n in onnx.load(str(pre), load_external_data=False).graph.node
            if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
        ]
        try:
            quantize_static(
                str(pre), str(onnx_out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                # the frequency-gating FFT path and the box distribution stay float too
                op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=depthwise,
            )
        except Exception as exc:
            raise ExportError(f"INT8 quantisation failed: {exc}") from exc
    src = onnx.load(str(onnx_in), load_external_data=False)
    q = onnx.load(str(onnx_out))
    have = {e.key for e in q.metadata_props}
    for e in src.metadata_props:
        if e.key not in have:
            n = q.metadata_props.add()
            n.key, n.value = e.key, e.value
    n = q.metadata_props.add()
    n.key, n.value = "quantization", ("int8 static (onnxruntime QDQ, per-channel weights, min/max calibration; "
                                      "depthwise convolutions float)")
    onnx.save(q, str(onnx_out))
    return onnx_out


def quantize_int8_openvino(onnx_in, out_xml, calibration: list[np.ndarray]) -> Path:
    """Static post-training INT8 quantisation for OpenVINO with NNCF (OpenVINO's own
    quantiser), written as OpenVINO IR. Same calibration inputs as :func:`quantize_int8`.

    Two parts stay float, both measured on the shipped six-taxon model, 640 px, 1 thread,
    OpenVINO 2026.4 (`bench/latency.py --backends`):
    - the large (31x31) depthwise convolution: quantised, OpenVINO has no fast kernel for it;
    - every Multiply: NNCF otherwise quantises both inputs of SiLU's x * sigmoid(x), which
      stops OpenVINO fusing the activation into its convolution (Sigmoid alone took a fifth
      of the time); float, the INT8 model ran 1.6x faster than with them quantised.
    """
    require("openvino", "nncf", what="INT8 quantisation with NNCF")
    import nncf
    import openvino as ov

    if not calibration:
        raise ExportError("INT8 calibration needs at least one image")
    out_xml = Path(out_xml)
    if out_xml.suffix != ".xml":
        out_xml = out_xml.with_suffix(".xml")
    ovm = ov.convert_model(str(onnx_in))
    large_dw = [
        op.get_friendly_name() for op in ovm.get_ordered_ops()
        if op.get_type_name() == "GroupConvolution" and op.input(1).get_partial_shape()[-1].get_length() > 5
    ]

    def transform(arr):
        return np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0

    nncf.set_log_level(logging.WARNING)
    try:
        # NNCF draws progress bars on stdout, which is the JSON channel of `--json`
        with contextlib.redirect_stdout(sys.stderr):
            q = nncf.quantize(
                ovm, nncf.Dataset(calibration, transform), preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(calibration),
                ignored_scope=nncf.IgnoredScope(names=large_dw, types=["Multiply"], validate=False),
            )
    except Exception as exc:
        raise ExportError(f"INT8 quantisation failed: {exc}") from exc
    import onnx

    for e in onnx.load(str(onnx_in), load_external_data=False).metadata_props:
        q.set_rt_info(e.value, ["model_info", e.key])
    q.set_rt_info("int8 static (NNCF, OpenVINO; large depthwise convolution and Multiply float)",
                  ["model_info", "quantization"])
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return out_xml


# ----------------------------------------------------------------------------------------
# cache: one export per model (by content) and input size
# ----------------------------------------------------------------------------------------


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_sha256(model) -> str:
    """A content hash of a model's tensors (a model that has no file of its own)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def user_cache_dir() -> Path:
    env = os.environ.get("POLLENSTUDIO_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pollenstudio"


def cache_path(source: str | os.PathLike | None, sha: str, imgsz: int, form: str = "raw") -> Path:
    """Where the export of a model lives: ``<model file>.exports/`` next to the model when
    that folder is writable, else the user cache (``$POLLENSTUDIO_CACHE`` or
    ``~/.cache/pollenstudio/exports``). Keyed by the model's sha256 and the input size."""
    name = f"{sha[:16]}-{int(imgsz)}-{form}-v{EXPORT_VERSION}.onnx"
    if source:
        p = Path(source)
        folder = p.with_name(p.name + ".exports")
        try:
            folder.mkdir(exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder / name
        except OSError:
            pass
    return user_cache_dir() / "exports" / name


def cached_onnx(model, cfg, imgsz: int, source: str | os.PathLike | None = None, meta: dict | None = None) -> Path:
    """The raw-form ONNX export of ``model`` at ``imgsz``, exported once and then reused."""
    sha = file_sha256(source) if source and Path(source).is_file() else model_sha256(model)
    path = cache_path(source if source and Path(source).is_file() else None, sha, imgsz)
    if not path.is_file():
        export_onnx(model, cfg, path, imgsz, "raw", meta, sha)
    return path


def copy_atomic(src, dst) -> None:
    """Copy a file into place atomically (a temporary name renamed)."""
    import shutil

    tmp = Path(str(dst) + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
