"""Which explanation overlay is on the canvas, and keeping it in step with the review.

One layer at a time: the edges the model sees (E, at the overlay bar's level: fine, medium,
coarse) or Grad-CAM for the selected box (G). The maps are computed by
``ModelController.explain`` in a worker; this object asks for them when the image, the
selection, the level or the view changes, puts the one that arrives on the canvas if it
still belongs there, and says in the overlay bar what is shown or what is being computed
(with the seconds it has taken so far). The edge map covers the part of the image on
screen at the screen's resolution, Grad-CAM a window around its grain: a whole 2592 px
field took 8-10 s on a CPU. The colour map contrasts with the slide, chosen per image
unless the bar names one. The window owns one and forwards the events it needs.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer

GRADCAM_DELAY_MS = 150  # Tab-Tab-Tab should not queue three backward passes
VIEW_DELAY_MS = 400  # the edge map follows the view once panning / zooming pauses


class ExplanationOverlay(QObject):
    def __init__(self, canvas, bar, edge_action, gradcam_action, review, models, taxon_name, status,
                 parent: QObject | None = None):
        """``bar``: the OverlayBar (level, state text); ``review`` / ``models``: the review
        and model controllers; ``taxon_name(category_id)``; ``status(text)`` shows a note."""
        super().__init__(parent)
        self.canvas, self.bar = canvas, bar
        self.actions = {"edge": edge_action, "gradcam": gradcam_action}
        self.review, self.models = review, models
        self._taxon_name, self._status = taxon_name, status
        self.kind: str | None = None  # "edge", "gradcam" or None
        self.exp = None  # the Explanation on screen
        self._gradcam_timer = QTimer(self)
        self._gradcam_timer.setSingleShot(True)
        self._gradcam_timer.setInterval(GRADCAM_DELAY_MS)
        self._gradcam_timer.timeout.connect(self.request)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(VIEW_DELAY_MS)
        self._view_timer.timeout.connect(self._view_settled)
        self._busy_timer = QTimer(self)  # the seconds a map has taken so far, in the bar
        self._busy_timer.setInterval(1000)
        self._busy_timer.timeout.connect(self._tick)
        self._busy: tuple[str, float] | None = None  # (what runs, since)
        canvas.viewChanged.connect(lambda _z: self._view_timer.start() if self.kind == "edge" else None)
        bar.colormapChanged.connect(lambda _name: self._apply_colormap())
        bar.levelChanged.connect(self.level_changed)
        bar.opacityChanged.connect(canvas.set_heat_opacity)
        canvas.set_heat_opacity(bar.opacity.value() / 100.0)
        models.explanationReady.connect(self.explanation_ready)
        models.explanationFailed.connect(self.explanation_failed)

    def toggle(self, kind: str, on: bool) -> None:
        """E / G: one overlay at a time; turning one on turns the other off."""
        other = "gradcam" if kind == "edge" else "edge"
        if on:
            self.actions[other].setChecked(False)
            self.kind = kind
            self.request()
        elif self.kind == kind:
            self.kind = None
            self.models.cancel_explanation()
            self.exp = None
            self.canvas.set_heat(None)
            self._set_busy(None)
            self.bar.set_state("")

    # ------------------------------------------------------------------ review events
    def image_ready(self) -> None:
        """A new image is on the canvas (which cleared the old image's layer)."""
        self.exp = None
        self._apply_colormap()
        if self.kind is not None:
            QTimer.singleShot(0, self.request)

    def selection_changed(self) -> None:
        """Grad-CAM follows the selection (after a short pause)."""
        if self.kind != "gradcam":
            return
        exp = self.exp
        if exp is None or exp.key != self.review.selected or exp.image_id != self.review.image_id:
            if exp is not None:  # never leave the old box's map under a new selection
                self.canvas.set_heat(None)
                self.exp = None
            self._gradcam_timer.start()

    def level_changed(self, level: str) -> None:
        if self.kind != "edge":
            return
        exp = self.exp
        if exp is not None and exp.maps and exp.image_id == self.review.image_id:
            exp.key, exp.heat = level, exp.maps[level]
            self._show(exp)
        else:
            self.request()

    # ------------------------------------------------------------------ maps
    def _wanted_key(self):
        return self.bar.level_id() if self.kind == "edge" else self.review.selected

    def _apply_colormap(self) -> None:
        """The bar's colour map, or with "auto" the one that contrasts with this image."""
        name = self.bar.colormap_choice()
        if name == "auto":
            img = self.canvas.image
            if img is None:
                return
            from pollenstudio.gui.overlay import choose_colormap

            name = choose_colormap(img.levels[-1])  # the smallest pyramid level will do
        self.canvas.set_heat_colormap(name)
        self.bar.show_colormap(name)

    def _edge_request(self) -> tuple[tuple | None, int, str]:
        """(region, max side, words) of an edge map of the view: the part of the image on
        screen (a margin around it), at the screen's resolution."""
        from pollenstudio.gui.model_jobs import EXPLAIN_MAX_SIDE

        c = self.canvas
        region = c.visible_region()
        if region is None:
            return None, EXPLAIN_MAX_SIDE, "the image"
        x0, y0, x1, y1 = region
        long_side = max(x1 - x0, y1 - y0)
        screen = long_side * c.zoom() * c.devicePixelRatioF()
        max_side = int(min(EXPLAIN_MAX_SIDE, max(512, screen)))
        whole = (x0, y0, x1, y1) == (0.0, 0.0, float(c.image.width), float(c.image.height))
        words = "the whole image" if whole else "the view"
        scale = min(1.0, max_side / max(long_side, 1.0))
        size = f"{round((x1 - x0) * scale)} x {round((y1 - y0) * scale)} px"
        if scale < 0.75:
            size += f", 1/{1 / scale:.0f} detail: zoom in for the finest"
        return (None if whole else region), max_side, f"{words} ({size})"

    def _covers(self, exp) -> bool:
        """Whether an edge map still covers the view, at no less than half the screen's detail."""
        if exp.kind != "edge":
            return True
        vis = self.canvas.visible_region(margin=0.0)
        if vis is None:
            return True
        x0, y0, x1, y1 = exp.rect or (0, 0, exp.width, exp.height)
        if vis[0] < x0 - 1 or vis[1] < y0 - 1 or vis[2] > x1 + 1 or vis[3] > y1 + 1:
            return False
        detail = exp.heat.shape[1] / max(x1 - x0, 1)  # map px per image px
        wanted = min(1.0, self.canvas.zoom() * self.canvas.devicePixelRatioF())
        return detail >= 0.5 * wanted

    def _view_settled(self) -> None:
        exp = self.exp
        if self.kind == "edge" and exp is not None and exp.image_id == self.review.image_id and not self._covers(exp):
            self.exp = None  # keep drawing it until the new one lands
            self.request(keep_layer=True)

    def _set_busy(self, what: str | None) -> None:
        self._busy = None if what is None else (what, time.monotonic())
        if what is None:
            self._busy_timer.stop()
        else:
            self._busy_timer.start()
            self._tick()

    def _tick(self) -> None:
        if self._busy is not None:
            what, t0 = self._busy
            secs = int(time.monotonic() - t0)
            self.bar.set_state(f"  computing {what}..." + (f" {secs} s" if secs else ""))

    def request(self, keep_layer: bool = False) -> None:
        kind = self.kind
        if kind is None or self.review.image_id is None:
            return
        exp = self.exp
        if (exp is not None and exp.kind == kind and exp.image_id == self.review.image_id
                and exp.key == self._wanted_key() and self._covers(exp)):
            return  # already on screen
        if kind == "gradcam" and self.review.selected is None:
            self.canvas.set_heat(None)
            self.exp = None
            self._set_busy(None)
            self.bar.set_state("  Grad-CAM: select a box")
            return
        if kind == "edge":
            region, max_side, where = self._edge_request()
            started = self.models.explain(kind, self.bar.level_id(), region=region, max_side=max_side)
            what = f"edges of {where}"
        else:
            started = self.models.explain(kind, self.bar.level_id())
            what = "Grad-CAM around the grain"
        if started:
            self._set_busy(what)

    def explanation_ready(self, exp) -> None:
        if exp.kind != self.kind or exp.image_id != self.review.image_id:
            return
        if exp.kind == "edge" and exp.maps:
            level = self.bar.level_id()
            exp.key, exp.heat = level, exp.maps[level]
        elif exp.key != self.review.selected:
            return  # the selection moved on; its own request is on the way
        self._show(exp)

    def _show(self, exp) -> None:
        from pollenstudio.gui.overlay import EDGE_TITLE, LEVEL_NAMES

        self.exp = exp
        self._set_busy(None)
        self.canvas.set_heat(exp.heat, exp.width, exp.height, rect=exp.rect)
        if exp.kind == "edge":
            where = ", in the view" if exp.rect is not None else ""
            self.bar.set_state(f"  {EDGE_TITLE}: {LEVEL_NAMES.get(exp.key, exp.key)}{where}")
        else:
            a = self.review.selected_annotation()
            name = self._taxon_name(a.category_id) if a is not None else ""
            self.bar.set_state(f"  Grad-CAM: why {name}")

    def explanation_failed(self, msg: str) -> None:
        self._set_busy(None)
        self.bar.set_state("")
        self._status(f"Overlay not available: {msg}")
        for action in self.actions.values():
            action.setChecked(False)
        self.kind = None
        self.canvas.set_heat(None)
