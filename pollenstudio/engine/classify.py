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
* ``deep+hand``: both, each block standardised and weighted so it counts equally.

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
from dataclasses import asdict, dataclass
from collections.abc import Sequence

import numpy as np

from pollenstudio.core.errors import CheckpointError, PollenStudioError
from pollenstudio.core.types import Box, Detection

FEATURES = ("deep", "hand", "deep+hand")
KINDS = ("prototype", "logreg")
# chosen by bench/learning_curve.py --rows embed (see bench/results/learning_curve.txt)
DEFAULT_FEATURES = "deep+hand"
DEFAULT_KIND = "logreg"
HAND_DIM = 52
PREFIX = "taxa."  # tensor names inside the checkpoint's extra block
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


def embed(model, img: np.ndarray, boxes, spec: EmbedSpec, device="cpu") -> np.ndarray:
    """Embeddings (N, D) of the grains in ``boxes`` on ``img`` (any image PollenStudio reads:
    (H, W[, 3]) uint8/uint16, converted as the detector sees it)."""
    from pollenstudio.engine.tiling import intensity_range, to_model_uint8

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 0), np.float32)
    img = to_model_uint8(img, intensity_range(img))
    crops = grain_crops(img, boxes, spec.crop, spec.margin)
    blocks = []
    if spec.features in ("deep", "deep+hand"):
        blocks.append(deep_features(model, crops, device, turns=spec.turns, levels=spec.levels))
    if spec.features in ("hand", "deep+hand"):
        blocks.append(hand_features(crops, boxes, spec.margin))
    return np.concatenate(blocks, 1)


def feature_blocks(spec: EmbedSpec, dim: int) -> list[tuple[int, int]]:
    """Column ranges of the embedding's blocks (each weighted to count equally)."""
    if spec.features == "deep+hand":
        return [(0, dim - HAND_DIM), (dim - HAND_DIM, dim)]
    return [(0, dim)]


# ---------------------------------------------------------------- the classifier
class TaxonClassifier:
    """Names grain embeddings. ``predict_proba(E) -> (N, C)``; ``class_names[c]``.

    Both kinds are linear in the standardised, block-weighted embedding ``z``:
    ``prototype``: logits = T * cos(z, class mean); ``logreg``: logits = z W^T + b.
    """

    def __init__(self, class_names: Sequence[str], kind: str, spec: EmbedSpec, mean: np.ndarray, scale: np.ndarray,
                 weight: np.ndarray, bias: np.ndarray, temperature: float = 1.0, counts: Sequence[int] | None = None):
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

    # -- fitting ---------------------------------------------------------------------
    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: Sequence[int], class_names: Sequence[str], spec: EmbedSpec,
            kind: str = DEFAULT_KIND, l2: float = 1.0, temperature: float = 10.0) -> "TaxonClassifier":
        """``labels[i]`` indexes ``class_names``; labels < 0 (unnamed grains) are ignored.
        Every taxon needs at least one grain; one taxon alone names every grain so."""
        import torch

        E = np.asarray(embeddings, np.float32)
        y = np.asarray(labels, np.int64)
        keep = y >= 0
        E, y = E[keep], y[keep]
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
        P = self.predict_proba(embed(model, img, boxes, self.spec, device))
        out = []
        k = min(topk, len(self.class_names))
        for d, p in zip(dets, P):
            top = np.argsort(-p, kind="stable")[:k]
            c = int(top[0])
            out.append(Detection(box=Box(d.box.x1, d.box.y1, d.box.x2, d.box.y2), class_index=c, label=self.class_names[c],
                                 score=d.score, topk=tuple((self.class_names[int(j)], float(p[j])) for j in top), level=d.level))
        return out

    # -- storage -------------------------------------------------------------------------
    def to_extra(self) -> tuple[dict, dict]:
        """(tensors, description) for :func:`pollenstudio.detector.checkpoint.save_checkpoint`'s ``extra``."""
        import torch

        tensors = {PREFIX + k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
                   for k, v in (("mean", self.mean), ("scale", self.scale), ("weight", self.weight), ("bias", self.bias))}
        desc = {"format": FORMAT, "format_version": 1, "class_names": self.class_names, "kind": self.kind,
                "spec": self.spec.to_dict(), "temperature": self.temperature, "counts": self.counts}
        return tensors, {"taxa": desc}

    @classmethod
    def from_extra(cls, tensors: dict, extra: dict, source: str = "the model file") -> "TaxonClassifier | None":
        desc = extra.get("taxa")
        if desc is None:
            return None
        try:
            if desc.get("format") != FORMAT or int(desc.get("format_version", 0)) != 1:
                raise ValueError(f"format {desc.get('format')!r} version {desc.get('format_version')!r}")
            arr = {k: tensors[PREFIX + k].float().numpy() for k in ("mean", "scale", "weight", "bias")}
            clf = cls(desc["class_names"], desc["kind"], EmbedSpec(**desc["spec"]), arr["mean"], arr["scale"],
                      arr["weight"], arr["bias"], float(desc.get("temperature", 1.0)), desc.get("counts"))
        except (KeyError, TypeError, ValueError, ClassifierError) as e:
            raise CheckpointError(f"{source}: its taxon classifier is damaged ({e})") from e
        if not all(np.isfinite(a).all() for a in (clf.mean, clf.scale, clf.weight, clf.bias)):
            raise CheckpointError(f"{source}: its taxon classifier holds NaN or infinite values")
        return clf


def load_classifier(path) -> TaxonClassifier | None:
    """The taxon classifier stored in a model file, or None when it has none."""
    from pathlib import Path

    from pollenstudio.detector.checkpoint import read_extra

    tensors, extra = read_extra(path)
    return TaxonClassifier.from_extra(tensors, extra, Path(path).name)


def embed_items(model, items, spec: EmbedSpec | None = None, device="cpu", progress=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item (image array or path, boxes (N, 4), classes (N,)): (embeddings of its named
    grains, their classes); unnamed grains (class < 0) are skipped, an item without named
    grains gives empty arrays. Embed once, fit many times (validation split, then all)."""
    from pollenstudio.core.imageio import read_image

    spec = spec or EmbedSpec()
    out = []
    items = list(items)
    for i, (src, boxes, classes) in enumerate(items):
        if progress is not None:
            progress.check()
            progress.update(i, len(items), "embedding reviewed grains")
        classes = np.asarray(classes, np.int64).reshape(-1)
        named = classes >= 0
        if not named.any():
            out.append((np.zeros((0, 0), np.float32), np.zeros(0, np.int64)))
            continue
        img = read_image(src) if not isinstance(src, np.ndarray) else src
        out.append((embed(model, img, np.asarray(boxes).reshape(-1, 4)[named], spec, device), classes[named]))
    return out


def fit_embedded(embedded, class_names: Sequence[str], spec: EmbedSpec | None = None, kind: str = DEFAULT_KIND) -> TaxonClassifier:
    """A classifier from :func:`embed_items`' output; taxa without a named grain are dropped
    (it names only what it was shown)."""
    parts = [(E, y) for E, y in embedded if len(y)]
    if not parts:
        raise ClassifierError("no named grain to learn taxa from: name some reviewed grains first")
    E = np.concatenate([e for e, _ in parts])
    y = np.concatenate([t for _, t in parts])
    present = sorted(set(y.tolist()))
    remap = {c: j for j, c in enumerate(present)}
    names = [class_names[c] for c in present]
    return TaxonClassifier.fit(E, [remap[c] for c in y.tolist()], names, spec or EmbedSpec(), kind)


def train_classifier(model, items, class_names: Sequence[str], spec: EmbedSpec | None = None, kind: str = DEFAULT_KIND,
                     device="cpu", progress=None) -> TaxonClassifier:
    """Fit a classifier on reviewed grains. ``items``: (image array or path, boxes (N, 4),
    classes (N,) indexing ``class_names``; < 0 ignored). Taxa without a named grain are
    dropped from the classifier (it names only what it was shown)."""
    spec = spec or EmbedSpec()
    return fit_embedded(embed_items(model, items, spec, device, progress), class_names, spec, kind)
