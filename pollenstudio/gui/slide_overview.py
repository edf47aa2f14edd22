"""A slide's review (issue 29 item 3): the slide at a glance, field by field as under the
microscope, grain by grain across the slide, and the fields traversed in the count.

- **Fields of view**: the slide is cut into a grid of field-sized rectangles (a field is
  ``FIELD_GRAINS`` typical grains across when the grain size is calibrated, else
  ``DEFAULT_FIELD_PX``), visited in the order a microscopist traverses a slide: the first
  row left to right, the next right to left, and so on (meander, :func:`meander_fields`).
  ] / [ go to the next / previous field (the view fits it, the field is marked visited);
  V marks or unmarks the field in the middle of the view. Visited fields are kept in the
  project (``meta`` key ``slide_fields:<image id>``: the grid's field size and the visited
  indices, JSON), so a slide's review goes on where it was left.
- **Overview** (:class:`SlideOverview`, the "Slide" dock): the slide's thumbnail with the
  proposals' density over it (:func:`density_map`: box centres per cell, drawn as a heat
  layer), the fields visited (green), the field shown (yellow frame) and the view (white
  frame). A click centres the view there; a double click goes to that field.
- **Next grain**: on a slide, Tab / Shift+Tab (and the advance after A / X) follow the
  slide's proposals in meander order (:func:`meander_order`: by field, then by position in
  the field), never jumping back and forth by score across a 17,000 px scan; the view
  centres on each. With nothing selected, Tab starts at the field shown.
- **Proposals as they come**: while a detection runs tile by tile, each finished tile's
  boxes (``model_jobs.TILE_LISTENERS``; before the fold across tile seams) are drawn on the
  canvas as dashed previews and join the density map; the image's stored proposals replace
  them when it is done.
- **Count**: the Count dock says, for the slides of its sample, how many fields and how
  much area were traversed and how many confirmed grains lie in them, with the fields the
  target sum still needs at that rate (:func:`traverse_summary`).

A slide is an image the canvas shows lazily from the file's own levels (``SlideImage``).
The rules (fields, meander, what is kept, what counts) are in ``project.slide_fields``,
shared with the report; here are the density map, the dock and :class:`SlideReview`,
which ``install_slide_review(window)`` wires in.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.words import plural
from pollenstudio.project.slide_fields import (  # the rules live in the project layer
    DEFAULT_FIELD_PX,
    Field,
    TraverseSummary,
    field_at,
    field_side,
    load_state,
    meander_fields,
    meander_order,
    save_state,
    traverse_lines,
    traverse_summary,
)

log = logging.getLogger(__name__)

DENSITY_CELLS = 48  # cells of the density map along the slide's longer side


# ------------------------------------------------------------------ display logic (fields, order, count:
# project.slide_fields)
def density_map(centres, width: int, height: int, cells: int = DENSITY_CELLS) -> np.ndarray:
    """Box centres per cell of a grid over the slide (``cells`` along its longer side):
    (rows, cols) float32 counts. ``centres``: (n, 2) image px."""
    long_side = max(width, height, 1)
    cell = long_side / cells
    cols, rows = max(1, math.ceil(width / cell)), max(1, math.ceil(height / cell))
    out = np.zeros((rows, cols), np.float32)
    pts = np.asarray(centres, np.float64).reshape(-1, 2)
    if len(pts):
        c = np.clip((pts[:, 0] // cell).astype(int), 0, cols - 1)
        r = np.clip((pts[:, 1] // cell).astype(int), 0, rows - 1)
        np.add.at(out, (r, c), 1.0)
    return out


# ------------------------------------------------------------------ the dock
class SlideOverview(QWidget):
    """The slide's thumbnail, the proposals' density, visited fields, the field shown and
    the view (see the module docstring). Click: centre the view there; double click: go
    to that field."""

    pointClicked = Signal(float, float)  # image px
    fieldRequested = Signal(float, float)  # image px of a double click

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(200, 160)
        policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)  # as tall as the slide's shape needs, the rest to the text
        self.setSizePolicy(policy)
        self.setMouseTracking(True)
        self.setToolTip("The slide: proposals' density (warm), visited fields (green), the field shown (yellow), "
                        "the view (white). Click: centre the view there; double click: go to that field")
        self._thumb: QImage | None = None
        self._density: QImage | None = None
        self.size_px = (0, 0)  # the slide's width, height
        self.fields: list[Field] = []
        self.visited: set[int] = set()
        self.current: int | None = None
        self.view_rect: tuple[float, float, float, float] | None = None
        self.density: np.ndarray | None = None

    def hasHeightForWidth(self) -> bool:
        return self.size_px[0] > 0

    def heightForWidth(self, w: int) -> int:
        W, H = self.size_px
        return int((w - 8) * H / W) + 8 if W > 0 else self.minimumHeight()

    def set_slide(self, thumb: np.ndarray | None, width: int, height: int) -> None:
        self.size_px = (int(width), int(height))
        self.updateGeometry()
        if thumb is None:
            self._thumb = None
        else:
            import cv2

            t = thumb
            if t.dtype != np.uint8:
                from pollenstudio.core.imageio import to_uint8

                t = to_uint8(t)
            if t.ndim == 2:
                t = cv2.cvtColor(t, cv2.COLOR_GRAY2RGB)
            s = min(1.0, 640 / max(t.shape[:2]))
            if s < 1.0:
                t = cv2.resize(t, (max(1, round(t.shape[1] * s)), max(1, round(t.shape[0] * s))), interpolation=cv2.INTER_AREA)
            t = np.ascontiguousarray(t[..., :3])
            h, w = t.shape[:2]
            self._thumb = QImage(t.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.update()

    def set_density(self, density: np.ndarray | None) -> None:
        """Counts per cell (:func:`density_map`), drawn as a warm translucent layer."""
        self.density = density
        if density is None or not density.size or density.max() <= 0:
            self._density = None
        else:
            import cv2

            # smoothed over about a cell, so it reads as a map of where grains are, not as dots
            smooth = cv2.GaussianBlur(density.astype(np.float32), (0, 0), 0.8)
            d = np.sqrt(smooth / max(float(smooth.max()), 1e-6))  # a few grains in a cell still show
            rgba = np.zeros(d.shape + (4,), np.uint8)
            rgba[..., 0] = 255
            rgba[..., 1] = (200 * (1 - d)).astype(np.uint8)
            rgba[..., 2] = 0
            rgba[..., 3] = np.where(d > 0.08, 40 + 160 * d, 0).astype(np.uint8)
            rgba = np.ascontiguousarray(rgba)
            h, w = d.shape
            self._density = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.update()

    def set_fields(self, fields: list[Field], visited: set[int], current: int | None) -> None:
        self.fields, self.visited, self.current = fields, set(visited), current
        self.update()

    def set_view_rect(self, rect) -> None:
        self.view_rect = rect
        self.update()

    # geometry: the slide fitted into the widget, centred
    def _frame(self) -> tuple[float, float, float]:
        W, H = self.size_px
        if W <= 0 or H <= 0:
            return 1.0, 0.0, 0.0
        s = min((self.width() - 8) / W, (self.height() - 8) / H)
        ox, oy = (self.width() - W * s) / 2, (self.height() - H * s) / 2
        return s, ox, oy

    def to_image(self, px: float, py: float) -> tuple[float, float]:
        s, ox, oy = self._frame()
        return (px - ox) / s, (py - oy) / s

    def to_widget(self, x: float, y: float) -> QPointF:
        s, ox, oy = self._frame()
        return QPointF(ox + x * s, oy + y * s)

    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#2b2b2b"))
        W, H = self.size_px
        if W <= 0:
            p.setPen(QColor("#bbbbbb"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       "Open a slide scan to see it here")
            p.end()
            return
        s, ox, oy = self._frame()
        target = QRectF(ox, oy, W * s, H * s)
        if self._thumb is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(target, self._thumb)
        if self._density is not None:
            p.drawImage(target, self._density)  # smooth scaling: a heat layer, not cells
        visited_fill = QColor(60, 200, 90, 90)
        p.setPen(QPen(QColor(80, 230, 110, 200), 1))
        for f in self.fields:
            if f.index in self.visited:
                r = QRectF(ox + f.x1 * s, oy + f.y1 * s, (f.x2 - f.x1) * s, (f.y2 - f.y1) * s)
                p.fillRect(r, visited_fill)
                p.drawRect(r.adjusted(0.5, 0.5, -0.5, -0.5))
        if len(self.fields) <= 2500:  # the grid, faint (a finer one would only grey the slide)
            p.setPen(QPen(QColor(255, 255, 255, 40), 1))
            cols = max((f.col for f in self.fields), default=-1) + 1
            rows = (self.fields[-1].row + 1) if self.fields else 0
            side = (self.fields[0].x2 - self.fields[0].x1) if self.fields else 0
            for c in range(1, cols):
                x = ox + c * side * s
                p.drawLine(QPointF(x, oy), QPointF(x, oy + H * s))
            for r in range(1, rows):
                y = oy + r * side * s
                p.drawLine(QPointF(ox, y), QPointF(ox + W * s, y))
        if self.current is not None and 0 <= self.current < len(self.fields):
            f = self.fields[self.current]
            p.setPen(QPen(QColor("#ffd400"), 2))
            p.drawRect(QRectF(ox + f.x1 * s, oy + f.y1 * s, (f.x2 - f.x1) * s, (f.y2 - f.y1) * s))
        if self.view_rect is not None:
            x0, y0, x1, y1 = self.view_rect
            p.setPen(QPen(QColor("#ffffff"), 1.5))
            p.drawRect(QRectF(ox + max(0, x0) * s, oy + max(0, y0) * s,
                              (min(W, x1) - max(0, x0)) * s, (min(H, y1) - max(0, y0)) * s))
        p.end()

    def mousePressEvent(self, ev) -> None:
        if self.size_px[0] > 0 and ev.button() == Qt.MouseButton.LeftButton:
            x, y = self.to_image(ev.position().x(), ev.position().y())
            if 0 <= x <= self.size_px[0] and 0 <= y <= self.size_px[1]:
                self.pointClicked.emit(x, y)
        ev.accept()

    def mouseDoubleClickEvent(self, ev) -> None:
        if self.size_px[0] > 0 and ev.button() == Qt.MouseButton.LeftButton:
            x, y = self.to_image(ev.position().x(), ev.position().y())
            if 0 <= x <= self.size_px[0] and 0 <= y <= self.size_px[1]:
                self.fieldRequested.emit(x, y)
        ev.accept()


class SlidePanel(QWidget):
    """The dock's content: the overview and a line on where the review is."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.overview = SlideOverview(self)
        lay.addWidget(self.overview)
        self.info = QLabel(self)
        self.info.setWordWrap(True)
        self.info.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.info.setText("Slide scans only: fields of view with ] / [, the proposals' density, Tab across the slide")
        lay.addWidget(self.info, 1)


# ------------------------------------------------------------------ the review of a slide
class SlideReview(QObject):
    """Fields, visited marks, grain order and overview of the slide on screen."""

    changed = Signal()  # fields visited / current field changed (the count dock re-reads)

    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.ctl = win.ctl
        self.canvas = win.canvas
        self.panel = SlidePanel()
        self.image_id: int | None = None
        self.side = DEFAULT_FIELD_PX
        self.fields: list[Field] = []
        self.visited: set[int] = set()
        self.current: int | None = None
        self.panel.overview.pointClicked.connect(self.centre_at)
        self.panel.overview.fieldRequested.connect(self.go_to_point_field)
        # live preview of a running detection's tiles: filled on its thread, drawn here
        import pyqtgraph as pg

        self._incoming: deque = deque()
        self._incoming_lock = threading.Lock()
        self.preview: dict[int, list] = {}  # image id -> boxes of finished tiles not stored yet
        self.preview_tiles: dict[int, int] = {}
        self.preview_item = pg.PlotCurveItem(pen=pg.mkPen("#00e5ff", width=1.5, style=Qt.PenStyle.DashLine),
                                             connect="pairs")
        self.preview_item.setZValue(8)
        self.canvas.vb.addItem(self.preview_item, ignoreBounds=True)
        self._drain = QTimer(self)
        self._drain.setInterval(250)
        self._drain.timeout.connect(self._take_tiles)

    # -- state ------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.image_id is not None and bool(self.fields)

    def image_ready(self, img) -> None:
        """The canvas shows a new image: a slide gets its fields (kept ones restored)."""
        from pollenstudio.gui.pyramid import SlideImage

        self._draw_preview()  # the previews of the image now on screen (none for most)

        p, iid = self.ctl.project, self.ctl.image_id
        if not isinstance(img, SlideImage) or p is None or iid is None:
            self._clear()
            return
        rec = self.ctl.image_record
        kept_side, visited, current = load_state(p, iid)
        if kept_side is None:
            from pollenstudio.engine.scale import image_grain_px

            grain, _src = image_grain_px(rec, p.grain_size_px)
            kept_side = field_side(grain)
        self.image_id = iid
        self.side = kept_side
        self.fields = meander_fields(img.width, img.height, self.side)
        self.visited = {i for i in visited if 0 <= i < len(self.fields)}
        self.current = current if current is not None and 0 <= current < len(self.fields) else None
        self.ctl.slide_order = self.order_annotations
        ov = self.panel.overview
        ov.set_slide(img.overview, img.width, img.height)
        ov.set_fields(self.fields, self.visited, self.current)
        self.refresh_density()
        self.view_changed()
        self._say()
        self.changed.emit()

    def _clear(self) -> None:
        self.image_id = None
        self.fields, self.visited, self.current = [], set(), None
        if self.ctl.slide_order == self.order_annotations:
            self.ctl.slide_order = None
        ov = self.panel.overview
        ov.set_slide(None, 0, 0)
        ov.set_fields([], set(), None)
        ov.set_density(None)
        self.panel.info.setText("Slide scans only: fields of view with ] / [, the proposals' density, "
                                "Tab across the slide")
        self.changed.emit()

    def refresh_density(self) -> None:
        """The density of the slide's undecided proposals and confirmed grains (box centres)."""
        if not self.active or self.ctl.image_id != self.image_id:
            return
        W, H = self.panel.overview.size_px
        anns = [a for a in self.ctl.annotations() if a.status.value != "rejected"]
        centres = [a.box.center for a in anns]
        centres += [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in self.preview.get(self.image_id, [])]
        self.panel.overview.set_density(density_map(centres, W, H))
        self._say()

    def view_changed(self, *_a) -> None:
        if not self.active:
            return
        r = self.canvas.vb.viewRect()
        self.panel.overview.set_view_rect((r.left(), r.top(), r.right(), r.bottom()))

    def _persist(self) -> None:
        p = self.ctl.project
        if p is None or self.image_id is None:
            return
        try:
            save_state(p, self.image_id, self.side, self.visited, self.current)
        except PollenStudioError as exc:
            self.ctl.message.emit(f"Visited fields not kept: {exc}")

    def summary(self, anns=None) -> TraverseSummary | None:
        if not self.active:
            return None
        rec = self.ctl.image_record
        return traverse_summary(self.fields, self.side, self.visited,
                                self.ctl.annotations() if anns is None else anns,
                                getattr(rec, "um_per_px", None))

    def _say(self) -> None:
        s = self.summary()
        if s is None:
            return
        cur = "" if self.current is None else f"Field {self.current + 1} of {s.fields} · "
        boxes = self.preview.get(self.image_id, [])
        if boxes:  # a detection is running over this slide
            cur = (f"Detecting: {plural(len(boxes), 'box')} on {plural(self.preview_tiles.get(self.image_id, 0), 'tile')} "
                   f"so far (dashed until stored). ") + cur
        self.panel.info.setText(
            f"{cur}{s.visited} of {plural(s.fields, 'field')} traversed ({s.fraction * 100:.0f} %, {s.area_text()}); "
            f"{plural(s.grains, 'grain')} counted in them. ] / [ next / previous field, V marks a field")

    # -- fields -------------------------------------------------------------------------
    def step_field(self, delta: int) -> bool:
        """] / [: the next / previous field in meander order (from the field in the middle
        of the view when none was entered yet); the view fits it and it is marked visited."""
        if not self.active:
            self.ctl.message.emit("Fields of view are for slide scans (the image on screen is one field)")
            return False
        if self.current is None:  # the field in view, or the slide's first (last) from the whole slide
            r = self.canvas.vb.viewRect()
            f = field_at(self.fields, self.side, r.center().x(), r.center().y())
            if f is None or r.width() > 2 * self.side:
                target = 0 if delta > 0 else len(self.fields) - 1
            else:
                target = f.index
        else:
            target = self.current + delta
        if not 0 <= target < len(self.fields):
            self.ctl.message.emit("Last field of the slide" if delta > 0 else "First field of the slide")
            return False
        self.go_to_field(target)
        return True

    def go_to_field(self, index: int, mark: bool = True) -> None:
        f = self.fields[index]
        self.current = index
        if mark:
            self.visited.add(index)
        sel = self.ctl.selected_annotation()
        if sel is not None and not f.contains(*sel.box.center):
            self.ctl.select(None)  # the stage moved on: Tab starts at this field, not at the grain left behind
        self.canvas._auto_fit = False
        self.canvas.vb.setRange(QRectF(f.x1, f.y1, f.x2 - f.x1, f.y2 - f.y1), padding=0.02)
        self.panel.overview.set_fields(self.fields, self.visited, self.current)
        self._persist()
        self._say()
        n_here = sum(1 for a in self.ctl.annotations()
                     if a.status.value == "proposed" and f.contains(*a.box.center))
        self.ctl.message.emit(f"Field {index + 1} of {len(self.fields)} (row {f.row + 1})"
                              + (f" · {plural(n_here, 'proposal')} here" if n_here else " · no proposal here"))
        self.changed.emit()

    def go_to_point_field(self, x: float, y: float) -> None:
        f = field_at(self.fields, self.side, x, y)
        if f is not None:
            self.go_to_field(f.index)

    def toggle_visited(self) -> None:
        """V: mark (or unmark) the field in the middle of the view as traversed."""
        if not self.active:
            self.ctl.message.emit("Fields of view are for slide scans (the image on screen is one field)")
            return
        r = self.canvas.vb.viewRect()
        f = field_at(self.fields, self.side, r.center().x(), r.center().y())
        if f is None:
            return
        if f.index in self.visited:
            self.visited.discard(f.index)
            what = "not traversed"
        else:
            self.visited.add(f.index)
            what = "traversed"
        self.current = f.index
        self.panel.overview.set_fields(self.fields, self.visited, self.current)
        self._persist()
        self._say()
        self.ctl.message.emit(f"Field {f.index + 1} marked {what}")
        self.changed.emit()

    def centre_at(self, x: float, y: float) -> None:
        """A click on the overview: the view centres there (zoom kept; from the whole slide
        it zooms to a field)."""
        c = self.canvas
        if c.image is None:
            return
        if c.vb.viewRect().width() >= 0.5 * c.image.width:
            side = self.side
            c._auto_fit = False
            c.vb.setRange(QRectF(x - side / 2, y - side / 2, side, side), padding=0.02)
        else:
            c.set_zoom(c.zoom(), (x, y))

    # -- a detection's tiles as they finish ----------------------------------------------------
    def tile_detected(self, project, image_id: int, tile: int, detections) -> None:
        """Called on the detection's thread after each tile (``model_jobs.TILE_LISTENERS``)."""
        if project is not self.ctl.project:
            return
        boxes = [tuple(d.box.xyxy()) for d in detections]
        with self._incoming_lock:
            self._incoming.append((int(image_id), int(tile), boxes))

    def _take_tiles(self) -> None:
        with self._incoming_lock:
            items = list(self._incoming)
            self._incoming.clear()
        if not items:
            return
        for iid, _tile, boxes in items:
            self.preview.setdefault(iid, []).extend(boxes)
            self.preview_tiles[iid] = self.preview_tiles.get(iid, 0) + 1
        self._draw_preview()

    def _start_draining(self) -> None:
        if not self._drain.isActive():
            self._drain.start()

    def detection_ended(self, *_a) -> None:
        """The run is over: its stored proposals are on screen; previews of tiles whose image
        was not stored (a cancel) go (the next run resumes those tiles)."""
        self._drain.stop()
        with self._incoming_lock:
            self._incoming.clear()
        self.preview.clear()
        self.preview_tiles.clear()
        self._draw_preview()

    def _draw_preview(self) -> None:
        iid = self.ctl.image_id
        boxes = self.preview.get(iid, []) if iid is not None else []
        if not boxes:
            self.preview_item.setData([], [])
        else:
            b = np.asarray(boxes, np.float64)
            x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
            # four segments per box (connect="pairs")
            xs = np.stack([x1, x2, x2, x2, x2, x1, x1, x1], 1).ravel()
            ys = np.stack([y1, y1, y1, y2, y2, y2, y2, y1], 1).ravel()
            self.preview_item.setData(xs, ys)
        if self.active and iid == self.image_id:
            self.refresh_density()  # says the preview's count too (the status bar keeps the run's progress)

    def stored(self, ev) -> None:
        """An image's proposals were written: its preview is replaced by them."""
        done = [i for i in ev.image_ids if i in self.preview]
        for i in done:
            self.preview.pop(i, None)
            self.preview_tiles.pop(i, None)
        if done:
            self._draw_preview()

    # -- grains across the slide ----------------------------------------------------------
    def order_annotations(self, anns):
        """``anns`` in meander order over the slide (Tab's order on a slide)."""
        W = self.panel.overview.size_px[0]
        idx = meander_order([a.box for a in anns], W, self.side)
        ordered = [anns[i] for i in idx]
        if self.current is not None:  # the cycle starts at the field shown: Tab from nothing selected goes on here
            here = [k for k, a in enumerate(ordered)
                    if (f := field_at(self.fields, self.side, *a.box.center)) is not None and f.index >= self.current]
            if here:
                ordered = ordered[here[0]:] + ordered[:here[0]]
        return ordered


def slide_notes_job(token, db_path: str, folder: str, samples):
    from pollenstudio.gui.store_reads import reader

    with reader(db_path, folder) as p:
        token.check()
        return traverse_lines(p, samples)


def install_slide_review(win) -> SlideReview:
    """The Slide dock, the field keys (] [ V) and Tab's meander order on slides."""
    review = SlideReview(win)
    win.slide_review = review
    win.slide_dock = win._dock("Slide", review.panel, Qt.DockWidgetArea.LeftDockWidgetArea)
    acts = win.actions
    acts["next_field"].triggered.connect(lambda: review.step_field(1))
    acts["prev_field"].triggered.connect(lambda: review.step_field(-1))
    acts["field_visited"].triggered.connect(review.toggle_visited)
    for menu_action in win.menuBar().actions():
        if menu_action.text() == "&Review":
            m = menu_action.menu()
            m.addSeparator()
            for n in ("next_field", "prev_field", "field_visited"):
                m.addAction(acts[n])
    win.view_menu.addAction(win.slide_dock.toggleViewAction())
    win.ctl.imageReady.connect(review.image_ready)
    win.ctl.boxesChanged.connect(review.refresh_density)
    win.ctl.projectChanged.connect(review._clear)
    win.canvas.vb.sigRangeChanged.connect(review.view_changed)
    from pollenstudio.gui import model_jobs

    model_jobs.TILE_LISTENERS.add(review)  # a detection's tiles as they finish
    win.models.detectStarted.connect(lambda _n: review._start_draining())
    win.models.detectEnded.connect(review.detection_ended)
    win.ctl.projectChanged.connect(review.detection_ended)  # previews belong to their project
    win.ctl.storeChanged.connect(review.stored)
    counts = getattr(win, "counts", None)
    if counts is not None:  # fields traversed are part of the count: re-read once they change
        review.changed.connect(lambda: counts.ctl.project is not None and counts._timer.start())
    return review
