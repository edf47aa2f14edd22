"""The rule for writing model proposals next to human decisions.

``plan_merge`` is pure so the rule can be tested without a database:
- a detection that overlaps (IoU > threshold) a decided annotation of the same image
  (accepted, edited, rejected or added) is skipped: a model never overwrites or
  resurrects a human decision;
- every older undecided proposal of the image is replaced by the new detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pollenstudio.core.types import Annotation, AnnotationStatus, Detection


@dataclass(frozen=True)
class MergePlan:
    keep: list[Detection]  # to insert as proposals
    skipped: list[Detection]  # matched a human decision
    replace_ids: list[int]  # older undecided proposals to delete


def plan_merge(existing: list[Annotation], detections: list[Detection], iou_threshold: float = 0.5) -> MergePlan:
    decided = [a.box.normalized().xyxy() for a in existing if a.status is not AnnotationStatus.PROPOSED]
    keep, skipped = list(detections), []
    if decided and detections:
        hit = (iou_matrix([d.box.normalized().xyxy() for d in detections], decided) > iou_threshold).any(axis=1)
        keep = [d for d, h in zip(detections, hit) if not h]
        skipped = [d for d, h in zip(detections, hit) if h]
    replace_ids = [a.id for a in existing if a.status is AnnotationStatus.PROPOSED]
    return MergePlan(keep, skipped, replace_ids)


def iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
