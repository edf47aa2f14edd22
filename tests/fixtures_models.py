"""A tiny HieraEdgeNet over-fitted to simple synthetic grains, shared by the engine tests.

Import the fixtures into a test module (``from fixtures_models import tiny_model_path``).
Training takes about half a minute on 2 CPU cores the first time; the checkpoint is then
cached under pytest's cache dir (a session temp dir when the cache plugin is off), keyed by
a hash of the detector code and this file, so
reruns load it in a fraction of a second (a clean clone pays the training once).

The grains are drawn here (not with the full micrograph generator) so the scenes are
exactly controllable: a test places grains where it wants, e.g. across a tile border, and
knows their boxes. Two taxa: a round grain with a thick dark rim and a rounded triangle.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

TAXA = ("Roundum", "Triangula")
IMGSZ = 256
_HERE = Path(__file__).resolve()


def _grain_mask(shape, cx, cy, taxon, d, angle):
    mask = np.zeros(shape, np.uint8)
    if taxon == 0:
        cv2.circle(mask, (int(round(cx * 8)), int(round(cy * 8))), int(round(d / 2 * 8)), 255, -1, cv2.LINE_AA, 3)
    else:
        r = d / 2
        pts = []
        for k in range(3):  # triangle with rounded corners: sample a superellipse-like outline
            for t in np.linspace(-0.5, 0.5, 12):
                a = angle + k * 2 * np.pi / 3 + t * 2 * np.pi / 3
                rr = r * (0.78 + 0.22 * np.cos(3 * (a - angle)))
                pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        cv2.fillPoly(mask, [np.round(np.array(pts) * 8).astype(np.int32)], 255, cv2.LINE_AA, 3)
    return mask


def render_scene(width: int, height: int, grains, seed: int = 0):
    """(H, W, 3) uint8 brightfield-like image and (n, 4) tight boxes, (n,) classes.

    grains: iterable of (cx, cy, taxon_index, diameter). Boxes are clipped to the image.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    illum = 1.0 - 0.08 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    img = np.empty((height, width, 3), np.float32)
    img[:] = np.array([214.0, 208.0, 196.0], np.float32)
    img *= illum[..., None]
    boxes, classes = [], []
    for cx, cy, taxon, d in grains:
        angle = float(rng.uniform(0, 2 * np.pi))
        m = _grain_mask((height, width), cx, cy, int(taxon), d, angle).astype(np.float32) / 255.0
        k = max(3, int(d * 0.12) | 1)
        inner = cv2.erode(m, np.ones((k, k), np.uint8))
        rim = np.clip(m - inner, 0, 1)
        body = np.array([196.0, 150.0, 70.0]) if taxon == 0 else np.array([150.0, 100.0, 60.0])
        img = img * (1 - m[..., None]) + m[..., None] * body
        img = img * (1 - 0.6 * rim[..., None])  # thick dark exine
        ys, xs = np.nonzero(m > 0.5)
        if len(xs):
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            classes.append(int(taxon))
    img += rng.normal(0, 3.0, img.shape)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def random_grains(rng, width, height, n, dmin=30, dmax=60, margin=-10):
    """Non-overlapping random grains; ``margin`` < 0 lets some be cut by the image border."""
    out = []
    for _ in range(200):
        if len(out) == n:
            break
        d = float(rng.uniform(dmin, dmax))
        cx = float(rng.uniform(d / 2 + margin, width - d / 2 - margin))
        cy = float(rng.uniform(d / 2 + margin, height - d / 2 - margin))
        if all((cx - x) ** 2 + (cy - y) ** 2 > ((d + e) / 2 + 6) ** 2 for x, y, _, e in out):
            out.append((cx, cy, int(rng.integers(0, len(TAXA))), d))
    return out


def reviewed_project(folder: Path, n_images: int, seed: int, scene_seed: int):
    """A new project in ``folder`` of ``n_images`` scenes the tiny model knows (3 grains each,
    drawn with ``seed``; scene i rendered with ``scene_seed + i``), saved as
    images/fieldNN.png, each with its true boxes drawn in by hand (so reviewed). Returns the
    open Project."""
    from pollenstudio.core.types import Box
    from pollenstudio.project import Project

    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n_images):
        img, boxes, classes = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 3, margin=4), seed=scene_seed + i)
        name = f"field{i + 1:02d}.png"
        cv2.imwrite(str(folder / "images" / name), img[..., ::-1].copy())
        truth[name] = (boxes, classes)
    proj = Project.create(folder)
    ids = proj.ensure_categories(TAXA)
    proj.add_folder(folder / "images")
    for rec in proj.images():
        for b, c in zip(*truth[rec.path.rsplit("/", 1)[-1]]):
            proj.add_annotation(rec.id, Box(*map(float, b)), ids[TAXA[c]])
    return proj


def zeroed_head_copy(src, dst):
    """``src`` with every weight of its detection head set to 0 (a broken candidate) saved as
    ``dst`` (may be ``src`` itself); returns the model config."""
    import torch

    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, _ = load_checkpoint(src)
    with torch.no_grad():
        for p in model.detect.parameters():
            p.zero_()
    save_checkpoint(dst, model, cfg, {"note": "zeroed head"})
    return cfg


def training_pool(n_images: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(n_images):
        grains = random_grains(rng, IMGSZ, IMGSZ, int(rng.integers(2, 5)))
        pool.append(render_scene(IMGSZ, IMGSZ, grains, seed=seed * 1000 + i))
    return pool


def _code_hash() -> str:
    h = hashlib.sha256()
    import pollenstudio.detector as det

    for p in sorted(Path(det.__file__).parent.glob("*.py")):
        h.update(p.read_bytes())
    h.update(_HERE.read_bytes())
    import torch

    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def train_tiny_model(out: Path, steps: int = 250, seed: int = 0) -> Path:
    """Train the tiny model on the synthetic pool and save a checkpoint at ``out``."""
    import torch

    torch.manual_seed(seed)
    # one thread: the tiny model is overhead-bound, and on a shared 2-core machine two
    # threads spin-wait for each other (measured 10x slower under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(out, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(out: Path, steps: int, seed: int) -> Path:
    import torch

    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.loss import DetectionLoss
    from pollenstudio.detector.model import build_model

    cfg = ModelConfig.tiny("full", nc=len(TAXA), class_names=list(TAXA), imgsz=IMGSZ)
    model = build_model(cfg)
    loss_fn = DetectionLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.15)
    pool = training_pool(seed=seed)
    imgs = torch.from_numpy(np.stack([p[0] for p in pool])).permute(0, 3, 1, 2).float() / 255.0
    rng = np.random.default_rng(seed)
    batch, crop = 8, 128  # random 128 px crops: 4x cheaper than whole images, more positions
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(len(pool), batch, replace=False)
        xs, rows = [], []
        for bi, i in enumerate(idx):
            ox, oy = (int(v) for v in rng.integers(0, IMGSZ - crop + 1, 2))
            x = imgs[i, :, oy : oy + crop, ox : ox + crop]
            b = pool[i][1] - np.array([ox, oy, ox, oy], np.float32)
            b = np.clip(b, 0, crop)
            c = pool[i][2]
            # flips keep the model from learning absolute positions
            if rng.random() < 0.5:
                x = x.flip(-1)
                b[:, [0, 2]] = crop - b[:, [2, 0]]
            if rng.random() < 0.5:
                x = x.flip(-2)
                b[:, [1, 3]] = crop - b[:, [3, 1]]
            if rng.random() < 0.3:  # a letterbox band: padding is background, not a grain
                x = x.clone()
                side, w = int(rng.integers(0, 4)), int(rng.integers(8, 48))
                lo, hi = (0, w) if side % 2 == 0 else (crop - w, crop)
                if side < 2:
                    x[:, :, lo:hi] = 114 / 255
                    b[:, [0, 2]] = np.clip(b[:, [0, 2]], *((w, crop) if side == 0 else (0, crop - w)))
                else:
                    x[:, lo:hi, :] = 114 / 255
                    b[:, [1, 3]] = np.clip(b[:, [1, 3]], *((w, crop) if side == 2 else (0, crop - w)))
            xs.append(x)
            for bb, cc in zip(b, c):
                if bb[2] - bb[0] >= 8 and bb[3] - bb[1] >= 8:  # drop slivers cut off by the crop
                    rows.append([bi, cc, *bb])
        x = torch.stack(xs)
        targets = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
        total, _ = loss_fn(model(x), targets)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, cfg, {"note": "tiny test model", "train_seconds": time.perf_counter() - t0})
    return out


@functools.lru_cache(maxsize=None)
def _cached_model(cache_dir: str) -> Path:
    path = Path(cache_dir) / f"tiny-{_code_hash()}.safetensors"
    if not path.is_file():
        tmp = path.with_suffix(".tmp.safetensors")
        train_tiny_model(tmp)
        tmp.replace(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(request, tmp_path_factory) -> Path:
    """Checkpoint of the tiny over-fitted model (trained once, cached across runs).

    Without pytest's cache plugin (``-p no:cacheprovider``, read-only checkouts) it is
    trained once per session into a temporary folder instead."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        folder = cache.mkdir("pollenstudio-tiny-model")
    else:
        folder = tmp_path_factory.mktemp("pollenstudio-tiny-model")
    return _cached_model(str(folder))


@pytest.fixture(scope="session")
def tiny_predictor(tiny_model_path):
    """A CPU Predictor for the tiny model (input 256 px, tiles of 256 px on large images)."""
    from pollenstudio.engine.predict import Predictor

    return Predictor.from_checkpoint(tiny_model_path, device="cpu", conf=0.3, batch=4)

