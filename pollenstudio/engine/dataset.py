"""Training data: samples from a project's reviewed annotations or a COCO file, a stable
train/val split, and the torch Dataset + collate the Trainer iterates.

What counts as a grain: annotations with status accepted, edited or added
(``core.types.OBJECT_STATUSES``). Rejected
proposals are not objects, and images that still have undecided proposals are left out
(their unreviewed grains would teach the model that grains are background).

The split is decided per image (or per slide/sample group when images carry one) by a hash
of a stable key, never by row order: an image stays on its side of the split when new
images are reviewed, and all images of one slide stay together so near-duplicate fields of
view never leak from training into validation.

Focal stacks (issue 19): a stack is one sample whose pixels are a view of its planes. In
training each draw shows the plane one of its grains names (chosen at random among the
planes its annotations keep), or, with probability ``EDF_AUGMENT_P`` (and for grains without
a plane), the extended-depth-of-field composite; validation always sees the EDF composite,
the view detection runs on. Every box of the stack is a target in every view (a grain
focused on another plane is still a grain).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pollenstudio.core.errors import ImageReadError, ImportFormatError, PollenStudioError
from pollenstudio.core.imageio import read_image
from pollenstudio.core.stack import is_stack_file
from pollenstudio.engine.augment import AugmentConfig, Augmenter, clip_and_filter
from pollenstudio.engine.tiling import intensity_range, letterbox, resolve_tile_size, to_model_uint8

SPLIT_SALT = "pollenstudio-split-v1"
EDF_AUGMENT_P = 0.25  # share of a stack's training draws that show its EDF composite
SLIDE_GRAIN_WINDOW_P = 0.8  # share of a whole-slide scan's draws whose window is around one of its grains


class DatasetError(PollenStudioError):
    """There is not enough reviewed data to train or evaluate."""


@dataclass
class Sample:
    """One image with its ground truth. Boxes in original image pixels."""

    path: str  # absolute path
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32 xyxy
    classes: np.ndarray  # (n,) int64 index into the dataset's class list
    name: str = ""
    image_id: int | None = None
    annotation_ids: list[int] = field(default_factory=list)
    group: str | None = None
    sha256: str | None = None
    stack_planes: list[int] | None = None  # a focal stack: the planes its grains name (may be empty)
    plane_files: list[str] | None = None  # a stack kept as plane files: their absolute paths

    @property
    def is_stack(self) -> bool:
        return self.stack_planes is not None

    def eval_source(self):
        """What evaluation feeds the model: the file, or a stack's EDF composite (a
        callable, so it is computed only when its turn comes)."""
        if not self.is_stack:
            return self.path
        return lambda: load_model_image(self.path, "edf", self.plane_files, scale=False)

    @property
    def split_key(self) -> str:
        """What the split hashes: the group, else the content hash, else the file name."""
        if self.group:
            return "group:" + str(self.group)
        if self.sha256:
            return "sha256:" + self.sha256
        return "name:" + (self.name or Path(self.path).name)


@dataclass
class DetectionData:
    """Samples plus their class list (index = model class index)."""

    samples: list[Sample]
    class_names: list[str]
    category_ids: list[int] | None = None  # store/COCO category id per class index

    @property
    def annotation_ids(self) -> list[int]:
        return sorted(a for s in self.samples for a in s.annotation_ids)

    @property
    def n_objects(self) -> int:
        return int(sum(len(s.classes) for s in self.samples))


# ---------------------------------------------------------------- split
def split_fraction(key: str, salt: str = SPLIT_SALT) -> float:
    """Position of ``key`` in [0, 1), uniform and stable across runs and machines."""
    h = hashlib.sha256((salt + "\0" + key).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_samples(samples: list[Sample], val_fraction: float = 0.2, salt: str = SPLIT_SALT) -> tuple[list[Sample], list[Sample]]:
    """Deterministic image-level (or group-level) split into (train, val).

    A key goes to validation when its hash position is below ``val_fraction``. When that
    leaves one side empty (tiny projects), the key nearest the threshold moves over, so
    a project with at least two keys always has both sides when its taxa allow it; with
    many keys the sides are exactly the hash rule and stay put as images are added.

    Stratified by taxon: no taxon gives more than :data:`MAX_VAL_SHARE` of its reviewed
    grains to validation (issue 28: with 3 reviewed images the hash put a focal stack holding
    11 of the 12 Poaceae grains into validation). A key that would take most of a taxon's
    grains is trained on instead (the one holding the most of the taxon that loses the
    largest share first); if that empties validation, the key nearest the threshold that
    breaks no taxon's share is held out instead, or none. Unnamed grains (class -1) do not
    count.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("val_fraction must be in [0, 1)")
    keys = sorted({s.split_key for s in samples})
    pos = {k: split_fraction(k, salt) for k in keys}
    val_keys = {k for k in keys if pos[k] < val_fraction}
    if len(keys) < 2:
        val_keys = set()  # one image or one slide: training needs it more than validation
    elif val_fraction > 0:
        if not val_keys:
            val_keys = {min(keys, key=lambda k: pos[k])}
        elif len(val_keys) == len(keys):
            val_keys.discard(max(keys, key=lambda k: pos[k]))
    if val_keys:
        val_keys = _stratified(samples, keys, pos, val_keys)
    train = [s for s in samples if s.split_key not in val_keys]
    val = [s for s in samples if s.split_key in val_keys]
    return train, val


MAX_VAL_SHARE = 0.5  # no taxon gives more than half of its reviewed grains to validation


def _stratified(samples: list[Sample], keys: list[str], pos: dict, val_keys: set) -> set:
    """``val_keys`` with no taxon losing more than MAX_VAL_SHARE of its grains (see split_samples)."""
    from collections import Counter

    counts: dict[str, Counter] = {k: Counter() for k in keys}
    for s in samples:
        counts[s.split_key].update(int(c) for c in np.asarray(s.classes).reshape(-1) if c >= 0)
    total: Counter = Counter()
    for c in counts.values():
        total.update(c)

    def losing(vk) -> list[tuple[float, int]]:  # (share, taxon) of taxa giving too much to validation
        held: Counter = Counter()
        for k in vk:
            held.update(counts[k])
        return sorted(((held[t] / total[t], t) for t in held if held[t] > MAX_VAL_SHARE * total[t]), reverse=True)

    vk = set(val_keys)
    while vk:
        bad = losing(vk)
        if not bad:
            return vk
        taxon = bad[0][1]
        vk.discard(max((k for k in vk if counts[k][taxon]), key=lambda k: (counts[k][taxon], pos[k], k)))
    for k in sorted(keys, key=lambda k: (pos[k], k)):  # validation emptied: the nearest key that fits
        if not losing({k}):
            return {k}
    return set()


# ---------------------------------------------------------------- sources
def data_from_coco(coco_json: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> DetectionData:
    """Read a COCO detection file; images are looked up under ``images_dir`` (default: the
    JSON's folder) by their ``file_name``, then by base name. A focal stack (a multi-page or
    OME-TIFF, or an image with ``plane_files``, as ``pollenstudio synth --planes`` and the
    COCO export write) is one sample seen as its EDF composite, the view detection runs on."""
    p = Path(coco_json)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFormatError(f"{p}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"{p.name}: not a JSON file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("categories"), list):
        raise ImportFormatError(f"{p.name}: not a COCO detection file (needs 'images' and 'categories' lists)")
    root = Path(images_dir) if images_dir else p.parent
    cats = sorted(doc["categories"], key=lambda c: int(c["id"]))
    cat_index = {int(c["id"]): i for i, c in enumerate(cats)}
    by_image: dict[int, list] = {}
    for a in doc.get("annotations", []) or []:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    samples = []

    def find(fname: str) -> Path:
        path = root / fname
        if not path.is_file() and (root / Path(fname).name).is_file():
            path = root / Path(fname).name
        return path

    for im in doc["images"]:
        fname = str(im["file_name"])
        path = find(fname)
        pfiles = im.get("plane_files")
        plane_files = [str(find(str(f))) for f in pfiles] if isinstance(pfiles, list) and len(pfiles) > 1 else None
        stack = plane_files is not None or _is_int(im.get("planes"), 2) or is_stack_file(path)
        boxes, classes, ids, planes = [], [], [], set()
        for a in by_image.get(int(im["id"]), []):
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                continue
            if int(a["category_id"]) not in cat_index:
                raise ImportFormatError(f"{p.name}: annotation {a.get('id')} uses unknown category {a['category_id']}")
            boxes.append([x, y, x + w, y + h])
            classes.append(cat_index[int(a["category_id"])])
            ids.append(int(a.get("id", 0)))
            if _is_int(a.get("plane"), 0):
                planes.add(int(a["plane"]))
        samples.append(
            Sample(
                path=str(path),
                width=int(im.get("width") or 0),
                height=int(im.get("height") or 0),
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                classes=np.array(classes, np.int64),
                name=fname,
                image_id=int(im["id"]),
                annotation_ids=ids,
                stack_planes=sorted(planes) if stack else None,
                plane_files=plane_files,
            )
        )
    return DetectionData(samples, [str(c["name"]) for c in cats], [int(c["id"]) for c in cats])


def _is_int(v, lowest: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lowest


def data_from_project(project, class_names: list[str] | None = None) -> DetectionData:
    """Reviewed images of a project and their objects (accepted, edited, added).

    ``class_names`` fixes the class order (e.g. a base model's list); taxa of the project
    not in it are appended. Default: the project's categories in id order.

    Unnamed grains (``unidentified`` boxes drawn by hand, ``pollen`` proposals of the grain
    model: :func:`~pollenstudio.core.types.is_unassigned_taxon`) form one class,
    :data:`~pollenstudio.core.types.GRAIN_CLASS`, only when no reviewed grain carries a real
    taxon (a grain model). Otherwise they are dropped from the class list and their boxes get
    class -1: the detector learns to find them, never to call anything "pollen".
    """
    from pollenstudio.core.types import GRAIN_CLASS, AnnotationStatus, is_unassigned_taxon

    cats = list(project.categories())
    names_by_id = {c.id: c.name for c in cats}
    order = list(class_names or [])
    for c in sorted(cats, key=lambda c: c.id):
        if c.name not in order:
            order.append(c.name)
    reviewed = list(project.reviewed_dataset())
    used = {names_by_id[a.category_id] for _, anns in reviewed for a in anns if AnnotationStatus(a.status).is_object}
    unnamed = {n for n in set(order) | used if is_unassigned_taxon(n)}
    if any(not is_unassigned_taxon(n) for n in used):
        order = [n for n in order if n not in unnamed]
        index = {n: i for i, n in enumerate(order)}
        index.update({n: -1 for n in unnamed})
    elif used:  # only unnamed grains: a grain model
        order = [GRAIN_CLASS]
        index = {n: 0 for n in unnamed}
    else:
        index = {n: i for i, n in enumerate(order)}
    id_by_name = {c.name: c.id for c in cats}
    root = Path(project.folder)
    samples = []
    for rec, anns in reviewed:
        boxes, classes, ids, planes = [], [], [], set()
        for a in anns:
            if not AnnotationStatus(a.status).is_object:
                continue
            b = a.box.normalized()
            if not b.is_valid():
                continue
            boxes.append([b.x1, b.y1, b.x2, b.y2])
            classes.append(index[names_by_id[a.category_id]])
            ids.append(int(a.id))
            if a.plane is not None:
                planes.add(int(a.plane))
        path = Path(rec.path)
        if not path.is_absolute():
            path = root / path
        samples.append(
            Sample(
                path=str(path),
                width=int(rec.width),
                height=int(rec.height),
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                classes=np.array(classes, np.int64),
                name=Path(rec.path).name,
                image_id=int(rec.id),
                annotation_ids=ids,
                group=rec.group,
                sha256=rec.sha256,
                stack_planes=sorted(planes) if rec.is_stack else None,
                plane_files=[str(q) for q in project.plane_paths(rec)] if rec.plane_files else None,
            )
        )
    return DetectionData(samples, order, [id_by_name.get(n) for n in order])


# ---------------------------------------------------------------- torch side
def load_model_image(path: str, view=None, plane_files=None, scale: bool = True) -> np.ndarray:
    """Decode and scale to (H, W, 3) uint8 RGB exactly as the Predictor does (16-bit:
    whole-image robust percentiles), so training and inference see the same pixels. ``view``
    (a plane index, "best" or "edf") reads a focal stack; ``scale=False`` returns the
    decoded pixels unscaled (the Predictor scales them itself)."""
    if view is None and not plane_files:
        img = read_image(path)
    else:
        from pollenstudio.core.stack import FocalStack

        with FocalStack.open(path, plane_files) as st:
            img = st.view("edf" if view is None else view)
    return to_model_uint8(img, intensity_range(img)) if scale else img


class TrainDataset:
    """Torch-style dataset over samples: ``ds[i] -> (img (3, S, S) uint8 tensor,
    targets (n, 5) float [class, x1, y1, x2, y2] in input px, index)``.

    augment=None gives plain letterboxed images (validation). Images much larger than the
    model input (slide scans, which the Predictor tiles at native resolution) are cut into
    a random ``imgsz`` window per draw instead of being shrunk, so training sees grains at
    the scale inference does. Decoded images are cached (downscaled to the working size)
    up to ``cache_mb``.
    """

    def __init__(
        self,
        samples: list[Sample],
        imgsz: int,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache_mb: int = 1024,
    ):
        self.samples = list(samples)
        self.imgsz = int(imgsz)
        self.aug_cfg = augment
        self.seed = int(seed)
        self.epoch = 0
        self.mosaic = bool(augment and augment.mosaic > 0)
        self._cache: dict[int, tuple[np.ndarray, float]] = {}
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb) * 1 << 20
        self._rng = np.random.default_rng(seed)
        self._aug = Augmenter(augment, self.imgsz, self._load, len(self.samples)) if augment else None
        # per sample: None (not looked at), False, or the 16-bit intensity range / True of a
        # whole-slide scan read window by window (core.slide), never decoded whole
        self._slide_info: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int, mosaic: bool | None = None) -> None:
        """Reseed the per-epoch randomness (identical on every rank) and switch mosaic."""
        self.epoch = int(epoch)
        if mosaic is not None:
            self.mosaic = bool(mosaic)

    def _view(self, i: int):
        """Which view of a focal stack this draw shows (None: not a stack)."""
        s = self.samples[i]
        if not s.is_stack:
            return None
        if self.aug_cfg is None or not s.stack_planes or self._rng.random() < EDF_AUGMENT_P:
            return "edf"
        return int(s.stack_planes[int(self._rng.integers(len(s.stack_planes)))])

    def _decoded(self, i: int) -> tuple[np.ndarray, float]:
        """(image, scale) with the image shrunk so its long side is at most 2*imgsz."""
        view = self._view(i)
        key = i if view is None else (i, view)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        s = self.samples[i]
        try:
            img = load_model_image(s.path, view, s.plane_files)
        except ImageReadError as exc:
            raise ImageReadError(f"{exc} (training image {s.name or s.path})") from None
        h, w = img.shape[:2]
        tiled = resolve_tile_size("auto", w, h, self.imgsz) is not None
        r = 1.0 if tiled else min(1.0, self.imgsz / max(h, w))
        if r < 1.0:
            import cv2

            img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
        if self._cache_bytes + img.nbytes <= self._cache_limit:
            self._cache[key] = (img, r)
            self._cache_bytes += img.nbytes
        return img, r

    def _whole_slide(self, i: int):
        """False, or (True, the model's intensity range) of a lazily read whole-slide scan."""
        info = self._slide_info.get(i)
        if info is None:
            from pollenstudio.core.slide import SlideArray, shared_slide

            s = self.samples[i]
            try:
                slide = shared_slide(s.path, s.plane_files)
                info = (True, intensity_range(SlideArray(slide, 0))) if slide.lazy else False
            except ImageReadError:
                info = False  # _decoded says what is wrong with it, in words
            self._slide_info[i] = info
        return info

    def _slide_window(self, i: int, rng16):
        """One native-resolution ``imgsz`` window of a whole-slide scan, read from the file:
        mostly around one of its grains (jittered), else anywhere on the slide."""
        from pollenstudio.core.slide import shared_slide

        s = self.samples[i]
        t = self.imgsz
        view = self._view(i)
        if len(s.boxes) and self._rng.random() < SLIDE_GRAIN_WINDOW_P:
            x1, y1, x2, y2 = s.boxes[int(self._rng.integers(len(s.boxes)))]
            cx = (x1 + x2) / 2 + self._rng.uniform(-t / 3, t / 3)
            cy = (y1 + y2) / 2 + self._rng.uniform(-t / 3, t / 3)
            x0 = int(min(max(0, cx - t / 2), max(0, s.width - t)))
            y0 = int(min(max(0, cy - t / 2), max(0, s.height - t)))
        else:
            x0 = int(self._rng.integers(0, max(1, s.width - t + 1)))
            y0 = int(self._rng.integers(0, max(1, s.height - t + 1)))
        try:
            arr = shared_slide(s.path, s.plane_files).region(x0, y0, t, t, 0, 0 if view is None else view)
        except ImageReadError as exc:
            raise ImageReadError(f"{exc} (training image {s.name or s.path})") from None
        img = to_model_uint8(arr, rng16)
        boxes = s.boxes - np.array([x0, y0, x0, y0], np.float32)
        min_vis = self.aug_cfg.min_visible if self.aug_cfg else 0.4
        boxes, classes = clip_and_filter(boxes, s.classes.copy(), img.shape[1], img.shape[0], min_vis)
        return img, boxes, classes

    def _load(self, i: int):
        """Raw sample for the augmenter: (img, boxes, classes) at working scale."""
        s = self.samples[i]
        slide = self._whole_slide(i)
        if slide:
            return self._slide_window(i, slide[1])
        img, r = self._decoded(i)
        h, w = img.shape[:2]
        sy = h / s.height if s.height else r
        sx = w / s.width if s.width else r
        boxes = s.boxes.copy()
        boxes[:, [0, 2]] *= sx
        boxes[:, [1, 3]] *= sy
        classes = s.classes.copy()
        if max(h, w) > 2 * self.imgsz:  # a slide scan: one native-resolution window
            t = self.imgsz
            x0 = int(self._rng.integers(0, max(1, w - t + 1)))
            y0 = int(self._rng.integers(0, max(1, h - t + 1)))
            img = img[y0 : y0 + t, x0 : x0 + t]
            boxes = boxes - np.array([x0, y0, x0, y0], np.float32)
            min_vis = self.aug_cfg.min_visible if self.aug_cfg else 0.4
            boxes, classes = clip_and_filter(boxes, classes, img.shape[1], img.shape[0], min_vis)
        return img, boxes, classes

    def __getitem__(self, i: int):
        import torch

        # one generator per (seed, epoch, index): same augmentation in any worker / rank
        self._rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        if self._aug is not None:
            img, boxes, classes = self._aug(i, self._rng, use_mosaic=self.mosaic)
        else:
            img, boxes, classes = self._load(i)
            img, lb = letterbox(img, self.imgsz)  # the Predictor's own letterbox: same pixels
            boxes = lb.to_model(boxes).astype(np.float32)
        t = np.zeros((len(boxes), 5), np.float32)
        if len(boxes):
            t[:, 0] = classes
            t[:, 1:] = boxes
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.from_numpy(t), i


def collate(batch):
    """list of dataset items -> (images (B, 3, S, S) uint8, targets (N, 6) float
    [batch_index, class, x1, y1, x2, y2], indices list)."""
    import torch

    imgs, targets, idx = zip(*batch)
    rows = []
    for b, t in enumerate(targets):
        if len(t):
            rows.append(torch.cat([torch.full((len(t), 1), float(b)), t], dim=1))
    tgt = torch.cat(rows) if rows else torch.zeros((0, 6))
    return torch.stack(imgs), tgt, list(idx)
