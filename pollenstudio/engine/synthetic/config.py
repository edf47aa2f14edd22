"""Taxa, difficulty presets and the configuration of the synthetic micrograph generator."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, replace

from pollenstudio.core.errors import PollenStudioError

# Morphotypes, one per distinct shape (a palynologist's counting categories):
#   Poaceae     monoporate sphere, one pore with a thick annulus
#   Betula      triangular triporate, pores at the corners
#   Pinus       bisaccate: body with two air sacs
#   Asteraceae  echinate: sphere with spines
#   Quercus     tricolpate ellipse with three furrows (equatorial or polar view)
#   Olea        reticulate, net-textured sphere
TAXA: tuple[str, ...] = ("Poaceae", "Betula", "Pinus", "Asteraceae", "Quercus", "Olea")

DIFFICULTIES = ("easy", "default", "hard")

# blur: mean extra defocus (Gaussian sigma, px); noise: camera noise, 0 = clean, 1 = noisy
# (about 9 grey levels at the background); clutter: multiplier on debris, fibres, bubbles and
# blobs; contrast: multiplier on grain optical density (lower = paler, harder grains);
# crowding: chance that a grain is placed touching or overlapping another one.
_PRESETS = {
    "easy": dict(blur=0.3, noise=0.25, clutter=0.3, contrast=1.1, crowding=0.1),
    "default": dict(blur=0.8, noise=0.5, clutter=0.7, contrast=0.9, crowding=0.3),
    "hard": dict(blur=1.6, noise=0.9, clutter=1.3, contrast=0.6, crowding=0.5),
}


class SynthConfigError(PollenStudioError):
    """A synthetic-image setting is out of range; nothing was generated."""


@dataclass(frozen=True)
class SynthConfig:
    """What one synthetic brightfield image looks like.

    ``blur``, ``noise``, ``clutter``, ``contrast`` left at None take their value from
    ``difficulty``. ``n_grains`` is the (min, max) number of grains per image; None scales a
    density with the image area and grain size, so a 6000x6000 slide scan gets hundreds.
    ``grain_size`` is the (min, max) grain diameter in pixels. ``taxa`` is a subset of
    :data:`TAXA`; category indices refer to positions in it. ``jpeg_quality`` adds JPEG
    artefacts (and makes :func:`generate_dataset` write .jpg).

    ``forced_grains`` places extra grains exactly: a tuple of ``(cx, cy, taxon_index,
    diameter)`` in image pixels (e.g. a grain across a tile border for tiling tests); set
    ``n_grains=(0, 0)`` and ``clutter=0`` to get only those on a plain background.
    """

    width: int = 640
    height: int = 480
    difficulty: str = "default"
    blur: float | None = None
    noise: float | None = None
    clutter: float | None = None
    contrast: float | None = None
    crowding: float | None = None
    n_grains: tuple[int, int] | None = None
    grain_size: tuple[float, float] = (30.0, 72.0)
    jpeg_quality: int | None = None
    taxa: tuple[str, ...] | None = None
    forced_grains: tuple[tuple[float, float, int, float], ...] = field(default=())

    def __post_init__(self):
        # Normalise lists (from JSON or callers) to tuples so the config stays hashable.
        if self.taxa is not None and not isinstance(self.taxa, tuple):
            object.__setattr__(self, "taxa", tuple(self.taxa))
        if self.n_grains is not None and not isinstance(self.n_grains, tuple):
            object.__setattr__(self, "n_grains", tuple(self.n_grains))
        if not isinstance(self.grain_size, tuple):
            object.__setattr__(self, "grain_size", tuple(self.grain_size))
        object.__setattr__(self, "forced_grains", tuple(tuple(g) for g in self.forced_grains))
        self.validate()

    # -- derived values -------------------------------------------------------------------
    @property
    def taxa_names(self) -> tuple[str, ...]:
        return TAXA if self.taxa is None else self.taxa

    def knob(self, name: str) -> float:
        """The effective value of blur/noise/clutter/contrast/crowding."""
        value = getattr(self, name, None)
        return float(_PRESETS[self.difficulty][name] if value is None else value)

    def with_(self, **changes) -> "SynthConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["width"], d["height"] = int(self.width), int(self.height)
        d["taxa"] = list(self.taxa_names)
        d["forced_grains"] = [list(g) for g in self.forced_grains]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        return cls(**d)

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        if self.difficulty not in _PRESETS:
            raise SynthConfigError(
                f"unknown difficulty {self.difficulty!r}; choose one of {', '.join(DIFFICULTIES)}"
            )
        for name, lo in (("width", 16), ("height", 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or v > 40000:
                raise SynthConfigError(f"image {name} must be a whole number of pixels 16..40000, got {v!r}")
        for name in ("blur", "noise", "clutter", "contrast", "crowding"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= float(v) <= 10.0):
                raise SynthConfigError(f"{name} must be between 0 and 10, got {v!r}")
        if self.n_grains is not None:
            lo, hi = self.n_grains
            if not (0 <= lo <= hi <= 100000):
                raise SynthConfigError(f"n_grains must be (min, max) with 0 <= min <= max, got {self.n_grains!r}")
        lo, hi = self.grain_size
        if not (6 <= lo <= hi <= 2000):
            raise SynthConfigError(
                f"grain_size must be (min, max) diameters in pixels with 6 <= min <= max <= 2000, got {self.grain_size!r}"
            )
        if self.jpeg_quality is not None and not (1 <= int(self.jpeg_quality) <= 100):
            raise SynthConfigError(f"JPEG quality must be 1..100, got {self.jpeg_quality!r}")
        if self.taxa is not None:
            unknown = [t for t in self.taxa if t not in TAXA]
            if unknown or not self.taxa or len(set(self.taxa)) != len(self.taxa):
                raise SynthConfigError(
                    f"taxa must be distinct names out of {', '.join(TAXA)}; got {', '.join(map(str, self.taxa)) or 'none'}"
                )
        for g in self.forced_grains:
            if len(g) != 4:
                raise SynthConfigError(f"a forced grain is (cx, cy, taxon_index, diameter), got {g!r}")
            if not (0 <= int(g[2]) < len(self.taxa_names)):
                raise SynthConfigError(f"forced grain taxon index {g[2]} is not in 0..{len(self.taxa_names) - 1}")
            if not (6 <= float(g[3]) <= 2000):
                raise SynthConfigError(f"forced grain diameter must be 6..2000 px, got {g[3]!r}")
