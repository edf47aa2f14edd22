"""Worker jobs that put the model in the review loop: detection and explanations. No Qt
(the headless work they call lives in engine: ``detect_job``, ``explain``, ``models``).

Each job is ``fn(token, ...)`` for :class:`pollenstudio.gui.workers.JobRunner`. The store is
thread-safe and its change events are marshalled to the GUI thread by the controller, so a
detection job writes proposals straight into the project and the views refresh per image.

Detections run one at a time (``DETECT_SERIAL``): a new detection cancels the old one and
then waits for it to stop (within one batch) before writing anything, and the old job
checks its token before each image's write, so a cancelled run's late results can never
land over the new run's proposals.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from pollenstudio.core import gcguard

log = logging.getLogger(__name__)

DETECT_SERIAL = threading.Lock()
EXPLAIN_MAX_SIDE = 2048  # maps of huge images are computed on a copy at most this long
CLICK_WINDOW = 4096  # px: what B + click reads of a whole-slide file around the click


class PredictorCache:
    """The last loaded Predictor, reused while the project's model reference resolves to
    the same model (same version, same file, unchanged on disk); loading costs a second or
    more; explanations and detection share it via ``lock``."""

    def __init__(self, backend: str | None = None):
        from pollenstudio.engine.runtime import default_backend

        self._lock = threading.Lock()
        self._key = None
        self._pred = None
        # what runs detection's forward pass (Model > Inference backend; auto: PyTorch
        # on a GPU, else the fastest installed CPU runtime); explanations stay on PyTorch
        self.backend = backend or default_backend(strict=False)  # a bad $POLLENSTUDIO_BACKEND: see backend_menu

    def get(self, project, batch: int | None = None):
        from pollenstudio.engine.models import resolve_model
        from pollenstudio.engine.predict import Predictor

        resolved = resolve_model(project)  # the active version, else the default; or a clear error
        key = (*resolved.key, batch, self.backend)
        with self._lock:
            if self._pred is not None and self._key == key:
                return self._pred
        kw = {"batch": batch} if batch else {}
        kw["backend"] = self.backend
        with gcguard.held():  # importing torch and building the model: a burst of allocation
            pred = Predictor.from_project(project, resolved, **kw)
        with self._lock:
            self._key, self._pred = key, pred
        return pred

    def clear(self) -> None:
        with self._lock:
            self._key, self._pred = None, None


class _GuardedProject:
    """The project as the detection job sees it: every proposal write first checks the
    token, so after Cancel no further image is written."""

    def __init__(self, project, token):
        self._p, self._token = project, token

    def write_proposals(self, *args, **kwargs):
        self._token.check()
        return self._p.write_proposals(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._p, name)


# Who watches detection's tiles as they finish (the slide review's live preview): objects
# with ``tile_detected(project, image_id, tile, detections)``, called on the detection's
# thread (they hand the boxes to the GUI thread themselves); held weakly.
TILE_LISTENERS: "weakref.WeakSet" = weakref.WeakSet()


def _tile_hook(project):
    """``detect_project``'s ``on_tile`` for the listeners of this process, or None."""
    if not TILE_LISTENERS:
        return None

    def on_tile(image_id: int, tile: int, detections) -> None:
        for listener in list(TILE_LISTENERS):
            try:
                listener.tile_detected(project, image_id, tile, detections)
            except Exception:  # a preview must never stop a detection
                log.exception("tile preview failed")

    return on_tile


def detect_job(token, project, cache: PredictorCache, image_ids: list[int], batch: int | None = None,
               stack_mode: str | None = None, flip_pass: bool | None = False):
    """Load (or reuse) the active model and detect on ``image_ids`` (focal stacks in
    ``stack_mode``: "edf", "planes" or "both", None the default; ``flip_pass``: the second pass on the
    flipped image for "review this next"; None: only when the model runs on a GPU). Returns
    (DetectSummary, model name, device description)."""
    from pollenstudio.engine.detect_job import detect_project

    token.update(0, len(image_ids), "loading the model")
    with DETECT_SERIAL:  # the previous (cancelled) detection finishes its batch first
        token.check()
        pred = cache.get(project, batch)
        token.check()
        if flip_pass is None:
            flip_pass = getattr(pred.device, "type", "cpu") != "cpu"
        import inspect

        hook = _tile_hook(project)
        # boxes of each tile as it finishes (whole-slide scans), where the engine offers the hook
        takes_hook = "on_tile" in inspect.signature(detect_project).parameters
        extra = {"on_tile": hook} if hook is not None and takes_hook else {}
        summary = detect_project(_GuardedProject(project, token), pred, image_ids, progress=token,
                                 stack_mode=stack_mode, flip_pass=flip_pass, **extra)
    name = project.model_version(pred.model_version_id).name if pred.model_version_id else pred.source
    return summary, name, pred.device_description


def device_job(token) -> str:
    """What detection would run on, for the status bar (imports torch: keep it off the GUI thread)."""
    with gcguard.held():
        from pollenstudio.engine.predict import describe_device, select_device

        return describe_device(select_device("auto"))


def check_checkpoint_job(token, path: str) -> tuple[dict, str]:
    """Load a checkpoint (safely: no code runs) to check it before it becomes a model
    version. Returns its config dict and the device detection will run on."""
    from pollenstudio.engine.models import check_checkpoint

    with gcguard.held():
        cfg = check_checkpoint(path)
    return cfg.to_dict(), device_job(token)


def detect_progress_text(done: int, total: int) -> str:
    """The detection bar's words: the image in progress of how many ("Image 1 of 1"; the
    label beside it names the image and its tile), not the bar's own units (it moves by
    tiles: it read "0 / 100" for one image)."""
    total = max(int(total), 0)
    if total and done >= total:
        return f"{total} of {total} done"
    return f"Image {min(int(done) + 1, max(total, 1))} of {total}"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s left"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s left"
    return f"{s // 3600} h {s % 3600 // 60:02d} min left"


def click_box_job(token, project, cache: PredictorCache, path: str, x: float, y: float):
    """Worker job for B + click: the model's best candidate holding the click (run on one
    window around it, under the detection threshold), else the grain's outline by
    segmentation. Returns (Box, how) or None."""
    from pollenstudio.engine.segment import box_around_point, model_box_at
    from pollenstudio.gui.gallery import _open_pixels

    from pollenstudio.gui.stack_view import read_source, read_source_window, source_size

    ox = oy = 0
    if source_size(path) is not None:  # a whole-slide file: a window around the click, never all of it
        half = CLICK_WINDOW // 2
        pixels, (ox, oy, _x1, _y1), _size = read_source_window(path, (x - half, y - half, x + half, y + half))
        x, y = x - ox, y - oy
    elif isinstance(path, tuple):  # the plane of a focal stack on screen
        pixels = read_source(path)
    else:
        pixels = _open_pixels(path)
    token.check()
    try:
        pred = cache.get(project)
    except Exception:  # no usable model: the outline is still worth finding
        pred = None
    if pred is not None:
        found = model_box_at(pred, pixels, x, y)
        token.check()
        if found is not None:
            box, taxon, score = found
            return _shifted(box, ox, oy), f"from the model's candidate at the click ({taxon} {score:.2f})"
    box = box_around_point(pixels, x, y)
    return None if box is None else (_shifted(box, ox, oy), "found around the click (outline)")


def _shifted(box, dx: float, dy: float):
    """A box found in a window, in the image's pixels."""
    if not dx and not dy:
        return box
    from pollenstudio.core.types import Box

    return Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)


# ---------------------------------------------------------------------------- explanations


@dataclass
class Explanation:
    image_id: int
    kind: str  # "edge" or "gradcam"
    key: object  # level name for edge maps, annotation id for Grad-CAM
    heat: np.ndarray  # (h, w) float32 0..1, maybe downscaled: stretch over the image rect
    width: int  # the image's own size
    height: int
    maps: dict | None = None  # edge maps: every level, so switching P3/P4/P5 needs no recompute
    plane: object = None  # focal stacks: the view (plane index or "edf") the map was computed on
    rect: tuple[int, int, int, int] | None = None  # image px the map covers (None: the whole image)


def _downscaled(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return img, 1.0
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def _clip_region(region, w: int, h: int) -> tuple[int, int, int, int] | None:
    """``region`` (x0, y0, x1, y1) in whole pixels inside a w x h image; None: the whole image."""
    if region is None:
        return None
    x0, y0, x1, y1 = (int(round(v)) for v in region)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 8 or y1 - y0 < 8 or (x0, y0, x1, y1) == (0, 0, w, h):
        return None
    return x0, y0, x1, y1


def window_around(box, w: int, h: int, min_side: int, context: float = 3.0) -> tuple[int, int, int, int] | None:
    """A square window ``context`` times the box's long side (at least ``min_side``) centred
    on the box, shifted inside the w x h image; None when it would be the whole image."""
    side = int(max(min_side, context * max(box.width, box.height)))
    cx, cy = box.center
    x0 = int(min(max(0, cx - side / 2), max(0, w - side)))
    y0 = int(min(max(0, cy - side / 2), max(0, h - side)))
    return _clip_region((x0, y0, x0 + side, y0 + side), w, h)


def edge_job(token, project, cache: PredictorCache, image_id: int, path: str, level: str,
             max_side: int = EXPLAIN_MAX_SIDE, region=None) -> Explanation:
    """The edge maps of ``region`` of the image (the part on screen; None: all of it), at
    most ``max_side`` px across: a map finer than the screen shows costs seconds for nothing."""
    from pollenstudio.engine.explain import edge_maps, whole_image_predictor
    from pollenstudio.gui.stack_view import read_source, read_source_window, source_size

    size = source_size(path)
    if size is not None:  # a whole-slide file: the region read from the level that matches max_side
        w, h = size
        rect = _clip_region(region, w, h)
        img, got, _ = read_source_window(path, rect, max_side)
        rect = None if got == (0, 0, w, h) else got
    else:
        img = read_source(path)
        h, w = img.shape[:2]
        rect = _clip_region(region, w, h)
        if rect is not None:
            img = img[rect[1]:rect[3], rect[0]:rect[2]]
    small, _ = _downscaled(img, max_side)
    token.check()
    pred = cache.get(project)
    token.check()
    maps = edge_maps(whole_image_predictor(pred, small.shape[1], small.shape[0]), small)
    return Explanation(image_id, "edge", level, maps[level], w, h, maps, rect=rect)


def gradcam_job(token, project, cache: PredictorCache, image_id: int, path: str, ann,
                max_side: int = EXPLAIN_MAX_SIDE) -> Explanation:
    """Grad-CAM for one annotation (its box and taxon stand in for the detection)."""
    from pollenstudio.core.errors import ModelMismatchError
    from pollenstudio.core.types import Box, Detection
    from pollenstudio.engine.explain import grad_cam, whole_image_predictor
    from pollenstudio.gui.stack_view import read_source, read_source_window, source_size

    size = source_size(path)
    img = read_source(path) if size is None else None  # a whole-slide file: the window only, below
    h, w = img.shape[:2] if img is not None else size[::-1]
    token.check()
    pred = cache.get(project)
    token.check()
    # the grain's neighbourhood, not the whole field: the map of one box needs what the model
    # sees around it (a whole 2592 px field took 8-10 s on a CPU for a map of one grain)
    rect = window_around(ann.box, w, h, int(pred.imgsz))
    ox, oy = (0, 0) if rect is None else rect[:2]
    if img is None:
        img, got, _ = read_source_window(path, rect)
        rect = None if got == (0, 0, w, h) else got
        ox, oy = (0, 0) if rect is None else rect[:2]
    elif rect is not None:
        img = img[rect[1]:rect[3], rect[0]:rect[2]]
    small, s = _downscaled(img, max_side)
    name = project.category(ann.category_id).name
    b = ann.box
    box = Box((b.x1 - ox) * s, (b.y1 - oy) * s, (b.x2 - ox) * s, (b.y2 - oy) * s)
    if getattr(pred, "taxa", None) is not None and len(pred.cfg.class_names) == 1:
        # a split version: a classifier names the grain, the detector's one class found it;
        # the map shows what made the detector find this grain
        det = Detection(box, 0, pred.cfg.class_names[0], float(ann.score or 1.0))
    else:
        if name not in pred.cfg.class_names:
            raise ModelMismatchError(
                f"the model does not know the taxon {name!r}: Grad-CAM needs a taxon the model was trained on"
            )
        det = Detection(box, pred.cfg.class_names.index(name), name, float(ann.score or 1.0))
    heat = grad_cam(whole_image_predictor(pred, small.shape[1], small.shape[0]), small, det)
    return Explanation(image_id, "gradcam", ann.id, heat, w, h, rect=rect)
