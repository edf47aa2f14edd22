"""Run a detector over images: device choice, letterboxed batches, tiles, Detections.

``Predictor`` wraps one loaded model version. It takes images of any size and type the
core reader returns (8/16-bit, grey/RGB) and returns :class:`Detection` objects in original
image pixels::

    pred = Predictor.from_checkpoint("models/default.safetensors", device="auto")
    dets = pred.predict(image)                      # one array -> list[Detection]
    for res in pred.iter_predict(paths, progress):  # many files, streaming, cancellable
        ...                                         # res.detections or res.error

Work is cut into *units* (a whole image letterboxed to the model input, or one tile of a
large image) and units of consecutive images share batches. ``progress.check()`` runs
before each batch, so a cancel stops the job within one batch; an image's result is only
yielded once all its tiles are done, so a consumer never sees half an image.

Whole-slide scans (``core.slide.Slide.lazy``: a pyramidal or very large tiled TIFF, given
as a path or an open ``Slide``) are never decoded whole: each model tile is read from the
file as a region (with its overlap, at the calibrated scale: from the pyramid level nearest
the needed scale, then resized), blank tiles are judged from a low-resolution level of the
file (:func:`slide_content_map`), and the tiles' boxes are folded across seams exactly as
for a decoded image. Memory is one tile, one batch and the content map (bounded by
``MAX_MAP_CELLS``), whatever the slide's size. Every other image takes the decoded path.

Hooks for long images (``iter_predict``): ``on_tile(index, tile, detections)`` is called
after every model tile with that tile's own boxes in image pixels (before the seam fold:
a preview for a view, not proposals); ``journal(index, plan)`` may hand back a tile
journal (``engine.detect_job.TileJournal``) so finished tiles are kept on disk and not run
again after a cancel or a crash. While a tiled image is in flight the progress message is
``"<name>: tile 312 of 1,147 · 2 min left"`` (:func:`tile_progress` reads it back).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pollenstudio.core.errors import CheckpointError, ImageReadError, PollenStudioError
from pollenstudio.core.imageio import read_image
from pollenstudio.core.progress import NullProgress, Progress
from pollenstudio.core.types import DEFAULT_CONF, Box, Detection
from pollenstudio.engine.tiling import (
    Letterbox,
    blank_tiles,
    content_map,
    intensity_range,
    join_fragments,
    letterbox,
    merge_tile_detections,
    plan_tiles,
    resolve_tile_size,
    to_model_uint8,
)

DEFAULT_OVERLAP = 0.25  # share of the tile side; >= the largest grain at 640 px tiles
TILE_PROGRESS = "{name}: tile {k:,} of {n:,}"  # progress message while a tiled image is in flight (+ " · ETA")
MAX_MAP_CELLS = 24_000_000  # blank-tile content map of a slide: at most this many cells (coarser beyond)


def tile_progress(message: str) -> tuple[str, int, int] | None:
    """(image name, tiles done, tiles) from a progress message written while a tiled image
    was in flight (``"name: tile 312 of 1,147 · 2 min left"``, or the older ``"name: tile
    312/1147"``), else None: lets a progress bar move within one large scan."""
    import re

    m = re.fullmatch(r"(.*): tile ([\d,]+)(?:/| of )([\d,]+)(?: · .*)?", message or "")
    if m is None:
        return None
    return m.group(1), int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))


def format_left(seconds: float | None) -> str:
    """"2 min left", "40 s left", "1 h 05 min left"; "" when unknown."""
    if seconds is None or not np.isfinite(seconds):
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s left"
    if s < 3600:
        return f"{int(round(s / 60))} min left"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min left"


class DeviceUnavailableError(PollenStudioError):
    """The requested compute device does not exist on this machine."""


# ----------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------


GPU_BATCH = 8  # model inputs per forward pass on a GPU, where a batch keeps it busy


def default_batch(device) -> int:
    """Model inputs per forward pass when none is asked for: ``GPU_BATCH`` on a GPU, 1 on a
    CPU. On a CPU a batch is no faster (a 2592 x 1944 field, 1 thread: 5.7 s one tile at a
    time against 6.9 s in batches of 8) and costs memory: the activations of 8 tiles at
    once (+0.4 GB in PyTorch), which OpenVINO and ONNX Runtime keep for as long as the
    model stays loaded (+0.47 GB in the app)."""
    return 1 if getattr(device, "type", str(device)) == "cpu" else GPU_BATCH


def select_device(spec: str | None = "auto"):
    """``"auto"`` (CUDA, then Apple MPS, then CPU), or an explicit ``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"``. Returns a ``torch.device``; an unavailable explicit device raises
    :class:`DeviceUnavailableError` rather than silently running somewhere else."""
    import torch

    s = (spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if s.isdigit():
        s = f"cuda:{s}"
    try:
        dev = torch.device(s)
    except RuntimeError:
        raise DeviceUnavailableError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                "CUDA was requested but this PyTorch has no CUDA GPU available "
                "(install a CUDA build of torch, or use --device cpu)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"GPU {dev.index} does not exist (this machine has {torch.cuda.device_count()})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceUnavailableError("Apple MPS was requested but is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise DeviceUnavailableError(f"unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def gpu_choices() -> list[tuple[str, str]]:
    """(device spec, label) of each CUDA GPU, e.g. ("cuda:0", "GPU 0: NVIDIA H200"); [] without one."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [(f"cuda:{i}", f"GPU {i}: {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]


def describe_device(device) -> str:
    """Short human-readable device name for a status bar: "CUDA: NVIDIA H100", "CPU, 2 threads"."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"CUDA: {torch.cuda.get_device_name(idx)}"
    if dev.type == "mps":
        return "Apple GPU (MPS)"
    n = torch.get_num_threads()
    return f"CPU, {n} thread{'s' if n != 1 else ''}"


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------


@dataclass
class ImageResult:
    """Detections for one input, in input order. ``error`` is set (and ``detections``
    empty) when the image could not be read."""

    index: int
    name: str
    detections: list[Detection] = field(default_factory=list)
    width: int = 0
    height: int = 0
    tiles: int = 0  # model inputs planned: 1 for a letterboxed image, the tile count when tiled (skipped ones included)
    error: str | None = None
    cap: int = 0  # the most detections this image could keep (scales with its tiles)
    dropped: int = 0  # detections over ``cap`` that were dropped: reported, never silent
    units_capped: int = 0  # model inputs (tiles) whose own output hit max_det: more may be there
    merged: int = 0  # boxes folded into another box on the same grain (their taxa kept in top-k)
    skipped: int = 0  # tiles not run because they hold nothing (plain background), of ``tiles``
    size_dropped: int = 0  # boxes far outside the calibrated grain size, dropped (engine.scale.size_weights)
    resumed: int = 0  # tiles whose boxes came from a tile journal (run before a cancel or crash), of ``tiles``

    @property
    def capped(self) -> bool:
        """A cap was hit: grains may be missing from ``detections``."""
        return self.dropped > 0 or self.units_capped > 0


@dataclass
class _ImageState:
    index: int
    name: str
    width: int = 0
    height: int = 0
    expected: int = -1  # units planned; -1 until known
    received: int = 0
    tiles: list = field(default_factory=list)  # Tile objects when tiled
    parts: list = field(default_factory=list)  # per unit: (boxes, scores, classes, probs, levels, tile index)
    error: str | None = None
    resample: object | None = None  # engine.scale.Resample when calibrated: boxes map back through it
    grain: float | None = None  # calibrated typical grain diameter (original px): boxes far off it lose weight
    band: tuple | None = None  # size band for them (engine.scale.size_band), None: SIZE_BAND
    units_capped: int = 0  # units whose own output hit max_det (more may have been there)
    skipped: int = 0  # blank tiles not run
    image: np.ndarray | None = None  # the decoded image, kept only while a taxon classifier needs its crops
    slide: object | None = None  # a whole-slide source (core.slide.Slide), read by region
    own_slide: bool = False  # opened here from a path: closed when the image is done
    journal: object | None = None  # its tile journal (finished tiles on disk), or None
    resumed: int = 0  # tiles taken from the journal
    on_tile: object | None = None  # callback(index, tile, detections) after each tile
    plane: int | str = 0  # the plane (or "edf" view) of a whole-slide source that is detected
    t_run: float = 0.0  # when its first tile ran in this session (for the ETA)
    ran: int = 0  # tiles run in this session

    @property
    def complete(self) -> bool:
        return self.expected >= 0 and self.received >= self.expected


# ----------------------------------------------------------------------------------------
# one grain, one box
# ----------------------------------------------------------------------------------------


def same_grain_groups(
    boxes: np.ndarray, scores: np.ndarray, iou: float = 0.55, cover: float = 0.9, min_area_ratio: float = 0.4
) -> tuple[np.ndarray, dict[int, list[int]]]:
    """Class-agnostic suppression of boxes on the same grain.

    Greedy, best score first: a box is folded into a better one when their IoU is at least
    ``iou``, or when at least ``cover`` of it lies inside the better box and it is not much
    smaller (area at least ``min_area_ratio`` of it: one sac of a bisaccate grain, not a small
    grain lying on a large one). Returns (indices kept, best first; {kept index: [folded
    indices]}).
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64), {}
    b = np.asarray(boxes, np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    alive = np.ones(n, bool)
    keep: list[int] = []
    groups: dict[int, list[int]] = {}
    for i in order:
        if not alive[i]:
            continue
        alive[i] = False
        keep.append(int(i))
        rest = np.nonzero(alive)[0]
        if not len(rest):
            groups[int(i)] = []
            continue
        iw = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        ih = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou_v = inter / np.maximum(union, 1e-9)
        small = np.minimum(area[i], area[rest])
        big = np.maximum(area[i], area[rest])
        cover_v = inter / np.maximum(small, 1e-9)
        same = (iou_v >= iou) | ((cover_v >= cover) & (small >= min_area_ratio * big))
        members = rest[same]
        alive[members] = False
        groups[int(i)] = [int(m) for m in members]
    return np.asarray(keep, np.int64), groups


# ----------------------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------------------


class Predictor:
    """One model version ready to detect.

    model: a HieraEdgeNet (``model(x)`` -> list of 3 raw level outputs), moved to the
    device and put in eval mode (a trainer calling this for validation switches it back);
    cfg: its ModelConfig (class names, input size). ``half`` (default: on CUDA) runs the model under
    float16 autocast (the detector keeps its FFTs in float32). ``fuse`` uses the deploy
    form (Conv+BN folded, OmniKernel re-parameterised): same detections, faster.
    ``tile``: "auto" | "off" | tile side in pixels (see ``tiling.resolve_tile_size``);
    ``overlap``: share of the tile side that neighbouring tiles share.
    ``grain_size`` / ``um_per_px``: calibration of the images (typical grain diameter in
    pixels, or pixel scale): each image is resampled so its grains land in the size range the
    model was trained on (``meta["grain_size_px"]``), see :mod:`pollenstudio.engine.scale`;
    per image with ``iter_predict(..., grain_sizes=...)``.
    ``skip_blank``: tiles that hold nothing but plain background (a cheap contrast test on a
    downscaled image, :func:`pollenstudio.engine.tiling.content_map`) are not run; with a
    model that records its trained grain sizes, specks too small for its smallest trained
    grains (:attr:`speck_px`) count as background too.
    ``batch``: model inputs (images or tiles) per forward pass; None: :func:`default_batch`.
    ``backend``: "torch" (default), "onnxruntime", "openvino" or "auto" (see
    :mod:`pollenstudio.engine.runtime`): what runs the forward pass of detection; everything
    around it, and edge maps and Grad-CAM, stays the same.

    One grain, one box: boxes of any taxa on the same grain (see :func:`same_grain_groups`)
    are folded into the best one, whose top-k then lists the others' taxa.

    ``taxa``: a :class:`~pollenstudio.engine.classify.TaxonClassifier` (a model version of
    the split design: detector + classifier in one file, loaded by ``from_checkpoint``).
    With one, every detection is named by the classifier (label, top-k with probabilities,
    ``class_names`` = its taxa) and keeps the detector's box and score.
    """

    # Same-grain rule, tuned on crowded synthetic frames with the shipped model (24 frames,
    # 580 grains): duplicate boxes 48 -> 0, true grains lost 6 (grains whose own boxes
    # overlap with IoU > 0.5, which no box rule can tell apart)
    merge_same_grain: bool = True
    grain_iou: float = 0.55  # two boxes overlapping this much mark the same grain ...
    grain_cover: float = 0.9  # ... or one lies this much inside a box ...
    grain_min_area_ratio: float = 0.4  # ... at most 2.5 times its area (one sac of a bisaccate grain)

    def __init__(
        self,
        model,
        cfg,
        *,
        device: str | None = "auto",
        half: bool | None = None,
        conf: float = DEFAULT_CONF,
        iou: float = 0.7,
        max_det: int = 300,
        tile: str | int | None = "auto",
        overlap: float = DEFAULT_OVERLAP,
        batch: int | None = None,
        topk: int = 5,
        imgsz: int | None = None,
        fuse: bool = True,
        meta: dict | None = None,
        source: str = "",
        grain_size: float | None = None,
        um_per_px: float | None = None,
        skip_blank: bool = True,
        backend: str | None = "torch",
        taxa=None,
    ):
        import torch

        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.half = (self.device.type == "cuda") if half is None else bool(half and self.device.type == "cuda")
        self.cfg = cfg
        self.taxa = taxa
        self.class_names = list(taxa.class_names if taxa is not None else cfg.class_names)  # what detections are named
        if taxa is not None and self.class_names and self.class_names[-1] == "not pollen":
            # a classifier's "not pollen" class (rejections, always last) names no grain: it
            # only withdraws proposals, so it is no class of the predictions
            self.class_names.pop()
        self.imgsz = int(imgsz or cfg.imgsz)
        if self.imgsz % 32:
            raise ValueError(f"model input size must be a multiple of 32, got {self.imgsz}")
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        try:  # a bad --tile value is the user's to fix: say so now, not mid-run
            resolve_tile_size(tile, 10**6, 10**6, self.imgsz)
        except ValueError as exc:
            raise PollenStudioError(str(exc)) from None
        self.tile = tile
        if not 0.0 <= overlap < 0.9:
            raise ValueError("tile overlap is a share of the tile side between 0 and 0.9")
        self.overlap = float(overlap)
        self.batch = default_batch(self.device) if batch is None else max(1, int(batch))
        self.topk = max(1, int(topk))
        self.meta = dict(meta or {})
        self.source = source
        from pollenstudio.engine.scale import typical_grain_px

        self.grain_range = self.meta.get("grain_size_px")  # [lo, hi] model-input px, or None
        self.grain_size = typical_grain_px(grain_size, um_per_px)
        if self.grain_size is not None:
            self.resample_factor(self.grain_size)  # a model without a recorded range: say so now
        self.model_version_id: int | None = None  # set when loaded from a project's model version
        model = model.eval()
        # the training form answers Grad-CAM (gradients through the exact layers the paper
        # describes); the fused deploy form runs detection
        # (parameters are left as they are: a trainer may hand in the model it trains; the
        # explainers take gradients w.r.t. features only, never into parameter .grad)
        self.explain_model = model.to(self.device)
        if fuse:
            try:
                from pollenstudio.detector.deploy import deploy_model

                model = deploy_model(model)
            except ImportError:  # deploy form not built in this checkout: training form is exact too
                pass
        self.model = model.to(self.device).eval()
        self.strides = [int(s) for s in getattr(self.model, "strides", (8, 16, 32))]
        # one model, several threads (a detection worker, an explanation request from the
        # GUI): forward passes and the explainers' hooks must not interleave
        self.lock = threading.RLock()
        self.skip_blank = bool(skip_blank)
        self.runtime = None  # a runtime backend object, or None for PyTorch
        self.backend = self._open_backend(backend)
        self.timings = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
        self.images_done = 0

    def _open_backend(self, backend) -> str:
        import torch

        from pollenstudio.engine.runtime import resolve_backend, runtime_for_model

        name = resolve_backend(backend, self.device.type)
        if name != "torch":
            src = self.source if self.source and Path(self.source).is_file() else None
            self.runtime = runtime_for_model(
                name, self.explain_model, self.cfg, self.imgsz, src, self.meta, threads=torch.get_num_threads()
            )
        return name

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> "Predictor":
        """Load a checkpoint file safely (no code from the file is executed)."""
        from pollenstudio.detector.checkpoint import load_checkpoint

        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"model file not found: {p}")
        from pollenstudio.engine.classify import load_classifier

        model, cfg, meta = load_checkpoint(p, device="cpu")
        if "taxa" not in kwargs:
            kwargs["taxa"] = load_classifier(p)
        kwargs.setdefault("meta", meta)
        kwargs.setdefault("source", str(p))
        return cls(model, cfg, **kwargs)

    @classmethod
    def from_default(cls, **kwargs) -> "Predictor":
        """The model shipped in ``models/`` (CheckpointError telling what to do if none)."""
        from pollenstudio.engine.paths import default_model_path

        return cls.from_checkpoint(default_model_path(), **kwargs)

    @classmethod
    def from_project(cls, project, model: str | int | os.PathLike | None = None, **kwargs) -> "Predictor":
        """The model to use for a project, with ``model_version_id`` set for provenance.

        model: a reference for :func:`pollenstudio.engine.models.resolve_model` (None: the
        active version, else the shipped default; a version id or name; a file path) or a
        ``ResolvedModel`` already resolved. A file or the default that is not yet a model
        version of the project is registered as one (not activated), so every proposal
        records which model wrote it; one already registered (same file, same content) is
        reused (:func:`pollenstudio.engine.models.register_model_file`). A model whose class
        names cannot become taxa is refused before the project is touched.
        """
        from pollenstudio.engine.models import ResolvedModel, check_class_names, register_model_file, resolve_model

        resolved = model if isinstance(model, ResolvedModel) else resolve_model(project, model)
        path = resolved.path
        pred = cls.from_checkpoint(path, **kwargs)
        check_class_names(pred.class_names, f"model {Path(path).name}")
        mv_id = resolved.version_id
        if mv_id is None:
            mv_id = register_model_file(project, path, pred.cfg.to_dict(), "detect")
        pred.model_version_id = mv_id
        return pred

    @property
    def speck_px(self) -> float | None:
        """Content pieces too small to be a grain this large (tile pixels = model-input
        pixels: tiles run at native resolution, after any calibration resampling) are dust,
        not grains, for blank-tile skipping: 0.8 x the 5th percentile of the trained grain
        diameters (grains that small are at the edge of what the model finds at all). None
        (keep all) for a model that records no grain sizes."""
        if not self.grain_range:
            return None
        return 0.8 * float(self.grain_range[0])

    def resample_factor(self, grain_px: float) -> float:
        """How much an image whose typical grain is ``grain_px`` wide is resized for this model."""
        from pollenstudio.engine.scale import resample_factor

        return resample_factor(self.grain_range, grain_px)

    @property
    def device_description(self) -> str:
        d = describe_device(self.device)
        if self.runtime is not None:
            return f"{d}, {self.runtime.describe()}"
        return d + (", half precision" if self.half else "")

    def reset_timings(self) -> None:
        for k in self.timings:
            self.timings[k] = 0.0
        self.images_done = 0

    # -- public API --------------------------------------------------------------------
    def predict(self, image: np.ndarray | str | os.PathLike) -> list[Detection]:
        """Detections for one image array (or file); raises ImageReadError for a bad file."""
        res = next(iter(self.iter_predict([image])))
        if res.error:
            raise ImageReadError(res.error)
        return res.detections

    def predict_many(self, sources: Sequence, progress: Progress | None = None) -> list[ImageResult]:
        return list(self.iter_predict(sources, progress))

    def iter_predict(
        self,
        sources: Iterable,
        progress: Progress | None = None,
        names: Sequence[str] | None = None,
        total: int | None = None,
        grain_sizes: Sequence[float | None] | None = None,
        size_band: tuple[float, float] | None = None,
        on_tile: Callable[[int, int, list[Detection]], None] | None = None,
        journal: Callable[[int, dict], object | None] | None = None,
    ) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per source (array, path or ``core.slide.Slide``),
        in input order. A whole-slide file (``Slide.lazy``) is read tile by tile from the
        file (module docstring); everything else is decoded.

        ``grain_sizes``: per source, its typical grain diameter in pixels (None: the
        predictor's own ``grain_size``, and without that no calibration). On a calibrated
        image a box far larger or smaller than the typical grain loses score
        (:func:`pollenstudio.engine.scale.size_weights` within ``size_band``, default
        ``SIZE_BAND``); one that falls below ``conf`` is dropped and counted in
        ``ImageResult.size_dropped``.

        ``on_tile(index, tile, detections)``: after each model tile of a tiled source, that
        tile's boxes (image pixels, detector labels, before the fold across tile seams and
        the taxon classifier): for a view to show proposals as they come; the image's
        result replaces them. ``journal(index, plan)``: for a tiled source, an object with
        ``done() -> {tile: part}`` and ``add(tile, part, capped)`` (see
        ``engine.detect_job.TileJournal``) or None; ``plan`` is what its tiles depend on
        (geometry, calibration, thresholds, model), so a journal of other settings is not
        used. Tiles already in it are not run again.

        A file that cannot be read gives a result with ``error`` naming it; the run goes on.
        ``progress.check()`` before every batch raises ``Cancelled`` within one batch of a
        cancel; results already yielded are complete.
        """
        progress = progress or NullProgress()
        if total is None and hasattr(sources, "__len__"):
            total = len(sources)  # type: ignore[arg-type]
        total = total or 0
        pending: deque[_ImageState] = deque()
        batch: list = []
        done = 0
        try:
            for state, unit in self._units(sources, names, progress, grain_sizes, size_band, on_tile, journal):
                if not pending or pending[-1] is not state:
                    pending.append(state)
                if unit is not None:
                    batch.append((state, unit))
                if len(batch) >= self.batch:
                    progress.check()
                    self._run_batch(batch)
                    batch = []
                    self._report_tiles(pending, done, total, progress)
                while pending and pending[0].complete:
                    s = pending.popleft()
                    done += 1
                    yield self._finish(s)
                    progress.update(done, max(total, done), s.name)
            if batch:
                progress.check()
                self._run_batch(batch)
            while pending:
                s = pending.popleft()
                done += 1
                yield self._finish(s)
                progress.update(done, max(total, done), s.name)
        finally:
            for s in pending:  # cancelled or abandoned: release the slides opened here
                _release(s)

    @staticmethod
    def _report_tiles(pending, done: int, total: int, progress) -> None:
        """A tiled image takes many batches: say how far into it the run is and how long
        the rest of it will take (images done stay the count; the message carries the
        tiles, see :func:`tile_progress`)."""
        if pending and pending[0].tiles and not pending[0].complete:
            s = pending[0]
            msg = TILE_PROGRESS.format(name=s.name, k=s.received, n=s.expected)
            if s.ran:
                left = format_left((time.perf_counter() - s.t_run) / s.ran * (s.expected - s.received))
                msg += f" · {left}" if left else ""
            progress.update(done, max(total, done + 1), msg)

    # -- internals -----------------------------------------------------------------------
    def _units(self, sources: Iterable, names, progress, grain_sizes=None, size_band=None, on_tile=None,
               journal=None) -> Iterator[tuple[_ImageState, tuple | None]]:
        """Decode each source lazily and cut it into model inputs (memory: one image + one
        batch; a whole slide: one tile + one batch + its content map)."""
        from pollenstudio.engine.scale import Resample

        for i, src in enumerate(sources):
            name = names[i] if names is not None else (
                Path(src).name if isinstance(src, (str, os.PathLike)) else getattr(src, "name", None) or f"image {i}")
            state = _ImageState(index=i, name=name, on_tile=on_tile)
            progress.check()  # a huge image can take a while to decode: stop before it
            grain = grain_sizes[i] if grain_sizes is not None and grain_sizes[i] is not None else self.grain_size
            t0 = time.perf_counter()
            try:
                slide = _lazy_slide(src, state)
                if slide is not None:
                    yield from self._slide_units(state, slide, grain, size_band, journal, t0)
                    continue
                img = read_image(src) if isinstance(src, (str, os.PathLike)) else self._check_array(src, name)
            except ImageReadError as exc:
                _release(state)
                state.error = str(exc)
                state.expected = 0
                yield state, None
                continue
            t1 = time.perf_counter()
            self.timings["decode"] += t1 - t0
            h, w = img.shape[:2]
            state.width, state.height = w, h
            rng = intensity_range(img)  # whole-image scaling, shared by all its tiles
            if self.taxa is not None:
                state.image = img  # the classifier crops grains from it (original pixels)
            if grain is not None:
                # calibrated: resample so grains have the trained size, then run at native
                # resolution (tiles if larger than the input, padded, never stretched, if not)
                state.resample = Resample.by(w, h, self.resample_factor(grain))
                state.grain, state.band = float(grain), size_band
                img = state.resample.apply(img)
                h, w = img.shape[:2]
                tile = self.imgsz if max(w, h) > self.imgsz else None
            else:
                tile = resolve_tile_size(self.tile, w, h, self.imgsz)
            if tile is None:
                state.expected = 1
                arr, lb = letterbox(to_model_uint8(img, rng), self.imgsz, upscale=state.resample is None)
                self.timings["preprocess"] += time.perf_counter() - t1
                yield state, (arr, lb, 0)
                continue
            state.tiles = plan_tiles(w, h, tile, int(round(tile * self.overlap)))
            run = list(range(len(state.tiles)))
            if self.skip_blank:
                blank = blank_tiles(state.tiles, content_map(img, rng, min_extent=self.speck_px))
                run = [k for k in run if not blank[k]]
                state.skipped = len(state.tiles) - len(run)
            run = self._resume(state, run, w, h, tile, journal)
            self.timings["preprocess"] += time.perf_counter() - t1
            if state.complete:  # nothing but background (or every tile journaled): done with no unit
                yield state, None
                continue
            for k in run:
                t = state.tiles[k]
                t2 = time.perf_counter()
                crop = to_model_uint8(img[t.y0 : t.y1, t.x0 : t.x1], rng)
                arr, lb = letterbox(crop, self.imgsz, origin=(t.x0, t.y0))
                self.timings["preprocess"] += time.perf_counter() - t2
                yield state, (arr, lb, k)

    def _slide_units(self, state: _ImageState, slide, grain, size_band, journal, t0):
        """Model inputs of a whole-slide file, each read from the file as a region (the
        decoded path of :meth:`_units`, region by region; same plan, same fold)."""
        from pollenstudio.engine.scale import Resample

        w, h = slide.width, slide.height
        state.width, state.height = w, h
        rng = None if slide.bit_depth == 8 else intensity_range(slide.thumbnail(1024, state.plane))
        if grain is not None:
            state.resample = Resample.by(w, h, self.resample_factor(grain))
            state.grain, state.band = float(grain), size_band
            w, h = state.resample.dst_w, state.resample.dst_h
            tile = self.imgsz if max(w, h) > self.imgsz else None
        else:
            tile = resolve_tile_size(self.tile, w, h, self.imgsz)
        reader = SlideReader(slide, w, h, state.plane)
        t1 = time.perf_counter()
        self.timings["decode"] += t1 - t0
        if tile is None:  # the whole slide fits one model input: read it at that scale
            img = reader.read(0, 0, w, h)
            state.expected = 1
            arr, lb = letterbox(to_model_uint8(img, rng), self.imgsz, upscale=state.resample is None)
            del img
            self.timings["preprocess"] += time.perf_counter() - t1
            yield state, (arr, lb, 0)
            return
        state.tiles = plan_tiles(w, h, tile, int(round(tile * self.overlap)))
        run = list(range(len(state.tiles)))
        if self.skip_blank:
            cmap, step = slide_content_map(reader, rng, min_extent=self.speck_px)
            blank = blank_tiles(state.tiles, cmap, step)
            del cmap
            run = [k for k in run if not blank[k]]
            state.skipped = len(state.tiles) - len(run)
        run = self._resume(state, run, w, h, tile, journal)
        self.timings["preprocess"] += time.perf_counter() - t1
        if state.complete:
            yield state, None
            return
        for k in run:
            t = state.tiles[k]
            t2 = time.perf_counter()
            crop = reader.read(t.x0, t.y0, t.width, t.height)
            t3 = time.perf_counter()
            arr, lb = letterbox(to_model_uint8(crop, rng), self.imgsz, origin=(t.x0, t.y0))
            del crop
            self.timings["decode"] += t3 - t2
            self.timings["preprocess"] += time.perf_counter() - t3
            yield state, (arr, lb, k)

    def plan_key(self, width: int, height: int, tile: int, resample=None, plane: int | str = 0) -> dict:
        """What the boxes of one image's tiles depend on (a tile journal of other settings
        is not reused): the model and its thresholds, the tile plan and the calibration."""
        return {
            "model": str(self.source), "model_version": self.model_version_id,
            "model_file": _file_stamp(self.source), "backend": self.backend,
            "imgsz": self.imgsz, "conf": self.conf, "iou": self.iou, "max_det": self.max_det,
            "tile": int(tile), "overlap": self.overlap, "size": [int(width), int(height)],
            "resample": None if resample is None else [resample.dst_w, resample.dst_h],
            "reg_max": int(getattr(self.cfg, "reg_max", 0)), "classes": len(self.cfg.class_names),
            "plane": plane,
        }

    def _resume(self, state: _ImageState, run: list[int], w: int, h: int, tile: int, journal) -> list[int]:
        """Tiles of ``run`` still to run: those in the image's tile journal come back from
        it (their boxes as they were found) and count as received."""
        state.expected = len(run)
        if journal is None:
            return run
        state.journal = journal(state.index, self.plan_key(w, h, tile, state.resample, state.plane))
        if state.journal is None:
            return run
        done = state.journal.done()
        todo = []
        for k in run:
            part = done.get(k)
            if part is None:
                todo.append(k)
                continue
            boxes, scores, classes, probs, levels, capped = part
            state.parts.append((boxes, scores, classes, probs, levels, np.full(len(scores), k, np.int64)))
            state.units_capped += int(capped)
            state.received += 1
            state.resumed += 1
        return todo

    @staticmethod
    def _check_array(img, name: str) -> np.ndarray:
        img = np.asarray(img)
        if img.dtype not in (np.uint8, np.uint16) or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
            raise ImageReadError(f"{name}: expected an (H, W) or (H, W, 3) uint8/uint16 image, got {img.dtype} {img.shape}")
        return img

    def to_tensor(self, arrs: list[np.ndarray]):
        """list of (S, S, 3) uint8 -> (B, 3, S, S) float in [0, 1] on the device."""
        import torch

        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        return x.float().div_(255.0)

    def forward(self, x):
        """Raw level outputs for a (B, 3, S, S) batch (autocast float16 when ``half``)."""
        import torch

        with self.lock, torch.inference_mode():
            if self.half:
                with torch.autocast(device_type="cuda", dtype=torch.float16):
                    out = self.model(x)
                return [o.float() for o in out]
            return self.model(x)

    def infer(self, x):
        """Raw level outputs for a batch from the detection backend (PyTorch or a runtime)."""
        if self.runtime is None:
            return self.forward(x)
        import torch

        with self.lock:
            return [torch.from_numpy(o) for o in self.runtime(x.cpu().numpy())]

    def _run_batch(self, batch: list) -> None:
        import torch

        from pollenstudio.detector.postprocess import postprocess

        t0 = time.perf_counter()
        x = self.to_tensor([u[0] for _, u in batch])
        t1 = time.perf_counter()
        out = self.infer(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        preds = postprocess(
            out, self.strides, conf=self.conf, iou=self.iou, max_det=self.max_det, reg_max=int(self.cfg.reg_max)
        )
        for (state, (_, lb, k)), p in zip(batch, preds):
            raw = p.boxes.detach().float().cpu().numpy()
            boxes = lb.to_source(raw)
            # a box mostly in the letterbox padding is an artefact of the padding edge
            raw_area = np.clip(raw[:, 2] - raw[:, 0], 0, None) * np.clip(raw[:, 3] - raw[:, 1], 0, None)
            kept_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * lb.scale**2
            inside = kept_area >= 0.5 * raw_area
            part = (
                boxes[inside],
                p.scores.detach().float().cpu().numpy()[inside],
                p.classes.detach().cpu().numpy().astype(np.int64)[inside],
                p.probs.detach().float().cpu().numpy()[inside],
                p.levels.detach().cpu().numpy().astype(np.int64)[inside],
                np.full(int(inside.sum()), k, dtype=np.int64),
            )
            state.parts.append(part)
            capped = len(p.scores) >= self.max_det
            if capped:
                state.units_capped += 1
            state.received += 1
            if state.tiles:
                if not state.ran:
                    state.t_run = t0
                state.ran += 1
                if state.journal is not None:
                    state.journal.add(k, part[:5], capped)
                if state.on_tile is not None:
                    state.on_tile(state.index, k, self._tile_detections(state, part))
        t3 = time.perf_counter()
        self.timings["preprocess"] += t1 - t0
        self.timings["model"] += t2 - t1
        self.timings["postprocess"] += t3 - t2

    def _finish(self, s: _ImageState) -> ImageResult:
        if s.error is not None:
            _release(s)
            return ImageResult(s.index, s.name, [], 0, 0, 0, s.error)
        t0 = time.perf_counter()
        nc = len(self.cfg.class_names)
        if s.parts:
            boxes, scores, classes, probs, levels, tidx = (np.concatenate(a) for a in zip(*s.parts))
        else:
            boxes, scores, classes = np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
            probs, levels, tidx = np.zeros((0, nc)), np.zeros(0, np.int64), np.zeros(0, np.int64)
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 1.0) & ((boxes[:, 3] - boxes[:, 1]) >= 1.0)
        idx = np.nonzero(ok)[0]
        if s.tiles and len(idx):
            scale = self.imgsz / max(s.tiles[0].width, s.tiles[0].height)
            # a grain larger than the tile overlap comes in pieces: join them first
            joined, whole = join_fragments(boxes[idx], scores[idx], tidx[idx], s.tiles, edge_margin=2.0 / min(scale, 1.0))
            boxes = boxes.copy()
            boxes[idx] = joined
            idx = idx[whole]
            keep = merge_tile_detections(
                boxes[idx], scores[idx], tidx[idx], s.tiles, iou=min(self.iou, 0.5), edge_margin=2.0 / min(scale, 1.0)
            )
            idx = idx[keep]
        size_dropped = 0
        if s.grain is not None and len(idx):  # calibrated: a box far off the typical grain size is hardly a grain
            from pollenstudio.engine.scale import SIZE_BAND, box_diameters, size_weights

            d = box_diameters(boxes[idx])
            if s.resample is not None:
                d = d / np.sqrt(s.resample.fx * s.resample.fy)  # in original pixels, like the typical size
            scores = scores.astype(np.float64, copy=True)
            scores[idx] *= size_weights(d, s.grain, s.band or SIZE_BAND)
            ok = scores[idx] >= self.conf
            size_dropped = int(len(idx) - ok.sum())
            idx = idx[ok]
        merged = 0
        alts: dict[int, np.ndarray] = {}
        if self.merge_same_grain and len(idx) > 1:
            keep, groups = same_grain_groups(boxes[idx], scores[idx], iou=self.grain_iou, cover=self.grain_cover,
                                             min_area_ratio=self.grain_min_area_ratio)
            for k, members in groups.items():
                if members:  # carry the other boxes' taxa as alternatives of the one kept
                    alts[int(idx[k])] = np.max(probs[idx[[k, *members]]], axis=0)
                    merged += len(members)
            idx = idx[keep]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        # the per-image cap scales with the tiles: a 6000x4000 scan is ~100 model inputs and may
        # hold hundreds of grains; whatever a cap drops is reported, never silent
        cap = self.max_det * max(len(s.tiles), 1)
        dropped = max(0, len(idx) - cap)
        idx = idx[:cap]
        if s.resample is not None and len(idx):
            boxes = boxes.copy()
            boxes[idx] = s.resample.to_source(boxes[idx])  # back to original pixels
        dets = [self._detection(boxes[i], scores[i], classes[i], alts.get(int(i), probs[i]), levels[i]) for i in idx]
        if self.taxa is not None:
            with self.lock:
                if s.slide is not None:  # grains cut from the file one by one (classify.embed reads regions)
                    from pollenstudio.core.slide import SlideArray

                    dets = self.taxa.label(self.explain_model, SlideArray(s.slide, s.plane), dets, self.device, self.topk)
                else:
                    dets = self.taxa.label(self.explain_model, s.image, dets, self.device, self.topk)
            s.image = None
        _release(s)
        self.timings["postprocess"] += time.perf_counter() - t0
        self.images_done += 1
        return ImageResult(
            s.index, s.name, dets, s.width, s.height, max(len(s.tiles), 1), cap=cap, dropped=dropped, units_capped=s.units_capped, merged=merged,
            skipped=s.skipped, size_dropped=size_dropped, resumed=s.resumed,
        )

    def _tile_detections(self, s: _ImageState, part) -> list[Detection]:
        """One tile's boxes as detections in original image pixels (for ``on_tile``)."""
        boxes, scores, classes, probs, levels = part[:5]
        if s.resample is not None and len(boxes):
            boxes = s.resample.to_source(boxes)
        return [self._detection(boxes[i], scores[i], classes[i], probs[i], levels[i])
                for i in np.argsort(-scores, kind="stable")]

    def _detection(self, box, score, cls, probs, level) -> Detection:
        k = min(self.topk, len(probs))
        top = np.argsort(-probs, kind="stable")[:k]
        names = self.cfg.class_names  # the detector's own classes (a classifier renames them after)
        return Detection(
            box=Box(*(float(v) for v in box)),
            class_index=int(cls),
            label=names[int(cls)] if 0 <= int(cls) < len(names) else str(int(cls)),
            score=float(score),
            topk=tuple((names[int(j)], float(probs[j])) for j in top),
            level=int(level),
        )

    def letterbox_image(self, img: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Whole image -> ((S, S, 3) uint8 model input, Letterbox), as the predictor sees it."""
        return letterbox(to_model_uint8(img, intensity_range(img)), self.imgsz)


# ----------------------------------------------------------------------------------------
# whole-slide sources: regions read from the file
# ----------------------------------------------------------------------------------------


def _lazy_slide(src, state: _ImageState):
    """The ``core.slide.Slide`` to read ``src`` from tile by tile (recorded on ``state``), or
    None for a source that is decoded whole (an array, a field, a small TIFF). A
    ``core.slide.SlideArray`` of a lazy slide is read at its plane (an index, or ``"edf"``:
    the all-in-focus view computed over each tile's region)."""
    from pollenstudio.core.slide import Slide, SlideArray

    if isinstance(src, SlideArray):
        if not src.lazy:
            return None
        state.slide, state.plane = src.slide, src.plane
        return src.slide
    if isinstance(src, Slide):
        if not src.lazy:
            return None
        state.slide = src
        return src
    if not isinstance(src, (str, os.PathLike)) or Path(src).suffix.lower() not in (".tif", ".tiff"):
        return None
    if not Path(src).is_file():
        return None  # read_image says so in words
    slide = Slide.open(src)
    if not slide.lazy:
        slide.close()
        return None
    state.slide, state.own_slide = slide, True
    return slide


def _release(s: _ImageState) -> None:
    if s.own_slide and s.slide is not None:
        s.slide.close()
    s.slide, s.own_slide = None, False


def _file_stamp(path) -> list | None:
    """(size, mtime) of a model file: a retrained file under the same name is another model."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return [st.st_size, int(st.st_mtime)]


class SlideReader:
    """Rectangles of a slide at a scale: ``read(x, y, w, h)`` in the pixels of the slide
    resampled to ``width`` x ``height`` (its own size: plain regions of level 0). A
    resampled region is read from the pyramid level nearest the scale (never coarser), then
    resized: upwards and within a level by the same bilinear mapping ``cv2.resize`` applies
    to a whole image (so a tile equals the crop of the resampled image, borders aside),
    downwards by area averaging."""

    def __init__(self, slide, width: int, height: int, plane: int = 0):
        self.slide, self.plane = slide, plane
        self.width, self.height = int(width), int(height)
        self.fx, self.fy = self.width / slide.width, self.height / slide.height

    def level(self, px_per_level0: float) -> int:
        """The level to read for output pixels this many per level-0 pixel."""
        return self.slide.level_for(1.0 / max(px_per_level0, 1e-9))

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        import cv2

        x, y, w, h = int(x), int(y), int(w), int(h)
        w, h = max(0, min(w, self.width - x)), max(0, min(h, self.height - y))
        if (self.fx, self.fy) == (1.0, 1.0):
            return self.slide.region(x, y, w, h, 0, self.plane)
        k = self.level(min(self.fx, self.fy))
        lev = self.slide.levels[k]
        gx, gy = self.fx * self.slide.width / lev.width, self.fy * self.slide.height / lev.height  # out px per level px
        if min(gx, gy) >= 0.99:  # upwards, or within a level (never coarser than asked, by 1 % at most)
            # bilinear, cv2.resize's mapping: source = (out + 0.5) / g - 0.5
            sx0, sy0 = (x + 0.5) / gx - 0.5, (y + 0.5) / gy - 0.5
            sx1, sy1 = (x + w - 0.5) / gx - 0.5, (y + h - 0.5) / gy - 0.5
            ix0, iy0 = max(0, int(np.floor(sx0)) - 1), max(0, int(np.floor(sy0)) - 1)
            ix1, iy1 = min(lev.width, int(np.ceil(sx1)) + 2), min(lev.height, int(np.ceil(sy1)) + 2)
            src = self.slide.region(ix0, iy0, ix1 - ix0, iy1 - iy0, k, self.plane)
            m = np.array([[1.0 / gx, 0.0, sx0 - ix0], [0.0, 1.0 / gy, sy0 - iy0]], np.float64)
            return cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
        # downwards: area averaging with cv2.resize's INTER_AREA weights on the whole-image
        # grid (output pixel J covers level pixels [J / g, (J + 1) / g)), so a tile does not
        # depend on where its region starts
        ix0, iy0 = max(0, int(np.floor(x / gx))), max(0, int(np.floor(y / gy)))
        ix1, iy1 = min(lev.width, int(np.ceil((x + w) / gx)) + 1), min(lev.height, int(np.ceil((y + h) / gy)) + 1)
        src = self.slide.region(ix0, iy0, ix1 - ix0, iy1 - iy0, k, self.plane)
        wx, wy = _area_weights(x, w, gx, ix0, ix1 - ix0), _area_weights(y, h, gy, iy0, iy1 - iy0)
        planes = src.reshape(src.shape[0], src.shape[1], -1).astype(np.float32)
        out = np.stack([wy @ planes[:, :, c] @ wx.T for c in range(planes.shape[2])], axis=2)
        out = np.clip(np.rint(out), 0, np.iinfo(src.dtype).max).astype(src.dtype)
        if src.ndim == 2:
            out = out[:, :, 0]
        return np.ascontiguousarray(out)


def _area_weights(start: int, n: int, g: float, src0: int, src_n: int) -> np.ndarray:
    """(n, src_n) weights of area averaging by ``g`` (< 1) for output pixels start..start+n-1
    over source pixels src0..src0+src_n-1: the overlap of [J / g, (J + 1) / g) with each
    source pixel, normalised (rows at the image's edge renormalised over what exists)."""
    lo = (start + np.arange(n, dtype=np.float64))[:, None] / g
    hi = lo + 1.0 / g
    i = (src0 + np.arange(src_n, dtype=np.float64))[None, :]
    wts = np.clip(np.minimum(hi, i + 1.0) - np.maximum(lo, i), 0.0, None)
    wts /= np.maximum(wts.sum(axis=1, keepdims=True), 1e-12)
    return wts.astype(np.float32)


def slide_content_map(reader: SlideReader, rng=None, step: int | None = None, min_extent: float | None = None,
                      max_cells: int = MAX_MAP_CELLS) -> tuple[np.ndarray, int]:
    """(content map, step) of a slide at ``reader``'s scale, for blank-tile skipping
    (:func:`pollenstudio.engine.tiling.content_map`'s rule, one map cell = ``step`` pixels
    of the resampled slide), read band by band from the pyramid level nearest 1/step (the
    file's own low-resolution level: the slide is never decoded at full resolution). The
    map holds at most ``max_cells`` cells: a larger slide is judged on a coarser grid
    (``step`` grows), so memory stays bounded whatever its size."""
    import cv2

    from pollenstudio.engine.tiling import BLANK_STEP, content_of_reduced, reduced_grey

    step = int(step or BLANK_STEP)
    while -(-reader.width // step) * -(-reader.height // step) > max_cells:
        step += 1
    mw, mh = -(-reader.width // step), -(-reader.height // step)
    slide = reader.slide
    k = reader.level(min(reader.fx, reader.fy) / step)
    lev = slide.levels[k]
    # level pixels per map cell (a cell is `step` pixels of the resampled slide)
    cx = lev.width / (reader.width / step)
    cy = lev.height / (reader.height / step)
    small = np.empty((mh, mw), np.float32)
    rows = min(4096, 24_000_000 // (3 * lev.width) + 1)  # level rows per read: a few MB of pixels
    band = max(1, int(rows // max(cy, 1e-9)))  # map rows per read
    for r0 in range(0, mh, band):
        r1 = min(mh, r0 + band)
        y0, y1 = int(np.floor(r0 * cy)), min(lev.height, int(np.ceil(r1 * cy)))
        if y1 <= y0:
            small[r0:r1] = small[r0 - 1] if r0 else 0
            continue
        arr = slide.region(0, y0, lev.width, y1 - y0, k, reader.plane)
        ow = max(1, int(round(lev.width / cx)))
        part = cv2.resize(arr, (ow, r1 - r0), interpolation=cv2.INTER_AREA if cx >= 1 else cv2.INTER_LINEAR)
        del arr
        grey = reduced_grey(part, rng, 1)
        if grey.shape[1] < mw:  # the last cell column of a width not a multiple of step
            grey = np.pad(grey, ((0, 0), (0, mw - grey.shape[1])), mode="edge")
        small[r0:r1] = grey[:, :mw]
    return content_of_reduced(small, step, min_extent), step
