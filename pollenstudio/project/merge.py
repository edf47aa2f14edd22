"""The rule for writing model proposals next to human decisions.

``plan_merge`` is pure so the rule can be tested without a database:
- a detection that overlaps (IoU > threshold) a decided annotation of the same image
  (accepted, edited, rejected or added) is skipped: a model never overwrites or
  resurrects a human decision;
- every older undecided proposal of the image is replaced by the new detections.
"""

from __future__ import annotations

from dataclasses import dataclass

from pollenstudio.core.types import Annotation, AnnotationStatus, Box, Detection


@dataclass(frozen=True)
class MergePlan:
    keep: list[Detection]  # to insert as proposals
    skipped: list[Detection]  # matched a human decision
    replace_ids: list[int]  # older undecided proposals to delete


def plan_merge(existing: list[Annotation], detections: list[Detection], iou_threshold: float = 0.5) -> MergePlan:
    decided = [a.box for a in existing if a.status is not AnnotationStatus.PROPOSED]
    keep, skipped = [], []
    for det in detections:
        if any(_iou(det.box, b) > iou_threshold for b in decided):
            skipped.append(det)
        else:
            keep.append(det)
    replace_ids = [a.id for a in existing if a.status is AnnotationStatus.PROPOSED]
    return MergePlan(keep, skipped, replace_ids)


def _iou(a: Box, b: Box) -> float:
    return a.normalized().iou(b.normalized())
