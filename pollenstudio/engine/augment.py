"""Training augmentations for micrographs (numpy + OpenCV, no torch).

Every geometric transform moves the boxes with the pixels: a sample is an image
``(H, W, 3)`` uint8 plus ``boxes (n, 4)`` float32 xyxy in image pixels and ``classes (n,)``
int64. Boxes that leave the frame are clipped; boxes that are mostly cut off (less than
``min_visible`` of their area left, or thinner than ``min_size`` px) are dropped so the
model is never asked to find a grain that is not there.

Pollen has no up or down, so vertical flips and 90-degree rotations are as valid as
horizontal flips. Scale/translate are an axis-aligned affine (no rotation or shear), so a
transformed box is exactly the transformed corners, not a loose hull.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

PAD_VALUE = 114  # grey border for letterbox / affine: neither black background nor white


@dataclass
class AugmentConfig:
    """Probabilities and magnitudes; the defaults follow the HieraEdgeNet recipe."""

    fliplr: float = 0.5
    flipud: float = 0.5
    rot90: float = 0.5  # probability of a random k*90 degree rotation (k in 1..3)
    scale: float = 0.5  # zoom factor drawn from [1 - scale, 1 + scale]
    translate: float = 0.1  # shift up to this fraction of the output size
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    brightness: float = 0.1  # additive, fraction of 255
    contrast: float = 0.2  # multiplicative around the mean
    blur: float = 0.1  # probability of a small Gaussian blur (out-of-focus grains)
    mosaic: float = 1.0  # probability of a 4-image mosaic
    close_mosaic: int = 10  # mosaic off for the final N epochs
    min_visible: float = 0.4  # keep a clipped box only if this fraction of it is left
    min_size: float = 2.0  # px
    # probability of showing the frame at reduced resolution (see low_resolution), as
    # calibrated detection upsamples a low-magnification image. Off by default: tried on the
    # grain model it found small upsampled grains better but boxed specks on a real slide
    # (models/POLLEN_GRAIN_CARD.md).
    low_res: float = 0.0
    low_res_max: float = 4.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation at all (validation, tests)."""
        return cls(**{f.name: 0 for f in fields(cls)})


def _as_boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


# ---------------------------------------------------------------- box bookkeeping
def clip_and_filter(
    boxes: np.ndarray,
    classes: np.ndarray,
    width: int,
    height: int,
    min_visible: float = 0.4,
    min_size: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the frame; drop those with less than ``min_visible`` of their area
    left or a side under ``min_size`` px. Returns (boxes, classes) of the survivors."""
    boxes = _as_boxes(boxes)
    classes = np.asarray(classes).reshape(-1)
    if len(boxes) == 0:
        return boxes, classes
    area0 = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w = clipped[:, 2] - clipped[:, 0]
    h = clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_size) & (h >= min_size) & (w * h >= min_visible * np.maximum(area0, 1e-9))
    return clipped[keep], classes[keep]


# ---------------------------------------------------------------- geometric transforms
def hflip(img: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right."""
    w = img.shape[1]
    b = _as_boxes(boxes).copy()
    b[:, [0, 2]] = w - b[:, [2, 0]]
    return np.ascontiguousarray(img[:, ::-1]), b


def vflip(img: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom."""
    h = img.shape[0]
    b = _as_boxes(boxes).copy()
    b[:, [1, 3]] = h - b[:, [3, 1]]
    return np.ascontiguousarray(img[::-1]), b


def rot90(img: np.ndarray, boxes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by k*90 degrees counter-clockwise (as ``np.rot90``)."""
    k %= 4
    b = _as_boxes(boxes).copy()
    for _ in range(k):
        w = img.shape[1]
        # one CCW turn: new x = y, new y = W - x
        b = np.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], axis=1)
        img = np.rot90(img)
    return np.ascontiguousarray(img), b.astype(np.float32)


def affine_matrix(scale: float, tx: float, ty: float) -> np.ndarray:
    """2x3 matrix of x' = scale * x + tx (axis-aligned, so boxes stay exact)."""
    return np.array([[scale, 0.0, tx], [0.0, scale, ty]], dtype=np.float64)


def warp_boxes(boxes, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to xyxy boxes via their four corners (exact for scale+shift)."""
    b = _as_boxes(boxes)
    if len(b) == 0:
        return b
    xs = b[:, [0, 2, 2, 0]]
    ys = b[:, [1, 1, 3, 3]]
    nx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    ny = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return np.stack([nx.min(1), ny.min(1), nx.max(1), ny.max(1)], axis=1).astype(np.float32)


def warp(
    img: np.ndarray,
    boxes,
    classes,
    m: np.ndarray,
    out_w: int,
    out_h: int,
    min_visible: float = 0.4,
    min_size: float = 2.0,
    interpolation: int = cv2.INTER_LINEAR,
    pad_value: int = PAD_VALUE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp image and boxes with ``m`` into an ``out_w x out_h`` frame, clip and filter."""
    channels = 1 if img.ndim == 2 else img.shape[2]
    out = cv2.warpAffine(
        img, m, (int(out_w), int(out_h)), flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(pad_value,) * max(channels, 1),
    )
    b, c = clip_and_filter(warp_boxes(boxes, m), classes, out_w, out_h, min_visible, min_size)
    return out, b, c


def random_affine_params(
    rng: np.random.Generator, in_w: int, in_h: int, out_w: int, out_h: int, scale: float, translate: float
) -> np.ndarray:
    """Zoom about the input centre, place it at the output centre, then shift randomly."""
    s = float(rng.uniform(1.0 - scale, 1.0 + scale)) if scale > 0 else 1.0
    s = max(s, 0.05)
    tx = out_w / 2.0 - s * in_w / 2.0 + float(rng.uniform(-translate, translate)) * out_w
    ty = out_h / 2.0 - s * in_h / 2.0 + float(rng.uniform(-translate, translate)) * out_h
    return affine_matrix(s, tx, ty)


def mosaic4(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    imgsz: int,
    rng: np.random.Generator,
    pad_value: int = PAD_VALUE,
    interpolation: int = cv2.INTER_LINEAR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile four samples around a random centre on a ``2*imgsz`` canvas.

    Each sample is resized so its long side is ``imgsz``; the caller then crops the canvas
    back to ``imgsz`` with :func:`warp` (random scale/translate). Returns the canvas and the
    unclipped-then-clipped boxes in canvas pixels.
    """
    assert len(samples) == 4
    s = imgsz
    cx = int(rng.uniform(0.5 * s, 1.5 * s))
    cy = int(rng.uniform(0.5 * s, 1.5 * s))
    canvas = np.full((2 * s, 2 * s, 3), pad_value, dtype=np.uint8)
    all_b, all_c = [], []
    for i, (img, boxes, classes) in enumerate(samples):
        h0, w0 = img.shape[:2]
        r = s / max(h0, w0)
        w, h = max(1, round(w0 * r)), max(1, round(h0 * r))
        if (w, h) != (w0, h0):
            img = cv2.resize(img, (w, h), interpolation=interpolation)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        # (x1a, y1a) is where the image's top-left lands on the canvas
        if i == 0:  # top-left quadrant: bottom-right corner at the centre
            xa, ya = cx - w, cy - h
        elif i == 1:  # top-right
            xa, ya = cx, cy - h
        elif i == 2:  # bottom-left
            xa, ya = cx - w, cy
        else:  # bottom-right
            xa, ya = cx, cy
        # intersect the placed image with the canvas
        x1, y1 = max(xa, 0), max(ya, 0)
        x2, y2 = min(xa + w, 2 * s), min(ya + h, 2 * s)
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = img[y1 - ya : y2 - ya, x1 - xa : x2 - xa]
        b = _as_boxes(boxes).copy()
        b[:, [0, 2]] = b[:, [0, 2]] * (w / w0) + xa
        b[:, [1, 3]] = b[:, [1, 3]] * (h / h0) + ya
        # also clip to this tile's own visible rectangle (neighbours overwrite nothing,
        # but a tile cut at the canvas edge hides its own boxes)
        b[:, [0, 2]] = b[:, [0, 2]].clip(x1, x2)
        b[:, [1, 3]] = b[:, [1, 3]].clip(y1, y2)
        all_b.append(b)
        all_c.append(np.asarray(classes).reshape(-1))
    boxes = np.concatenate(all_b) if all_b else np.zeros((0, 4), np.float32)
    classes = np.concatenate(all_c) if all_c else np.zeros((0,), np.int64)
    return canvas, boxes.astype(np.float32), classes


# ---------------------------------------------------------------- photometric
def hsv_jitter(img: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray:
    """Random gains on hue, saturation and value (stain and lamp differences)."""
    if not (h or s or v) or img.ndim != 3:
        return img
    gains = rng.uniform(-1, 1, 3) * np.array([h, s, v]) + 1.0
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def brightness_contrast(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float) -> np.ndarray:
    if not (brightness or contrast):
        return img
    a = 1.0 + float(rng.uniform(-contrast, contrast))
    b = float(rng.uniform(-brightness, brightness)) * 255.0
    mean = float(img.mean())
    out = (img.astype(np.float32) - mean) * a + mean + b
    return np.clip(out, 0, 255).astype(np.uint8)


LOW_RES_MIN_GRAIN = 8.0  # px: never degrade so far that the median grain drops below this
LOW_RES_NOISE = 5.0  # grey levels: the compositor's strongest camera noise (0.02 of full light)


def low_resolution(img: np.ndarray, boxes, rng: np.random.Generator, max_factor: float) -> np.ndarray:
    """The frame as a camera with ``f`` times fewer pixels would give it, upsampled back to
    its size (boxes do not move): averaged down, that camera's own noise added (std up to
    LOW_RES_NOISE grey levels: averaging also removed the frame's noise, which a real
    low-magnification image keeps at its own pixel scale), bilinear up.

    ``f`` is drawn from [1.5, max_factor], capped so the median box diameter stays >=
    LOW_RES_MIN_GRAIN px after the downsampling; frames whose grains are already too small
    (or that hold none) come back unchanged."""
    b = _as_boxes(boxes)
    h, w = img.shape[:2]
    if not len(b):
        return img
    d = float(np.median(np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))))
    hi = min(float(max_factor), d / LOW_RES_MIN_GRAIN)
    if hi < 1.5:
        return img
    f = float(rng.uniform(1.5, hi))
    small = cv2.resize(img, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    sigma = float(rng.uniform(0.0, LOW_RES_NOISE))
    small = np.clip(small + rng.normal(0.0, sigma, small.shape), 0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.choice([3, 5]))
    return cv2.GaussianBlur(img, (k, k), 0)


# ---------------------------------------------------------------- the pipeline
class Augmenter:
    """Random training transforms for one sample.

    ``load(i) -> (img uint8 (H, W, 3), boxes (n, 4), classes (n,))`` gives raw samples;
    ``__call__(i, rng, use_mosaic)`` returns one ``imgsz x imgsz`` sample. The
    ``interpolation`` and ``pad_value`` hooks let tests warp label masks exactly.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        imgsz: int,
        load,
        n: int,
        interpolation: int = cv2.INTER_LINEAR,
        pad_value: int = PAD_VALUE,
        photometric: bool = True,
    ):
        self.cfg = cfg
        self.imgsz = int(imgsz)
        self.load = load
        self.n = int(n)
        self.interpolation = interpolation
        self.pad_value = pad_value
        self.photometric = photometric

    def _flip_rotate(self, img, boxes, rng):
        c = self.cfg
        if c.fliplr and rng.random() < c.fliplr:
            img, boxes = hflip(img, boxes)
        if c.flipud and rng.random() < c.flipud:
            img, boxes = vflip(img, boxes)
        if c.rot90 and rng.random() < c.rot90:
            img, boxes = rot90(img, boxes, int(rng.integers(1, 4)))
        return img, boxes

    def __call__(self, index: int, rng: np.random.Generator, use_mosaic: bool = True):
        c, s = self.cfg, self.imgsz
        kw = dict(min_visible=c.min_visible, min_size=c.min_size, interpolation=self.interpolation, pad_value=self.pad_value)
        if use_mosaic and c.mosaic and self.n > 0 and rng.random() < c.mosaic:
            idx = [index] + [int(i) for i in rng.integers(0, self.n, 3)]
            parts = []
            for i in idx:
                img, boxes, classes = self.load(i)
                img, boxes = self._flip_rotate(img, boxes, rng)
                parts.append((img, boxes, classes))
            canvas, boxes, classes = mosaic4(parts, s, rng, self.pad_value, self.interpolation)
            # crop the 2s canvas back to s around its centre, with random zoom and shift
            m = random_affine_params(rng, 2 * s, 2 * s, s, s, c.scale, c.translate)
            img, boxes, classes = warp(canvas, boxes, classes, m, s, s, **kw)
        else:
            img, boxes, classes = self.load(index)
            img, boxes = self._flip_rotate(img, boxes, rng)
            h, w = img.shape[:2]
            r = s / max(h, w)  # letterbox fit, then random zoom/shift on top
            m = random_affine_params(rng, w * r, h * r, s, s, c.scale, c.translate)
            m[:, :2] *= r
            img, boxes, classes = warp(img, boxes, classes, m, s, s, **kw)
        if self.photometric:
            if c.low_res and rng.random() < c.low_res:
                img = low_resolution(img, boxes, rng, c.low_res_max)
            img = hsv_jitter(img, rng, c.hsv_h, c.hsv_s, c.hsv_v)
            img = brightness_contrast(img, rng, c.brightness, c.contrast)
            if c.blur and rng.random() < c.blur:
                img = gaussian_blur(img, rng)
        return img, boxes, classes
