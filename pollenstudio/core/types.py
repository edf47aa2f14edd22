"""Plain value types: boxes, detections, taxa, images, annotations.

Boxes are in image pixels, corners ``(x1, y1, x2, y2)`` with ``x2 > x1`` and ``y2 > y1``;
``x`` grows to the right, ``y`` downwards, (0, 0) is the top-left corner of the top-left
pixel, so an image of width W spans ``0 <= x <= W``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class Source(str, enum.Enum):
    MODEL = "model"
    HUMAN = "human"


class AnnotationStatus(str, enum.Enum):
    PROPOSED = "proposed"  # from the model, not yet decided
    ACCEPTED = "accepted"  # model proposal accepted as is
    EDITED = "edited"  # model proposal moved, resized or relabelled by a human
    REJECTED = "rejected"  # model proposal rejected: not an object (kept as provenance)
    ADDED = "added"  # drawn by a human

    @property
    def is_decided(self) -> bool:
        return self is not AnnotationStatus.PROPOSED

    @property
    def is_object(self) -> bool:
        """True when a reviewed annotation counts as a real grain (training, export)."""
        return self in OBJECT_STATUSES


# What counts as a grain: the one spelling of the rule. Exports, reports, training data and
# the store's SQL (``sql_in(OBJECT_STATUSES)``) all read it from here.
OBJECT_STATUSES: frozenset[AnnotationStatus] = frozenset(
    {AnnotationStatus.ACCEPTED, AnnotationStatus.EDITED, AnnotationStatus.ADDED}
)


def sql_in(statuses) -> str:
    """``('accepted', 'edited', 'added')``: an SQL IN-list of status values, in a fixed
    order (the values are this module's enum constants, never user input)."""
    ordered = sorted((AnnotationStatus(s) for s in statuses), key=list(AnnotationStatus).index)
    return "(" + ", ".join(f"'{s.value}'" for s in ordered) + ")"


# Detection threshold: a detection scoring below it is dropped (predict, ``pollenstudio
# detect``, GUI detection) and precision / recall / confusion are read at it (evaluate).
DEFAULT_CONF = 0.25

# How a focal stack is detected (``engine.detect_job.detect_stack``): on its all-in-focus EDF
# view, on every plane, or on both, the boxes of one grain merged across planes. The default
# is the mode measured best on generated stacks (bench/stack_mode.py,
# bench/results/stack_mode.txt).
STACK_MODES = ("edf", "planes", "both")
DEFAULT_STACK_MODE = "both"

# A grain whose taxon nobody has named yet: a box drawn by hand (unless the user prefers the
# last used taxon) or a proposal of a one-class grain model ("pollen"). Such a taxon never
# takes a digit key, so naming grains with 1-9 works the same in every project.
UNIDENTIFIED = "unidentified"
UNASSIGNED_TAXA = frozenset({UNIDENTIFIED, "pollen"})
UNIDENTIFIED_COLOR = "#9e9e9e"


def is_unassigned_taxon(name: str) -> bool:
    """True for a taxon that only says "a grain" (unidentified, pollen), not which."""
    return name.strip().lower() in UNASSIGNED_TAXA

# The one class of the taxon-agnostic grain model (models/pollen-grain-n.safetensors): a grain
# found, not named. Like UNIDENTIFIED it never takes a digit key; training a project that
# also has named taxa uses such boxes for localisation only, never as a taxon.
GRAIN_CLASS = "pollen"
GRAIN_CLASS_LABEL = "pollen (unidentified)"


def display_taxon(name: str) -> str:
    """A taxon's name as a person reads it: the grain model's class (``GRAIN_CLASS``,
    "pollen") is shown "pollen (unidentified)" - a grain found, not yet named - and every
    other name as it is. For display only: the store, COCO / YOLO / CSV keep "pollen"."""
    return GRAIN_CLASS_LABEL if name.strip().lower() == GRAIN_CLASS else name


class ReviewStatus(str, enum.Enum):
    NEW = "new"  # nothing detected or reviewed yet
    IN_REVIEW = "in_review"  # has undecided proposals
    REVIEWED = "reviewed"  # nothing undecided left


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> "Box":
        return cls(float(x), float(y), float(x) + float(w), float(y) + float(h))

    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def is_valid(self) -> bool:
        return self.x2 > self.x1 and self.y2 > self.y1

    def normalized(self) -> "Box":
        """Same box with corners ordered (a box dragged up-left has x2 < x1)."""
        return Box(min(self.x1, self.x2), min(self.y1, self.y2), max(self.x1, self.x2), max(self.y1, self.y2))

    def translated(self, dx: float, dy: float) -> "Box":
        return Box(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)

    def clipped(self, width: float, height: float) -> "Box":
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
        )

    def contains(self, x: float, y: float) -> bool:
        return self.x1 <= x <= self.x2 and self.y1 <= y <= self.y2

    def intersection(self, other: "Box") -> float:
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        return w * h if w > 0 and h > 0 else 0.0

    def iou(self, other: "Box") -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def expanded(self, factor: float) -> "Box":
        """Box scaled about its centre by ``factor`` (1.5 -> 50 % larger each side)."""
        cx, cy = self.center
        hw, hh = self.width * factor / 2.0, self.height * factor / 2.0
        return Box(cx - hw, cy - hh, cx + hw, cy + hh)


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    color: str = "#e6a23c"  # '#rrggbb'
    hotkey: str | None = None  # '1'..'9' or None
    parent_id: int | None = None  # family/genus grouping


@dataclass(frozen=True)
class Detection:
    """One model detection in original image pixels."""

    box: Box
    class_index: int  # index into the model's class list
    label: str  # taxon name
    score: float
    topk: tuple[tuple[str, float], ...] = ()  # (taxon, probability), best first
    level: int | None = None  # feature level (0=P3, 1=P4, 2=P5) that produced it
    plane: int | None = None  # focal plane (0-based) where the grain is sharpest, on a focal stack
    withdrawn: bool = False  # the taxon classifier withdrew it: it looks like proposals reviewers rejected


# ``author`` of a proposal the taxon classifier withdrew (stored as rejected, shown with R): not
# a person's decision, so it never counts as one (review status, training's "not pollen"
# examples) and the next detection replaces it like an undecided proposal
WITHDRAWN_BY_MODEL = "model:withdrawn"


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str  # as stored: relative to the project folder where possible
    width: int
    height: int
    bit_depth: int = 8
    channels: int = 3
    um_per_px: float | None = None
    status: ReviewStatus = ReviewStatus.NEW
    group: str | None = None  # slide / sample id: train/val split keeps groups together
    sha256: str | None = None
    planes: int = 1  # focal planes: > 1 for a focal stack (issue 19)
    plane_files: tuple[str, ...] | None = None  # a stack's plane files (stored like path), if not one file
    grain_px: float | None = None  # its own typical grain diameter (px): grain-size calibration of its magnification

    @property
    def is_stack(self) -> bool:
        return self.planes > 1


@dataclass(frozen=True)
class Annotation:
    id: int
    image_id: int
    box: Box
    category_id: int
    status: AnnotationStatus
    source: Source
    score: float | None = None
    model_version: int | None = None
    author: str | None = None
    polygon: tuple[float, ...] | None = None  # flat x0, y0, x1, y1, ... in image pixels
    topk: tuple[tuple[str, float], ...] = ()
    created: float = 0.0
    updated: float = 0.0
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    plane: int | None = None  # focal plane (0-based) of the grain on a focal stack; None: single image

    def with_(self, **changes) -> "Annotation":
        return replace(self, **changes)


# A taxon's role in a slide count (issue 20). "pollen" taxa make the pollen sum, the basis
# of percentages; the others are counted on their own, out of the sum: spores (e.g. ferns),
# the exotic marker added to measure concentration (e.g. Lycopodium tablets), grains too
# damaged to name ("indeterminate"), anything else left out ("excluded").
TAXON_ROLES: tuple[str, ...] = ("pollen", "spore", "marker", "indeterminate", "excluded")
SUM_ROLE = "pollen"
