"""How fast a lab's model learns its slides: a simulated lab, reviewed image by image.

    python bench/learning_curve.py [--grain-model models/pollen-grain-n.safetensors]
        [--rows embed split app full frozen head epochs-few epochs-more native scratch]
        [--k 5 10 20 40] [--seeds 0 1 2] [--orders random next] [--ft-k 20] [--ft-seeds 0]
        [--ft-imgsz 320] [--ft-epochs 15] [--pool 60] [--test-fields 40] [--data ../shared/data]

Needs the real imagery in ../shared/data (POLLEN73S crops and debris tiles); without it the
script says so and exits 0.

Target domain (what a new lab meets): composited 640x640 fields of POLLEN73S taxa that the
grain model's training never used (the compositor's ``split="test", split_by="taxon"``; the
8 of them with the most usable crops) on generated mounts and held-out real debris tiles
(``debris_tiles(split="test")``). The crops of each taxon are split by crop (salt
"learning-curve", 35 % test) so held-out test fields never reuse a crop the lab reviewed.
Grain diameters 40-150 px (one magnification, well inside the grain model's trained range).

Each seed draws its own pool of candidate fields (--pool). "Reviewing" k fields makes their
true boxes and taxa reviewed annotations. Orders: ``random`` (a seeded shuffle of the pool)
and ``next`` ("review this next", engine.review_order: the active model's proposals and its
flipped pass, taxon rarity; re-ordered after every retrain, so batches 5 -> 10 -> 20 -> 40).

Rows (all scored on the same held-out test fields, class-aware mAP over the target taxa,
pycocotools as ``pollenstudio eval``):

- ``embed``: which crop embedding and which few-shot classifier (seed 0, random order):
  accuracy of naming the true grains of the test fields, and mAP of the split design;
- ``split``: the split design, grain model (unchanged) finds grains + taxon classifier
  (engine.classify defaults) names them; all --k x --seeds x --orders. The retrain time is
  the time to embed the reviewed grains and fit the classifier;
- ``app``: the split design through the app's own path (a project, ``train_project`` with the
  auto recipe, the version file loaded by ``Predictor.from_checkpoint``): seed 0, random
  order, each k; checks the cached figures and times the app's retrain end to end;
- detector fine-tunes through ``train_project`` (``--ft-k``, ``--ft-seeds``, random order,
  ``--ft-imgsz``, ``--ft-epochs``): ``full`` (every layer), ``frozen`` (backbone frozen),
  ``head`` (head only), ``epochs-few`` / ``epochs-more`` (1/3 and 2x the epochs, full),
  ``native`` (full at 640 px), ``scratch`` (no base model, full).

Everything prints as it is measured; wall times are on this machine as it was (shared).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pollenstudio.core.types import Box, Detection  # noqa: E402
from pollenstudio.engine import classify  # noqa: E402
from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, evaluate_detections  # noqa: E402
from pollenstudio.engine.review_order import ImageProposals, flip_back, review_order  # noqa: E402
from pollenstudio.engine.synthetic.composite import (  # noqa: E402
    CompositeConfig,
    GrainLibrary,
    _stable_fraction,
    composite_image,
    debris_tiles,
)

FT_ROWS = ("full", "frozen", "head", "epochs-few", "epochs-more", "native", "scratch")
SALT = "learning-curve"


# ---------------------------------------------------------------- the target domain
def target_domain(data: Path, n_taxa: int, min_crops: int):
    held = GrainLibrary.from_folders([data / "pollen73s"], split="test", split_by="taxon")
    usable = held.usable()
    per = {t: [held.files[i] for i in usable if held.labels[i] == k] for k, t in enumerate(held.taxa)}
    ranked = sorted((t for t in per if len(per[t]) >= min_crops), key=lambda t: (-len(per[t]), t))[:n_taxa]
    taxa = sorted(ranked)
    libs = {}
    for split in ("train", "test"):
        files, labels = [], []
        for k, t in enumerate(taxa):
            for f in per[t]:
                rel = f.relative_to(data / "pollen73s").as_posix()
                if (_stable_fraction(SALT + "|" + rel) < 0.35) == (split == "test"):
                    files.append(f)
                    labels.append(k)
        libs[split] = GrainLibrary(taxa=taxa, files=files, labels=labels)
    return taxa, libs, {t: len(per[t]) for t in taxa}, held.taxa


def make_fields(n, seed0, lib, cfg, debris):
    out = []
    for i in range(n):
        img, objs = composite_image(seed0 + i, lib, cfg, debris)
        b = np.array([o["bbox"] for o in objs], np.float64).reshape(-1, 4)
        c = np.array([o["category"] for o in objs], np.int64)
        out.append((img, b, c))
    return out


def dets_arrays(dets):
    b = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets], np.float64).reshape(-1, 4)
    return b, np.array([d.score for d in dets], np.float64)


def score(truths, preds, taxa):
    r = evaluate_detections(truths, preds, taxa, conf=0.25)
    return r.map50, r.map50_95, {pc["name"]: pc.get("ap50") for pc in r.per_class}


def fmt_ms(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "   -   "
    return f"{np.mean(vals):.3f}±{np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}      "


# ---------------------------------------------------------------- split design (cached)
class SplitLab:
    """Embeddings cached per field so every (seed, order, k) costs a classifier fit. The cached
    vector holds every feature set side by side ([deep | hand | pollen | imagenet]); each
    classifier reads its own columns (:func:`slice_features`)."""

    def __init__(self, model, spec_all, device="cpu", networks=("pollen", "imagenet")):
        self.model, self.device = model, device
        self.spec_all = spec_all  # deep+hand
        self.nets = [n for n in networks if classify.embedder_file(n).is_file()]
        COLUMNS.clear()
        self.timings: dict[str, float] = {}

    def embed(self, img, boxes):
        t = time.perf_counter()
        parts = [classify.embed(self.model, img, boxes, self.spec_all, self.device)]
        self.timings["deep+hand"] = self.timings.get("deep+hand", 0.0) + time.perf_counter() - t
        for n in self.nets:
            t = time.perf_counter()
            parts.append(classify.embed(None, img, boxes, classify.EmbedSpec(features=n), self.device))
            self.timings[n] = self.timings.get(n, 0.0) + time.perf_counter() - t
        if len(boxes) and not COLUMNS:
            a = parts[0].shape[1]
            COLUMNS.update({"deep": (0, a - classify.HAND_DIM), "hand": (a - classify.HAND_DIM, a), "deep+hand": (0, a)})
            for n, e in zip(self.nets, parts[1:]):
                COLUMNS[n] = (a, a + e.shape[1])
                a += e.shape[1]
        if not len(boxes):
            return np.zeros((0, sum(b - a for a, b in (COLUMNS.get(k, (0, 0)) for k in ("deep+hand", *self.nets)))), np.float32)
        return np.concatenate(parts, 1)

    def features(self) -> list[str]:
        return ["hand", "deep", "deep+hand"] + [f for n in self.nets for f in ((n, n + "+hand") if n == "pollen" else (n,))]


COLUMNS: dict[str, tuple[int, int]] = {}


def slice_features(E, features):
    if not len(E):
        return E
    if features.endswith("+hand") and features != "deep+hand":
        (a, b), (c, d) = COLUMNS[features[:-5]], COLUMNS["hand"]
        return np.concatenate([E[:, a:b], E[:, c:d]], 1)
    a, b = COLUMNS[features]
    return E[:, a:b]


def split_predict(clf, test_E, test_boxes, test_scores, features, spec_all):
    preds = []
    for E, b, s in zip(test_E, test_boxes, test_scores):
        if len(b):
            P = clf.predict_proba(slice_features(E, features))
            c = P.argmax(1)
        else:
            c = np.zeros(0, np.int64)
        preds.append(ImagePreds(boxes=b, scores=s, classes=c))
    return preds


def fit(E_list, y_list, taxa, features, kind, spec_all):
    E = np.concatenate([slice_features(e, features) for e in E_list if len(e)])
    y = np.concatenate([yy for yy in y_list if len(yy)])
    present = sorted(set(y.tolist()))
    spec = classify.EmbedSpec(features=features, crop=spec_all.crop, margin=spec_all.margin, turns=spec_all.turns,
                              levels=spec_all.levels) if features in ("deep", "hand", "deep+hand") else classify.EmbedSpec(features=features)
    clf = classify.TaxonClassifier.fit(E, [present.index(v) for v in y.tolist()], [taxa[i] for i in present], spec, kind)
    return clf, present


def classes_of(clf, present, P):
    return np.array([present[i] for i in P.argmax(1)], np.int64) if len(P) else np.zeros(0, np.int64)


# ---------------------------------------------------------------- detector fine-tunes via the app
def build_project(folder: Path, fields, idx, taxa):
    from pollenstudio.project.coco import import_coco
    from pollenstudio.project.store import Project

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    images, anns = [], []
    for j, i in enumerate(idx):
        img, b, c = fields[i]
        name = f"images/f{i:04d}.png"
        cv2.imwrite(str(folder / name), img[..., ::-1])
        images.append(dict(id=j + 1, file_name=name, width=img.shape[1], height=img.shape[0], review_status="reviewed"))
        for bb, cc in zip(b, c):
            x1, y1, x2, y2 = (float(v) for v in bb)
            anns.append(dict(id=len(anns) + 1, image_id=j + 1, category_id=int(cc) + 1, bbox=[x1, y1, x2 - x1, y2 - y1],
                             area=(x2 - x1) * (y2 - y1), iscrowd=0))
    coco = dict(images=images, annotations=anns, categories=[dict(id=k + 1, name=t) for k, t in enumerate(taxa)])
    (folder / "truth.json").write_text(json.dumps(coco))
    proj = Project.create(folder)
    import_coco(proj, folder / "truth.json", folder)
    return proj


def eval_version(weights, test, taxa, test_truths):
    from pollenstudio.engine.predict import Predictor

    pred = Predictor.from_checkpoint(weights, device="cpu", conf=0.01, max_det=100)
    pred.merge_same_grain = False  # the COCO protocol of `pollenstudio eval`
    index = {t: k for k, t in enumerate(taxa)}
    preds = []
    for r in pred.iter_predict([f[0] for f in test]):
        b, s = dets_arrays(r.detections)
        c = np.array([index.get(d.label, -1) for d in r.detections], np.int64)
        keep = c >= 0
        preds.append(ImagePreds(boxes=b[keep], scores=s[keep], classes=c[keep]))
    return score(test_truths, preds, taxa), pred


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grain-model", default=str(ROOT / "models/pollen-grain-n.safetensors"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--rows", nargs="+", default=["embed", "split", "app", *FT_ROWS])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--orders", nargs="+", default=["random", "next"])
    ap.add_argument("--ft-k", type=int, nargs="+", default=[20])
    ap.add_argument("--ft-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--ft-imgsz", type=int, default=320)
    ap.add_argument("--ft-epochs", type=int, default=15)
    ap.add_argument("--pool", type=int, default=60)
    ap.add_argument("--test-fields", type=int, default=40)
    ap.add_argument("--taxa", type=int, default=8)
    ap.add_argument("--min-crops", type=int, default=12)
    ap.add_argument("--restain", type=float, default=0.0,
                    help="chance a grain's stain is replaced (0: one lab's preparation keeps its stain)")
    ap.add_argument("--magnification", type=float, default=0.4,
                    help="grains pasted at their crop's size times this (one lab, one magnification); "
                         "0: random sizes 40-150 px")
    ap.add_argument("--features", default=None, help="embedding of the split rows (default: engine.classify's)")
    ap.add_argument("--kind", default=None, help="classifier of the split rows (default: engine.classify's)")
    ap.add_argument("--networks", nargs="*", default=["pollen", "imagenet"],
                    help="embedding networks cached beside deep+hand (when installed)")
    ap.add_argument("--crop", type=int, default=classify.EmbedSpec().crop, help="embedding crop side (px)")
    ap.add_argument("--turns", type=int, default=classify.EmbedSpec().turns, help="quarter turns averaged in deep features")
    ap.add_argument("--levels", default=classify.EmbedSpec().levels, help="deep feature levels: neck, backbone, both")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="scratch folder for the projects (default: a temp folder)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "pollen73s").is_dir():
        print(f"real imagery not found in {data} (needs pollen73s/, debris/): nothing measured")
        return 0
    import torch

    from pollenstudio.detector.checkpoint import load_checkpoint
    from pollenstudio.engine.predict import Predictor

    torch.set_num_threads(args.threads)
    t_all = time.time()
    taxa, libs, ncrops, held_taxa = target_domain(data, args.taxa, args.min_crops)
    debris = debris_tiles(data / "debris", split="test")
    print(f"held-out taxa of the grain model: {len(held_taxa)}; target taxa ({len(taxa)}, usable crops): "
          + ", ".join(f"{t} {ncrops[t]}" for t in taxa))
    print(f"crops: {len(libs['train'].files)} for reviewed fields, {len(libs['test'].files)} for test fields (never shared); "
          f"held-out debris tiles {len(debris)}; torch threads {torch.get_num_threads()}")
    # --magnification 0: random grain sizes (40-150 px), the other lab setting
    cfg = CompositeConfig(grains_per_frame=(1, 7), restain=args.restain, density=(0.7, 1.3), grain_size=(40.0, 150.0),
                          magnification=args.magnification if args.magnification > 0 else None)
    print(f"fields: {cfg.to_dict()}")
    t0 = time.time()
    test = make_fields(args.test_fields, 900_000, libs["test"], cfg, debris)
    test_truths = [ImageTruth(boxes=b, classes=c, width=640, height=640) for _, b, c in test]
    n_test = sum(len(b) for _, b, _ in test)
    per_taxon_test = np.bincount(np.concatenate([c for *_, c in test]), minlength=len(taxa))
    sizes = np.concatenate([np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) for _, b, _ in test])
    print(f"test grain box sizes (px): 5/50/95th percentile {np.percentile(sizes, [5, 50, 95]).round(0).tolist()}")
    print(f"test fields: {len(test)} x 640x640, {n_test} grains ({', '.join(f'{t} {n}' for t, n in zip(taxa, per_taxon_test))}); "
          f"made in {time.time() - t0:.0f} s")

    grain_path = Path(args.grain_model)
    det = Predictor.from_checkpoint(grain_path, device="cpu", conf=0.01, max_det=100)
    det.merge_same_grain = False
    gmodel, _, _ = load_checkpoint(grain_path)
    spec_all = classify.EmbedSpec(features="deep+hand", crop=args.crop, turns=args.turns, levels=args.levels)
    lab = SplitLab(gmodel, spec_all, networks=tuple(args.networks))

    need_split = {"embed", "split"} & set(args.rows)
    if need_split:
        t0 = time.time()
        test_boxes, test_scores, test_E, true_E = [], [], [], []
        for (img, tb, _), r in zip(test, det.iter_predict([f[0] for f in test])):
            b, s = dets_arrays(r.detections)
            test_boxes.append(b)
            test_scores.append(s)
            test_E.append(lab.embed(img, b))
            true_E.append(lab.embed(img, tb))
        agn = evaluate_detections([ImageTruth(boxes=t.boxes, classes=np.zeros(len(t.boxes), np.int64), width=640, height=640)
                                   for t in test_truths],
                                  [ImagePreds(boxes=b, scores=s, classes=np.zeros(len(b), np.int64)) for b, s in zip(test_boxes, test_scores)],
                                  ["pollen"], conf=0.25)
        print(f"grain model on the test fields: class-agnostic AP@.5 {agn.map50:.3f}, AP@.5:.95 {agn.map50_95:.3f} "
              f"(the ceiling of the split design's mAP); {sum(len(b) for b in test_boxes)} boxes >= 0.01 embedded "
              f"in {time.time() - t0:.0f} s")
        test_y = [c for *_, c in test]
        n_emb = sum(len(b) for b in test_boxes) + n_test
        print("embedding time per grain (this CPU, torch threads as above): "
              + ", ".join(f"{k} {1000 * v / max(1, n_emb):.1f} ms" for k, v in lab.timings.items()))

        # per seed: a pool of candidate fields, their true grains' and proposals' embeddings
        pools = {}
        for seed in args.seeds:
            t0 = time.time()
            fields = make_fields(args.pool, 100_000 * (seed + 1), libs["train"], cfg, debris)
            items, t_emb = [], []
            for (img, tb, tc), r, rf in zip(fields, det.iter_predict([f[0] for f in fields]),
                                            det.iter_predict([np.ascontiguousarray(f[0][:, ::-1]) for f in fields])):
                te = time.perf_counter()
                E_true = lab.embed(img, tb)
                t_emb.append(time.perf_counter() - te)
                props = [d for d in r.detections if d.score >= 0.05]
                flips = [d for d in flip_back(rf.detections, img.shape[1]) if d.score >= 0.05]
                items.append(dict(E_true=E_true, y=tc, props=props, flips=flips,
                                  E_props=lab.embed(img, dets_arrays(props)[0]), E_flips=lab.embed(img, dets_arrays(flips)[0])))
            pools[seed] = (fields, items, t_emb)
            print(f"seed {seed}: pool of {len(fields)} fields, {sum(len(f[1]) for f in fields)} grains, made and "
                  f"proposed in {time.time() - t0:.0f} s")

    def named(dets, E, clf, present):
        if clf is None or not len(dets):
            return list(dets)
        P = clf.predict_proba(slice_features(E, clf.spec.features))
        out = []
        for d, p in zip(dets, P):
            top = np.argsort(-p)[:5]
            out.append(Detection(box=d.box, class_index=int(top[0]), label=clf.class_names[int(top[0])], score=d.score,
                                 topk=tuple((clf.class_names[int(j)], float(p[j])) for j in top), level=d.level))
        return out

    def chosen_fields(seed, order, ks, features, kind):
        """{k: (indices, clf, present, fit seconds)} for one seed and order (batches in k order)."""
        fields, items, t_emb = pools[seed]
        rng = np.random.default_rng(seed)
        perm = [int(i) for i in rng.permutation(len(fields))]
        picked, out, clf, present = [], {}, None, None
        for k in sorted(ks):
            need = k - len(picked)
            rest = [i for i in range(len(fields)) if i not in picked]
            if order == "random":
                add = [i for i in perm if i not in picked][:need]
            else:
                counts = {}
                for i in picked:
                    for c in items[i]["y"]:
                        counts[taxa[c]] = counts.get(taxa[c], 0) + 1
                props = [ImageProposals(i, named(items[i]["props"], items[i]["E_props"], clf, present),
                                        named(items[i]["flips"], items[i]["E_flips"], clf, present)) for i in rest]
                add = review_order(props, counts)[:need]
            picked += add
            t = time.perf_counter()
            clf, present = fit([items[i]["E_true"] for i in picked], [items[i]["y"] for i in picked], taxa, features, kind, spec_all)
            fit_s = time.perf_counter() - t + sum(t_emb[i] for i in picked)
            out[k] = (list(picked), clf, present, fit_s)
        return out

    if "embed" in args.rows:
        print("\nA. embedding x classifier (seed 0, random order): naming accuracy of the test fields' true grains / split-design mAP@.5")
        print(f"   {'embedding':10s} {'classifier':10s} " + " ".join(f"{'k=' + str(k):>13s}" for k in args.k))
        for features in lab.features():
            for kind in classify.KINDS:
                runs = chosen_fields(args.seeds[0], "random", args.k, features, kind)
                cells = []
                for k in args.k:
                    _, clf, present, _ = runs[k]
                    hit = tot = 0
                    for E, y in zip(true_E, test_y):
                        if len(y):
                            hit += int((classes_of(clf, present, clf.predict_proba(slice_features(E, features))) == y).sum())
                            tot += len(y)
                    preds = [ImagePreds(boxes=p.boxes, scores=p.scores, classes=np.array([present[i] for i in p.classes], np.int64))
                             for p in split_predict(clf, test_E, test_boxes, test_scores, features, spec_all)]
                    m50, _, _ = score(test_truths, preds, taxa)
                    cells.append(f"{hit / max(1, tot):.3f} / {m50:.3f}")
                print(f"   {features:10s} {kind:10s} " + " ".join(f"{c:>13s}" for c in cells), flush=True)

    if "split" in args.rows:
        feats, kind = args.features or classify.DEFAULT_FEATURES, args.kind or classify.DEFAULT_KIND
        print(f"\nB. split design: grain model + taxon classifier ({feats}, {kind}); seeds {args.seeds}; mean±std over seeds")
        results = {}
        for order in args.orders:
            for seed in args.seeds:
                runs = chosen_fields(seed, order, args.k, feats, kind)
                for k, (picked, clf, present, fit_s) in runs.items():
                    preds = [ImagePreds(boxes=p.boxes, scores=p.scores, classes=np.array([present[i] for i in p.classes], np.int64))
                             for p in split_predict(clf, test_E, test_boxes, test_scores, feats, spec_all)]
                    m50, m5095, per = score(test_truths, preds, taxa)
                    grains = int(sum(len(pools[seed][1][i]["y"]) for i in picked))
                    hit = sum(int((classes_of(clf, present, clf.predict_proba(slice_features(E, feats))) == y).sum())
                              for E, y in zip(true_E, test_y) if len(y))
                    acc = hit / max(1, sum(len(y) for y in test_y))
                    results[(order, k, seed)] = (m50, m5095, per, fit_s, grains, acc)
        print(f"   {'order':7s} {'k':>3s} {'grains':>6s} {'named':>13s} {'mAP@.5':>13s} {'mAP@.5:.95':>13s} {'retrain s':>10s}   "
              "per-taxon AP@.5 (mean); named = naming accuracy of the test fields' true grains")
        for order in args.orders:
            for k in args.k:
                rs = [results[(order, k, s)] for s in args.seeds]
                per = "  ".join(f"{t[:10]} {np.mean([r[2].get(t) or 0 for r in rs]):.2f}" for t in taxa)
                print(f"   {order:7s} {k:3d} {np.mean([r[4] for r in rs]):6.0f} {fmt_ms([r[5] for r in rs]):>13s} {fmt_ms([r[0] for r in rs]):>13s} "
                      f"{fmt_ms([r[1] for r in rs]):>13s} {np.mean([r[3] for r in rs]):10.1f}   {per}", flush=True)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="learning-curve-"))
    if "app" in args.rows or set(FT_ROWS) & set(args.rows):
        from pollenstudio.engine.train import TrainConfig, train_project

        if "app" in args.rows:
            from pollenstudio.engine.recipe import auto_recipe

            seed = args.seeds[0]
            fields = pools[seed][0] if need_split else make_fields(args.pool, 100_000 * (seed + 1), libs["train"], cfg, debris)
            perm = [int(i) for i in np.random.default_rng(seed).permutation(len(fields))]
            print(f"\nC. split design through the app (seed {seed}, random order): project -> train_project(auto recipe) -> "
                  "Predictor.from_checkpoint")
            for k in args.k:
                folder = work / f"app-k{k}"
                shutil.rmtree(folder, ignore_errors=True)
                proj = build_project(folder, fields, perm[:k], taxa)
                grains = {t: 0 for t in taxa}
                for i in perm[:k]:
                    for c in fields[i][2]:
                        grains[taxa[c]] += 1
                rec = auto_recipe(k, grains, "cpu", (640, 640))
                t = time.time()
                res = train_project(proj, rec.train_config(), base=str(grain_path), stage=rec.stage)
                wall = time.time() - t
                (m50, m5095, per), _ = eval_version(res.weights, test, taxa, test_truths)
                print(f"   k={k:3d} recipe {rec.stage}: mAP@.5 {m50:.3f} mAP@.5:.95 {m5095:.3f} retrain {wall:.1f} s   "
                      + "  ".join(f"{t[:10]} {(per.get(t) or 0):.2f}" for t in taxa), flush=True)
                proj.close()

        ft = [r for r in FT_ROWS if r in args.rows]
        if ft:
            print(f"\nD. detector fine-tunes through train_project (random order, k {args.ft_k}, seeds {args.ft_seeds}, "
                  f"{args.ft_imgsz} px unless 'native', {args.ft_epochs} epochs unless 'epochs-*')")
            print(f"   {'row':12s} {'k':>3s} {'seed':>4s} {'imgsz':>5s} {'ep':>3s} {'mAP@.5':>7s} {'mAP@.5:.95':>10s} {'retrain s':>9s}   per-taxon AP@.5")
            for seed in args.ft_seeds:
                fields = pools[seed][0] if need_split and seed in pools else make_fields(args.pool, 100_000 * (seed + 1), libs["train"], cfg, debris)
                perm = [int(i) for i in np.random.default_rng(seed).permutation(len(fields))]
                for k in args.ft_k:
                    for row in ft:
                        ep = {"epochs-few": max(1, args.ft_epochs // 3), "epochs-more": args.ft_epochs * 2}.get(row, args.ft_epochs)
                        imgsz = 640 if row == "native" else args.ft_imgsz
                        freeze = {"frozen": "backbone", "head": "neck"}.get(row, "none")
                        base = None if row == "scratch" else str(grain_path)
                        folder = work / f"ft-{row}-k{k}-s{seed}"
                        shutil.rmtree(folder, ignore_errors=True)
                        proj = build_project(folder, fields, perm[:k], taxa)
                        tc = TrainConfig(epochs=ep, imgsz=imgsz, batch=8, device="cpu", seed=seed, freeze=freeze,
                                         patience=0, threads=args.threads, val_fraction=0.2)
                        t = time.time()
                        res = train_project(proj, tc, base=base, stage="detector")
                        wall = time.time() - t
                        (m50, m5095, per), pred = eval_version(res.weights, test, taxa, test_truths)
                        extra = set(pred.class_names) - set(taxa)
                        print(f"   {row:12s} {k:3d} {seed:4d} {imgsz:5d} {ep:3d} {m50:7.3f} {m5095:10.3f} {wall:9.0f}   "
                              + "  ".join(f"{t[:10]} {(per.get(t) or 0):.2f}" for t in taxa)
                              + (f"   (model also names {sorted(extra)})" if extra else ""), flush=True)
                        proj.close()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
