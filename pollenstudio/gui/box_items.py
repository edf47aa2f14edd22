"""Box overlay drawn over the image: one graphics item paints every box.

Proposals are dashed in their taxon colour with "taxon score"; decided boxes are solid in
the taxon colour; rejected proposals, when shown (R), are red dashes crossed through with
"rejected taxon", so a mistaken reject can be found and undone. The selected box is thicker,
shows its 8 resize handles (outside the box when it is small, so they never cover it) and
its label is drawn above every other. Lines, labels and handles have a fixed size on screen
at every zoom; labels stay inside the window and shrink to a short form ("Quer .81") where
the box on screen is narrower than the full label; ``show_labels`` off (L) hides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem

from pollenstudio.core.types import Box
from pollenstudio.gui.interaction import handle_points

HANDLE_PX = 7  # handle square side on screen
SMALL_BOX_PX = 4 * HANDLE_PX  # a selected box smaller than this on screen gets its handles outside
REJECTED_COLOUR = "#e53935"
LINE_PX = 1.6
SELECTED_LINE_PX = 2.6


@dataclass(frozen=True)
class BoxView:
    """What the canvas needs to draw one box."""

    key: Hashable
    box: Box
    label: str
    color: str  # '#rrggbb'
    style: str  # "proposed" | "decided" | "rejected"
    score: float | None = None

    @property
    def caption(self) -> str:
        if self.style == "proposed" and self.score is not None:
            return f"{self.label} {self.score:.2f}"
        if self.style == "rejected":
            return f"rejected {self.label}"
        return self.label

    @property
    def short_caption(self) -> str:
        """Compact label for low zoom: four letters of the taxon and the score."""
        name = self.label[:4]
        if self.style == "proposed" and self.score is not None:
            return f"{name} {self.score:.2f}".replace(" 0.", " .")
        if self.style == "rejected":
            return f"x {name}"
        return name


def label_position(x: float, y: float, w: float, h: float, size: tuple[int, int] | None) -> tuple[float, float]:
    """Top-left of a w x h label for a box whose top-left is (x, y) on screen: above the
    box, inside it at the window's top edge, and never past the window's left, right or
    bottom edge (``size`` = window width, height)."""
    lx, ly = max(0.0, x), y - h
    if ly < 0:  # box at the top edge of the window: put the label inside
        ly = y
    if size is not None:
        lx = max(0.0, min(lx, size[0] - w))
        ly = max(0.0, min(ly, size[1] - h))
    return lx, ly


def _text_colour(bg: QColor) -> QColor:
    lum = 0.299 * bg.red() + 0.587 * bg.green() + 0.114 * bg.blue()
    return QColor("#111111") if lum > 150 else QColor("#ffffff")


class BoxOverlay(QGraphicsItem):
    """Paints all boxes of the current image; the canvas hit-tests them itself."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._views: list[BoxView] = []
        self._selected: Hashable | None = None
        self._preview: Box | None = None  # box being dragged or drawn
        self._bounds = QRectF(0, 0, 1, 1)
        self.show_labels = True
        self._font = QFont()
        self._font.setPixelSize(12)
        self._font.setBold(True)
        self._fm = QFontMetricsF(self._font)
        self.setZValue(10)

    # --- state -------------------------------------------------------------------------
    def set_image_size(self, width: float, height: float) -> None:
        self.prepareGeometryChange()
        # generous margin: labels sit above boxes and cosmetic pens spill outside
        mx, my = max(64.0, width * 0.05), max(64.0, height * 0.05)
        self._bounds = QRectF(-mx, -my, width + 2 * mx, height + 2 * my)
        self.update()

    def set_boxes(self, views: list[BoxView], selected: Hashable | None = None) -> None:
        self._views = list(views)
        self._selected = selected
        self.update()

    def set_selected(self, key: Hashable | None) -> None:
        self._selected = key
        self.update()

    def set_preview(self, box: Box | None) -> None:
        self._preview = box
        self.update()

    @property
    def views(self) -> list[BoxView]:
        return self._views

    # --- QGraphicsItem -----------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option, widget=None) -> None:
        xf = painter.worldTransform()
        # what is on screen, in image px (exposedRect is the whole item without the
        # extended style option flag, so compute it from the device)
        inv, ok = xf.inverted()
        dev = painter.device()
        exposed = inv.mapRect(QRectF(0, 0, dev.width(), dev.height())) if ok and dev is not None else self._bounds
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        rejected = [v for v in self._views if v.style == "rejected"]
        proposed = [v for v in self._views if v.style == "proposed"]
        decided = [v for v in self._views if v.style == "decided"]
        sel = None
        # draw order: rejected under proposals under decided; the selected one on top
        for v in rejected + proposed + decided:
            if v.key == self._selected and self._preview is None:
                sel = v
                continue
            r = QRectF(v.box.x1, v.box.y1, v.box.width, v.box.height)
            if not r.intersects(exposed):
                continue
            self._draw_box(painter, v, r, selected=False)
        if sel is not None:
            self._draw_box(painter, sel, QRectF(sel.box.x1, sel.box.y1, sel.box.width, sel.box.height), True)
        if self._preview is not None:
            b = self._preview
            pen = QPen(QColor("#ffffff"), SELECTED_LINE_PX, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(QRectF(b.x1, b.y1, b.width, b.height))
            pen = QPen(QColor("#000000"), 1.0, Qt.PenStyle.DotLine)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawRect(QRectF(b.x1, b.y1, b.width, b.height))
        # labels in screen space so they stay readable at every zoom; the selected one last,
        # so no other label covers it
        if self.show_labels:
            painter.save()
            painter.resetTransform()
            painter.setFont(self._font)
            scale = abs(xf.m11()) or 1.0
            size = (dev.width(), dev.height()) if dev is not None else None
            shown = [v for v in rejected + proposed + decided if v.key != self._selected]
            if sel is not None:
                shown.append(sel)
            for v in shown:
                if v.box.width * scale < 6 and v.key != self._selected:  # label would hide a speck of a box
                    continue
                if not QRectF(v.box.x1, v.box.y1, v.box.width, v.box.height).intersects(exposed):
                    continue  # off screen: its label must not be pinned to the edge
                compact = self._fm.horizontalAdvance(v.caption) + 8 > max(v.box.width * scale, 40.0)
                self._draw_label(painter, v, xf.map(QPointF(v.box.x1, v.box.y1)), v.key == self._selected,
                                 compact and v.key != self._selected, size)
            painter.restore()

    def _draw_box(self, painter: QPainter, v: BoxView, r: QRectF, selected: bool) -> None:
        colour = QColor(v.color)
        if v.style == "rejected":
            pen = QPen(QColor(REJECTED_COLOUR), SELECTED_LINE_PX if selected else LINE_PX, Qt.PenStyle.DashLine)
            cross = QPen(QColor(REJECTED_COLOUR), 1.0, Qt.PenStyle.SolidLine)
            cross.setCosmetic(True)
            painter.setPen(cross)
            painter.drawLine(r.topLeft(), r.bottomRight())
            painter.drawLine(r.topRight(), r.bottomLeft())
        elif v.style == "proposed":
            pen = QPen(colour, SELECTED_LINE_PX if selected else LINE_PX, Qt.PenStyle.DashLine)
        else:
            pen = QPen(colour, SELECTED_LINE_PX if selected else LINE_PX, Qt.PenStyle.SolidLine)
        pen.setCosmetic(True)
        if selected:
            # dark halo under the line keeps it visible on pale and dark backgrounds
            halo = QPen(QColor(0, 0, 0, 170), pen.widthF() + 2.0, Qt.PenStyle.SolidLine)
            halo.setCosmetic(True)
            painter.setPen(halo)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(r)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(r)
        if selected:
            painter.save()
            xf = painter.worldTransform()
            painter.resetTransform()
            hpen = QPen(QColor("#111111"), 1.0)
            painter.setPen(hpen)
            painter.setBrush(QBrush(QColor("#ffffff")))
            h = HANDLE_PX
            c = xf.map(QPointF(*v.box.center))
            sr = xf.mapRect(r)
            small = min(sr.width(), sr.height()) < SMALL_BOX_PX
            for hx, hy in handle_points(v.box).values():
                p = xf.map(QPointF(hx, hy))
                if small:  # push each handle out from the centre so the box itself stays visible
                    dx = (p.x() > c.x() + 0.5) - (p.x() < c.x() - 0.5)
                    dy = (p.y() > c.y() + 0.5) - (p.y() < c.y() - 0.5)
                    p = QPointF(p.x() + dx * (h / 2 + 2), p.y() + dy * (h / 2 + 2))
                painter.drawRect(QRectF(p.x() - h / 2, p.y() - h / 2, h, h))
            painter.restore()

    def _draw_label(self, painter: QPainter, v: BoxView, top_left: QPointF, selected: bool,
                    compact: bool = False, size: tuple[int, int] | None = None) -> None:
        text = v.short_caption if compact else v.caption
        w = self._fm.horizontalAdvance(text) + 8
        h = self._fm.height() + 2
        x, y = label_position(top_left.x(), top_left.y(), w, h, size)
        bg = QColor(REJECTED_COLOUR if v.style == "rejected" else v.color)
        if v.style in ("proposed", "rejected"):
            bg.setAlpha(235 if selected else 190)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(bg))
        painter.drawRect(QRectF(x, y, w, h))
        painter.setPen(_text_colour(bg))
        painter.drawText(QRectF(x + 4, y, w - 4, h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
