"""COCO-style evaluation of detections against reviewed ground truth.

mAP figures come from pycocotools (the reference implementation everyone quotes), so our
numbers are comparable with published ones. On top of it we compute what a palynologist
reads at the operating point: precision and recall at the confidence threshold the app
uses, and a confusion matrix with a background row/column (missed grains and false
alarms).

Inputs are plain arrays so this module needs neither the detector nor the store:
``ImageTruth(boxes (n, 4) xyxy px, classes (n,))`` and
``ImagePreds(boxes (m, 4), scores (m,), classes (m,))``, one of each per image, same order.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np

from pollenstudio.core.types import DEFAULT_CONF


@dataclass
class ImageTruth:
    boxes: np.ndarray  # (n, 4) xyxy image px
    classes: np.ndarray  # (n,) class index
    width: int = 0
    height: int = 0


@dataclass
class ImagePreds:
    boxes: np.ndarray  # (m, 4) xyxy image px
    scores: np.ndarray  # (m,)
    classes: np.ndarray  # (m,)


@dataclass
class EvalResult:
    map50: float
    map50_95: float
    precision: float  # at ``conf``, IoU >= ``iou_match``, class-aware
    recall: float
    conf: float
    iou_match: float
    class_names: list[str]
    per_class: list[dict] = field(default_factory=list)  # name, ap50, ap50_95, n_gt, precision, recall
    confusion: np.ndarray | None = None  # (nc+1, nc+1): rows truth, cols prediction; last = background
    n_images: int = 0
    n_truth: int = 0
    n_preds: int = 0
    # finding only: the model names none of the truth's taxa (e.g. the one-class grain model
    # on a taxon-labelled project), so every grain and every detection were one class
    class_agnostic: bool = False

    def to_dict(self) -> dict:
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "precision": self.precision,
            "recall": self.recall,
            "conf": self.conf,
            "iou_match": self.iou_match,
            "n_images": self.n_images,
            "n_truth": self.n_truth,
            "n_preds": self.n_preds,
            "class_names": list(self.class_names),
            "per_class": self.per_class,
            "confusion": None if self.confusion is None else self.confusion.astype(int).tolist(),
            "class_agnostic": self.class_agnostic,
        }

    def table(self) -> str:
        """Human-readable summary: overall figures, then one line per taxon."""
        lines = [AGNOSTIC_NOTE] if self.class_agnostic else []
        lines += [
            f"images {self.n_images}   grains {self.n_truth}   detections {self.n_preds}",
            f"mAP@.5 {self.map50:.4f}   mAP@.5:.95 {self.map50_95:.4f}",
            f"precision {self.precision:.4f}   recall {self.recall:.4f}   (conf >= {self.conf:g}, IoU >= {self.iou_match:g})",
            "",
            f"{'taxon':<28}{'grains':>8}{'AP50':>8}{'AP50-95':>9}{'P':>8}{'R':>8}",
        ]
        for row in self.per_class:
            ap50 = "-" if row["ap50"] is None else f"{row['ap50']:.3f}"
            ap = "-" if row["ap50_95"] is None else f"{row['ap50_95']:.3f}"
            lines.append(
                f"{row['name'][:27]:<28}{row['n_gt']:>8}{ap50:>8}{ap:>9}{row['precision']:>8.3f}{row['recall']:>8.3f}"
            )
        return "\n".join(lines)


# A held-out score means something only on at least this many validation images and grains:
# one image is one slide's conditions, and below 10 grains one grain found or missed moves
# recall (and mAP) by more than a tenth. Below it the figure is not shown (issue 28: a new
# version "scored" mAP@.5 0.005 on one validation image).
MIN_SCORE_IMAGES = 2
MIN_SCORE_GRAINS = 10


def too_few_to_score(metrics: dict | None) -> str | None:
    """Why the held-out score ``metrics`` (an EvalResult dict) means nothing, in words, or
    None when it means something (or its size is unknown: a model card's figures)."""
    if not metrics:
        return None
    n_img, n_gt = metrics.get("n_images"), metrics.get("n_truth")
    if n_img is None or n_gt is None or (n_img >= MIN_SCORE_IMAGES and n_gt >= MIN_SCORE_GRAINS):
        return None
    return (f"too few reviewed images to score: {n_img} validation image{'s' if n_img != 1 else ''} with {n_gt} "
            f"grain{'s' if n_gt != 1 else ''} (a held-out score needs at least {MIN_SCORE_IMAGES} images and "
            f"{MIN_SCORE_GRAINS} grains); review more images")


AGNOSTIC_CLASS = "grain (any taxon)"  # the one class of a class-agnostic score
AGNOSTIC_NOTE = ("class-agnostic (finding only): the model names none of these taxa, so every grain and every "
                 "detection count as one class; taxa are not scored")


def no_taxon_in_common(model_names, truth_names) -> bool:
    """True when a model of classes ``model_names`` names none of ``truth_names``: it can
    only be scored on finding grains (:func:`evaluate_model` then scores class-agnostically)."""
    return not set(model_names) & set(truth_names)


def as_class_agnostic(truths: list[ImageTruth], preds: list[ImagePreds]) -> tuple[list, list]:
    """Every truth box (unnamed grains included: they are grains to find) and every
    prediction as class 0, :data:`AGNOSTIC_CLASS`."""
    t_out = [ImageTruth(np.asarray(t.boxes, np.float64).reshape(-1, 4), np.zeros(len(np.asarray(t.classes).reshape(-1)),
                                                                                  np.int64), t.width, t.height)
             for t in truths]
    p_out = [ImagePreds(np.asarray(p.boxes, np.float64).reshape(-1, 4), np.asarray(p.scores, np.float64).reshape(-1),
                        np.zeros(len(np.asarray(p.scores).reshape(-1)), np.int64)) for p in preds]
    return t_out, p_out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _greedy_match(gt_boxes, gt_cls, pr_boxes, pr_scores, pr_cls, iou_thr, class_aware):
    """Match predictions (best score first) to the unmatched truth with the highest IoU.

    Returns ``pred_to_gt`` (m,) with -1 for unmatched predictions.
    """
    m = len(pr_boxes)
    out = np.full(m, -1, dtype=np.int64)
    if m == 0 or len(gt_boxes) == 0:
        return out
    ious = box_iou(pr_boxes, gt_boxes)
    if class_aware:
        ious = np.where(pr_cls[:, None] == gt_cls[None, :], ious, 0.0)
    taken = np.zeros(len(gt_boxes), bool)
    for i in np.argsort(-pr_scores, kind="stable"):
        cand = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou_thr:
            out[i] = j
            taken[j] = True
    return out


def _coco_eval(truths, preds, nc):
    """Run pycocotools; returns the precision array (T, R, K, A, M) or None if no detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    aid = 0
    for i, t in enumerate(truths):
        w = t.width or 1
        h = t.height or 1
        images.append({"id": i + 1, "width": int(w), "height": int(h)})
        for b, c in zip(np.asarray(t.boxes, np.float64).reshape(-1, 4), np.asarray(t.classes).reshape(-1)):
            aid += 1
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": aid, "image_id": i + 1, "category_id": int(c) + 1, "bbox": [float(b[0]), float(b[1]), bw, bh],
                         "area": bw * bh, "iscrowd": 0})
    for i, p in enumerate(preds):
        for b, s, c in zip(np.asarray(p.boxes, np.float64).reshape(-1, 4), np.asarray(p.scores).reshape(-1),
                           np.asarray(p.classes).reshape(-1)):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)})
    if not dets:
        return None
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": str(k)} for k in range(nc)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.catIds = list(range(1, nc + 1))
        ev.params.maxDets = [1, 10, 300]  # grains per image can exceed COCO's 100
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"]


def _without_unknown(truths, preds, iou_match):
    """Truth boxes of class -1 (unidentified grains) are ignore regions: they are not scored,
    and predictions on them (IoU >= ``iou_match``) are neither hits nor false alarms."""
    if not any(np.any(np.asarray(t.classes).reshape(-1) < 0) for t in truths):
        return truths, preds
    t_out, p_out = [], []
    for t, p in zip(truths, preds):
        gc = np.asarray(t.classes, int).reshape(-1)
        gb = np.asarray(t.boxes, np.float64).reshape(-1, 4)
        unknown = gb[gc < 0]
        t_out.append(ImageTruth(gb[gc >= 0], gc[gc >= 0], t.width, t.height))
        pb = np.asarray(p.boxes, np.float64).reshape(-1, 4)
        keep = np.ones(len(pb), bool)
        if len(unknown) and len(pb):
            keep = box_iou(pb, unknown).max(1) < iou_match
        p_out.append(ImagePreds(pb[keep], np.asarray(p.scores).reshape(-1)[keep], np.asarray(p.classes).reshape(-1)[keep]))
    return t_out, p_out


def _mean_valid(x: np.ndarray) -> float | None:
    v = x[x > -1]
    return float(v.mean()) if v.size else None


def evaluate_detections(
    truths: list[ImageTruth],
    preds: list[ImagePreds],
    class_names: list[str],
    conf: float = DEFAULT_CONF,
    iou_match: float = 0.5,
) -> EvalResult:
    """Score ``preds`` against ``truths`` (same image order).

    mAP uses every prediction (give it a low confidence threshold, e.g. 0.001); precision,
    recall and the confusion matrix use only predictions with score >= ``conf``.
    A taxon without any ground truth is left out of the mAP mean (COCO convention).
    """
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} images of ground truth but {len(preds)} of predictions")
    truths, preds = _without_unknown(truths, preds, iou_match)
    nc = len(class_names)
    prec = _coco_eval(truths, preds, nc)
    n_gt = np.zeros(nc, int)
    for t in truths:
        for c in np.asarray(t.classes, int).reshape(-1):
            n_gt[c] += 1

    # operating point: class-aware matching for P/R, class-agnostic for the confusion matrix
    tp = np.zeros(nc, int)
    fp = np.zeros(nc, int)
    confusion = np.zeros((nc + 1, nc + 1), np.int64)
    n_preds = 0
    for t, p in zip(truths, preds):
        gb = np.asarray(t.boxes, np.float64).reshape(-1, 4)
        gc = np.asarray(t.classes, int).reshape(-1)
        ps = np.asarray(p.scores, np.float64).reshape(-1)
        keep = ps >= conf
        pb = np.asarray(p.boxes, np.float64).reshape(-1, 4)[keep]
        pc = np.asarray(p.classes, int).reshape(-1)[keep]
        ps = ps[keep]
        n_preds += len(ps)
        match = _greedy_match(gb, gc, pb, ps, pc, iou_match, class_aware=True)
        for i, j in enumerate(match):
            if j >= 0:
                tp[pc[i]] += 1
            else:
                fp[pc[i]] += 1
        agn = _greedy_match(gb, gc, pb, ps, pc, iou_match, class_aware=False)
        seen = np.zeros(len(gb), bool)
        for i, j in enumerate(agn):
            if j >= 0:
                confusion[gc[j], pc[i]] += 1
                seen[j] = True
            else:
                confusion[nc, pc[i]] += 1  # false alarm: background predicted as a taxon
        for j in np.where(~seen)[0]:
            confusion[gc[j], nc] += 1  # missed grain
    total_tp, total_fp, total_gt = int(tp.sum()), int(fp.sum()), int(n_gt.sum())
    precision = total_tp / (total_tp + total_fp) if total_tp + total_fp else 0.0
    recall = total_tp / total_gt if total_gt else 0.0

    per_class = []
    for k in range(nc):
        if prec is None:
            ap50 = ap = 0.0 if n_gt[k] else None
        else:
            ap50 = _mean_valid(prec[0, :, k, 0, -1])
            ap = _mean_valid(prec[:, :, k, 0, -1])
        per_class.append({
            "name": class_names[k],
            "n_gt": int(n_gt[k]),
            "ap50": ap50,
            "ap50_95": ap,
            "precision": tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0,
            "recall": tp[k] / n_gt[k] if n_gt[k] else 0.0,
        })
    valid = [r for r in per_class if r["ap50"] is not None]
    map50 = float(np.mean([r["ap50"] for r in valid])) if valid else 0.0
    map50_95 = float(np.mean([r["ap50_95"] for r in valid])) if valid else 0.0
    return EvalResult(
        map50=map50,
        map50_95=map50_95,
        precision=float(precision),
        recall=float(recall),
        conf=float(conf),
        iou_match=float(iou_match),
        class_names=list(class_names),
        per_class=per_class,
        confusion=confusion,
        n_images=len(truths),
        n_truth=total_gt,
        n_preds=n_preds,
    )


# ---------------------------------------------------------------- model on samples
def predict_samples(model, model_cfg, paths: list[str], device="cpu", batch: int = 8, conf: float = 0.001,
                    progress=None, taxa=None, one_box_per_grain: bool = False) -> list[ImagePreds]:
    """Run ``model`` over image files the way the app does (``Predictor``: 16-bit scaling,
    letterbox, tiles for slide scans) with a low threshold, as mAP needs. ``taxa``: the
    version's taxon classifier (classes then index its taxa). ``one_box_per_grain``: fold
    boxes of several taxa on one grain into one, as the review does (a class-agnostic score:
    the runner-up taxa's boxes would count as false alarms)."""
    from pollenstudio.engine.predict import Predictor

    pred = Predictor(model, model_cfg, device=device, conf=conf, iou=0.7, max_det=300, tile="auto", fuse=False, batch=batch,
                     taxa=taxa)
    # mAP ranks every per-class candidate down to conf 0.001 (the COCO protocol the model cards
    # follow); the review-time fold of boxes on one grain into one would remove the runner-up
    # taxon's box and score the model on a post-processing choice instead
    pred.merge_same_grain = bool(one_box_per_grain)
    out = []
    paths = list(paths)
    # a focal stack comes as a callable giving its EDF composite: computed when its turn comes
    sources = (p() if callable(p) else p for p in paths)
    for res in pred.iter_predict(sources, progress, total=len(paths)):
        if res.error:
            from pollenstudio.core.errors import ImageReadError

            raise ImageReadError(res.error)
        # a grain the taxon classifier left unnamed (unknown taxon) or withdrew ("not pollen")
        # names no class: it is scored as no detection
        d = [x for x in res.detections if x.class_index >= 0 and not x.withdrawn]
        out.append(
            ImagePreds(
                np.array([x.box.xyxy() for x in d], np.float64).reshape(-1, 4),
                np.array([x.score for x in d], np.float64),
                np.array([x.class_index for x in d], np.int64),
            )
        )
    return out


def evaluate_model(model, model_cfg, samples, class_names: list[str], device="cpu", conf: float = DEFAULT_CONF,
                   batch: int = 8, progress=None, taxa=None, class_agnostic: bool | None = None) -> EvalResult:
    """COCO metrics of ``model`` on dataset ``samples`` (objects with ``boxes``, ``classes``
    indexed into ``class_names``, ``path``, ``width``, ``height``).

    The model's classes are matched to ``class_names`` by name, so a model trained with
    another taxon order or list is scored fairly; taxa only the model knows are appended
    (their detections count as false alarms, never as mAP classes). ``taxa``: the version's
    taxon classifier (a split version): its taxa are the model's classes.

    ``class_agnostic``: None (default) scores a model that names none of the ground truth's
    taxa (the one-class grain model on a taxon-labelled project) on finding grains, every
    grain and detection one class (``EvalResult.class_agnostic``; it raised "no taxon in
    common" before); True forces that score (to compare two models like for like).
    """
    names = list(class_names)
    model_names = list(taxa.class_names if taxa is not None else model_cfg.class_names)
    if class_agnostic is None:
        class_agnostic = bool(samples) and no_taxon_in_common(model_names, names)
    sources = [s.eval_source() if getattr(s, "is_stack", False) else s.path for s in samples]
    truths = [ImageTruth(s.boxes, s.classes, s.width, s.height) for s in samples]
    if class_agnostic:
        preds = predict_samples(model, model_cfg, sources, device, batch=batch, progress=progress, taxa=taxa,
                                one_box_per_grain=True)
        truths, preds = as_class_agnostic(truths, preds)
        res = evaluate_detections(truths, preds, [AGNOSTIC_CLASS], conf=conf)
        res.class_agnostic = True
        return res
    for n in model_names:
        if n not in names:
            names.append(n)
    remap = np.array([names.index(n) for n in model_names], np.int64)
    preds = predict_samples(model, model_cfg, sources, device, batch=batch, progress=progress, taxa=taxa)
    for p in preds:
        p.classes = remap[p.classes] if len(p.classes) else p.classes
    return evaluate_detections(truths, preds, names, conf=conf)
