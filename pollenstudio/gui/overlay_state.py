"""Which explanation overlay is on the canvas, and keeping it in step with the review.

One layer at a time: the HEM edge map (E, at the overlay bar's level) or Grad-CAM for the
selected box (G). The maps are computed by ``ModelController.explain`` in a worker; this
object asks for them when the image, the selection or the level changes, puts the one that
arrives on the canvas if it still belongs there, and says what is shown in the overlay bar.
The window owns one and forwards the events it needs.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer

GRADCAM_DELAY_MS = 150  # Tab-Tab-Tab should not queue three backward passes


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
            self.bar.set_state("")

    # ------------------------------------------------------------------ review events
    def image_ready(self) -> None:
        """A new image is on the canvas (which cleared the old image's layer)."""
        self.exp = None
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

    def request(self) -> None:
        kind = self.kind
        if kind is None or self.review.image_id is None:
            return
        exp = self.exp
        if exp is not None and exp.kind == kind and exp.image_id == self.review.image_id and exp.key == self._wanted_key():
            return  # already on screen
        if kind == "gradcam" and self.review.selected is None:
            self.canvas.set_heat(None)
            self.exp = None
            self.bar.set_state("  Grad-CAM: select a box")
            return
        if self.models.explain(kind, self.bar.level_id()):
            self.bar.set_state("  computing...")

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
        self.exp = exp
        self.canvas.set_heat(exp.heat, exp.width, exp.height)
        if exp.kind == "edge":
            self.bar.set_state(f"  edge map {exp.key}")
        else:
            a = self.review.selected_annotation()
            name = self._taxon_name(a.category_id) if a is not None else ""
            self.bar.set_state(f"  Grad-CAM: why {name}")

    def explanation_failed(self, msg: str) -> None:
        self.bar.set_state("")
        self._status(f"Overlay not available: {msg}")
        for action in self.actions.values():
            action.setChecked(False)
        self.kind = None
        self.canvas.set_heat(None)
