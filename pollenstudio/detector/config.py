"""ModelConfig: the one object that describes a HieraEdgeNet architecture.

A checkpoint stores ``cfg.to_dict()`` as JSON, so everything here must be plain data.
The ablation variants (base / edge / cspokm / full) are config switches, not code forks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pollenstudio.core.errors import ModelMismatchError

# scale -> (depth, width, max_channels), the YOLO11 family values
SCALES = {
    "n": (0.50, 0.25, 1024),
    "s": (0.50, 0.50, 1024),
}

VARIANTS = {
    # name: (edge, cspokm)
    "base": ("none", False),
    "edge": ("sobel", False),
    "cspokm": ("none", True),
    "full": ("sobel", True),
}


# Sane bounds: generous for any real detector (YOLO11-x is width 1.5, depth 1.0), far from
# what would exhaust a machine. A config outside them is refused before a module is built.
MAX_CLASSES = 10_000
BOUNDS = {
    "width": (0.01, 2.0),
    "depth": (0.01, 2.0),
    "max_channels": (8, 2048),
    "imgsz": (32, 8192),
    "reg_max": (1, 64),
    "omni_kernel": (1, 127),
    "cspokm_e": (0.01, 1.0),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_bounds(cfg: "ModelConfig") -> None:
    for key, (lo, hi) in BOUNDS.items():
        v = getattr(cfg, key)
        if v is None and key in ("width", "depth", "max_channels"):
            continue
        integral = key in ("max_channels", "imgsz", "reg_max", "omni_kernel")
        ok = _is_int(v) if integral else _is_num(v)
        if not ok or not lo <= v <= hi:
            kind = "a whole number" if integral else "a number"
            raise ModelMismatchError(f"model config: {key} must be {kind} from {lo} to {hi}, got {_show(v)}; "
                                     "this model file is damaged or was not made for PollenStudio")
    if not isinstance(cfg.scale, str) or not isinstance(cfg.edge, str) or not isinstance(cfg.cspokm, bool):
        raise ModelMismatchError("model config: scale and edge must be text and cspokm true or false")


@dataclass
class ModelConfig:
    """Architecture of one detector.

    scale: "n" or "s"; ``width``/``depth``/``max_channels`` override the scale's values
    (tests use e.g. width=0.125 for models that run in milliseconds).
    edge: "sobel" adds HEM + SEF (edge priors), "none" is the ablation without them.
    cspokm: add the CSPOKM block on the neck levels in ``cspokm_levels`` (3 = P3).
    sef_levels: backbone stages (3, 4, 5) that fuse edge features (only when edge="sobel").
    omni_kernel: OmniKernel large kernel size (odd). cspokm_e: share of channels it sees.
    """

    nc: int = 1
    class_names: list[str] = field(default_factory=list)
    scale: str = "n"
    width: float | None = None
    depth: float | None = None
    max_channels: int | None = None
    edge: str = "sobel"
    cspokm: bool = True
    imgsz: int = 640
    reg_max: int = 16
    sef_levels: list[int] = field(default_factory=lambda: [3, 4, 5])
    cspokm_levels: list[int] = field(default_factory=lambda: [3])
    omni_kernel: int = 31
    cspokm_e: float = 0.25

    def __post_init__(self) -> None:
        if not _is_int(self.nc) or not 1 <= self.nc <= MAX_CLASSES:
            raise ModelMismatchError(f"a detector has 1 to {MAX_CLASSES} classes, got nc={_show(self.nc)}")
        if not self.class_names:
            self.class_names = [f"class{i}" for i in range(self.nc)]
        for key in ("class_names", "sef_levels", "cspokm_levels"):
            v = getattr(self, key)
            if not isinstance(v, (list, tuple)) or len(v) > MAX_CLASSES:
                raise ModelMismatchError(f"{key} must be a list, got {_show(v)}")
        self.class_names = [str(c) for c in self.class_names]
        for key in ("sef_levels", "cspokm_levels"):
            if not all(_is_int(v) for v in getattr(self, key)):
                raise ModelMismatchError(f"{key} takes values among 3, 4, 5, got {_show(getattr(self, key))}")
        self.sef_levels = [int(v) for v in self.sef_levels]
        self.cspokm_levels = [int(v) for v in self.cspokm_levels]
        self.validate()

    def validate(self) -> None:
        """Refuse, in words, a config that is inconsistent or would build an absurd model
        (thousands of layers, hundreds of GB of weights): checked before any module is built,
        so a crafted checkpoint cannot make us allocate memory or run for minutes."""
        _check_bounds(self)
        if self.nc < 1:
            raise ModelMismatchError(f"a detector needs at least one class, got nc={self.nc}")
        if len(self.class_names) != self.nc:
            raise ModelMismatchError(
                f"the model has {self.nc} classes but {len(self.class_names)} class names were given"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ModelMismatchError("class names must be unique")
        if self.scale not in SCALES:
            raise ModelMismatchError(f"unknown model scale {self.scale!r}; use one of {sorted(SCALES)}")
        if self.edge not in ("sobel", "none"):
            raise ModelMismatchError(f"edge must be 'sobel' or 'none', got {self.edge!r}")
        if self.imgsz % 32:
            raise ModelMismatchError(f"input size must be a multiple of 32, got {self.imgsz}")
        if self.omni_kernel % 2 == 0:
            raise ModelMismatchError(f"omni_kernel must be odd, got {self.omni_kernel}")
        if not set(self.sef_levels) <= {3, 4, 5} or not set(self.cspokm_levels) <= {3, 4, 5}:
            raise ModelMismatchError("sef_levels and cspokm_levels take values among 3, 4, 5")

    # --- scaling ---------------------------------------------------------------------
    @property
    def depth_multiple(self) -> float:
        return self.depth if self.depth is not None else SCALES[self.scale][0]

    @property
    def width_multiple(self) -> float:
        return self.width if self.width is not None else SCALES[self.scale][1]

    @property
    def channel_cap(self) -> int:
        return self.max_channels if self.max_channels is not None else SCALES[self.scale][2]

    def ch(self, c: int) -> int:
        """Scaled channel count: round_up_to_8(min(c, max_channels) * width)."""
        return int(math.ceil(min(c, self.channel_cap) * self.width_multiple / 8) * 8)

    def n(self, repeats: int) -> int:
        """Scaled repeat count: max(round(n * depth), 1)."""
        return max(round(repeats * self.depth_multiple), 1) if repeats > 1 else repeats

    @property
    def variant_name(self) -> str:
        for name, (edge, csp) in VARIANTS.items():
            if edge == self.edge and csp == self.cspokm:
                return name
        return "custom"

    # --- construction / serialisation --------------------------------------------------
    @classmethod
    def variant(cls, name: str, **kwargs: Any) -> "ModelConfig":
        """``variant("base" | "edge" | "cspokm" | "full", nc=..., class_names=..., ...)``."""
        if name not in VARIANTS:
            raise ModelMismatchError(f"unknown model variant {name!r}; use one of {sorted(VARIANTS)}")
        edge, csp = VARIANTS[name]
        return cls(edge=edge, cspokm=csp, **kwargs)

    @classmethod
    def tiny(cls, name: str = "full", **kwargs: Any) -> "ModelConfig":
        """A very small model of the same topology, for tests and smoke runs."""
        kwargs.setdefault("width", 0.125)
        kwargs.setdefault("depth", 0.34)
        kwargs.setdefault("max_channels", 256)
        kwargs.setdefault("omni_kernel", 7)
        return cls.variant(name, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelMismatchError(
                f"model config has unknown fields {sorted(unknown)}; it was written by a newer PollenStudio"
            )
        return cls(**d)

    def with_classes(self, class_names: list[str]) -> "ModelConfig":
        d = self.to_dict()
        d["class_names"] = list(class_names)
        d["nc"] = len(class_names)
        return ModelConfig.from_dict(d)
