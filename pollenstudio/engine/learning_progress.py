"""Where a lab stands: the learning curve of a project's own model versions, and which taxa
have too few reviewed grains to be learnt.

Each trained version records its validation metrics (overall and per taxon), how many
reviewed grains it learnt from, and which annotations those were. From them:

- :func:`version_points`: per version, the reviewed grains it was trained on (overall and per
  taxon, the taxa as they are named now) against its validation mAP@.5 / AP@.5;
- :func:`grains_to_learn`: how many reviewed grains a taxon needs before a model names it,
  read from this project's own curve once some taxon got there, else
  :data:`MIN_GRAINS_TO_LEARN`;
- :func:`taxa_needs`: every taxon with its reviewed grains now and how many more would help.

Each version is scored on its own held-out images (they grow with the project), so two
points are not measured on the same images; the view says so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from pollenstudio.core.types import OBJECT_STATUSES, is_unassigned_taxon

# A taxon counts as learnt once a version's validation AP@.5 for it reaches this.
LEARNT_AP50 = 0.5

# Reviewed grains per taxon a model needs before it names that taxon, used until this
# project's own versions show the figure (see grains_to_learn). Where 30 comes from:
# issue 18's measurement - fine-tuning the shipped model on 20 reviewed composited fields of
# 8 real taxa it had never seen, about 9 grains per taxon, gave mAP@.5 0.03 on held-out fields,
# so 9 is far too few; and PRODUCT.md's aim that "after a few dozen reviewed grains per taxon
# the model names them". UPDATE THIS from bench/learning_curve.py (branch `learn`): for each
# taxon the smallest number of training grains at which its AP@.5 reached LEARNT_AP50
# (mean of three seeds), and the median of that over the taxa.
MIN_GRAINS_TO_LEARN = 30


@dataclass
class VersionPoint:
    version_id: int
    name: str
    created: float
    grains: int  # reviewed grains the version learnt from (training + validation images)
    map50: float | None
    map50_95: float | None
    n_val: int  # validation images it was scored on
    per_taxon: dict[str, tuple[int, float | None]] = field(default_factory=dict)  # name -> (grains, AP@.5)


@dataclass
class TaxonNeed:
    name: str
    reviewed: int  # reviewed grains now
    needed: int  # the threshold
    ap50: float | None  # the newest version's validation AP@.5 for it (None: not scored)

    @property
    def more(self) -> int:
        """Reviewed grains that would help: up to the threshold."""
        return max(0, self.needed - self.reviewed)

    @property
    def learnt(self) -> bool:
        return self.ap50 is not None and self.ap50 >= LEARNT_AP50


def version_points(project) -> list[VersionPoint]:
    """One point per trained version with validation metrics, fewest grains first."""
    names = {c.id: c.name for c in project.categories()}
    category_of = {a.id: a.category_id for a in project.iter_annotations(OBJECT_STATUSES)}
    out = []
    for mv in project.model_versions():
        m = mv.metrics or {}
        if m.get("map50") is None or not mv.annotation_ids:
            continue  # an imported model file, or a run without validation images
        per_grains: dict[str, int] = {}
        for aid in mv.annotation_ids:
            cid = category_of.get(aid)
            if cid is not None:
                n = names.get(cid, str(cid))
                per_grains[n] = per_grains.get(n, 0) + 1
        ap = {r["name"]: r.get("ap50") for r in m.get("per_class", []) if r.get("n_gt")}
        per_taxon = {n: (g, ap.get(n)) for n, g in per_grains.items() if not is_unassigned_taxon(n)}
        grains = int(mv.summary.get("grains") or len(mv.annotation_ids))
        out.append(VersionPoint(mv.id, mv.name, mv.created, grains, m.get("map50"), m.get("map50_95"),
                                int(mv.summary.get("val_images") or 0), per_taxon))
    out.sort(key=lambda p: (p.grains, p.created, p.version_id))
    return out


def grains_to_learn(points: list[VersionPoint]) -> tuple[int, str]:
    """(grains per taxon, where the figure comes from, in words). From this project's curve:
    for each taxon some version learnt (AP@.5 >= LEARNT_AP50), the fewest grains it had then;
    the median over those taxa. Without any: :data:`MIN_GRAINS_TO_LEARN`."""
    first: dict[str, int] = {}
    for p in points:
        for name, (g, ap) in p.per_taxon.items():
            if ap is not None and ap >= LEARNT_AP50 and (name not in first or g < first[name]):
                first[name] = g
    if not first:
        return MIN_GRAINS_TO_LEARN, (f"{MIN_GRAINS_TO_LEARN} grains: no taxon of this project has reached AP@.5 "
                                     f"{LEARNT_AP50:.1f} yet, so the figure measured for new labs is used")
    n = int(round(statistics.median(first.values())))
    seen = ", ".join(f"{k} {v}" for k, v in sorted(first.items(), key=lambda kv: kv[1]))
    return n, (f"{n} grains: the median number of reviewed grains at which this project's taxa first reached "
               f"AP@.5 {LEARNT_AP50:.1f} ({seen})")


def taxa_needs(project, points: list[VersionPoint] | None = None) -> tuple[int, str, list[TaxonNeed]]:
    """(threshold, its source, every named taxon with its reviewed grains), fewest grains first."""
    points = version_points(project) if points is None else points
    threshold, source = grains_to_learn(points)
    counts = project.category_counts(include_proposed=False)
    newest = max(points, key=lambda p: (p.created, p.version_id)) if points else None
    needs = []
    for c in project.categories():
        if is_unassigned_taxon(c.name):
            continue
        ap = newest.per_taxon.get(c.name, (0, None))[1] if newest is not None else None
        needs.append(TaxonNeed(c.name, int(counts.get(c.id, 0)), threshold, ap))
    needs.sort(key=lambda t: (t.reviewed, t.name))
    return threshold, source, needs
