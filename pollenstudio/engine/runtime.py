"""Inference backends: which engine runs the detector's forward pass.

``torch`` runs the PyTorch deploy form (any device). ``onnxruntime`` and ``openvino`` run the
raw-form ONNX export of the same deploy model (:mod:`pollenstudio.engine.export`, cached per
model and input size) on the CPU. Only the forward pass changes: letterbox, tiles, blank-tile
skipping, post-processing (decode, NMS), tile merging and the same-grain fold stay the
predictor's own, so every backend returns the same detections (tests/unit/test_backends.py:
boxes within 0.5 px, scores within 1e-3). Edge maps and Grad-CAM always run on PyTorch.

``auto``: PyTorch on a GPU (CUDA or Apple MPS); on the CPU the fastest installed runtime,
OpenVINO, then ONNX Runtime (issue 21's probe: 220 and 217 ms against PyTorch's 255-276 ms
for a 640 px frame), else PyTorch. ``POLLENSTUDIO_BACKEND`` sets what ``auto`` means for the
command line and the app (the test suite sets it to ``torch``).
"""

from __future__ import annotations

import os

import numpy as np

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.engine.export import RuntimeMissingError, cached_onnx, installed

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
CPU_RUNTIMES = ("openvino", "onnxruntime")  # fastest first
_MODULES = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino", "onnx", "onnxscript")}


class BackendError(PollenStudioError):
    """A backend that cannot run here (unknown name, not installed, or not for this device)."""


def installed_runtimes() -> list[str]:
    """The CPU runtimes that are installed (with what exporting to them needs), fastest first."""
    return [r for r in CPU_RUNTIMES if all(installed(m) for m in _MODULES[r])]


def default_backend(strict: bool = True) -> str:
    """What the CLI and the app use unless told: ``$POLLENSTUDIO_BACKEND``, else auto. A value
    that names no backend is a :class:`BackendError` in words (a typo must not silently run
    another backend); ``strict=False`` (the app, which says so in its status bar) reads it
    as auto instead."""
    raw = os.environ.get("POLLENSTUDIO_BACKEND", "auto")
    v = raw.strip().lower() or "auto"
    if v in BACKENDS:
        return v
    if strict:
        raise BackendError(backend_env_problem() or "")
    return "auto"


def backend_env_problem() -> str | None:
    """What is wrong with ``$POLLENSTUDIO_BACKEND``, or None when it is unset or valid."""
    raw = os.environ.get("POLLENSTUDIO_BACKEND", "auto")
    if (raw.strip().lower() or "auto") in BACKENDS:
        return None
    return (f"the environment variable POLLENSTUDIO_BACKEND is set to {raw[:40]!r}, which is not a backend "
            f"PollenStudio knows; set it to one of {', '.join(BACKENDS)}, or unset it (auto)")


def resolve_backend(spec: str | None, device_type: str = "cpu") -> str:
    """"torch", "onnxruntime" or "openvino" for a backend choice on a device type."""
    s = (spec or "auto").strip().lower()
    if s not in BACKENDS:
        raise BackendError(f"unknown backend {spec!r}; use {', '.join(BACKENDS)}")
    if s == "auto":
        if device_type != "cpu":
            return "torch"
        rts = installed_runtimes()
        return rts[0] if rts else "torch"
    if s != "torch":
        if device_type != "cpu":
            raise BackendError(f"the {s} backend runs on the CPU only; use --backend torch (or auto) on a GPU")
        missing = [m for m in _MODULES[s] if not installed(m)]
        if missing:
            raise RuntimeMissingError(
                f"the {s} backend needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
                "install it with: pip install 'pollenstudio[cpu-fast]' (or use --backend torch)"
            )
    return s


class OnnxRuntimeBackend:
    """Raw-form ONNX in ONNX Runtime (CPU). ``__call__``: (B, 3, S, S) float32 -> 3 arrays."""

    name = "onnxruntime"

    def __init__(self, onnx_path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = str(onnx_path)
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})

    def describe(self) -> str:
        return "ONNX Runtime"


class OpenVINOBackend:
    """The same ONNX file compiled by OpenVINO for the CPU, float32 inference precision
    (OpenVINO would otherwise pick bf16/fp16 on CPUs that have it: outputs then differ from
    PyTorch by ~1e-2)."""

    name = "openvino"

    def __init__(self, model_path, threads: int = 1):
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": max(1, int(threads)), "INFERENCE_PRECISION_HINT": "f32",
               "PERFORMANCE_HINT": "LATENCY"}
        self.path = str(model_path)
        self.compiled = core.compile_model(core.read_model(self.path), "CPU", cfg)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        res = self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        return [np.array(res[o]) for o in self.compiled.outputs]

    def describe(self) -> str:
        return "OpenVINO"


def open_runtime(name: str, model_path, threads: int = 1):
    """A backend object for an ONNX (or, for OpenVINO, IR .xml) file."""
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model_path, threads)
    if name == "openvino":
        return OpenVINOBackend(model_path, threads)
    raise BackendError(f"{name!r} is not a runtime backend")


def runtime_for_model(name: str, model, cfg, imgsz: int, source=None, meta: dict | None = None, threads: int = 1):
    """Export ``model`` (cached) and open it in runtime ``name``."""
    path = cached_onnx(model, cfg, imgsz, source, meta)
    return open_runtime(name, path, threads)
