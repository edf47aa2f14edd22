"""Does HieraEdgeNet's edge path carry signal, and is its scale sensible? (issue 7, ablation)

    python bench/edge_signal.py --weights W/project/models/<full>.safetensors \\
        --heldout W/heldout/annotations.json [--images 8] [--json out.json]
    python bench/edge_signal.py --workdir W      # weights from W/train-full.json, W/heldout

Four measurements, on the trained full model and on an untrained one of the same config:

(a) Edge-map contrast. ``--images`` synthetic images (seeds 5000.., never used for
    training) are generated with their grain masks, and again with ``clutter=0``: same
    grains, same noise, so the pixels that differ are debris/fibres/bubbles/blobs. Regions
    (source pixels): grain rim (a band of +-3 px around each grain mask's outline), grain
    interior, debris (clutter away from grains) and its outline band, background (away
    from both). For each map the mean response per region, the ratio rim/background and
    rim/debris outline, and AUC(rim vs X) (chance that a random rim pixel responds more
    than a random X pixel; 0.5 = no separation). Maps: the image's own Sobel magnitude
    (reference), HEM's raw Sobel magnitude of the P2 features (channel mean, stride 4) and
    the GUI edge map (channel mean of |EP3 - EP3(flat)|, stride 8).
(b) Magnitudes at each SEF fusion point: mean |x|, std and spatial std (per-channel std
    over positions, averaged) of the edge input EPk and of the backbone features Pk it is
    concatenated with, plus the raw Sobel magnitudes against the P2 features HEM reads.
    Both models in eval mode; the untrained model's BatchNorm statistics are first
    calibrated on the same images (a forward pass in training mode, cumulative average), so
    its features have the scale the first training steps see, not the identity-BN scale of
    a fresh module.
(c) Causal knock-out on the held-out set (pycocotools mAP through evaluate_model, the
    ``pollenstudio eval`` path): EP3/EP4/EP5 intact; replaced by EP(flat) (the features of
    a zero Sobel magnitude: "no edge anywhere"); by their per-image spatial mean; by zeros;
    by another image's edges (batch rolled by one); and EP(flat) at one level at a time.
(d) The learnt fusion: in each SEF's first 1x1 conv, the std (over data) of the part of
    its pre-BN output that comes from the edge channels vs the part from the feature
    channels, and the mean weight norm per input channel of each group.

Everything runs on the CPU with one thread unless --threads says otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pollenstudio.detector import build_model  # noqa: E402
from pollenstudio.detector.checkpoint import load_checkpoint  # noqa: E402
from pollenstudio.engine.synthetic.config import SynthConfig  # noqa: E402
from pollenstudio.engine.synthetic.dataset import generate_image  # noqa: E402
from pollenstudio.engine.tiling import letterbox  # noqa: E402

REGIONS = ("rim", "interior", "debris", "debris_rim", "background")


# ---------------------------------------------------------------------------------- data
def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def make_scene(seed: int) -> dict:
    """One synthetic image with boolean region masks (H, W) at source resolution."""
    img, objs = generate_image(seed, SynthConfig(), return_masks=True)
    clean, _ = generate_image(seed, SynthConfig(clutter=0.0))
    h, w = img.shape[:2]
    grain = np.zeros((h, w), np.uint8)
    for o in objs:
        x1, y1 = int(o["bbox"][0]), int(o["bbox"][1])
        m = o["mask"].astype(np.uint8)
        grain[y1 : y1 + m.shape[0], x1 : x1 + m.shape[1]] |= m
    # identical grains and noise: every differing pixel is clutter (debris, fibre, bubble...)
    clutter = (np.abs(img.astype(np.int16) - clean.astype(np.int16)).max(2) >= 8).astype(np.uint8)
    near_grain = cv2.dilate(grain, _disk(8))
    outline = cv2.dilate(grain, _disk(3)) & (1 - cv2.erode(grain, _disk(3)))
    interior = cv2.erode(grain, _disk(6))
    debris = clutter & (1 - near_grain)
    d_outline = (cv2.dilate(clutter, _disk(2)) & (1 - cv2.erode(clutter, _disk(2)))) & (1 - near_grain)
    border = np.zeros((h, w), np.uint8)
    border[8:-8, 8:-8] = 1  # the image edge itself is not part of any region
    background = (1 - near_grain) & (1 - cv2.dilate(clutter, _disk(8))) & border
    regions = dict(rim=outline & border, interior=interior & border, debris=debris & border,
                   debris_rim=d_outline & border, background=background)
    return dict(seed=seed, img=img, n_grains=len(objs), regions={k: v.astype(bool) for k, v in regions.items()})


# ---------------------------------------------------------------------------------- maps
def _to_input(img: np.ndarray, imgsz: int):
    arr, lb = letterbox(img, imgsz)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float().div_(255.0), lb


def _up(t: torch.Tensor, lb) -> np.ndarray:
    """(h, w) map on the model input grid -> (H, W) over the source image."""
    return lb.map_to_source(cv2.resize(t.numpy().astype(np.float32), (lb.size, lb.size), interpolation=cv2.INTER_LINEAR))


@torch.no_grad()
def edge_maps(model, img: np.ndarray, imgsz: int) -> dict[str, np.ndarray]:
    x, lb = _to_input(img, imgsz)
    hem = model.hem
    mags = hem.magnitudes(model.p2(model.stem(x)))
    eps = hem.features(mags)
    flat = hem.features([torch.zeros((1, hem.c_in, 1, 1)) for _ in range(4)])
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    sob = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    return {
        "image Sobel": sob / 4.0,
        "HEM raw |Sobel(P2)|": _up(mags[0].mean(1)[0], lb),
        "GUI edge map (EP3)": _up((eps[0] - flat[0]).abs().mean(1)[0], lb),
    }


def _auc(pos: np.ndarray, neg: np.ndarray, rng, n: int = 20000) -> float:
    """P(random pos > random neg) + 0.5 P(tie), on subsamples."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    p = rng.choice(pos, min(n, len(pos)), replace=False)
    q = np.sort(rng.choice(neg, min(n, len(neg)), replace=False))
    lo = np.searchsorted(q, p, "left")
    hi = np.searchsorted(q, p, "right")
    return float((lo + 0.5 * (hi - lo)).mean() / len(q))


def contrast(model, scenes, imgsz: int, train_bn: bool = False) -> dict:
    vals: dict[str, dict[str, list]] = {}
    was = model.training
    model.train(train_bn)  # an untrained model's BatchNorm has no running statistics yet
    try:
        maps = [edge_maps(model, s["img"], imgsz) for s in scenes]
    finally:
        model.train(was)
    for s, ms in zip(scenes, maps):
        for name, m in ms.items():
            d = vals.setdefault(name, {r: [] for r in REGIONS})
            for r in REGIONS:
                d[r].append(m[s["regions"][r]])
    rng = np.random.default_rng(0)
    out = {}
    for name, d in vals.items():
        v = {r: np.concatenate(d[r]) for r in REGIONS}
        mean = {r: float(v[r].mean()) if v[r].size else float("nan") for r in REGIONS}
        out[name] = dict(
            mean=mean,
            pixels={r: int(v[r].size) for r in REGIONS},
            rim_over_background=mean["rim"] / max(mean["background"], 1e-12),
            rim_over_debris_rim=mean["rim"] / max(mean["debris_rim"], 1e-12),
            auc_rim_vs_background=_auc(v["rim"], v["background"], rng),
            auc_rim_vs_debris_rim=_auc(v["rim"], v["debris_rim"], rng),
            auc_rim_vs_interior=_auc(v["rim"], v["interior"], rng),
        )
    return out


# ---------------------------------------------------------------------------- magnitudes
@torch.no_grad()
def calibrate_bn(model, scenes, imgsz: int) -> None:
    """Set every BatchNorm's running statistics to those of ``scenes`` (untrained model)."""
    x = torch.cat([_to_input(s["img"], imgsz)[0] for s in scenes])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    model.train()
    model(x)
    model.eval()


def _stats(t: torch.Tensor) -> dict:
    t = t.float()
    return dict(mean_abs=float(t.abs().mean()), std=float(t.std()),
                spatial_std=float(t.flatten(2).std(2).mean()), mean=float(t.mean()))


def _sef_modules(model):
    return [(k, getattr(model, f"sef{k}")) for k in (3, 4, 5) if getattr(model, f"sef{k}", None) is not None]


def magnitudes(model, scenes, imgsz: int, train_bn: bool = False) -> dict:
    """Stats of the SEF inputs, the raw Sobel pyramid vs P2, and the fusion split (d)."""
    x = torch.cat([_to_input(s["img"], imgsz)[0] for s in scenes])
    captured: dict = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, k=k: captured.__setitem__(k, args))
               for k, m in _sef_modules(model)]
    handles.append(model.hem.register_forward_pre_hook(lambda mod, args: captured.__setitem__("p2", args[0])))
    was = model.training
    model.train(train_bn)
    try:
        with torch.no_grad():
            model(x)
            mags = model.hem.magnitudes(captured["p2"])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    out = {"P2 features (HEM input)": _stats(captured["p2"])}
    for i, m in enumerate(mags):
        out[f"raw |Sobel(P2)| stride {4 * 2 ** i}"] = _stats(m)
    fusion = {}
    for k, sef in _sef_modules(model):
        edge, feat = captured[k]
        out[f"SEF P{k}: edge EP{k}"] = _stats(edge)
        out[f"SEF P{k}: features P{k}"] = _stats(feat)
        w = sef.cv1.conv.weight  # (c/2, c_edge + c, 1, 1), edge channels first (concat order)
        ce = edge.shape[1]
        with torch.no_grad():
            pe = F.conv2d(edge, w[:, :ce])
            pf = F.conv2d(feat, w[:, ce:])
        se, sf = float(pe.std((0, 2, 3)).mean()), float(pf.std((0, 2, 3)).mean())
        sse, ssf = float(pe.flatten(2).std(2).mean()), float(pf.flatten(2).std(2).mean())
        fusion[f"P{k}"] = dict(
            edge_part_std=se, feature_part_std=sf, edge_share_of_variance=se**2 / (se**2 + sf**2),
            edge_part_spatial_std=sse, feature_part_spatial_std=ssf,
            weight_norm_per_edge_channel=float(w[:, :ce].detach().pow(2).sum((0, 2, 3)).sqrt().mean()),
            weight_norm_per_feature_channel=float(w[:, ce:].detach().pow(2).sum((0, 2, 3)).sqrt().mean()),
            hem_bn_gamma_abs_mean=float(model.hem.convs[k - 3].bn.weight.detach().abs().mean()),
        )
    return dict(stats=out, fusion=fusion)


# ------------------------------------------------------------------------------ knock-out
def _knockout_hook(mode: str, levels, flat):
    def hook(mod, args, res):
        out = []
        for i, e in enumerate(res):
            if i not in levels:
                out.append(e)
            elif mode == "flat":
                out.append(flat[i].to(e.dtype).expand_as(e).contiguous())
            elif mode == "mean":
                out.append(e.mean((2, 3), keepdim=True).expand_as(e).contiguous())
            elif mode == "zero":
                out.append(torch.zeros_like(e))
            elif mode == "shuffle":
                out.append(torch.roll(e, 1, 0))
            else:
                raise ValueError(mode)
        return out

    return hook


def knockouts(model, cfg, heldout: str, batch: int, quick: bool) -> dict:
    from pollenstudio.engine.dataset import data_from_coco
    from pollenstudio.engine.evaluate import evaluate_model

    data = data_from_coco(heldout)
    hem = model.hem
    with torch.no_grad():
        flat = hem.features([torch.zeros((1, hem.c_in, 1, 1)) for _ in range(4)])
    runs = [("intact", None, ()), ("flat (no edges)", "flat", (0, 1, 2)), ("spatial mean", "mean", (0, 1, 2)),
            ("zeros", "zero", (0, 1, 2)), ("other image's edges", "shuffle", (0, 1, 2))]
    if not quick:
        runs += [("flat at P3 only", "flat", (0,)), ("flat at P4 only", "flat", (1,)), ("flat at P5 only", "flat", (2,))]
    out = {}
    for name, mode, levels in runs:
        h = hem.register_forward_hook(_knockout_hook(mode, set(levels), flat)) if mode else None
        t0 = time.perf_counter()
        try:
            r = evaluate_model(model, cfg, data.samples, data.class_names, device="cpu", conf=0.25, batch=batch)
        finally:
            if h is not None:
                h.remove()
        out[name] = dict(map50=r.map50, map50_95=r.map50_95, precision=r.precision, recall=r.recall,
                         seconds=round(time.perf_counter() - t0, 1))
        print(f"  {name:<22} mAP@.5 {r.map50:.4f}  mAP@.5:.95 {r.map50_95:.4f}  P {r.precision:.3f}  R {r.recall:.3f}"
              f"  ({out[name]['seconds']} s)", flush=True)
    return out


# ---------------------------------------------------------------------------------- main
def _print_contrast(title, c):
    print(f"\n(a) edge-map contrast, {title}")
    print(f"{'map':<22}" + "".join(f"{r:>12}" for r in REGIONS) + f"{'rim/bg':>8}{'rim/deb':>8}{'AUC bg':>8}{'AUC deb':>8}{'AUC int':>8}")
    for name, d in c.items():
        print(f"{name:<22}" + "".join(f"{d['mean'][r]:>12.4g}" for r in REGIONS)
              + f"{d['rim_over_background']:>8.2f}{d['rim_over_debris_rim']:>8.2f}{d['auc_rim_vs_background']:>8.3f}"
              f"{d['auc_rim_vs_debris_rim']:>8.3f}{d['auc_rim_vs_interior']:>8.3f}")


def _print_mags(title, m):
    print(f"\n(b) magnitudes, {title}")
    print(f"{'tensor':<30}{'mean|x|':>10}{'std':>10}{'spatial std':>12}{'mean':>10}")
    for name, s in m["stats"].items():
        print(f"{name:<30}{s['mean_abs']:>10.4g}{s['std']:>10.4g}{s['spatial_std']:>12.4g}{s['mean']:>10.4g}")
    print(f"(d) SEF first 1x1 conv, {title}: pre-BN output split by input group")
    print(f"{'level':<6}{'edge std':>10}{'feat std':>10}{'edge share':>11}{'edge sp.std':>12}{'feat sp.std':>12}"
          f"{'|w| edge ch':>12}{'|w| feat ch':>12}{'HEM |gamma|':>12}")
    for lv, f in m["fusion"].items():
        print(f"{lv:<6}{f['edge_part_std']:>10.4g}{f['feature_part_std']:>10.4g}{f['edge_share_of_variance']:>11.3f}"
              f"{f['edge_part_spatial_std']:>12.4g}{f['feature_part_spatial_std']:>12.4g}"
              f"{f['weight_norm_per_edge_channel']:>12.4g}{f['weight_norm_per_feature_channel']:>12.4g}"
              f"{f['hem_bn_gamma_abs_mean']:>12.4g}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="ablation folder (bench/ablation.sh): weights from train-full.json, held-out set")
    ap.add_argument("--weights", help="trained full (edge) model .safetensors")
    ap.add_argument("--heldout", help="held-out COCO file for the knock-outs")
    ap.add_argument("--images", type=int, default=8, help="synthetic images for (a) (b) (d)")
    ap.add_argument("--seed", type=int, default=5000, help="first image seed for (a) (b) (d)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="skip the per-level knock-outs")
    ap.add_argument("--no-knockout", action="store_true")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    weights, heldout = args.weights, args.heldout
    if args.workdir:
        w = Path(args.workdir)
        weights = weights or json.loads((w / "train-full.json").read_text())["weights"]
        heldout = heldout or str(w / "heldout" / "annotations.json")
    if not weights:
        ap.error("give --weights or --workdir")
    trained, cfg, _ = load_checkpoint(weights, device="cpu")
    if trained.hem is None:
        ap.error(f"{weights} has no edge module (variant {cfg.variant_name}); give a full or edge model")
    torch.manual_seed(0)
    untrained = build_model(cfg).eval()
    print(f"weights {weights} (variant {cfg.variant_name}, imgsz {cfg.imgsz}); images seeds "
          f"{args.seed}..{args.seed + args.images - 1}; torch threads {torch.get_num_threads()}")

    scenes = [make_scene(args.seed + i) for i in range(args.images)]
    print("regions (source pixels): " + ", ".join(f"{r} {sum(int(s['regions'][r].sum()) for s in scenes)}" for r in REGIONS)
          + f"; grains {sum(s['n_grains'] for s in scenes)}")
    report: dict = dict(weights=str(weights), imgsz=cfg.imgsz, seeds=[s["seed"] for s in scenes])
    calibrate_bn(untrained, scenes, cfg.imgsz)
    for tag, model in (("trained", trained), ("untrained", untrained)):
        report[f"contrast_{tag}"] = c = contrast(model, scenes, cfg.imgsz)
        _print_contrast(tag, c)
        report[f"magnitudes_{tag}"] = m = magnitudes(model, scenes, cfg.imgsz)
        _print_mags(tag, m)

    if not args.no_knockout:
        if not heldout:
            ap.error("the knock-outs need --heldout (or --workdir)")
        print(f"\n(c) knock-out of the edge input EP3/EP4/EP5, trained model, held-out set {heldout}")
        report["knockout"] = knockouts(trained, cfg, heldout, args.batch, args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
