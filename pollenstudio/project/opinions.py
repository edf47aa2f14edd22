"""A second opinion on names, as labs check identifications (issue 30).

A second reviewer goes through grains another reviewer named and confirms each name or
disputes it with the taxon they see (:func:`confirm`, :func:`dispute`; the GUI's Second
opinion pass, C / D keys). An opinion row keeps the first reviewer's taxon *at that moment*
(a later rename by the first reviewer does not change what was agreed on), the second
reviewer's taxon and the time; giving an opinion again replaces one's own. Opinions are not
undoable steps and never change the grain: settling a dispute is the first reviewer's (or
the lab's) decision, made in the review as usual.

Agreement (:func:`agreement`): Cohen's kappa over all grains with an opinion (the two
namings as the two raters' labels, taxa as categories) with its asymptotic 95 % interval
(statsmodels), and per taxon the percent of the first reviewer's grains of that taxon the
second confirmed, with its Wilson interval, plus the taxon-against-the-rest kappa. The pass
shows the first name, so the second opinion is not blind: kappa here measures how often a
checker accepts a name, which is what a lab's check of identifications asks; it can read
higher than two blind identifications would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from pollenstudio.core.errors import ProjectError
from pollenstudio.core.types import OBJECT_STATUSES, WITHDRAWN_BY_MODEL, Annotation, is_unassigned_taxon, sql_in

_OBJECTS_SQL = sql_in(OBJECT_STATUSES)


@dataclass(frozen=True)
class Opinion:
    annotation_id: int
    reviewer: str  # the second reviewer
    category_id: int  # the taxon they see
    first_category_id: int  # the name they were asked about
    first_author: str | None  # who gave that name
    created: float

    @property
    def confirms(self) -> bool:
        return self.category_id == self.first_category_id


def pending(project, reviewer: str | None = None) -> list[Annotation]:
    """Grains named by someone else (confirmed grains with a real taxon whose last decision
    is another reviewer's) on which ``reviewer`` (default: the project's) has no opinion
    yet, image by image."""
    me = reviewer or project.reviewer
    unnamed = [c.id for c in project.categories() if is_unassigned_taxon(c.name)]
    skip = f" AND a.category_id NOT IN ({','.join('?' * len(unnamed))})" if unnamed else ""
    rows = project._q(
        f"SELECT a.id FROM annotations a WHERE a.status IN {_OBJECTS_SQL} AND a.author IS NOT NULL "
        f"AND a.author != ? AND a.author != ?{skip} "
        "AND NOT EXISTS (SELECT 1 FROM opinions o WHERE o.annotation_id = a.id AND o.reviewer = ?) "
        "ORDER BY a.image_id, a.id", (me, WITHDRAWN_BY_MODEL, *unnamed, me)).fetchall()
    return [project.annotation(int(r[0])) for r in rows]


def record(project, ann_id: int, category_id: int | None = None) -> Opinion:
    """This window's reviewer's opinion on grain ``ann_id``: ``category_id`` None (or its
    present taxon) confirms its name, another taxon disputes it. Refused in words: one's own
    grain, a box that is no grain (a proposal, a rejected box), an unknown taxon."""
    a = project.annotation(int(ann_id))
    me = project.reviewer
    if not a.status.is_object:
        raise ProjectError(f"annotation {a.id} is {a.status.value}, not a grain anyone named: a second opinion is "
                           "about names of confirmed grains")
    if not a.author or a.author == me:
        raise ProjectError(f"grain {a.id} was named by {a.author or 'nobody yet'}: a second opinion is given on "
                           "another reviewer's names")
    cid = a.category_id if category_id is None else int(category_id)
    project.category(cid)  # an unknown taxon raises ProjectError
    now = time.time()
    with project._tx() as conn:
        conn.execute(
            "INSERT INTO opinions(annotation_id, reviewer, category_id, first_category_id, first_author, created) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (annotation_id, reviewer) DO UPDATE SET "
            "category_id = excluded.category_id, first_category_id = excluded.first_category_id, "
            "first_author = excluded.first_author, created = excluded.created",
            (a.id, me, cid, a.category_id, a.author, now))
    return Opinion(a.id, me, cid, a.category_id, a.author, now)


def confirm(project, ann_id: int) -> Opinion:
    return record(project, ann_id, None)


def dispute(project, ann_id: int, category_id: int) -> Opinion:
    """Dispute a name with the taxon the second reviewer sees (it must differ)."""
    a = project.annotation(int(ann_id))
    if int(category_id) == a.category_id:
        raise ProjectError(f"grain {a.id} is already named {project.category(a.category_id).name}: a dispute "
                           "names another taxon (confirm it instead)")
    return record(project, ann_id, category_id)


def opinions(project) -> list[Opinion]:
    """Every opinion of the project, oldest first (of grains still in the project)."""
    rows = project._q(
        "SELECT o.annotation_id, o.reviewer, o.category_id, o.first_category_id, o.first_author, o.created "
        "FROM opinions o JOIN annotations a ON a.id = o.annotation_id ORDER BY o.created, o.annotation_id").fetchall()
    return [Opinion(int(r[0]), r[1], int(r[2]), int(r[3]), r[4], float(r[5])) for r in rows]


# ---------------------------------------------------------------------- agreement
@dataclass(frozen=True)
class Kappa:
    value: float  # nan when undefined (both namings used one taxon only)
    lo: float
    hi: float

    def text(self) -> str:
        if math.isnan(self.value):
            return "undefined (one taxon only)"
        return f"{self.value:.2f} ({self.lo:.2f} to {self.hi:.2f})"


@dataclass(frozen=True)
class TaxonAgreement:
    taxon: str
    named: int  # grains the first reviewer named this taxon (with an opinion)
    confirmed: int  # of those, confirmed by the second
    proposed_by_second: int  # grains the second named this taxon where the first had another
    percent: float  # confirmed / named, 0..1 (nan when named is 0)
    lo: float  # Wilson 95 % interval of percent
    hi: float
    kappa: Kappa  # this taxon against the rest


@dataclass(frozen=True)
class Agreement:
    n: int  # grains with a second opinion
    agreed: int
    percent: float
    lo: float
    hi: float
    kappa: Kappa
    taxa: list[TaxonAgreement] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (first reviewer, second reviewer) seen


def cohen_kappa(table) -> Kappa:
    """Cohen's kappa of a square table (rows: first rater, columns: second) with its
    asymptotic 95 % interval (statsmodels ``cohens_kappa``); nan when undefined."""
    import numpy as np
    from statsmodels.stats.inter_rater import cohens_kappa

    t = np.asarray(table, dtype=float)
    n = t.sum()
    if n == 0:
        return Kappa(math.nan, math.nan, math.nan)
    pe = float((t.sum(axis=1) * t.sum(axis=0)).sum() / n**2)
    if pe >= 1.0 - 1e-12:  # every grain in one taxon by both: chance agreement is certain
        return Kappa(math.nan, math.nan, math.nan)
    r = cohens_kappa(t)
    return Kappa(float(r.kappa), float(r.kappa_low), float(r.kappa_upp))


def agreement(project, ci_method: str = "wilson") -> Agreement | None:
    """Agreement between first names and second opinions (None: no opinion yet). A grain
    with opinions of several second reviewers counts once per opinion."""
    from pollenstudio.core.types import display_taxon
    from pollenstudio.project.statistics import proportion_ci

    ops = opinions(project)
    if not ops:
        return None
    names = {c.id: display_taxon(c.name) for c in project.categories()}
    ids = sorted({o.first_category_id for o in ops} | {o.category_id for o in ops})
    index = {cid: i for i, cid in enumerate(ids)}
    table = [[0] * len(ids) for _ in ids]
    for o in ops:
        table[index[o.first_category_id]][index[o.category_id]] += 1
    n = len(ops)
    agreed = sum(table[i][i] for i in range(len(ids)))
    lo, hi = proportion_ci(agreed, n, method=ci_method)
    taxa = []
    for cid in ids:
        i = index[cid]
        named = sum(table[i])
        confirmed = table[i][i]
        by_second = sum(table[j][i] for j in range(len(ids))) - confirmed
        both = confirmed
        first_only = named - confirmed
        second_only = by_second
        rest = n - both - first_only - second_only
        plo, phi = proportion_ci(confirmed, named, method=ci_method) if named else (math.nan, math.nan)
        taxa.append(TaxonAgreement(
            names.get(cid, f"taxon {cid}"), named, confirmed, by_second,
            confirmed / named if named else math.nan, plo, phi,
            cohen_kappa([[both, first_only], [second_only, rest]])))
    taxa.sort(key=lambda t: (-t.named, t.taxon))
    pairs = sorted({(o.first_author or "?", o.reviewer) for o in ops})
    return Agreement(n, agreed, agreed / n, lo, hi, cohen_kappa(table), taxa, pairs)
