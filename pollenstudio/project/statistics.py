"""Statistics of a pollen count: percentages with confidence intervals, concentrations.

Written on statsmodels and scipy (well-kept libraries), not by hand:

- **Percentages.** A taxon's share of the pollen sum is a binomial proportion; its 95 %
  interval is Wilson's score interval by default (good coverage at the small counts of rare
  taxa, never outside 0-100 %), or the exact Clopper-Pearson interval ("beta" in
  statsmodels) on request: ``statsmodels.stats.proportion.proportion_confint``.
- **Marker concentration** (Stockmarr 1971, Pollen et Spores 13: 615-621): a known number
  of exotic marker spores L (tablets x spores per tablet) is added to a known quantity of
  sediment Q; counting n grains and m marker spores gives C = n / m x L / Q grains per cm3
  (or per g). Its relative standard error combines the counting errors of n and m (Poisson)
  with the spread of the marker batch (sd of spores per tablet s, t tablets, sd of L =
  s sqrt(t)): SE(C) / C = sqrt(1/n + 1/m + (s sqrt(t) / L)^2) (the error propagation of
  Stockmarr 1971; Maher 1981, Rev. Palaeobot. Palynol. 32: 153-191, discusses its limits).
  The 95 % interval is Maher's: n / (n + m) is a binomial proportion, its Wilson interval
  mapped through p / (1 - p) x L / Q (counting error only).
- **Air volume** (e.g. a Hirst-type trap): C = n / V grains per m3, with the exact Poisson
  interval of n (scipy's chi-square quantiles) divided by V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pollenstudio.core.errors import ScaleError

CI_METHODS = {"wilson": "wilson", "clopper-pearson": "beta"}
CI_LABEL = {"wilson": "Wilson score interval", "clopper-pearson": "Clopper-Pearson exact interval"}


def proportion_ci(count: int, total: int, method: str = "wilson", level: float = 0.95) -> tuple[float, float]:
    """Two-sided ``level`` interval (lo, hi), as fractions 0..1, of the proportion
    ``count / total``; (nan, nan) when ``total`` is 0."""
    from statsmodels.stats.proportion import proportion_confint

    if method not in CI_METHODS:
        raise ScaleError(f"confidence interval method is one of {', '.join(CI_METHODS)}; got {method!r}")
    if count < 0 or total < 0 or count > total:
        raise ScaleError(f"a count of {count} out of {total} is not a proportion")
    if total == 0:
        return (math.nan, math.nan)
    lo, hi = proportion_confint(count, total, alpha=1.0 - level, method=CI_METHODS[method])
    return (max(0.0, float(lo)), min(1.0, float(hi)))


@dataclass(frozen=True)
class Concentration:
    value: float  # grains per unit
    se: float  # standard error, same unit
    lo: float  # 95 % interval
    hi: float
    unit: str  # "grains/cm3", "grains/g", "grains/m3"
    method: str  # how it was computed, in words

    @property
    def rel_se(self) -> float:
        return self.se / self.value if self.value else math.nan


def marker_concentration(n_grains: int, n_marker: int, tablets: float, per_tablet: float,
                         quantity: float, per_tablet_sd: float = 0.0, unit: str = "cm3",
                         level: float = 0.95) -> Concentration:
    """Grains per cm3 (or g) from an exotic-marker count (Stockmarr 1971; see the module)."""
    for name, v in (("tablets", tablets), ("spores per tablet", per_tablet), ("sample quantity", quantity)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ScaleError(f"marker concentration needs a positive {name}, got {v!r}")
    if not (math.isfinite(per_tablet_sd) and per_tablet_sd >= 0):
        raise ScaleError(f"the spread of spores per tablet must be 0 or more, got {per_tablet_sd!r}")
    if n_marker <= 0:
        raise ScaleError("no exotic marker grain counted: count marker spores (a taxon with role 'marker') "
                         "before a concentration can be given")
    if n_grains < 0:
        raise ScaleError(f"a grain count cannot be negative ({n_grains})")
    if unit not in ("cm3", "g"):
        raise ScaleError(f"a sample quantity is in cm3 or g, got {unit!r}")
    added = tablets * per_tablet
    added_sd = per_tablet_sd * math.sqrt(tablets)
    value = n_grains / n_marker * added / quantity
    if n_grains == 0:
        rel = math.nan
        se = 0.0
    else:
        rel = math.sqrt(1.0 / n_grains + 1.0 / n_marker + (added_sd / added) ** 2)
        se = value * rel
    p_lo, p_hi = proportion_ci(n_grains, n_grains + n_marker, "wilson", level)
    ratio = (lambda p: p / (1.0 - p) if p < 1.0 else math.inf)
    lo, hi = ratio(p_lo) * added / quantity, ratio(p_hi) * added / quantity
    return Concentration(value, se, lo, hi, f"grains/{unit}",
                         "exotic marker (Stockmarr 1971): SE from the counts and the marker batch; "
                         "95 % interval after Maher 1981 (Wilson, counting error only)")


def air_concentration(n_grains: int, volume_m3: float, level: float = 0.95) -> Concentration:
    """Grains per m3 of sampled air: n / V, with the exact (Garwood) Poisson interval of n."""
    from scipy.stats import chi2

    if not (isinstance(volume_m3, (int, float)) and math.isfinite(volume_m3) and volume_m3 > 0):
        raise ScaleError(f"the sampled air volume must be a positive number of m3, got {volume_m3!r}")
    if n_grains < 0:
        raise ScaleError(f"a grain count cannot be negative ({n_grains})")
    a = 1.0 - level
    lo = 0.0 if n_grains == 0 else float(chi2.ppf(a / 2, 2 * n_grains)) / 2
    hi = float(chi2.ppf(1 - a / 2, 2 * n_grains + 2)) / 2
    return Concentration(n_grains / volume_m3, math.sqrt(n_grains) / volume_m3, lo / volume_m3, hi / volume_m3,
                         "grains/m3", "sampled air volume: exact Poisson interval of the count")
