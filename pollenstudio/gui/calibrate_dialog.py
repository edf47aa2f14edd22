"""Model > Calibrate grain size...: how large a typical grain is on this project's images.

Slides come at many magnifications; a detector finds grains at the sizes it was trained on.
The user gives the typical grain diameter in pixels (from the selected box: draw one over a
typical grain with B, or B then a click), or the pixel scale in µm/px. Detection then resamples
each image so its grains land in the model's trained range (``engine.scale``) and maps the
boxes back. The dialog only stores the calibration in the project; detection reads it.
"""

from __future__ import annotations

import math

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.engine.scale import TYPICAL_POLLEN_UM, resample_factor


class CalibrateDialog(QDialog):
    """Typical grain diameter (px) or pixel scale (µm/px) for a project; Save / Clear / Cancel."""

    def __init__(self, project, selected_box=None, model_range=None, model_name: str = "", parent=None):
        super().__init__(parent)
        self.project = project
        self.model_range = model_range
        self.setWindowTitle("Calibrate grain size")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        intro = QLabel(
            "How large is a typical pollen grain on these images? Detection resizes each image so its "
            "grains have the size the model was trained on, and gives the boxes back in your pixels."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.grain = QDoubleSpinBox()
        self.grain.setRange(0.0, 20000.0)
        self.grain.setDecimals(0)
        self.grain.setSuffix(" px")
        self.grain.setSpecialValueText("not set")
        self.grain.setValue(project.grain_size_px or 0.0)
        form.addRow("Typical grain diameter", self.grain)
        self.use_box = QPushButton()
        self.box_px = None
        if selected_box is not None:
            self.box_px = math.sqrt(max(selected_box.width, 0) * max(selected_box.height, 0))
            self.use_box.setText(f"Use the selected box ({self.box_px:.0f} px)")
            self.use_box.clicked.connect(lambda: self.grain.setValue(round(self.box_px)))
        else:
            self.use_box.setText("Use the selected box")
            self.use_box.setEnabled(False)
            self.use_box.setToolTip("Select a box over a typical grain first (or draw one: B, then drag or click)")
        form.addRow("", self.use_box)
        self.um = QDoubleSpinBox()
        self.um.setRange(0.0, 100.0)
        self.um.setDecimals(4)
        self.um.setSuffix(" µm/px")
        self.um.setSpecialValueText("not set")
        self.um.setToolTip(f"Pixel scale of every image (also used for sizes in µm); grains are then taken as "
                           f"{TYPICAL_POLLEN_UM:.0f} µm across, unless a typical diameter is given above")
        form.addRow("or pixel scale", self.um)
        lay.addLayout(form)
        self.effect = QLabel()
        self.effect.setWordWrap(True)
        self.effect.setMinimumHeight(3 * self.effect.fontMetrics().lineSpacing())  # room for its longest text
        lay.addWidget(self.effect)
        self.model_name = model_name
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.clear_button = buttons.addButton("Clear calibration", QDialogButtonBox.ButtonRole.ResetRole)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        self.clear_button.clicked.connect(self.clear)
        lay.addWidget(buttons)
        self.grain.valueChanged.connect(self._explain)
        self.um.valueChanged.connect(self._explain)
        self._explain()

    def typical_px(self) -> float | None:
        if self.grain.value() > 0:
            return float(self.grain.value())
        if self.um.value() > 0:
            return TYPICAL_POLLEN_UM / float(self.um.value())
        return None

    def _explain(self) -> None:
        px = self.typical_px()
        name = self.model_name or "the model in use"
        if not self.model_range:
            self.effect.setText(f"{name} does not record the grain sizes it was trained on: detection with it stays "
                                "uncalibrated. Models trained in PollenStudio (and the grain model) record them.")
        elif px is None:
            lo, hi = self.model_range
            self.effect.setText(f"{name} was trained on grains of {lo:.0f}-{hi:.0f} px. Not calibrated: images are "
                                "detected at their own size.")
        else:
            lo, hi = self.model_range
            f = resample_factor(self.model_range, px)
            self.effect.setText(f"{name} was trained on grains of {lo:.0f}-{hi:.0f} px: images will be resized by "
                                f"x{f:.2f} for detection (a {px:.0f} px grain becomes {px * f:.0f} px).")

    def save(self) -> None:
        try:
            if self.grain.value() > 0:
                self.project.set_grain_size_px(float(self.grain.value()))
            if self.um.value() > 0:
                self.project.set_um_per_px(float(self.um.value()))
        except PollenStudioError as e:
            self.effect.setText(str(e))
            return
        self.accept()

    def clear(self) -> None:
        self.project.set_grain_size_px(None)
        self.grain.setValue(0.0)
        self.accept()


def open_calibrate_dialog(window) -> CalibrateDialog | None:
    """The Model menu's entry point: needs an open project; the model in use gives the range."""
    from pollenstudio.core.errors import CheckpointError
    from pollenstudio.engine.models import resolve_model
    from pollenstudio.engine.scale import checkpoint_grain_range

    project = window.ctl.project
    if project is None:
        window.statusBar().showMessage("Open a project first", 4000)
        return None
    try:
        model = resolve_model(project)
        rng, name = checkpoint_grain_range(model.path), model.label
    except (CheckpointError, PollenStudioError):
        rng, name = None, ""
    sel = window.ctl.selected_annotation()
    dlg = CalibrateDialog(project, sel.box if sel is not None else None, rng, name, window)
    dlg.finished.connect(lambda _r: window.statusBar().showMessage(
        f"Grain size: {project.grain_size_px:.0f} px" if project.grain_size_px else "Grain size not calibrated", 4000))
    dlg.open()
    return dlg
