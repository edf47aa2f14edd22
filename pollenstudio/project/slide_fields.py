"""A slide scan's fields of view (issue 29): the grid of field-sized rectangles a
microscopist traverses, in meander order, which fields were traversed (kept in the project's
``meta`` table), and what the traverse counted. One rule for the review window's Slide and
Count docks (``gui.slide_overview``) and the report (``project.pollen_report``).

- A field is ``FIELD_GRAINS`` typical grains across when the grain size is calibrated, else
  ``DEFAULT_FIELD_PX``; a slide's grid is fixed once its review started (the side is kept
  with the visited fields), so a later calibration does not move fields already traversed.
- Meander (boustrophedon): rows top to bottom, the first left to right, the next right to
  left (:func:`meander_fields`); grains along it by field, then top to bottom within a
  field (:func:`meander_order`).
- Kept per image under the meta key ``slide_fields:<image id>`` as JSON ``{"side": px,
  "visited": [indices], "current": index}``, and the ids that have one under
  ``slide_fields`` (one read for a report, not one per image). Not undoable (like the
  calibration): it is where the review is, not a decision on a grain.
- Counted: confirmed grains (``Annotation.status.is_object``) whose box centre lies in a
  traversed field (:func:`traverse_summary`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.words import plural

log = logging.getLogger(__name__)

FIELD_GRAINS = 20  # a field of view is about this many typical grains across (40x objective, ~25 µm grains)
DEFAULT_FIELD_PX = 1024  # field side without a grain-size calibration
MIN_FIELD_PX = 256
META_KEY = "slide_fields:{}"
INDEX_KEY = "slide_fields"  # JSON list of the image ids that have a META_KEY entry


@dataclass(frozen=True)
class Field:
    index: int  # position in the meander order
    row: int
    col: int
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def contains(self, x: float, y: float) -> bool:
        return self.x1 <= x < self.x2 and self.y1 <= y < self.y2


def field_side(grain_px: float | None) -> int:
    """A field's side in image px: ``FIELD_GRAINS`` typical grains, else the default."""
    if grain_px and grain_px > 0:
        return max(MIN_FIELD_PX, int(round(FIELD_GRAINS * grain_px)))
    return DEFAULT_FIELD_PX


def meander_fields(width: int, height: int, side: int) -> list[Field]:
    """The slide's fields in the order a microscopist traverses it: rows top to bottom, the
    first left to right, the next right to left (boustrophedon). Edge fields are clipped."""
    if width <= 0 or height <= 0 or side <= 0:
        return []
    cols, rows = math.ceil(width / side), math.ceil(height / side)
    out = []
    for r in range(rows):
        order = range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)
        for c in order:
            out.append(Field(len(out), r, c, c * side, r * side, min(width, (c + 1) * side), min(height, (r + 1) * side)))
    return out


def field_at(fields: list[Field], side: int, x: float, y: float) -> Field | None:
    """The field holding image point (x, y)."""
    if not fields or x < 0 or y < 0:
        return None
    r, c = int(y // side), int(x // side)
    cols = max(f.col for f in fields) + 1
    rows = fields[-1].row + 1
    if r >= rows or c >= cols:
        return None
    i = r * cols + (c if r % 2 == 0 else cols - 1 - c)
    f = fields[i] if i < len(fields) else None
    return f if f is not None and f.contains(x, y) else None  # past the clipped edge: none


def meander_key(side: int, cols: int):
    """Sort key of a point (x, y) along the meander: its field's place, then (within the
    field) rows of the field top to bottom in the same direction as the field's row."""
    def key(x: float, y: float) -> tuple:
        r, c = int(max(0.0, y) // side), min(cols - 1, int(max(0.0, x) // side))
        idx = r * cols + (c if r % 2 == 0 else cols - 1 - c)
        return (idx, y, x if r % 2 == 0 else -x)
    return key


def meander_order(boxes, width: int, side: int) -> list[int]:
    """Indices of ``boxes`` (objects with ``.center``) in meander order over the slide."""
    cols = max(1, math.ceil(width / side))
    key = meander_key(side, cols)
    return sorted(range(len(boxes)), key=lambda i: key(*boxes[i].center))


@dataclass
class TraverseSummary:
    fields: int  # in the grid
    visited: int
    area_px: float  # of the visited fields
    grains: int  # confirmed grains whose centre lies in a visited field
    um_per_px: float | None = None

    @property
    def fraction(self) -> float:
        return self.visited / self.fields if self.fields else 0.0

    def area_text(self) -> str:
        if self.um_per_px:
            return f"{self.area_px * self.um_per_px ** 2 / 1e6:.2f} mm²"
        return f"{self.area_px / 1e6:.1f} Mpx"

    def fields_for(self, target: int, counted: int) -> int | None:
        """Fields still to traverse for ``target`` grains at the rate of the visited ones
        (``counted`` grains so far; possibly more than the slide has left); None when no
        grain was counted in them yet."""
        if counted >= target:
            return 0
        if not self.visited or not self.grains:
            return None
        per_field = self.grains / self.visited
        return math.ceil((target - counted) / per_field)  # may be more than the slide has left


def traverse_summary(fields: list[Field], side: int, visited, anns, um_per_px=None) -> TraverseSummary:
    """What was traversed of a slide: visited fields, their area, and the confirmed grains
    (``Annotation.status.is_object``) whose centre lies in one."""
    visited = {int(i) for i in visited if 0 <= int(i) < len(fields)}
    grains = 0
    for a in anns:
        if not a.status.is_object:
            continue
        f = field_at(fields, side, *a.box.center)
        if f is not None and f.index in visited:
            grains += 1
    area = sum(fields[i].area for i in visited)
    return TraverseSummary(len(fields), len(visited), area, grains, um_per_px)


def load_state(project, image_id: int) -> tuple[int | None, set[int], int | None]:
    """(field side, visited indices, current field) kept for an image (None, set(), None)."""
    try:
        raw = project.get_meta(META_KEY.format(image_id))
    except PollenStudioError:
        return None, set(), None
    if not raw:
        return None, set(), None
    try:
        d = json.loads(raw)
        side = int(d["side"])
        visited = {int(i) for i in d.get("visited", [])}
        cur = d.get("current")
        return (side if side > 0 else None), visited, (int(cur) if cur is not None else None)
    except (ValueError, KeyError, TypeError):
        log.warning("slide fields of image %s unreadable: %r", image_id, raw[:80])
        return None, set(), None


def slide_ids(project) -> list[int]:
    """Images whose fields were entered (the index key ``INDEX_KEY``: one read, not one per image)."""
    try:
        raw = project.get_meta(INDEX_KEY)
        return sorted({int(i) for i in json.loads(raw)}) if raw else []
    except (PollenStudioError, ValueError, TypeError):
        return []


def save_state(project, image_id: int, side: int, visited, current: int | None) -> None:
    project.set_meta(META_KEY.format(image_id),
                     json.dumps({"side": int(side), "visited": sorted(int(i) for i in visited), "current": current}))
    ids = slide_ids(project)
    if int(image_id) not in ids:
        project.set_meta(INDEX_KEY, json.dumps(sorted(ids + [int(image_id)])))


def traverse_lines(project, samples) -> dict[str, str]:
    """Lines on the slides of each sample (``SampleCount`` list; Count dock and report): fields
    traversed, area, confirmed grains in them, and the fields the target sum still needs at
    that rate. Only slides whose fields were entered; {} without any."""
    from pollenstudio.project.counting import NO_SAMPLE

    by_name = {s.name: s for s in samples}
    lines: dict[str, list[str]] = {}
    for iid in slide_ids(project):
        try:
            rec = project.image(iid)
        except PollenStudioError:
            continue  # removed since
        side, visited, _cur = load_state(project, iid)
        if side is None:
            continue
        name = rec.group or NO_SAMPLE
        sc = by_name.get(name)
        fields = meander_fields(rec.width, rec.height, side)
        s = traverse_summary(fields, side, visited, project.annotations(iid), rec.um_per_px)
        more = ""
        if sc is not None:
            need = s.fields_for(sc.target_sum, sc.pollen_sum)
            if need == 0:
                more = "; target sum reached"
            elif need is not None:
                left = s.fields - s.visited
                more = f"; about {plural(need, 'more field')} for the target sum at this rate"
                if need > left:
                    more += f", more than the {plural(left, 'field')} left on this slide"
        file = rec.path.rsplit("/", 1)[-1]
        lines.setdefault(name, []).append(
            f"{file}: {s.visited} of {plural(s.fields, 'field')} traversed ({s.fraction * 100:.0f} %, {s.area_text()}), "
            f"{plural(s.grains, 'grain')} in them{more}")
    return {k: "\n".join(v) for k, v in lines.items()}
