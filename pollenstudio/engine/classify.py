"""Naming grains from a few examples: crop embeddings and a few-shot taxon classifier.

The split design of a model version: the detector finds grains (the taxon-agnostic grain
model, or any detector) and a small classifier names each one from an embedding of its crop.
A lab that has reviewed nine grains of a taxon cannot teach a detection head that taxon (the
fine-tuned detector scored mAP@.5 ~0.03 there), but nine labelled crops are plenty for a
nearest-class-mean or logistic-regression classifier on good features.

Embedding of one grain (``EmbedSpec.features``):

* ``deep``: the detector's own head inputs (the three neck levels P3/P4/P5) on a square crop
  around the box (side ``(1 + margin) * max(w, h)``, resized to ``crop`` px), average- and
  max-pooled over each level: what the detector "sees" of that grain;
* ``hand``: cheap colour, size and texture figures of the crop (hue histogram weighted by
  saturation, optical density against the crop's own background, gradient texture, box
  size and elongation);
* ``deep+hand``: both, each block standardised and weighted so it counts equally;
* ``pollen``: the pollen grain embedding (``models/pollen-embed-lite0.safetensors``: an
  ImageNet-pretrained EfficientNet-Lite0 fine-tuned to separate pollen taxa, see its card),
  averaged over ``views`` symmetries of the crop (mirror, quarter turns); ``imagenet``: the
  same network with its ImageNet weights only (for the bench, when built);
  ``pollen+hand``: the embedding and the hand figures.

Classifiers (``kind``): ``prototype`` (cosine to each taxon's mean embedding, softmax with a
temperature) and ``logreg`` (multinomial logistic regression, L2-penalised, class-balanced,
fitted with L-BFGS in torch: no scikit-learn needed). bench/learning_curve.py measures which
pair names held-out taxa best; the defaults below are that pair.

A classifier is stored inside its model version's safetensors file (tensors under
``extra.taxa.``, its description in the file's ``extra`` metadata), so a version stays one
file; :func:`load_classifier` reads it back (None for a plain detector).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from collections.abc import Sequence

import numpy as np

from pollenstudio.core.errors import CheckpointError, PollenStudioError
from pollenstudio.core.types import GRAIN_CLASS, Box, Detection

FEATURES = ("deep", "hand", "deep+hand", "pollen", "pollen+hand", "imagenet")
EMBEDDERS = {"pollen": "pollen-embed-lite0.safetensors", "imagenet": "effnet-lite0-imagenet.safetensors"}
KINDS = ("prototype", "logreg")
# chosen by bench/learning_curve.py --rows embed (see bench/results/learning_curve.txt)
DEFAULT_FEATURES = "pollen+hand"
DEFAULT_KIND = "logreg"
HAND_DIM = 52
PREFIX = "taxa."  # tensor names inside the checkpoint's extra block
# the class of rejected proposals (debris, diatoms, spores, bubbles): "rejections teach"
NOT_POLLEN = "not pollen"
UNKNOWN_QUANTILE = 0.10  # share of the reviewed grains the unknown-taxon threshold would flag (bench/naming.py (c):
# 0.05 flagged 0.52 of unreviewed taxa and 0.05 of known grains, 0.10 flagged 0.62 and 0.095)
# a proposal is withdrawn only when "not pollen" is at least 3:1 against every taxon together:
# a lost grain costs a count more than a false box costs a key press (not tuned on a benchmark)
WITHDRAW_P = 0.75
MAX_EXEMPLARS = 4000
FORMAT = "pollenstudio-taxon-classifier"


class ClassifierError(PollenStudioError):
    """A taxon classifier cannot be trained or used (too few named grains, bad file)."""


@dataclass(frozen=True)
class EmbedSpec:
    """How a grain becomes a vector (stored with the classifier: the same spec at use)."""

    features: str = DEFAULT_FEATURES
    crop: int = 96  # crop side fed to the detector (multiple of 32)
    margin: float = 0.25  # context around the box, share of its longer side
    turns: int = 1  # deep features averaged over this many quarter turns (1, 2 or 4): a grain has no "up"
    levels: str = "neck"  # deep features from the detector's "neck" (head inputs), "backbone" or "both"
    views: int = 2  # embedding-network features averaged over this many symmetries (1, 2, 4, 8): identity + mirror;
    # more views measured no better on field crops of held-out taxa (bench/results/naming.txt)
    embedder: str = ""  # "<file name>@<sha256 prefix>" of the embedding network (filled in at fit)

    def __post_init__(self):
        if self.features not in FEATURES:
            raise ClassifierError(f"unknown embedding {self.features!r}; use {', '.join(FEATURES)}")
        if self.crop % 32 or not 32 <= self.crop <= 512:
            raise ClassifierError(f"crop size must be a multiple of 32 in 32..512, got {self.crop}")
        if not 0.0 <= self.margin <= 2.0:
            raise ClassifierError(f"crop margin must be 0..2, got {self.margin}")
        if self.turns not in (1, 2, 4):
            raise ClassifierError(f"turns must be 1, 2 or 4, got {self.turns}")
        if self.levels not in ("neck", "backbone", "both"):
            raise ClassifierError(f"levels must be neck, backbone or both, got {self.levels!r}")
        if self.views not in (1, 2, 4, 8):
            raise ClassifierError(f"views must be 1, 2, 4 or 8, got {self.views}")

    @property
    def network(self) -> str | None:
        """Which embedding network the features need ("pollen", "imagenet"), or None."""
        for key in EMBEDDERS:
            if self.features.startswith(key):
                return key
        return None

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- crops and features
def grain_crops(img: np.ndarray, boxes: np.ndarray, size: int, margin: float) -> np.ndarray:
    """(N, size, size, 3) uint8: a square around each box (x1, y1, x2, y2), edges replicated
    where it leaves the image. ``img``: (H, W, 3) uint8 RGB."""
    import cv2

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    H, W = img.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        side = max(2.0, (1.0 + margin) * max(x2 - x1, y2 - y1))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        a0, b0 = int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2))
        s = int(math.ceil(side))
        xa, ya, xb, yb = max(0, a0), max(0, b0), min(W, a0 + s), min(H, b0 + s)
        if xb <= xa or yb <= ya:
            continue
        patch = img[ya:yb, xa:xb]
        patch = cv2.copyMakeBorder(patch, ya - b0, b0 + s - yb, xa - a0, a0 + s - xb, cv2.BORDER_REPLICATE)
        interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


def hand_features(crops: np.ndarray, boxes: np.ndarray, margin: float) -> np.ndarray:
    """(N, HAND_DIM) float: hue histogram (12 bins, weighted by saturation), saturation and
    value mean/std, optical density mean/std/max per RGB channel against the crop's border,
    gradient texture (6-bin histogram of the normalised gradient magnitude, Laplacian
    energy), log box size and elongation, and a rotation-free shape profile: mean optical
    density in 8 rings from the centre to the box's edge, and its spread around each ring
    (pores, furrows, sacci, a thick exine). Grain pixels: an ellipse inscribed in the box."""
    import cv2

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(crops)
    out = np.zeros((n, HAND_DIM), np.float32)
    if not n:
        return out
    S = crops.shape[1]
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    c = S / 2.0
    for i in range(n):
        x1, y1, x2, y2 = boxes[i]
        w, h = max(1.0, x2 - x1), max(1.0, y2 - y1)
        side = (1.0 + margin) * max(w, h)
        rx, ry = 0.5 * w / side * S, 0.5 * h / side * S
        rr = np.sqrt(((xx - c) / max(rx, 1.0)) ** 2 + ((yy - c) / max(ry, 1.0)) ** 2)  # 1 on the ellipse
        inside = rr <= 1.0
        border = np.zeros((S, S), bool)
        border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
        rgb = crops[i].astype(np.float32)
        hsv = cv2.cvtColor(crops[i], cv2.COLOR_RGB2HSV).astype(np.float32)
        hue, sat, val = hsv[..., 0][inside], hsv[..., 1][inside] / 255.0, hsv[..., 2][inside] / 255.0
        hist = np.bincount(np.minimum((hue / 180.0 * 12).astype(int), 11), weights=sat, minlength=12)
        hist = hist / max(1e-6, hist.sum())
        bg = np.median(rgb[border], axis=0) + 1.0
        od = -np.log(np.clip((rgb[inside] + 1.0) / bg, 1e-3, None))  # (n_in, 3)
        grey = cv2.cvtColor(crops[i], cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        mag = np.sqrt(gx * gx + gy * gy)[inside]
        mag = mag / (mag.mean() + 1e-3)
        ghist = np.histogram(np.clip(mag, 0, 2.999), bins=6, range=(0, 3))[0] / max(1, mag.size)
        lap = cv2.Laplacian(grey, cv2.CV_32F)[inside]
        od_grey = -np.log(np.clip((grey + 1.0) / (np.median(grey[border]) + 1.0), 1e-3, None))
        ring = np.minimum((rr * 8).astype(int), 8)
        prof = np.bincount(ring.ravel(), weights=od_grey.ravel(), minlength=9)[:8] / np.maximum(np.bincount(ring.ravel(), minlength=9)[:8], 1)
        prof2 = np.bincount(ring.ravel(), weights=(od_grey ** 2).ravel(), minlength=9)[:8] / np.maximum(np.bincount(ring.ravel(), minlength=9)[:8], 1)
        spread = np.sqrt(np.maximum(prof2 - prof ** 2, 0.0))
        out[i] = np.concatenate([
            hist,
            [sat.mean(), sat.std(), val.mean(), val.std()],
            od.mean(0), od.std(0), od.max(0),
            ghist,
            [np.log1p(np.abs(lap).mean()), np.log1p(lap.std())],
            [np.log(math.sqrt(w * h)), min(w, h) / max(w, h)],
            [0.0],  # reserved
            prof, spread,
        ])
    return out


def deep_features(model, crops: np.ndarray, device="cpu", batch: int = 32, turns: int = 4, levels: str = "neck") -> np.ndarray:
    """(N, 2 * sum(channels)) float: average and max pooling of the detector's feature maps
    on each crop, averaged over ``turns`` quarter turns of the crop. ``levels``: the three
    head inputs ("neck"), the backbone's P3/P4/P5 outputs ("backbone") or both.
    ``model``: a HieraEdgeNet (training form; left in eval mode)."""
    import torch

    if not len(crops):
        return np.zeros((0, 0), np.float32)
    model.eval()
    grabbed: list = []
    hooks = []
    if levels in ("backbone", "both"):
        for name in ("stage3", "stage4", "c2psa"):
            hooks.append(getattr(model, name).register_forward_hook(lambda m, i, o: grabbed.append(o)))
    parts = []
    try:
        with torch.inference_mode():
            for k in range(0, len(crops), batch):
                x = torch.from_numpy(np.ascontiguousarray(crops[k:k + batch])).permute(0, 3, 1, 2).to(device).float().div_(255.0)
                acc = None
                for t in range(turns):
                    grabbed.clear()
                    _, feats = model.forward_with_features(torch.rot90(x, t * (4 // turns), dims=(2, 3)))
                    maps = (list(grabbed) if levels != "neck" else []) + (list(feats) if levels != "backbone" else [])
                    v = torch.cat([torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1) for f in maps], 1)
                    acc = v if acc is None else acc + v
                parts.append((acc / turns).float().cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return np.concatenate(parts).astype(np.float32)


def tta_views(x, n: int):
    """The first ``n`` (1, 2, 4 or 8) views of a batch ``(B, C, H, W)`` under the symmetries of
    a square (a grain on a slide has no "up" and no "front"): identity, mirror, quarter turn,
    quarter turn mirrored, half turn ... Averaging an embedding over them makes it (nearly)
    independent of how the grain lies."""
    import torch

    if n not in (1, 2, 4, 8):
        raise ClassifierError(f"views must be 1, 2, 4 or 8, got {n}")
    out = []
    for k in range(n):
        v = torch.rot90(x, k // 2, dims=(2, 3))
        out.append(torch.flip(v, dims=(3,)) if k % 2 else v)
    return out


def embed(model, img: np.ndarray, boxes, spec: EmbedSpec, device="cpu") -> np.ndarray:
    """Embeddings (N, D) of the grains in ``boxes`` on ``img`` (any image PollenStudio reads:
    (H, W[, 3]) uint8/uint16, converted as the detector sees it)."""
    from pollenstudio.engine.tiling import intensity_range, to_model_uint8

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 0), np.float32)
    if not isinstance(img, np.ndarray):  # read by region (core.slide.SlideArray): the crops only
        return np.concatenate([_embed_window(model, img, b, spec, device) for b in boxes], 0)
    img = to_model_uint8(img, intensity_range(img))
    blocks = []
    if spec.network is not None:
        net = embedding_network(spec)
        blocks.append(network_features(net, grain_crops(img, boxes, net.cfg.size, spec.margin), spec.views, device))
    crops = grain_crops(img, boxes, spec.crop, spec.margin) if spec.features != spec.network else None
    if spec.features in ("deep", "deep+hand"):
        blocks.append(deep_features(model, crops, device, turns=spec.turns, levels=spec.levels))
    if spec.features.endswith("hand"):
        blocks.append(hand_features(crops, boxes, spec.margin))
    return np.concatenate(blocks, 1)


def _embed_window(model, img, box, spec: EmbedSpec, device="cpu") -> np.ndarray:
    """:func:`embed` of one box of an image read by region: the square ``grain_crops``
    cuts around it (clipped to the image, so its edge replication is the same), scaled by
    the image's intensity range (16-bit: percentiles of a strided sample of the whole)."""
    from pollenstudio.engine.tiling import intensity_range

    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(2.0, (1.0 + spec.margin) * max(x2 - x1, y2 - y1))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a0, b0 = int(math.floor(cx - side / 2)), int(math.floor(cy - side / 2))
    s = int(math.ceil(side))
    H, W = img.shape[:2]
    xa, ya, xb, yb = max(0, a0), max(0, b0), min(W, a0 + s), min(H, b0 + s)
    window = np.asarray(img[ya:max(ya + 1, yb), xa:max(xa + 1, xb)])
    rng = None if window.dtype == np.uint8 else intensity_range(img)
    if rng is not None:
        from pollenstudio.engine.tiling import to_model_uint8

        window = to_model_uint8(window, rng)
    return embed(model, window, np.array([[x1 - xa, y1 - ya, x2 - xa, y2 - ya]]), spec, device)


_NETS: dict = {}
_NETS_LOCK = threading.Lock()  # detection and the review panel's job load it from two threads


def embedder_file(key: str):
    """The installed file of embedding network ``key`` ("pollen", "imagenet"): in the models
    folder (``POLLENSTUDIO_MODELS`` when set), else the one shipped with the app (a lab that
    keeps its detectors on a shared drive need not copy the embedding there). The ImageNet-only
    network is not shipped (the app never uses it): scripts/convert_effnet_lite0.py builds it
    into build/ for the benches."""
    from pollenstudio.engine.paths import models_dir, repo_root

    places = [models_dir(), repo_root() / "models"] + ([repo_root() / "build"] if key == "imagenet" else [])
    for folder in places:
        if (folder / EMBEDDERS[key]).is_file():
            return folder / EMBEDDERS[key]
    return places[0] / EMBEDDERS[key]


def embedder_id(path) -> str:
    """``<file name>@<first 12 hex of its sha256>``: what a classifier records of its network."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{Path(path).name}@{h.hexdigest()[:12]}"


def embedding_network(spec: EmbedSpec):
    """The embedding network a spec names (loaded once per file and process). A classifier
    that recorded another network than the installed one is refused in words: its taxa were
    learnt in another feature space."""
    from pollenstudio.detector.embedder import load_for_inference

    path = embedder_file(spec.network)
    if not path.is_file():
        raise ClassifierError(f"the grain embedding network {path.name} is not installed in {path.parent}: "
                              "reinstall PollenStudio's models folder, or retrain the version's classifier")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _NETS_LOCK:
        if key not in _NETS:
            ident = embedder_id(path)
            net, _ = load_for_inference(path)
            _NETS.clear()
            _NETS[key] = (ident, net)
        ident, net = _NETS[key]
    if spec.embedder and spec.embedder != ident:
        raise ClassifierError(f"this taxon classifier was fitted on the embedding {spec.embedder}, but {ident} is "
                              "installed: retrain the classifier (Train > classifier) to name grains again")
    return net


def network_features(net, crops: np.ndarray, views: int = 4, device="cpu", batch: int = 32) -> np.ndarray:
    """(N, dim) unit-length embeddings of crops ``(N, S, S, 3)`` uint8 RGB, averaged over
    ``views`` symmetries of each crop (:func:`tta_views`)."""
    import torch

    if not len(crops):
        return np.zeros((0, net.dim), np.float32)
    net = net.to(device).eval()
    out = []
    with torch.inference_mode():
        for k in range(0, len(crops), batch):
            x = torch.from_numpy(np.ascontiguousarray(crops[k:k + batch])).permute(0, 3, 1, 2).to(device).float().div_(255.0)
            acc = sum(net(v) for v in tta_views(x, views))
            out.append(torch.nn.functional.normalize(acc, dim=1).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def with_embedder(spec: EmbedSpec) -> EmbedSpec:
    """The spec with the installed embedding network's identity recorded (fit time)."""
    from dataclasses import replace

    if spec.network is None or spec.embedder:
        return spec
    embedding_network(spec)
    return replace(spec, embedder=embedder_id(embedder_file(spec.network)))


def feature_blocks(spec: EmbedSpec, dim: int) -> list[tuple[int, int]]:
    """Column ranges of the embedding's blocks (each weighted to count equally)."""
    if spec.features in ("deep+hand", "pollen+hand"):
        return [(0, dim - HAND_DIM), (dim - HAND_DIM, dim)]
    return [(0, dim)]


# ---------------------------------------------------------------- the classifier
class TaxonClassifier:
    """Names grain embeddings. ``predict_proba(E) -> (N, C)``; ``class_names[c]``.

    Both kinds are linear in the standardised, block-weighted embedding ``z``:
    ``prototype``: logits = T * cos(z, class mean); ``logreg``: logits = z W^T + b.
    """

    def __init__(self, class_names: Sequence[str], kind: str, spec: EmbedSpec, mean: np.ndarray, scale: np.ndarray,
                 weight: np.ndarray, bias: np.ndarray, temperature: float = 1.0, counts: Sequence[int] | None = None,
                 exemplars: np.ndarray | None = None, exemplar_labels: Sequence[int] | None = None,
                 exemplar_ids: Sequence[int] | None = None, unknown_below: float | None = None):
        if kind not in KINDS:
            raise ClassifierError(f"unknown classifier {kind!r}; use {', '.join(KINDS)}")
        self.class_names = list(class_names)
        self.kind, self.spec = kind, spec
        self.mean, self.scale = np.asarray(mean, np.float32), np.asarray(scale, np.float32)
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        self.temperature = float(temperature)
        self.counts = list(counts) if counts is not None else [0] * len(self.class_names)
        if self.weight.shape != (len(self.class_names), len(self.mean)) or self.bias.shape != (len(self.class_names),):
            raise ClassifierError("the taxon classifier's weights do not match its taxa and embedding size")
        # the reviewed grains it learnt from (unit vectors in its standardised space): the
        # "unknown taxon" test and the review panel's most similar reviewed grains
        D = len(self.mean)
        self.exemplars = np.zeros((0, D), np.float32) if exemplars is None else np.asarray(exemplars, np.float32).reshape(-1, D)
        self.exemplar_labels = np.asarray(exemplar_labels if exemplar_labels is not None else [], np.int64).reshape(-1)
        self.exemplar_ids = np.asarray(exemplar_ids if exemplar_ids is not None else [-1] * len(self.exemplars),
                                       np.int64).reshape(-1)
        if not (len(self.exemplars) == len(self.exemplar_labels) == len(self.exemplar_ids)):
            raise ClassifierError("the taxon classifier's reviewed grains do not match their labels")
        self.unknown_below = None if unknown_below is None else float(unknown_below)

    # -- fitting ---------------------------------------------------------------------
    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: Sequence[int], class_names: Sequence[str], spec: EmbedSpec,
            kind: str = DEFAULT_KIND, l2: float = 1.0, temperature: float = 10.0, ids: Sequence[int] | None = None,
            unknown_quantile: float = UNKNOWN_QUANTILE) -> "TaxonClassifier":
        """``labels[i]`` indexes ``class_names``; labels < 0 (unnamed grains) are ignored.
        Every taxon needs at least one grain; one taxon alone names every grain so. ``ids``:
        the grains' annotation ids (kept with the exemplars, for the review panel).
        ``class_names`` may end with :data:`NOT_POLLEN` (rejected proposals): it is a class like
        the others but never an "unknown taxon" reference."""
        E = np.asarray(embeddings, np.float32)
        y = np.asarray(labels, np.int64)
        ids_all = np.asarray(ids if ids is not None else [-1] * len(y), np.int64)
        keep = y >= 0
        E, y, ids_all = E[keep], y[keep], ids_all[keep]
        clf = cls._fit_weights(E, y, class_names, spec, kind, l2, temperature)
        clf._set_exemplars(E, y, ids_all, unknown_quantile)
        return clf

    def _set_exemplars(self, E: np.ndarray, y: np.ndarray, ids: np.ndarray, quantile: float) -> None:
        """Keep the reviewed grains (at most MAX_EXEMPLARS, spread over taxa) and calibrate the
        unknown-taxon threshold on them: for each grain of a taxon with two or more, its
        similarity to the nearest *other* grain of that taxon (leave one out); the threshold is
        the ``quantile`` of those, so about that share of known grains would be flagged."""
        rng = np.random.default_rng(0)
        order = rng.permutation(len(y))[:MAX_EXEMPLARS]
        order.sort()
        Zn = self.unit(E[order])
        self.exemplars, self.exemplar_labels, self.exemplar_ids = Zn, y[order], ids[order]
        nn_same = []
        real = self.real_taxa()
        for c in real:
            idx = np.nonzero(self.exemplar_labels == c)[0]
            if len(idx) < 2:
                continue
            S = Zn[idx] @ Zn[idx].T
            np.fill_diagonal(S, -np.inf)
            nn_same.extend(S.max(1).tolist())
        self.unknown_below = float(np.quantile(nn_same, quantile)) if len(nn_same) >= 6 else None

    def real_taxa(self) -> list[int]:
        """Class indices that are taxa (not the "not pollen" class)."""
        return [i for i, n in enumerate(self.class_names) if n != NOT_POLLEN]

    def unit(self, E: np.ndarray) -> np.ndarray:
        """Embeddings in the classifier's standardised space, scaled to unit length."""
        Z = (np.asarray(E, np.float32).reshape(-1, len(self.mean)) - self.mean) * self.scale
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-6)

    def similarity(self, E: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity of each embedding to its nearest reviewed grain of a taxon
        (not "not pollen"); 1.0 when no grain is kept."""
        mask = np.isin(self.exemplar_labels, self.real_taxa())
        if not mask.any():
            return np.ones(len(np.asarray(E).reshape(-1, len(self.mean))), np.float32)
        return (self.unit(E) @ self.exemplars[mask].T).max(1)

    def is_unknown(self, E: np.ndarray) -> np.ndarray:
        """(N,) True where a grain is farther from every reviewed grain than the calibrated
        threshold: probably a taxon the project has not reviewed."""
        n = len(np.asarray(E).reshape(-1, len(self.mean)))
        if self.unknown_below is None:
            return np.zeros(n, bool)
        return self.similarity(E) < self.unknown_below

    def nearest(self, E: np.ndarray, k: int = 8) -> list[list[tuple[int, str, float]]]:
        """Per embedding, the ``k`` most similar reviewed grains: (annotation id or -1, taxon,
        cosine similarity), most similar first (the review panel's reference strip). Rejected
        proposals ("not pollen") are not reference grains and are left out."""
        grains = np.isin(self.exemplar_labels, self.real_taxa())
        if not grains.any():
            return [[] for _ in range(len(np.asarray(E).reshape(-1, len(self.mean))))]
        S = np.full((len(np.asarray(E).reshape(-1, len(self.mean))), len(self.exemplars)), -np.inf, np.float32)
        S[:, grains] = self.unit(E) @ self.exemplars[grains].T
        out = []
        for row in S:
            top = [j for j in np.argsort(-row, kind="stable")[:k] if np.isfinite(row[j])]
            out.append([(int(self.exemplar_ids[j]), self.class_names[int(self.exemplar_labels[j])], float(row[j])) for j in top])
        return out

    @classmethod
    def _fit_weights(cls, E, y, class_names, spec, kind, l2, temperature) -> "TaxonClassifier":
        import torch

        C = len(class_names)
        if C == 0 or len(y) == 0:
            raise ClassifierError("no named grain to learn taxa from: name some reviewed grains first")
        counts = np.bincount(y, minlength=C)
        if (counts == 0).any():
            missing = [class_names[i] for i in np.nonzero(counts == 0)[0]]
            raise ClassifierError(f"no reviewed grain of {', '.join(missing)}: every taxon of the classifier needs at least one")
        mean = E.mean(0)
        std = E.std(0)
        std = np.where(std > 1e-6, std, 1.0)
        scale = 1.0 / std
        for a, b in feature_blocks(spec, E.shape[1]):  # each block counts equally
            scale[a:b] /= math.sqrt(max(1, b - a))
        if spec.network is not None:
            # the embedding network's block lives in a space where cosine means "looks alike":
            # centred on the reviewed grains and scaled as a whole to unit size, never per
            # dimension (standardising each of its 1280 dimensions by a dozen grains' spread
            # made 1-shot naming of held-out taxa fall from ~0.7 to ~0.4, bench/naming.py);
            # uncentred, every grain looked alike to the logistic regression, whose
            # probabilities then never left ~0.6 (no proposal could reach WITHDRAW_P)
            a, b = feature_blocks(spec, E.shape[1])[0]
            centred = E[:, a:b] - E[:, a:b].mean(0)
            size = float(np.sqrt((centred ** 2).sum(1).mean())) if len(E) > 1 else 0.0
            if size > 1e-6:
                mean[a:b], scale[a:b] = E[:, a:b].mean(0), 1.0 / size
            else:
                mean[a:b], scale[a:b] = 0.0, 1.0
        Z = (E - mean) * scale
        if kind == "prototype":
            Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-6)
            P = np.stack([Zn[y == c].mean(0) for c in range(C)])
            P /= np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-6)
            return cls(class_names, kind, spec, mean, scale, P, np.zeros(C), temperature, counts.tolist())
        if kind != "logreg":
            raise ClassifierError(f"unknown classifier {kind!r}; use {', '.join(KINDS)}")
        if C == 1:
            return cls(class_names, kind, spec, mean, scale, np.zeros((1, E.shape[1])), np.zeros(1), 1.0, counts.tolist())
        g = torch.Generator().manual_seed(0)
        Zt, yt = torch.from_numpy(Z).double(), torch.from_numpy(y)
        W = (torch.randn(C, Z.shape[1], generator=g, dtype=torch.float64) * 0.01).requires_grad_(True)
        b = torch.zeros(C, dtype=torch.float64, requires_grad=True)
        cw = torch.from_numpy(len(y) / (C * counts)).double()  # class-balanced
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=300, tolerance_grad=1e-7, line_search_fn="strong_wolfe")
        lam = l2 / len(y)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Zt @ W.T + b, yt, weight=cw) + lam * (W * W).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return cls(class_names, kind, spec, mean, scale, W.detach().numpy(), b.detach().numpy(), 1.0, counts.tolist())

    # -- use -----------------------------------------------------------------------------
    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        E = np.asarray(embeddings, np.float32).reshape(-1, len(self.mean))
        Z = (E - self.mean) * self.scale
        if self.kind == "prototype":
            Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-6)
            return self.temperature * (Z @ self.weight.T)
        return Z @ self.weight.T + self.bias

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        L = self.logits(embeddings).astype(np.float64)
        L -= L.max(axis=1, keepdims=True)
        P = np.exp(L)
        return P / P.sum(axis=1, keepdims=True)

    def label(self, model, img: np.ndarray, detections: Sequence[Detection], device="cpu", topk: int = 5) -> list[Detection]:
        """The detections named by this classifier: label and top-k (with probabilities)
        from the classifier, box and score from the detector."""
        dets = list(detections)
        if not dets:
            return []
        boxes = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets], np.float64)
        E = embed(model, img, boxes, self.spec, device)
        P = self.predict_proba(E)
        unknown = self.is_unknown(E)
        out = []
        k = min(topk, len(self.class_names))
        notp = self.class_names.index(NOT_POLLEN) if NOT_POLLEN in self.class_names else None
        for d, p, unk in zip(dets, P, unknown):
            top = np.argsort(-p, kind="stable")[:k]
            alts = tuple((self.class_names[int(j)], float(p[j])) for j in top)
            if notp is not None and p[notp] < WITHDRAW_P:
                top = np.array([j for j in np.argsort(-p, kind="stable") if j != notp][:k])  # best taxon names it
            c = int(top[0])
            name = self.class_names[c]
            if name == NOT_POLLEN:
                # withdrawn: it looks like what the reviewers rejected (kept, as rejected by the
                # model). Stored under the grain class, never as a taxon "not pollen": such a
                # taxon would take a digit key and count as grains once accepted
                out.append(Detection(box=Box(d.box.x1, d.box.y1, d.box.x2, d.box.y2), class_index=-1, label=GRAIN_CLASS,
                                     score=d.score, topk=alts, level=d.level, plane=d.plane, withdrawn=True))
                continue
            if unk:
                # far from every reviewed grain: a taxon outside the project's list, not forced
                # into the nearest one; the nearest taxa stay as suggestions
                c, name = -1, GRAIN_CLASS
            out.append(Detection(box=Box(d.box.x1, d.box.y1, d.box.x2, d.box.y2), class_index=c, label=name,
                                 score=d.score, topk=tuple(a for a in alts if a[0] != NOT_POLLEN), level=d.level,
                                 plane=d.plane))
        return out

    # -- storage -------------------------------------------------------------------------
    def to_extra(self) -> tuple[dict, dict]:
        """(tensors, description) for :func:`pollenstudio.detector.checkpoint.save_checkpoint`'s ``extra``."""
        import torch

        tensors = {PREFIX + k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                   for k, v in (("mean", self.mean), ("scale", self.scale), ("weight", self.weight), ("bias", self.bias))}
        tensors[PREFIX + "exemplars"] = torch.from_numpy(np.ascontiguousarray(self.exemplars, np.float16))
        tensors[PREFIX + "exemplar_labels"] = torch.from_numpy(np.ascontiguousarray(self.exemplar_labels, np.int64))
        tensors[PREFIX + "exemplar_ids"] = torch.from_numpy(np.ascontiguousarray(self.exemplar_ids, np.int64))
        desc = {"format": FORMAT, "format_version": 2, "class_names": self.class_names, "kind": self.kind,
                "spec": self.spec.to_dict(), "temperature": self.temperature, "counts": self.counts,
                "unknown_below": self.unknown_below}
        return tensors, {"taxa": desc}

    @classmethod
    def from_extra(cls, tensors: dict, extra: dict, source: str = "the model file") -> "TaxonClassifier | None":
        desc = extra.get("taxa")
        if desc is None:
            return None
        try:
            if desc.get("format") != FORMAT or int(desc.get("format_version", 0)) not in (1, 2):
                raise ValueError(f"format {desc.get('format')!r} version {desc.get('format_version')!r}")
            arr = {k: tensors[PREFIX + k].float().numpy() for k in ("mean", "scale", "weight", "bias")}
            ex = {k: tensors[PREFIX + k].numpy() for k in ("exemplars", "exemplar_labels", "exemplar_ids")
                  if PREFIX + k in tensors}
            unk = desc.get("unknown_below")
            clf = cls(desc["class_names"], desc["kind"], EmbedSpec(**desc["spec"]), arr["mean"], arr["scale"],
                      arr["weight"], arr["bias"], float(desc.get("temperature", 1.0)), desc.get("counts"),
                      ex["exemplars"].astype(np.float32) if "exemplars" in ex else None, ex.get("exemplar_labels"),
                      ex.get("exemplar_ids"), None if unk is None else float(unk))
            if len(clf.exemplar_labels) and not ((0 <= clf.exemplar_labels) & (clf.exemplar_labels < len(clf.class_names))).all():
                raise ValueError("a reviewed grain names a taxon the classifier does not have")
        except (KeyError, TypeError, ValueError, ClassifierError) as e:
            raise CheckpointError(f"{source}: its taxon classifier is damaged ({e})") from e
        if not all(np.isfinite(a).all() for a in (clf.mean, clf.scale, clf.weight, clf.bias, clf.exemplars)):
            raise CheckpointError(f"{source}: its taxon classifier holds NaN or infinite values")
        return clf


def load_classifier(path) -> TaxonClassifier | None:
    """The taxon classifier stored in a model file, or None when it has none."""
    from pathlib import Path

    from pollenstudio.detector.checkpoint import read_extra

    tensors, extra = read_extra(path)
    return TaxonClassifier.from_extra(tensors, extra, Path(path).name)


def _pixels(src):
    """A file's pixels for embedding: decoded when small, read by region (the crops around
    its grains only) when it is a whole-slide scan."""
    from pollenstudio.core.imageio import read_image
    from pollenstudio.core.slide import shared_slide

    slide = shared_slide(src)
    if slide.lazy:
        from pollenstudio.core.slide import SlideArray

        return SlideArray(slide, 0)
    return read_image(src)


def embed_items(model, items, spec: EmbedSpec | None = None, device="cpu", progress=None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per item (image array or path, boxes (N, 4), classes (N,)[, annotation ids (N,)]):
    (embeddings of its named grains, their classes, their annotation ids or -1); unnamed
    grains (class < 0) are skipped, an item without named grains gives empty arrays. Embed
    once, fit many times (validation split, then all)."""

    spec = with_embedder(spec or EmbedSpec())
    out = []
    items = list(items)
    for i, item in enumerate(items):
        src, boxes, classes = item[:3]
        if progress is not None:
            progress.check()
            progress.update(i, len(items), "embedding reviewed grains")
        classes = np.asarray(classes, np.int64).reshape(-1)
        ids = np.asarray(item[3] if len(item) > 3 and item[3] is not None and len(item[3]) == len(classes)
                         else [-1] * len(classes), np.int64)
        named = classes >= 0
        if not named.any():
            out.append((np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        img = src() if callable(src) else (_pixels(src) if not isinstance(src, np.ndarray) else src)
        out.append((embed(model, img, np.asarray(boxes).reshape(-1, 4)[named], spec, device), classes[named], ids[named]))
    return out


def fit_embedded(embedded, class_names: Sequence[str], spec: EmbedSpec | None = None, kind: str = DEFAULT_KIND) -> TaxonClassifier:
    """A classifier from :func:`embed_items`' output; taxa without a named grain are dropped
    (it names only what it was shown). A "not pollen" class (:data:`NOT_POLLEN`, rejected
    proposals) is kept only beside at least one taxon."""
    parts = [e for e in embedded if len(e[1])]
    if not parts:
        raise ClassifierError("no named grain to learn taxa from: name some reviewed grains first")
    E = np.concatenate([e[0] for e in parts])
    y = np.concatenate([e[1] for e in parts])
    ids = np.concatenate([e[2] if len(e) > 2 else np.full(len(e[1]), -1, np.int64) for e in parts])
    present = sorted(set(y.tolist()))
    if all(class_names[c] == NOT_POLLEN for c in present):
        raise ClassifierError("no named grain to learn taxa from (only rejected proposals): name some reviewed grains first")
    remap = {c: j for j, c in enumerate(present)}
    names = [class_names[c] for c in present]
    return TaxonClassifier.fit(E, [remap[c] for c in y.tolist()], names, with_embedder(spec or EmbedSpec()), kind,
                               ids=ids)


def train_classifier(model, items, class_names: Sequence[str], spec: EmbedSpec | None = None, kind: str = DEFAULT_KIND,
                     device="cpu", progress=None) -> TaxonClassifier:
    """Fit a classifier on reviewed grains. ``items``: (image array or path, boxes (N, 4),
    classes (N,) indexing ``class_names``; < 0 ignored). Taxa without a named grain are
    dropped from the classifier (it names only what it was shown)."""
    spec = with_embedder(spec or EmbedSpec())
    return fit_embedded(embed_items(model, items, spec, device, progress), class_names, spec, kind)
