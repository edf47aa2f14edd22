"""Naming grains from a few examples: which embedding, unknown taxa, and rejections that teach.

    python bench/naming.py [--parts a c d] [--k 1 5 10 20] [--episodes 20] [--fields 40]
        [--data ../shared/data] [--threads 1]

Needs the real imagery in ../shared/data (POLLEN73S crops, debris tiles); without it the script
says so and exits 0. Every taxon here is one the grain model and the pollen embedding never
trained on (the compositor's ``split="test", split_by="taxon"``: 12 POLLEN73S taxa), and the
debris tiles are the held-out block (``debris_tiles(split="test")``).

(a) n-way k-shot crop accuracy on the held-out taxa's real crops (clean crops, as photographed),
    k = 1, 5, 10, 20, random episodes: k support crops per taxon, every other crop a query; for
    each embedding (``hand``, ``deep`` = the grain model's own features, ``imagenet`` = the
    pretrained EfficientNet-Lite0 without pollen training, when built by
    scripts/convert_effnet_lite0.py into models/, ``pollen`` = the shipped pollen embedding)
    and each classifier (``prototype`` = nearest class mean, ``logreg``). 12-way (all held-out
    taxa) and 8-way (the 8 with most crops).
(c) unknown-taxon flagging: per episode 8 held-out taxa are "the project's" (10 reviewed
    crops each), the other 4 never reviewed; share of the unreviewed taxa's crops flagged as
    unknown vs share of the reviewed taxa's other crops wrongly flagged (threshold calibrated
    on the reviewed crops only, ``engine.classify``).
(d) false boxes on real debris: composited 640x640 fields of the held-out taxa at one
    magnification among many held-out real debris tiles; the grain model proposes (conf 0.25);
    a reviewer accepts proposals on true grains (naming them) and rejects the rest on k fields;
    the classifier (pollen embedding + "not pollen" class) then withdraws proposals on the
    test fields. False boxes per field and true grains lost, before and after.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pollenstudio.engine import classify  # noqa: E402


def crop_boxes(img: np.ndarray, margin: float) -> np.ndarray:
    """The box a classifier would get for a whole clean crop: the crop is the box plus margin."""
    h, w = img.shape[:2]
    s = max(h, w) / (1.0 + margin)
    return np.array([[w / 2 - s / 2, h / 2 - s / 2, w / 2 + s / 2, h / 2 + s / 2]])


def embed_crops(files, features, det_model, margin=0.25):
    spec = classify.EmbedSpec(features=features)
    out, t = [], 0.0
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)[:, :, ::-1]
        t0 = time.perf_counter()
        out.append(classify.embed(det_model, img, crop_boxes(img, spec.margin), spec)[0])
        t += time.perf_counter() - t0
    return np.stack(out), 1000 * t / max(1, len(files))


def field_grains(data: Path, held, n_fields: int, seed: int = 50_000):
    """Held-out taxa's grains as a lab's fields show them: composited at one magnification
    among held-out real debris tiles. -> list of (field image, true boxes (n, 4), labels (n,))."""
    from pollenstudio.engine.synthetic.composite import CompositeConfig, composite_image, debris_tiles

    debris = debris_tiles(data / "debris", split="test")
    cfg = CompositeConfig(grains_per_frame=(3, 8), magnification=0.4, restain=0.0, debris=(0.5, 2.0))
    out = []
    for i in range(n_fields):
        img, objs = composite_image(seed + i, held, cfg, debris)
        if objs:
            out.append((img, np.array([o["bbox"] for o in objs], np.float64), np.array([o["category"] for o in objs])))
    return out


def embed_fields(fields, features, det_model):
    spec = classify.EmbedSpec(features=features)
    E, t, n = [], 0.0, 0
    for img, boxes, _ in fields:
        t0 = time.perf_counter()
        E.append(classify.embed(det_model, img, boxes, spec))
        t += time.perf_counter() - t0
        n += len(boxes)
    return np.concatenate(E), 1000 * t / max(1, n)


def episodes_accuracy(E, y, taxa_sel, k, kind, features, n_ep):
    accs = []
    for ep in range(n_ep):
        rng = np.random.default_rng(1000 * k + ep)
        sup, qry = [], []
        for c in taxa_sel:
            idx = rng.permutation(np.nonzero(y == c)[0])
            sup += list(idx[:k])
            qry += list(idx[k:])
        remap = {c: j for j, c in enumerate(taxa_sel)}
        clf = classify.TaxonClassifier.fit(E[sup], [remap[c] for c in y[sup]], [str(c) for c in taxa_sel],
                                           classify.EmbedSpec(features=features), kind)
        pred = clf.predict_proba(E[qry]).argmax(1)
        accs.append(float((pred == np.array([remap[c] for c in y[qry]])).mean()))
    return float(np.mean(accs)), float(np.std(accs))


def part_a(held, E_by, args, what: str, labels=None):
    y = np.asarray(held.labels if labels is None else labels)
    counts = np.bincount(y, minlength=len(held.taxa))
    ways = {"12-way": [c for c in range(len(held.taxa)) if counts[c] > 1],
            "8-way": sorted(np.argsort(-counts, kind="stable")[:8].tolist())}
    print(f"\n(a) n-way k-shot accuracy, {what}, held-out taxa ({len(y)} grains; per taxon "
          f"{counts.min()}-{counts.max()}); mean±std over {args.episodes} episodes")
    for way, sel in ways.items():
        print(f"   {way:7s} {'embedding':10s} {'classifier':10s} " + " ".join(f"{'k=' + str(k):>12s}" for k in args.k))
        for features, E in E_by.items():
            for kind in classify.KINDS:
                cells = []
                for k in args.k:
                    if counts[sel].min() <= k:
                        cells.append("     -      ")
                        continue
                    m, s = episodes_accuracy(E, y, sel, k, kind, features, args.episodes)
                    cells.append(f"{m:.3f}±{s:.3f}")
                print(f"   {way:7s} {features:10s} {kind:10s} " + " ".join(f"{c:>12s}" for c in cells), flush=True)


def part_c(held, E_by, args, k=10):
    y = np.asarray(held.labels)
    C = len(held.taxa)
    print(f"\n(c) unknown taxa: 8 reviewed taxa ({k} crops each), {C - 8} never reviewed; {args.episodes} episodes; "
          f"threshold quantile {args.unknown_quantile}")
    print(f"   {'embedding':10s} {'unknown flagged':>16s} {'known flagged':>14s} {'known named right':>17s}")
    for features, E in E_by.items():
        fu, fk, nk = [], [], []
        for ep in range(args.episodes):
            rng = np.random.default_rng(5000 + ep)
            known = sorted(rng.permutation(C)[:8].tolist())
            sup, qk = [], []
            for c in known:
                idx = rng.permutation(np.nonzero(y == c)[0])
                sup += list(idx[:k])
                qk += list(idx[k:])
            qu = [i for i in range(len(y)) if y[i] not in known]
            remap = {c: j for j, c in enumerate(known)}
            clf = classify.TaxonClassifier.fit(E[sup], [remap[c] for c in y[sup]], [str(c) for c in known],
                                               classify.EmbedSpec(features=features), "logreg",
                                               unknown_quantile=args.unknown_quantile)
            fu.append(clf.is_unknown(E[qu]).mean())
            unk = clf.is_unknown(E[qk])
            fk.append(unk.mean())
            pred = clf.predict_proba(E[qk]).argmax(1)
            nk.append(float(((pred == np.array([remap[c] for c in y[qk]])) & ~unk).mean()))
        print(f"   {features:10s} {np.mean(fu):16.3f} {np.mean(fk):14.3f} {np.mean(nk):17.3f}", flush=True)


def part_d(data, args):
    from pollenstudio.engine.evaluate import box_iou
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic.composite import CompositeConfig, GrainLibrary, composite_image, debris_tiles

    held = GrainLibrary.from_folders([data / "pollen73s"], split="test", split_by="taxon")
    debris = debris_tiles(data / "debris", split="test")
    cfg = CompositeConfig(grains_per_frame=(1, 6), debris=(2.0, 4.0), magnification=0.4, restain=0.0)
    det = Predictor.from_checkpoint(ROOT / "models" / "pollen-grain-n.safetensors", device="cpu", conf=0.25)
    det_model = det.explain_model
    fields = [composite_image(70_000 + i, held, cfg, debris) for i in range(max(args.k_fields) + args.fields)]
    results = list(det.iter_predict([f[0] for f in fields]))

    def match(props, objs):
        """Per proposal: index of the true grain it boxes (IoU >= 0.5) or -1."""
        if not props or not objs:
            return np.full(len(props), -1)
        P = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in props])
        T = np.array([o["bbox"] for o in objs])
        iou = box_iou(P, T)
        return np.where(iou.max(1) >= 0.5, iou.argmax(1), -1)

    test = range(max(args.k_fields), len(fields))
    before = np.mean([int((match(results[i].detections, fields[i][1]) < 0).sum()) for i in test])
    n_true = sum(len(fields[i][1]) for i in test)
    found = sum(int((match(results[i].detections, fields[i][1]) >= 0).sum()) for i in test)
    print(f"\n(d) false boxes on held-out real debris ({args.fields} test fields, {n_true} grains, debris {cfg.debris} "
          f"tiles per 256x256): before any review {before:.2f} false boxes per field, {found} grain boxes")
    print(f"   {'k fields':>8s} {'rejected':>8s} {'false/field':>12s} {'grain boxes kept':>17s} {'lost':>5s}")
    spec = classify.EmbedSpec(features=args.d_features)
    cache = {}

    def E_of(i):
        if i not in cache:
            dets = results[i].detections
            b = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets]).reshape(-1, 4)
            cache[i] = classify.embed(det_model, fields[i][0], b, spec) if len(b) else None
        return cache[i]

    for k in args.k_fields:
        E, y = [], []
        for i in range(k):
            m = match(results[i].detections, fields[i][1])
            if E_of(i) is None:
                continue
            E.append(E_of(i))
            y += [fields[i][1][j]["category"] if j >= 0 else len(held.taxa) for j in m]
        names = list(held.taxa) + [classify.NOT_POLLEN]
        E, y = np.concatenate(E), np.asarray(y)
        present = sorted(set(y.tolist()))
        clf = classify.TaxonClassifier.fit(E, [present.index(v) for v in y], [names[c] for c in present], spec, "logreg")
        false, kept, lost = [], 0, 0
        for i in test:
            m = match(results[i].detections, fields[i][1])
            if not len(m) or E_of(i) is None:
                false.append(0)
                continue
            P = clf.predict_proba(E_of(i))
            # the app's rule (TaxonClassifier.label): withdrawn when "not pollen" >= WITHDRAW_P
            notp = clf.class_names.index(classify.NOT_POLLEN) if classify.NOT_POLLEN in clf.class_names else None
            gone = P[:, notp] >= classify.WITHDRAW_P if notp is not None else np.zeros(len(P), bool)
            false.append(int(((m < 0) & ~gone).sum()))
            kept += int(((m >= 0) & ~gone).sum())
            lost += int(((m >= 0) & gone).sum())
        print(f"   {k:8d} {int((y == len(held.taxa)).sum()):8d} {np.mean(false):12.2f} {kept:17d} {lost:5d}", flush=True)


def main() -> int:
    import torch

    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.synthetic.composite import GrainLibrary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--parts", nargs="+", default=["a", "c", "d"])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 20])
    ap.add_argument("--k-fields", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--fields", type=int, default=40, help="test fields of part d")
    ap.add_argument("--field-fields", type=int, default=40, help="composited fields for part a's field crops (0: none)")
    ap.add_argument("--features", nargs="+", default=["hand", "deep", "imagenet", "pollen"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unknown-quantile", type=float, default=classify.UNKNOWN_QUANTILE)
    ap.add_argument("--d-features", default="pollen+hand", help="embedding of part d")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "pollen73s").is_dir():
        print(f"no real imagery in {data}: nothing measured")
        return 0
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}")
    if {"a", "c"} & set(args.parts):
        held = GrainLibrary.from_folders([data / "pollen73s"], split="test", split_by="taxon")
        det_model, _, _ = load_checkpoint(ROOT / "models" / "pollen-grain-n.safetensors")
        E_by = {}
        for f in args.features:
            if f in classify.EMBEDDERS and not classify.embedder_file(f).is_file():
                print(f"   ({f}: {classify.embedder_file(f).name} not installed, skipped)")
                continue
            E_by[f], ms = embed_crops(held.files, f, det_model)
            print(f"   embedding {f:10s}: {E_by[f].shape[1]} dims, {ms:.1f} ms per crop (embedding only, this CPU)")
        if "a" in args.parts:
            part_a(held, E_by, args, "clean real crops")
            if args.field_fields:
                fields = field_grains(data, held, args.field_fields)
                yf = np.concatenate([f[2] for f in fields])
                Ef = {}
                for f in E_by:
                    Ef[f], ms = embed_fields(fields, f, det_model)
                    print(f"   embedding {f:10s} on field crops: {ms:.1f} ms per grain")
                part_a(held, Ef, args, f"grains on composited fields (one magnification, held-out debris, "
                                       f"{args.field_fields} fields)", labels=yf)
        if "c" in args.parts:
            part_c(held, E_by, args)
    if "d" in args.parts:
        part_d(data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
