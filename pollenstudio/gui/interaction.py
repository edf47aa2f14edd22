"""Box editing logic on image coordinates, with no Qt import.

The canvas turns mouse events into image-pixel points and feeds them here; everything a
user can get wrong (which box a click selects, how a resize flips, how far a nudge goes)
is decided in this module and unit-tested with plain numbers.

Gestures are generators in the napari style: create one at press, ``next(g)`` gives the
box at press, ``g.send((x, y))`` per drag step gives the box now; the last value is the
result at release.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generator, Hashable, Iterable, Sequence

from pollenstudio.core.types import Box

Point = tuple[float, float]
Gesture = Generator[Box, Point, None]

MIN_SIZE = 2.0  # image px: a box never collapses below this while dragged
MIN_DRAW_PX = 4.0  # image px: a drawn box smaller than this either way is a mis-drag, ignored
MIN_DRAW_SCREEN_PX = 8.0  # likewise on screen (at low zoom a few screen px span many image px)
CLICK_SCREEN_PX = 3.0  # a press and release closer than this on screen is a click, not a drag


class Part(str, enum.Enum):
    """What a press landed on. Handles are named by compass direction (y grows down)."""

    BODY = "body"
    NW = "nw"
    N = "n"
    NE = "ne"
    E = "e"
    SE = "se"
    S = "s"
    SW = "sw"
    W = "w"


HANDLES = (Part.NW, Part.N, Part.NE, Part.E, Part.SE, Part.S, Part.SW, Part.W)


def handle_points(box: Box) -> dict[Part, Point]:
    """Centres of the 8 resize handles."""
    cx, cy = box.center
    return {
        Part.NW: (box.x1, box.y1),
        Part.N: (cx, box.y1),
        Part.NE: (box.x2, box.y1),
        Part.E: (box.x2, cy),
        Part.SE: (box.x2, box.y2),
        Part.S: (cx, box.y2),
        Part.SW: (box.x1, box.y2),
        Part.W: (box.x1, cy),
    }


@dataclass(frozen=True)
class Hit:
    key: Hashable
    part: Part


def hit_test(
    boxes: Iterable[tuple[Hashable, Box]],
    x: float,
    y: float,
    tol: float,
    selected: Hashable | None = None,
) -> Hit | None:
    """What a press at (x, y) grabs.

    ``tol`` is the grab radius in image px (screen px / zoom), so handles stay easy to hit
    at any zoom. The selected box's handles win first (it is the one being edited); then
    the smallest box containing the point, so a small grain inside or overlapping a large
    one can still be picked; a press just outside an edge (within ``tol``) still counts.
    """
    boxes = list(boxes)
    if selected is not None:
        for key, box in boxes:
            if key == selected:
                best, best_d = None, None
                for part, (hx, hy) in handle_points(box).items():
                    d = max(abs(hx - x), abs(hy - y))
                    if d <= tol and (best_d is None or d < best_d):
                        best, best_d = part, d
                if best is not None:
                    return Hit(key, best)
                break
    inside = [(box.area, i, key) for i, (key, box) in enumerate(boxes) if box.contains(x, y)]
    if not inside:
        inside = [
            (box.area, i, key)
            for i, (key, box) in enumerate(boxes)
            if box.x1 - tol <= x <= box.x2 + tol and box.y1 - tol <= y <= box.y2 + tol
        ]
    if not inside:
        return None
    # smallest first; on equal area the later-drawn (topmost) box wins
    inside.sort(key=lambda t: (t[0], -t[1]))
    return Hit(inside[0][2], Part.BODY)


def cycle(keys: Sequence[Hashable], current: Hashable | None, step: int) -> Hashable | None:
    """Next (step=1) or previous (step=-1) key after ``current``, wrapping (Tab / Shift+Tab)."""
    if not keys:
        return None
    if current not in keys:
        return keys[0] if step > 0 else keys[-1]
    return keys[(list(keys).index(current) + step) % len(keys)]


def _clamp_translate(box: Box, dx: float, dy: float, bounds: tuple[float, float] | None) -> Box:
    if bounds is not None:
        w, h = bounds
        dx = min(max(dx, -box.x1), w - box.x2)
        dy = min(max(dy, -box.y1), h - box.y2)
    return box.translated(dx, dy)


def nudge(box: Box, dx: float, dy: float, bounds: tuple[float, float] | None = None) -> Box:
    """Move by (dx, dy) px without leaving the image (arrow keys)."""
    return _clamp_translate(box, dx, dy, bounds)


def drag_move(box: Box, start: Point, bounds: tuple[float, float] | None = None) -> Gesture:
    """Move the whole box with the pointer, keeping its size and staying inside the image."""
    current = box
    while True:
        pt = yield current
        current = _clamp_translate(box, pt[0] - start[0], pt[1] - start[1], bounds)


def _clip_point(pt: Point, bounds: tuple[float, float] | None) -> Point:
    if bounds is None:
        return pt
    return (min(max(pt[0], 0.0), bounds[0]), min(max(pt[1], 0.0), bounds[1]))


def drag_resize(
    box: Box,
    part: Part,
    start: Point,
    bounds: tuple[float, float] | None = None,
    min_size: float = MIN_SIZE,
) -> Gesture:
    """Resize by one of the 8 handles. Dragging a handle past the opposite edge flips the
    box instead of inverting it; the result is never smaller than ``min_size``."""
    moves_x1 = part in (Part.NW, Part.W, Part.SW)
    moves_x2 = part in (Part.NE, Part.E, Part.SE)
    moves_y1 = part in (Part.NW, Part.N, Part.NE)
    moves_y2 = part in (Part.SW, Part.S, Part.SE)
    current = box
    while True:
        pt = yield current
        px, py = _clip_point((box.x1 + pt[0] - start[0], box.y1 + pt[1] - start[1]), bounds)
        qx, qy = _clip_point((box.x2 + pt[0] - start[0], box.y2 + pt[1] - start[1]), bounds)
        x1 = px if moves_x1 else box.x1
        x2 = qx if moves_x2 else box.x2
        y1 = py if moves_y1 else box.y1
        y2 = qy if moves_y2 else box.y2
        current = _enforce_min(Box(x1, y1, x2, y2).normalized(), min_size, bounds)


def _enforce_min(box: Box, min_size: float, bounds: tuple[float, float] | None) -> Box:
    x1, y1, x2, y2 = box.xyxy()
    if x2 - x1 < min_size:
        x2 = x1 + min_size
        if bounds is not None and x2 > bounds[0]:
            x2, x1 = bounds[0], bounds[0] - min_size
    if y2 - y1 < min_size:
        y2 = y1 + min_size
        if bounds is not None and y2 > bounds[1]:
            y2, y1 = bounds[1], bounds[1] - min_size
    return Box(x1, y1, x2, y2)


def drag_draw(start: Point, bounds: tuple[float, float] | None = None) -> Gesture:
    """Rubber-band a new box from the press point, in any direction, clipped to the image.
    The yielded box may be degenerate until the pointer moves; see :func:`usable`."""
    sx, sy = _clip_point(start, bounds)
    current = Box(sx, sy, sx, sy)
    while True:
        pt = yield current
        px, py = _clip_point(pt, bounds)
        current = Box(sx, sy, px, py).normalized()


def usable(box: Box, min_size: float = MIN_SIZE) -> bool:
    """A drawn box is kept only if it is at least ``min_size`` px each way (a click is not a box)."""
    return box.width >= min_size and box.height >= min_size


class Mode(str, enum.Enum):
    IDLE = "idle"
    MOVE = "move"
    RESIZE = "resize"
    DRAW = "draw"
    PAN = "pan"


@dataclass(frozen=True)
class Outcome:
    """What a finished gesture asks the controller to do.

    kind: "select" (key, or None to clear), "edit" (key, box), "create" (box), "none";
    while drawing also "click" (box: the clicked point, zero size: click-to-box); a drawing
    under the minimum size is "none" carrying that box (ignored, so the canvas can say so).
    """

    kind: str
    key: Hashable | None = None
    box: Box | None = None


class BoxEditor:
    """Press / move / release state machine over image coordinates.

    The canvas owns one, passes in the current boxes, and applies the :class:`Outcome` of
    each release. ``preview`` is the box to draw while a gesture is in flight.
    """

    def __init__(self) -> None:
        self.mode = Mode.IDLE
        self.draw_armed = False  # B pressed: the next left drag draws a new box
        self.key: Hashable | None = None
        self.preview: Box | None = None
        self._gesture: Gesture | None = None
        self._original: Box | None = None
        self._pan_start: Point | None = None
        self._draw_start: Point | None = None

    def press(
        self,
        boxes: Sequence[tuple[Hashable, Box]],
        pt: Point,
        tol: float,
        selected: Hashable | None,
        bounds: tuple[float, float] | None,
        pan: bool = False,
    ) -> Outcome:
        """Start a gesture. ``pan`` is true while Space is held or for the middle button."""
        self.cancel()
        if pan:
            self.mode = Mode.PAN
            self._pan_start = pt
            return Outcome("none")
        if self.draw_armed:
            self.mode = Mode.DRAW
            self._draw_start = pt
            self._gesture = drag_draw(pt, bounds)
            self.preview = next(self._gesture)
            return Outcome("select", None)
        hit = hit_test(boxes, pt[0], pt[1], tol, selected)
        if hit is None:
            self.mode = Mode.PAN  # drag on empty image pans, a click clears the selection
            self._pan_start = pt
            return Outcome("select", None)
        box = dict(boxes)[hit.key]
        self.key = hit.key
        self._original = box
        if hit.part is Part.BODY:
            self.mode = Mode.MOVE
            self._gesture = drag_move(box, pt, bounds)
        else:
            self.mode = Mode.RESIZE
            self._gesture = drag_resize(box, hit.part, pt, bounds)
        self.preview = next(self._gesture)
        return Outcome("select", hit.key)

    def move(self, pt: Point) -> Box | None:
        """One drag step; returns the preview box (None when not editing)."""
        if self._gesture is not None:
            self.preview = self._gesture.send(pt)
        return self.preview

    def release(self, pt: Point, min_draw: float = MIN_SIZE, click_tol: float = 0.0) -> Outcome:
        """End the gesture; an unchanged box yields no edit. A drawing smaller than
        ``min_draw`` image px either way is ignored ("none" with the box), one whose end is
        within ``click_tol`` image px of its start is a "click". Either way B is used up."""
        mode, key, original, start = self.mode, self.key, self._original, self._draw_start
        if self._gesture is not None:
            self.preview = self._gesture.send(pt)
        box = self.preview
        self.cancel()
        if mode is Mode.DRAW:
            self.draw_armed = False
            if start is not None and max(abs(pt[0] - start[0]), abs(pt[1] - start[1])) <= click_tol:
                return Outcome("click", None, Box(start[0], start[1], start[0], start[1]))
            if box is not None and usable(box, max(min_draw, MIN_SIZE)):
                return Outcome("create", None, box)
            return Outcome("none", None, box)
        if mode in (Mode.MOVE, Mode.RESIZE) and box is not None and box != original:
            return Outcome("edit", key, box)
        return Outcome("none")

    def pan_delta(self, pt: Point) -> Point | None:
        """Image-px offset to shift the view by so the grabbed point stays under the pointer."""
        if self.mode is not Mode.PAN or self._pan_start is None:
            return None
        return (self._pan_start[0] - pt[0], self._pan_start[1] - pt[1])

    def cancel(self) -> None:
        """Abort the gesture in flight (Escape); nothing is changed."""
        if self._gesture is not None:
            self._gesture.close()
        self.mode = Mode.IDLE
        self.key = None
        self.preview = None
        self._gesture = None
        self._original = None
        self._pan_start = None
        self._draw_start = None
