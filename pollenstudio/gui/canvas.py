"""The image canvas: pyqtgraph ViewBox (aspect locked, y down) + image + box overlay.

Mouse and keys are turned into image-pixel points and handed to the Qt-free
:class:`~pollenstudio.gui.interaction.BoxEditor`; the canvas only draws and emits what the
user asked for (select, edit, create). It never writes to the project itself.

Large images: an overview ImageItem shows the coarsest pyramid level; a detail ImageItem
on top shows only the visible window, cut from the level that matches the zoom (see
``pyramid.py``), re-cut when the view leaves the cut window or the level changes.
Pixels are drawn without smoothing, so at high zoom each image pixel is a crisp square.
A whole-slide image (``SlideImage``, ``lazy``) is cut off the GUI thread: the file's tiles
in view are read and mapped to display levels on a worker (the newest request wins), and
until they land the last detail and the overview under it stay on screen, so panning
never waits for a read.
"""

from __future__ import annotations

from typing import Hashable

import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QCursor, QKeyEvent, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QGraphicsView, QLabel, QVBoxLayout, QWidget

from pollenstudio.core.types import Box
from pollenstudio.gui.box_items import BoxOverlay, BoxView
from pollenstudio.gui.interaction import CLICK_SCREEN_PX, MIN_DRAW_PX, MIN_DRAW_SCREEN_PX, BoxEditor, Mode
from pollenstudio.gui.pyramid import DisplayImage, adjust_levels, to_display
from pollenstudio.gui.workers import JobRunner

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

GRAB_PX = 6.0  # grab radius on screen for edges and handles
WHEEL_STEP = 1.25
MAX_ZOOM = 64.0  # screen px per image px
COMFORT_MIN_PX = 40.0  # a selected box smaller than this on screen is zoomed in to ...
COMFORT_PX = 140.0  # ... about this size (its longer side), centred
DETAIL_MARGIN = 0.25  # cut this fraction of the view extra on each side, so pans rarely re-cut


def read_detail(token, image, level: int, x1: float, y1: float, x2: float, y2: float, levels):
    """Worker job: a window of a lazily read image, mapped to display levels (uint8)."""
    token.check()
    arr, rect = image.crop(level, x1, y1, x2, y2)
    token.check()
    return (None if arr is None else to_display(arr, levels)), rect


class _View(pg.GraphicsView):
    """GraphicsView whose mouse/wheel/keys go to the canvas, not to pyqtgraph's drag system."""

    def __init__(self, canvas: "Canvas"):
        super().__init__()
        self._canvas = canvas
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def mousePressEvent(self, ev: QMouseEvent) -> None:
        self._canvas._press(ev)

    def mouseMoveEvent(self, ev: QMouseEvent) -> None:
        self._canvas._move(ev)

    def mouseReleaseEvent(self, ev: QMouseEvent) -> None:
        self._canvas._release(ev)

    def mouseDoubleClickEvent(self, ev: QMouseEvent) -> None:
        ev.accept()

    def wheelEvent(self, ev: QWheelEvent) -> None:
        self._canvas._wheel(ev)

    def keyPressEvent(self, ev: QKeyEvent) -> None:
        if not self._canvas._key(ev, True):
            super().keyPressEvent(ev)

    def keyReleaseEvent(self, ev: QKeyEvent) -> None:
        if not self._canvas._key(ev, False):
            super().keyReleaseEvent(ev)


class Canvas(QWidget):
    selectionRequested = Signal(object)  # key or None
    boxEdited = Signal(object, object)  # key, Box
    boxDrawn = Signal(object)  # Box
    boxClicked = Signal(float, float)  # B then a click (no drag): image px, for click-to-box
    drawIgnored = Signal(str)  # why a drawing made no box (too small)
    cursorMoved = Signal(float, float)  # image px
    viewChanged = Signal(float)  # zoom, screen px per image px
    planeStep = Signal(int)  # Ctrl+wheel: +1 deeper / -1 shallower focal plane

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = _View(self)
        self.vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setMouseEnabled(False, False)  # we pan/zoom ourselves (see _View)
        self.vb.setDefaultPadding(0.02)
        self.view.setCentralItem(self.vb)
        self.view.setBackground("#2b2b2b")
        self.overview = pg.ImageItem(axisOrder="row-major")
        self.detail = pg.ImageItem(axisOrder="row-major")
        self.detail.setZValue(1)
        self.overlay = BoxOverlay()
        # model overlay (edge map / Grad-CAM): above the pixels, under the boxes; maps of
        # huge images are computed downscaled and stretched over the image rect
        self.heat = pg.ImageItem(axisOrder="row-major")
        self.heat.setZValue(5)
        self.heat.hide()
        self._heat_lut = None
        self.heat_colormap = "warm"  # the overlay's colour map: "warm" or "cool" (gui.overlay)
        for item in (self.overview, self.detail, self.heat, self.overlay):
            self.vb.addItem(item, ignoreBounds=item is not self.overview)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)
        # what to do when there is nothing to show (a project without images): a blank canvas
        # said nothing
        self.hint = QLabel(self.view)
        self.hint.setObjectName("canvasHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: #d8d8d8; font-size: 15px; background: transparent;")
        self.hint.hide()

        self.image: DisplayImage | None = None
        self.editor = BoxEditor()
        self.selected: Hashable | None = None
        self.editable = True
        self.brightness = 0.0
        self.contrast = 1.0
        self._space = False
        self._detail_key: tuple | None = None  # (level, x0, y0, x1, y1) of the current cut
        self._detail_timer = QTimer(self)
        self._detail_timer.setSingleShot(True)
        self._detail_timer.setInterval(0)
        self._detail_timer.timeout.connect(self._update_detail)
        # whole-slide images: detail cuts read on a thread of their own (newest request wins)
        from PySide6.QtCore import QThreadPool

        self._detail_pool = QThreadPool(self)
        self._detail_pool.setMaxThreadCount(1)
        self._detail_jobs = JobRunner(self, pool=self._detail_pool)
        self._pending_key: tuple | None = None  # the cut being read
        self.detail_reads = 0  # cuts read for lazily read images (tests, bench)
        self._auto_fit = True  # keep the whole image in view on resize until the user zooms/pans
        self.vb.sigRangeChanged.connect(self._range_changed)
        self.vb.sigResized.connect(self._resized)

    # --- image -------------------------------------------------------------------------
    def set_image(self, image: DisplayImage | None, fit: bool = True) -> None:
        self.image = image
        self._detail_key = None
        self._pending_key = None
        self._detail_jobs.cancel("detail")
        self.detail.clear()
        self.detail.hide()
        self.editor.cancel()
        self.set_heat(None)
        if image is None:
            self.overview.clear()
            self.overlay.set_boxes([])
            return
        self._show_overview()
        self.overview.setRect(QRectF(0, 0, image.width, image.height))
        self.overlay.set_image_size(image.width, image.height)
        self.vb.setLimits(
            xMin=-image.width, xMax=2 * image.width, yMin=-image.height, yMax=2 * image.height,
            minXRange=4, minYRange=4,
        )
        if fit:
            self.fit()
        self._schedule_detail()

    def swap_image(self, image: DisplayImage | None) -> None:
        """Another focal plane of the same field: new pixels under the same zoom, pan, boxes
        and gesture (an image of another size is opened as a new image)."""
        if self.image is None or image is None or (image.width, image.height) != (self.image.width, self.image.height):
            self.set_image(image)
            return
        self.image = image
        self._detail_key = None
        self._pending_key = None
        self._detail_jobs.cancel("detail")
        self.set_heat(None)  # a map of another plane does not belong over this one
        self._show_overview()
        self._schedule_detail()

    def _show_overview(self) -> None:
        ov = to_display(self.image.overview, self.levels())
        self.overview.setImage(ov, levels=None, autoLevels=False, autoDownsample=False)

    def levels(self) -> tuple[float, float]:
        if self.image is None:
            return (0.0, 255.0)
        return adjust_levels(self.image.auto, self.brightness, self.contrast)

    def set_brightness_contrast(self, brightness: float, contrast: float) -> None:
        self.brightness, self.contrast = brightness, contrast
        if self.image is not None:
            self._show_overview()
            self._detail_key = None  # re-cut the detail with the new levels
            self._pending_key = None
            self._schedule_detail()

    # --- model overlay -------------------------------------------------------------------
    def set_heat(self, heat=None, width: int | None = None, height: int | None = None, rect=None) -> None:
        """Show an (h, w) 0..1 map over the image (None hides it), stretched to width x height
        from the origin, or over ``rect`` (x0, y0, x1, y1 image px: a map of part of the image)."""
        if heat is None:
            self.heat.clear()
            self.heat.hide()
            return
        if self._heat_lut is None:
            from pollenstudio.gui.overlay import heat_lut

            self._heat_lut = heat_lut(self.heat_colormap)
        self.heat.setImage(heat, levels=(0.0, 1.0), lut=self._heat_lut, autoLevels=False, autoDownsample=True)
        if rect is not None:
            x0, y0, x1, y1 = rect
            self.heat.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        else:
            self.heat.setRect(QRectF(0, 0, width or heat.shape[1], height or heat.shape[0]))
        self.heat.show()

    def set_heat_colormap(self, name: str) -> None:
        """Draw the overlay in colour map ``name`` ("warm" or "cool"), the shown map included."""
        if name == self.heat_colormap and self._heat_lut is not None:
            return
        from pollenstudio.gui.overlay import heat_lut

        self.heat_colormap = name
        self._heat_lut = heat_lut(name)
        if self.heat.image is not None:
            self.heat.setLookupTable(self._heat_lut)

    def visible_region(self, margin: float = 0.15) -> tuple[float, float, float, float] | None:
        """The part of the image on screen, ``margin`` of its size added on each side and
        clipped to the image (x0, y0, x1, y1 image px), or None without an image."""
        if self.image is None:
            return None
        r = self.vb.viewRect()
        mx, my = r.width() * margin, r.height() * margin
        x0, y0 = max(0.0, r.left() - mx), max(0.0, r.top() - my)
        x1, y1 = min(float(self.image.width), r.right() + mx), min(float(self.image.height), r.bottom() + my)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def set_heat_opacity(self, opacity: float) -> None:
        self.heat.setOpacity(float(opacity))

    # --- boxes -------------------------------------------------------------------------
    def set_boxes(self, views: list[BoxView], selected: Hashable | None = None) -> None:
        self.selected = selected
        self.overlay.set_boxes(views, selected)

    def set_selected(self, key: Hashable | None) -> None:
        self.selected = key
        self.overlay.set_selected(key)

    def arm_draw(self) -> None:
        """B: the next left drag draws a new box."""
        self.editor.draw_armed = True
        self.view.viewport().setCursor(Qt.CursorShape.CrossCursor)

    def cancel_gesture(self) -> None:
        self.editor.cancel()
        self.editor.draw_armed = False
        self.overlay.set_preview(None)
        self.view.viewport().unsetCursor()

    # --- view --------------------------------------------------------------------------
    def zoom(self) -> float:
        """Screen px per image px."""
        px = self.vb.viewPixelSize()[0]
        return 1.0 / px if px > 0 else 1.0

    def _resized(self, *args) -> None:
        if self._auto_fit:
            self.fit()
        self._range_changed()

    def fit(self) -> None:
        self._auto_fit = True
        if self.image is not None:
            self.vb.setRange(QRectF(0, 0, self.image.width, self.image.height), padding=0.02)

    def zoom_by(self, factor: float, center: QPointF | None = None) -> None:
        if self.image is None:
            return
        self._auto_fit = False
        z = self.zoom()
        factor = min(factor, MAX_ZOOM / z) if factor > 1 else factor
        if center is None:
            r = self.vb.viewRect()
            center = r.center()
        self.vb.scaleBy((1.0 / factor, 1.0 / factor), center=center)

    def set_zoom(self, zoom: float, center: tuple[float, float]) -> None:
        """Show ``center`` (image px) in the middle at ``zoom`` screen px per image px."""
        self._auto_fit = False
        w, h = self.vb.width() / zoom, self.vb.height() / zoom
        cx, cy = self._clamp_centre(center[0], center[1], w, h)
        self.vb.setRange(QRectF(cx - w / 2, cy - h / 2, w, h), padding=0)

    def _clamp_centre(self, cx: float, cy: float, w: float, h: float) -> tuple[float, float]:
        """Keep the view on the image where it is larger than the view (no empty margin
        when centring a grain near an edge)."""
        if self.image is None:
            return cx, cy
        W, H = self.image.width, self.image.height
        if w < W:
            cx = min(max(cx, w / 2), W - w / 2)
        if h < H:
            cy = min(max(cy, h / 2), H - h / 2)
        return cx, cy

    def center_on(self, box: Box) -> None:
        """Bring ``box`` into view for review. A box too small to see at this zoom (a grain
        on a scan at 12 %) is centred and zoomed to a comfortable size; otherwise nothing
        moves if it is already well inside the view (no needless jumps), else it is
        centred, zooming out only if it would not fit."""
        if self.image is None:
            return
        r = self.vb.viewRect()
        side = max(box.width, box.height, 1.0)
        if side * self.zoom() < COMFORT_MIN_PX:
            vw, vh = max(self.vb.width(), 1.0), max(self.vb.height(), 1.0)
            zoom = min(MAX_ZOOM, COMFORT_PX / side, 0.5 * min(vw, vh) / side)
            self.set_zoom(zoom, box.center)
            return
        m = side * 0.25
        if r.contains(QRectF(box.x1 - m, box.y1 - m, box.width + 2 * m, box.height + 2 * m)):
            return
        self._auto_fit = False
        if box.width * 1.5 > r.width() or box.height * 1.5 > r.height():
            b = box.expanded(3.0)
            self.vb.setRange(QRectF(b.x1, b.y1, b.width, b.height), padding=0)
            return
        cx, cy = self._clamp_centre(*box.center, r.width(), r.height())
        self.vb.translateBy(x=cx - r.center().x(), y=cy - r.center().y())

    def box_in_view(self, box: Box) -> bool:
        """Whether ``box`` is on screen now (its centre inside the view)."""
        return self.image is not None and self.vb.viewRect().contains(QPointF(*box.center))

    def zoom_keys(self, factor: float) -> None:
        """+ / -: zoom about the selected box when it is in view (it stays where the eye
        is), else about the view centre."""
        centre = None
        sel = next((v.box for v in self.overlay.views if v.key == self.selected), None)
        if sel is not None and self.vb.viewRect().contains(QPointF(*sel.center)):
            centre = QPointF(*sel.center)
        self.zoom_by(factor, center=centre)

    def image_to_widget(self, x: float, y: float) -> QPoint:
        """Viewport position of an image point (tests drive real mouse events with it)."""
        return self.view.mapFromScene(self.vb.mapViewToScene(QPointF(x, y)))

    def widget_to_image(self, pos) -> tuple[float, float]:
        p = self.vb.mapSceneToView(self.view.mapToScene(QPoint(int(pos.x()), int(pos.y()))))
        return (p.x(), p.y())

    # --- detail level ------------------------------------------------------------------
    def _range_changed(self, *args) -> None:
        self._schedule_detail()
        if self.image is not None:  # without an image the "zoom" is of nothing (it read 64600 %)
            self.viewChanged.emit(self.zoom())

    def set_hint(self, text: str) -> None:
        """A note in the middle of the canvas while it has no image ("" hides it)."""
        self.hint.setText(text)
        self.hint.setVisible(bool(text))
        self._place_hint()

    def _place_hint(self) -> None:
        r = self.view.rect()
        self.hint.setGeometry(r.adjusted(40, 40, -40, -40))

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._place_hint()

    def _schedule_detail(self) -> None:
        if not self._detail_timer.isActive():
            self._detail_timer.start()

    def _update_detail(self) -> None:
        img = self.image
        if img is None:
            return
        level = img.level_for(self.zoom())
        if level >= img.overview_level:
            self._pending_key = None  # a cut still being read is not wanted any more
            if self._detail_key is not None:
                self.detail.hide()
                self._detail_key = None
            return
        r = self.vb.viewRect()
        x0, y0, x1, y1 = r.left(), r.top(), r.right(), r.bottom()
        if self._detail_key is not None:
            k, cx0, cy0, cx1, cy1 = self._detail_key
            if k == level and cx0 <= max(x0, 0) and cy0 <= max(y0, 0) and cx1 >= min(x1, img.width) and cy1 >= min(y1, img.height):
                return  # the current cut still covers the view
        mx, my = r.width() * DETAIL_MARGIN, r.height() * DETAIL_MARGIN
        want = (x0 - mx, y0 - my, x1 + mx, y1 + my)
        if getattr(img, "lazy", False):
            self._request_detail(img, level, want)
            return
        arr, rect = img.crop(level, *want)
        self._show_detail(level, to_display(arr, self.levels()) if arr is not None else None, rect)

    def _show_detail(self, level: int, arr, rect) -> None:
        if arr is None:
            self.detail.hide()
            self._detail_key = None
            return
        rx, ry, rw, rh = rect
        self.detail.setImage(arr, levels=None, autoLevels=False, autoDownsample=False)
        self.detail.setRect(QRectF(rx, ry, rw, rh))
        self.detail.show()
        self._detail_key = (level, rx, ry, rx + rw, ry + rh)

    def _request_detail(self, img, level: int, want: tuple) -> None:
        """Read a cut of a lazily read image on the detail thread; a read already running
        for a cut that covers the view is left to land."""
        x0, y0, x1, y1 = want
        pend = self._pending_key
        if pend is not None and pend[0] is img and pend[1] == level:
            _i, _k, px0, py0, px1, py1 = pend
            r = self.vb.viewRect()
            if px0 <= max(r.left(), 0) and py0 <= max(r.top(), 0) and px1 >= min(r.right(), img.width) \
                    and py1 >= min(r.bottom(), img.height):
                return
        key = (img, level, x0, y0, x1, y1)
        self._pending_key = key
        self.detail_reads += 1

        def done(res, key=key):
            if self._pending_key is not key or self.image is not img:
                return
            self._pending_key = None
            arr, rect = res
            self._show_detail(level, arr, rect)
            self._schedule_detail()  # the view may have moved on while it was read

        def failed(msg, key=key):
            if self._pending_key is key:
                self._pending_key = None

        self._detail_jobs.submit("detail", read_detail, img, level, x0, y0, x1, y1, self.levels(),
                                 on_done=done, on_error=failed)

    def detail_pending(self) -> bool:
        """A cut of a lazily read image is being read (tests and benches wait for it)."""
        return self._pending_key is not None

    # --- input -------------------------------------------------------------------------
    def _tol(self) -> float:
        return GRAB_PX / self.zoom()

    def _bounds(self):
        return None if self.image is None else (float(self.image.width), float(self.image.height))

    def _press(self, ev: QMouseEvent) -> None:
        self.view.setFocus()
        pt = self.widget_to_image(ev.position())
        pan = self._space or ev.button() == Qt.MouseButton.MiddleButton or not self.editable
        if ev.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            ev.ignore()
            return
        boxes = [(v.key, v.box) for v in self.overlay.views]
        out = self.editor.press(boxes, pt, self._tol(), self.selected, self._bounds(), pan=pan)
        if self.editor.mode is Mode.PAN:
            self.view.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        if out.kind == "select" and out.key != self.selected and not (out.key is None and pan):
            self.selectionRequested.emit(out.key)
        ev.accept()

    def _move(self, ev: QMouseEvent) -> None:
        pt = self.widget_to_image(ev.position())
        self.cursorMoved.emit(pt[0], pt[1])
        mode = self.editor.mode
        if mode is Mode.PAN:
            d = self.editor.pan_delta(pt)
            if d is not None and (d[0] or d[1]):
                self._auto_fit = False
                self.vb.translateBy(x=d[0], y=d[1])
        elif mode in (Mode.MOVE, Mode.RESIZE, Mode.DRAW):
            box = self.editor.move(pt)
            if mode is not Mode.DRAW and box == self.editor._original:
                return  # a click that has not moved yet: keep the normal drawing
            self.overlay.set_preview(box)
        ev.accept()

    def _release(self, ev: QMouseEvent) -> None:
        pt = self.widget_to_image(ev.position())
        drawing = self.editor.mode is Mode.DRAW
        z = self.zoom()
        out = self.editor.release(pt, min_draw=max(MIN_DRAW_PX, MIN_DRAW_SCREEN_PX / z), click_tol=CLICK_SCREEN_PX / z)
        self.overlay.set_preview(None)
        cur = Qt.CursorShape.CrossCursor if self.editor.draw_armed else (
            Qt.CursorShape.OpenHandCursor if self._space else Qt.CursorShape.ArrowCursor)
        self.view.viewport().setCursor(cur)
        if out.kind == "edit":
            self.boxEdited.emit(out.key, out.box)
        elif out.kind == "create":
            self.boxDrawn.emit(out.box)
        elif out.kind == "click":
            self.boxClicked.emit(out.box.x1, out.box.y1)
        elif drawing and out.box is not None:
            self.drawIgnored.emit(
                f"Box too small (under {MIN_DRAW_PX:.0f} image px or {MIN_DRAW_SCREEN_PX:.0f} screen px a side): "
                "ignored. B and drag again, or B and click a grain to box it")
        ev.accept()

    def _wheel(self, ev: QWheelEvent) -> None:
        steps = ev.angleDelta().y() / 120.0
        if steps == 0 or self.image is None:
            return
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:  # focus through a stack
            self.planeStep.emit(1 if steps < 0 else -1)
            ev.accept()
            return
        pos = ev.position()
        p = self.vb.mapSceneToView(self.view.mapToScene(QPoint(int(pos.x()), int(pos.y()))))
        self.zoom_by(WHEEL_STEP**steps, center=p)
        ev.accept()

    def _key(self, ev: QKeyEvent, down: bool) -> bool:
        if ev.key() == Qt.Key.Key_Space:
            if ev.isAutoRepeat():
                return True
            self._space = down
            cur = Qt.CursorShape.OpenHandCursor if down else Qt.CursorShape.ArrowCursor
            self.view.viewport().setCursor(QCursor(cur))
            return True
        if ev.key() == Qt.Key.Key_Escape and down:
            self.cancel_gesture()
            return True
        return False
