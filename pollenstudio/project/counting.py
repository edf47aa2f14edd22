"""Slide counts as palynologists report them (issue 20): per sample, grains per taxon, the
pollen sum, a target sum, excluded categories, percentages with confidence intervals and
concentrations.

Rules (spelt here once; the count panel, the report and its CSV all read ``count_samples``):

- A **sample** (slide) is the image's group (``ImageRecord.group``: set from subfolders on
  import, or by selection); images without one form the sample ``NO_SAMPLE``.
- Counted grains are confirmed grains (``core.types.OBJECT_STATUSES``); undecided proposals
  are reported as what is left to review, never counted. ``reviewed_only`` counts images
  marked reviewed only.
- A taxon's **role** (``Project.taxon_roles``) decides whether it is in the **pollen sum**:
  "pollen" (default) is; spores, the exotic marker, indeterminate and excluded taxa are
  counted on their own. Unnamed grains ("unidentified", "pollen": ``is_unassigned_taxon``)
  are never in the sum: they are grains still to be named.
- Percent of a pollen taxon = count / pollen sum; of an excluded taxon = count / (pollen
  sum + its count), the usual convention for spores. Intervals: ``project.statistics``.
- Sizes: a box's long and short axes times the image's µm/px (none when uncalibrated).
- Settings (``Project.sample_settings``): the project's defaults under "" and per sample
  overrides: target_sum, marker_tablets / marker_per_tablet / marker_per_tablet_sd /
  quantity / quantity_unit (exotic marker concentration) or air_volume_m3.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from pollenstudio.core.errors import ScaleError
from pollenstudio.core.types import SUM_ROLE, is_unassigned_taxon
from pollenstudio.project.statistics import Concentration, air_concentration, marker_concentration, proportion_ci

NO_SAMPLE = "(no sample)"
DEFAULT_TARGET_SUM = 300
UNNAMED_ROLE = "unnamed"

_POSITIVE = ("marker_tablets", "marker_per_tablet", "quantity", "air_volume_m3")
SETTING_KEYS = ("target_sum", *_POSITIVE, "marker_per_tablet_sd", "quantity_unit")
# What a real count can hold (the sample-settings dialog offers the same ranges): a value
# outside them is a typing slip, and would print "inf +- inf" or "nan" as a concentration.
# (lowest, highest, what it is, unit)
SETTING_RANGES = {
    "marker_tablets": (0.1, 1000.0, "the number of marker tablets added", " tablets"),
    "marker_per_tablet": (1.0, 10_000_000.0, "the spores per marker tablet", " spores"),
    "marker_per_tablet_sd": (0.0, 1_000_000.0, "the spread (SD) of spores per tablet", " spores"),
    "quantity": (0.0001, 100_000.0, "the sample quantity", " cm3 or g"),
    "air_volume_m3": (0.001, 1_000_000.0, "the sampled air volume", " m3"),
}


def check_settings(settings: dict) -> dict:
    """Validated copy of a sample's count settings; ``ScaleError`` names the bad value."""
    if not isinstance(settings, dict):
        raise ScaleError("sample settings are a mapping of names to values")
    out = {}
    for key, v in settings.items():
        if v is None or v == "":
            continue
        if key not in SETTING_KEYS:
            raise ScaleError(f"unknown sample setting {key!r}; known: {', '.join(SETTING_KEYS)}")
        if key == "quantity_unit":
            if v not in ("cm3", "g"):
                raise ScaleError(f"quantity_unit is 'cm3' or 'g', got {v!r}")
            out[key] = v
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ScaleError(f"{key} must be a number, got {v!r}")
        if key == "target_sum":
            if int(v) != v or not 1 <= v <= 1_000_000:
                raise ScaleError(f"the target sum is a whole number of grains (1 or more), got {v!r}")
            v = int(v)
        elif key == "marker_per_tablet_sd":
            if v < 0:
                raise ScaleError(f"{key} must be 0 or more, got {v!r}")
        elif v <= 0:
            raise ScaleError(f"{key} must be positive, got {v!r}")
        if key in SETTING_RANGES:
            lo, hi, what, unit = SETTING_RANGES[key]
            if not lo <= v <= hi:
                raise ScaleError(f"{key}: {what} must be from {lo:,.10g} to {hi:,.10g}{unit}, got {v!r}")
        out[key] = v
    sd, per = out.get("marker_per_tablet_sd"), out.get("marker_per_tablet")
    if sd is not None and per is not None and sd > per:
        raise ScaleError(f"marker_per_tablet_sd: the spread of spores per tablet ({sd:g}) cannot exceed "
                         f"the spores per tablet ({per:g})")
    return out


@dataclass
class TaxonCount:
    taxon: str
    category_id: int
    role: str  # "pollen" | a core.types.TAXON_ROLES exclusion | "unnamed"
    count: int
    percent: float  # of the pollen sum (see the module); nan when the basis is 0
    ci_lo: float  # percent
    ci_hi: float
    sizes: list[tuple[float, float]] = field(default_factory=list)  # (long, short) µm, calibrated grains
    concentration: Concentration | None = None
    ellipses: list[tuple[float, float]] = field(default_factory=list)  # fitted (major, minor) µm, on request

    @property
    def in_sum(self) -> bool:
        return self.role == SUM_ROLE

    def mean_ellipse(self) -> tuple[float | None, float | None]:
        if not self.ellipses:
            return (None, None)
        n = len(self.ellipses)
        return (sum(e[0] for e in self.ellipses) / n, sum(e[1] for e in self.ellipses) / n)

    def mean_axes(self) -> tuple[float | None, float | None]:
        if not self.sizes:
            return (None, None)
        return (sum(s[0] for s in self.sizes) / len(self.sizes), sum(s[1] for s in self.sizes) / len(self.sizes))


@dataclass
class SampleCount:
    name: str
    images: int = 0
    reviewed_images: int = 0
    undecided: int = 0  # proposals still to decide on this sample's images
    taxa: list[TaxonCount] = field(default_factory=list)  # in the pollen sum, most counted first
    excluded: list[TaxonCount] = field(default_factory=list)  # spores, marker, ..., unnamed
    target_sum: int = DEFAULT_TARGET_SUM
    settings: dict = field(default_factory=dict)
    concentration: Concentration | None = None  # of the pollen sum
    concentration_note: str = ""  # why there is none, when settings ask for one

    @property
    def pollen_sum(self) -> int:
        return sum(t.count for t in self.taxa)

    @property
    def progress_text(self) -> str:
        return f"{self.pollen_sum} / {self.target_sum}"

    def count_of(self, taxon: str) -> int:
        return sum(t.count for t in self.taxa + self.excluded if t.taxon == taxon)


def _concentration(settings: dict, n: int, n_marker: int) -> Concentration:
    if "air_volume_m3" in settings:
        return air_concentration(n, settings["air_volume_m3"])
    return marker_concentration(n, n_marker, settings["marker_tablets"], settings["marker_per_tablet"],
                                settings["quantity"], settings.get("marker_per_tablet_sd", 0.0),
                                settings.get("quantity_unit", "cm3"))


def _wants_concentration(settings: dict) -> bool:
    return "air_volume_m3" in settings or all(k in settings for k in ("marker_tablets", "marker_per_tablet", "quantity"))


def sample_concentration(settings: dict, n_grains: int, n_marker: int) -> Concentration | None:
    """The concentration ``settings`` (a sample's, defaults merged) give for ``n_grains``
    with ``n_marker`` marker grains counted: None when they ask for none; ``ScaleError``
    says why there is none (bad value, no marker counted). Same rule as ``count_samples``."""
    settings = check_settings(settings)
    return _concentration(settings, n_grains, n_marker) if _wants_concentration(settings) else None


def count_samples(project, reviewed_only: bool = False, ci_method: str = "wilson",
                  samples: list[str] | None = None, ellipses: dict | None = None) -> list[SampleCount]:
    """Counts of every sample (or of ``samples``), sorted by name (``NO_SAMPLE`` last).
    Four reads: images, their counts, the grains, their outlines; 10,000 grains take
    milliseconds. Each grain's stored outline (``Project.outlines``, measured by
    ``core.outline``) adds its ellipse's (major, minor) axes in µm to its taxon's
    ``ellipses`` on calibrated images; ``ellipses`` ({annotation id: (major, minor) px})
    adds or overrides some."""
    from pollenstudio.core.outline import outline_size

    shapes: dict[int, tuple[float, float]] = {}
    for aid, poly in project.outlines().items():
        size = outline_size(poly)
        if size is not None:
            shapes[aid] = (size.major_px, size.minor_px)
    shapes.update(ellipses or {})
    names = {c.id: c.name for c in project.categories()}
    roles = project.taxon_roles()
    stored = project.sample_settings()
    defaults = stored.get("", {})
    out: dict[str, SampleCount] = {}

    def sample(key: str) -> SampleCount:
        if key not in out:
            settings = {**defaults, **stored.get(key, {})}
            out[key] = SampleCount(key, target_sum=settings.get("target_sum", DEFAULT_TARGET_SUM), settings=settings)
        return out[key]

    counts = project.image_counts()
    for rec in project.images():
        s = sample(rec.group or NO_SAMPLE)
        s.images += 1
        s.reviewed_images += rec.status.value == "reviewed"
        c = counts.get(rec.id)
        s.undecided += c.undecided if c else 0

    per: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    fitted: dict[tuple[str, int], list] = defaultdict(list)
    for _img, group, cid, w, h, ump, _mv, ann_id in project.grain_table(reviewed_only=reviewed_only):
        size = (max(w, h) * ump, min(w, h) * ump) if ump else None
        per[group or NO_SAMPLE][cid].append(size)
        if ump and ann_id in shapes:
            major, minor = shapes[ann_id]
            fitted[(group or NO_SAMPLE, cid)].append((major * ump, minor * ump))

    for key, taxa in per.items():
        s = sample(key)
        rows = []
        for cid, sizes in taxa.items():
            name = names.get(cid, f"taxon {cid}")
            role = UNNAMED_ROLE if is_unassigned_taxon(name) else roles.get(cid, SUM_ROLE)
            rows.append(TaxonCount(name, cid, role, len(sizes), math.nan, math.nan, math.nan,
                                   [x for x in sizes if x is not None], ellipses=fitted.get((key, cid), [])))
        s.taxa = sorted((t for t in rows if t.in_sum), key=lambda t: (-t.count, t.taxon.lower()))
        s.excluded = sorted((t for t in rows if not t.in_sum), key=lambda t: (t.role, t.taxon.lower()))

    for s in out.values():
        total = s.pollen_sum
        for t in s.taxa + s.excluded:
            basis = total if t.in_sum else total + t.count
            if basis:
                lo, hi = proportion_ci(t.count, basis, ci_method)
                t.percent, t.ci_lo, t.ci_hi = 100.0 * t.count / basis, 100.0 * lo, 100.0 * hi
        if _wants_concentration(s.settings):
            n_marker = sum(t.count for t in s.excluded if t.role == "marker")
            try:  # settings stored before a bound was checked give a note, never inf or nan
                check_settings(s.settings)
                s.concentration = _concentration(s.settings, total, n_marker)
                for t in s.taxa:
                    t.concentration = _concentration(s.settings, t.count, n_marker)
            except ScaleError as exc:
                s.concentration_note = str(exc)

    wanted = sorted(out, key=lambda k: (k == NO_SAMPLE, k.lower()))
    if samples is not None:
        wanted = [k for k in wanted if k in set(samples)]
    return [out[k] for k in wanted]
