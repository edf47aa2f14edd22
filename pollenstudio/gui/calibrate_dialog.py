"""Model > Calibrate grain size...: how large a typical grain is on which images.

Slides come at many magnifications; a detector finds grains at the sizes it was trained on.
The user gives the typical grain diameter in pixels (from the selected box: draw one over a
typical grain with B, or B then a click), or the pixel scale in µm/px. Detection then resamples
each image so its grains land in the model's trained range (``engine.scale``) and maps the
boxes back. A calibration belongs to a magnification (issue 28), so the dialog asks which
images it is for (the image on screen, its sample, the selected images, every image, or the
project's value for the images without their own) and lists them, and the images it leaves
alone with what they keep. The dialog only stores the calibration in the project; detection
reads it.

``CalibrationNotice`` (``install_calibration_notice``): the status-bar note with the dialog one
click away, shown when detection starts on a project with no calibration at all (once per
project and session; closing it or calibrating hides it) and when a detection finds an image
far off the size it is calibrated to.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
)

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.words import plural
from pollenstudio.engine.scale import TYPICAL_POLLEN_UM, image_grain_px, resample_factor

NAMES_SHOWN = 6  # image names listed by the "applies to" line before "and N more"
_FROM = {"image": "its own", "scale": "from its µm/px", "project": "the project's"}


def _names(recs, limit: int = NAMES_SHOWN) -> str:
    names = [r.path.rsplit("/", 1)[-1] for r in recs[:limit]]
    more = len(recs) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


class CalibrateDialog(QDialog):
    """Typical grain diameter (px) or pixel scale (µm/px) for some images or the project;
    Save / Clear / Cancel. ``image_id``: the image on screen (its own and its sample's scopes
    are offered, and its sample's is the default); ``selected_ids``: the images selected in
    the image list. Without an image the project's value is the default scope."""

    def __init__(self, project, selected_box=None, model_range=None, model_name: str = "", parent=None,
                 image_id: int | None = None, selected_ids: list[int] | None = None):
        super().__init__(parent)
        self.project = project
        self.model_range = model_range
        self.records = project.images()
        by_id = {r.id: r for r in self.records}
        self.image = by_id.get(image_id) if image_id is not None else None
        self.selected = [by_id[i] for i in dict.fromkeys(selected_ids or []) if i in by_id]
        self.setWindowTitle("Calibrate grain size")
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        intro = QLabel(
            "How large is a typical pollen grain on these images? Detection resizes each image so its "
            "grains have the size the model was trained on, and gives the boxes back in your pixels. "
            "Images taken with another objective need their own value."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.grain = QDoubleSpinBox()
        self.grain.setRange(0.0, 20000.0)
        self.grain.setDecimals(0)
        self.grain.setSuffix(" px")
        self.grain.setSpecialValueText("not set")
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
        self.um.setToolTip(f"Pixel scale of these images (also used for sizes in µm); grains are then taken as "
                           f"{TYPICAL_POLLEN_UM:.0f} µm across, unless a typical diameter is given above")
        form.addRow("or pixel scale", self.um)
        form.addRow("Applies to", self._scopes())
        lay.addLayout(form)
        self.applies = QLabel()
        self.applies.setWordWrap(True)
        self.applies.setTextFormat(Qt.TextFormat.PlainText)
        lay.addWidget(self.applies)
        self.others = QLabel()
        self.others.setWordWrap(True)
        self.others.setTextFormat(Qt.TextFormat.PlainText)
        lay.addWidget(self.others)
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
        self.grain.setValue(self._current_px() or 0.0)
        self.grain.valueChanged.connect(self._explain)
        self.um.valueChanged.connect(self._explain)
        self.scope_group.buttonToggled.connect(lambda *_: self._scope_changed())
        self._scope_changed()

    # ------------------------------------------------------------------ scopes
    def _scopes(self) -> QVBoxLayout:
        box = QVBoxLayout()
        self.scope_group = QButtonGroup(self)
        img, n = self.image, len(self.records)
        self.sample_recs = [r for r in self.records if img is not None and img.group and r.group == img.group]
        self.scope_image = QRadioButton(f"the image on screen: {img.path.rsplit('/', 1)[-1]}" if img else
                                        "the image on screen")
        self.scope_sample = QRadioButton(f"its sample \"{img.group}\": {plural(len(self.sample_recs), 'image')}"
                                         if self.sample_recs else "its sample (the image on screen has none)")
        self.scope_selected = QRadioButton(f"the {plural(len(self.selected), 'image')} selected in the image list")
        self.scope_all = QRadioButton(f"every image ({n}), each its own value")
        self.default_recs = [r for r in self.records if image_grain_px(r, 1.0)[1] == "project"]
        self.scope_default = QRadioButton(f"images without their own ({len(self.default_recs)} now, and any added later)")
        self.scope_image.setEnabled(img is not None)
        self.scope_sample.setEnabled(bool(self.sample_recs))
        self.scope_selected.setEnabled(len(self.selected) > 1)
        self.scope_selected.setVisible(len(self.selected) > 1)
        for b in (self.scope_image, self.scope_sample, self.scope_selected, self.scope_all, self.scope_default):
            self.scope_group.addButton(b)
            box.addWidget(b)
        if len(self.selected) > 1:
            self.scope_selected.setChecked(True)
        elif self.sample_recs:
            self.scope_sample.setChecked(True)
        elif img is not None:
            self.scope_image.setChecked(True)
        else:
            self.scope_default.setChecked(True)
        return box

    def scope_records(self) -> list | None:
        """The images the calibration is for; None: the project's value (images without their own)."""
        if self.scope_default.isChecked():
            return None
        if self.scope_image.isChecked():
            return [self.image]
        if self.scope_sample.isChecked():
            return list(self.sample_recs)
        if self.scope_selected.isChecked():
            return list(self.selected)
        return list(self.records)

    def scope_text(self) -> str:
        recs = self.scope_records()
        if recs is None:
            return "the images without their own"
        if self.scope_sample.isChecked():
            return f"sample \"{self.image.group}\""
        return recs[0].path.rsplit("/", 1)[-1] if len(recs) == 1 else f"{len(recs)} images"  # always several

    def _current_px(self) -> float | None:
        """The value the chosen images have now (the image on screen's, else the project's)."""
        if self.image is not None:
            px, src = image_grain_px(self.image, self.project.grain_size_px)
            if src in ("image", "project"):
                return px
        return self.project.grain_size_px

    def _scope_changed(self) -> None:
        recs = self.scope_records()
        default = self.project.grain_size_px
        if recs is None:
            recs = self.default_recs
            self.applies.setText(f"Applies to the {len(recs)} image(s) without a calibration of their own"
                                 + (f": {_names(recs)}" if recs else "") + ", and to images added later.")
        else:
            self.applies.setText(f"Applies to {len(recs)} image(s): {_names(recs)}.")
        inside = {r.id for r in recs}
        rest = [r for r in self.records if r.id not in inside]
        self.others.setVisible(bool(rest))
        if not rest:
            self.others.setText("")
        else:
            kept = []
            for r in rest[:NAMES_SHOWN]:
                px, src = image_grain_px(r, default)
                kept.append(f"{r.path.rsplit('/', 1)[-1]} " + (f"{px:.0f} px ({_FROM[src]})" if px else "not calibrated"))
            more = len(rest) - len(kept)
            self.others.setText("Other images keep theirs: " + "; ".join(kept) + (f"; and {more} more" if more > 0 else "")
                                + ".")
        self._explain()

    # ------------------------------------------------------------------ values
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
            self.effect.setText(f"{name} was trained on grains of {lo:.0f}-{hi:.0f} px. Not calibrated: these images "
                                "are detected at their own size.")
        else:
            lo, hi = self.model_range
            f = resample_factor(self.model_range, px)
            self.effect.setText(f"{name} was trained on grains of {lo:.0f}-{hi:.0f} px: these images will be resized "
                                f"by x{f:.2f} for detection (a {px:.0f} px grain becomes {px * f:.0f} px). Boxes "
                                f"more than 3 times larger or smaller than {px:.0f} px lose confidence.")

    def save(self) -> None:
        recs = self.scope_records()
        ids = None if recs is None else [r.id for r in recs]
        try:
            if self.grain.value() > 0:
                self.project.set_grain_size_px(float(self.grain.value()), ids)
            if self.um.value() > 0:  # the project's value: the images that have no pixel scale yet
                scale_ids = ids if ids is not None else [r.id for r in self.records if not r.um_per_px]
                self.project.set_um_per_px(float(self.um.value()), scale_ids)
        except PollenStudioError as e:
            self.effect.setText(str(e))
            return
        self.accept()

    def clear(self) -> None:
        recs = self.scope_records()
        try:
            self.project.set_grain_size_px(None, None if recs is None else [r.id for r in recs])
        except PollenStudioError as e:
            self.effect.setText(str(e))
            return
        self.grain.setValue(0.0)
        self.accept()


def open_calibrate_dialog(window, image_id: int | None = None) -> CalibrateDialog | None:
    """The Model menu's entry point: needs an open project; the model in use gives the range.
    ``image_id``: the image it is for (default: the one on screen)."""
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
    try:
        from pollenstudio.gui.relink_dialog import selected_image_ids

        selected = selected_image_ids(window)
    except Exception:  # noqa: BLE001 - a window without an image list: no selection scope
        selected = []
    sel = window.ctl.selected_annotation()
    iid = image_id if image_id is not None else window.ctl.image_id
    dlg = CalibrateDialog(project, sel.box if sel is not None and iid == window.ctl.image_id else None, rng, name,
                          window, image_id=iid, selected_ids=selected if image_id is None else None)

    def said(result):
        if result != QDialog.DialogCode.Accepted:
            return
        px = dlg.typical_px()
        window.statusBar().showMessage(f"Grain size {px:.0f} px for {dlg.scope_text()}" if px else
                                       f"Grain-size calibration of {dlg.scope_text()} cleared", 6000)

    dlg.finished.connect(said)
    dlg.open()
    return dlg


# ---------------------------------------------------------------------- the status-bar note
class CalibrationNotice(QFrame):
    """A note in the status bar with the calibrate dialog one click away, and a close button."""

    def __init__(self, window):
        super().__init__(window)
        self.window_ = window
        self.image_id: int | None = None  # the image the note is about (None: the one on screen)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 0, 2, 0)
        self.text = QLabel(self)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        row.addWidget(self.text)
        self.button = QPushButton("Calibrate...", self)
        self.button.setToolTip("Model > Calibrate grain size...")
        self.button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.button.clicked.connect(self.open_dialog)
        row.addWidget(self.button)
        self.close_button = QToolButton(self)
        self.close_button.setText("×")
        self.close_button.setToolTip("Hide this note")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(self.dismiss)
        row.addWidget(self.close_button)
        self.dismissed: set[str] = set()  # project folders whose note was closed this session
        self.hide()

    def say(self, text: str, tooltip: str = "", image_id: int | None = None) -> None:
        self.text.setText(text)
        self.text.setMinimumWidth(self.text.sizeHint().width())  # the other status-bar items give way
        self.updateGeometry()
        self.setToolTip(tooltip or text)
        self.image_id = image_id
        self.show()

    def open_dialog(self):
        return open_calibrate_dialog(self.window_, self.image_id)

    def dismiss(self) -> None:
        p = self.window_.ctl.project
        if p is not None:
            self.dismissed.add(str(p.folder))
        self.hide()


def project_uncalibrated(project) -> bool:
    """No calibration anywhere: no project value, no image with its own or a pixel scale."""
    if project.grain_size_px:
        return False
    return not any(r.grain_px or r.um_per_px for r in project.images())


def _model_range(project):
    from pollenstudio.engine.models import resolve_model
    from pollenstudio.engine.scale import checkpoint_grain_range

    try:
        return checkpoint_grain_range(resolve_model(project).path)
    except PollenStudioError:
        return None


def install_calibration_notice(win) -> CalibrationNotice:
    """``win.calibration_notice``: on a detection of a project with no calibration (and a model
    that can use one), say that calibrating the grain size is the first step, once per project
    and session; after a detection, name an image whose grains are far off its calibration."""
    note = CalibrationNotice(win)
    win.statusBar().addPermanentWidget(note)
    win.calibration_notice = note

    def started(_n):
        p = win.ctl.project
        if p is None or str(p.folder) in note.dismissed or not project_uncalibrated(p):
            return
        rng = _model_range(p)
        if not rng:
            return
        note.dismissed.add(str(p.folder))  # said once per project and session, not at each detection
        note.say("Grain size not calibrated: calibrating it is the first step",
                 f"The model looks for grains of {rng[0]:.0f}-{rng[1]:.0f} px on each image as it is; on images "
                 "at another magnification it boxes debris instead of grains. Draw a box over a typical grain "
                 "(B), then Calibrate grain size: detection then resizes the images to the model's grain size.")

    def ended(summary):
        warnings = getattr(summary, "size_warnings", None) or []
        p = win.ctl.project
        if not warnings or p is None:
            return
        path, words = warnings[0]
        ids = {r.path: r.id for r in p.images()}
        more = f" (and {len(warnings) - 1} more image(s))" if len(warnings) > 1 else ""
        name = path.rsplit("/", 1)[-1]
        note.say(f"{name}: grains far off its calibrated size{more}", words + more, ids.get(path))

    def store_changed(ev):
        if ev.label != "calibration" or not note.isVisible():
            return
        p = win.ctl.project
        if note.image_id is not None or (p is not None and not project_uncalibrated(p)):
            note.hide()  # calibrated: the note has done its work

    win.models.detectStarted.connect(started)
    win.models.detectSummary.connect(ended)
    win.ctl.storeChanged.connect(store_changed)
    win.ctl.projectChanged.connect(note.hide)
    return note
