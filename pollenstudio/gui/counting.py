"""Counting in the main window (issue 20): the per-sample count dock, File > Report...,
Edit > Pixel scale... and Set sample..., View > Scale bar, and grain sizes in the selected
box panel.

``install_counting(window)`` adds all of it to a ``MainWindow`` (one line there) and sets
``window.counts`` (``CountController``). Counts are read with
``project.counting.count_samples`` on a read-only connection in a worker once changes
pause; reports are written by ``project.pollen_report.write_report`` in a worker, the same
function ``pollenstudio report`` calls. Settings (roles, target sums, scales, samples) are
small writes on the GUI thread, through the store.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

import numpy as np

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QColor, QDesktopServices, QFont, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.outline import outline_size
from pollenstudio.core.pixelscale import format_um, scale_bar, um_per_px_from_line
from pollenstudio.core.types import TAXON_ROLES, display_taxon
from pollenstudio.core.words import plural
from pollenstudio.gui.workers import JobRunner

log = logging.getLogger(__name__)

ROLE_TEXT = {"pollen": "in the pollen sum", "spore": "spore (out of the sum)",
             "marker": "exotic marker (out of the sum)", "indeterminate": "indeterminate (out of the sum)",
             "excluded": "excluded (out of the sum)"}


def box_axes_text(width_px: float, height_px: float, um_per_px: float | None) -> str:
    """The selected box's long x short axis: in µm when the image has a scale, else px."""
    long_, short = max(width_px, height_px), min(width_px, height_px)
    if um_per_px:
        return f"{long_ * um_per_px:.1f} × {short * um_per_px:.1f} µm (long × short axis)"
    return f"{long_:.0f} × {short:.0f} px (no pixel scale: Edit > Pixel scale...)"


# ------------------------------------------------------------------ worker jobs
def count_job(token, db_path: str, folder: str, reviewed_only: bool = False):
    from pollenstudio.gui.store_reads import reader
    from pollenstudio.project.counting import count_samples

    with reader(db_path, folder) as p:
        token.check()
        return count_samples(p, reviewed_only=reviewed_only)


def report_job(token, db_path: str, folder: str, out: str, reviewed_only: bool = False):
    from pollenstudio.gui.store_reads import reader
    from pollenstudio.project.pollen_report import write_report

    with reader(db_path, folder) as p:
        token.update(0, 1, "counting")
        return write_report(p, out, reviewed_only=reviewed_only)


def concentration_text(s) -> str:
    """The count dock's concentration line for a ``SampleCount`` (rich text), or ""."""
    if s is None:
        return ""
    if s.concentration is not None:
        c = s.concentration
        return (f"Concentration <b>{c.value:,.0f} ± {c.se:,.0f} {html.escape(c.unit)}</b>"
                f" <span style='color:#888'>(95 %: {c.lo:,.0f}-{c.hi:,.0f})</span>")
    if s.concentration_note:
        return f"<span style='color:#c0392b'>No concentration: {html.escape(s.concentration_note)}</span>"
    return ""


# ------------------------------------------------------------------ the dock
class CountPanel(QWidget):
    """One sample's running count: sample picker, "287 / 300" progress to the target sum,
    taxa in the sum and the excluded categories below them (grey)."""

    sampleChosen = Signal(str)
    targetChanged = Signal(str, int)  # sample, target sum
    roleRequested = Signal(int, str)  # category id, role
    settingsRequested = Signal(str)  # sample: open its count settings

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(QLabel("Sample"))
        self.sample = QComboBox()
        self.sample.setToolTip("The slide whose grains are counted; the image on screen chooses it")
        self.sample.activated.connect(lambda _i: self.sampleChosen.emit(self.sample.currentData() or ""))
        row.addWidget(self.sample, 1)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m")
        self.progress.setToolTip("Pollen sum of this sample against its target sum")
        row.addWidget(self.progress, 1)
        row.addWidget(QLabel("target"))
        self.target = QSpinBox()
        self.target.setRange(1, 100000)
        self.target.setSingleStep(50)
        self.target.setKeyboardTracking(False)
        self.target.setToolTip("Target pollen sum of this sample (e.g. 300 or 500 grains)")
        self.target.valueChanged.connect(self._target_edited)
        row.addWidget(self.target)
        self.settings_button = QPushButton("Settings...")
        self.settings_button.setToolTip("Target sum and concentration (exotic marker or air volume) of this sample")
        self.settings_button.clicked.connect(
            lambda: self.settingsRequested.emit(self.current.name if self.current is not None else ""))
        row.addWidget(self.settings_button)
        lay.addLayout(row)
        self.concentration = QLabel()
        self.concentration.setWordWrap(True)
        self.concentration.setToolTip("Grains of the pollen sum per unit of sample (or of air), ± 1 standard error")
        lay.addWidget(self.concentration)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Taxon", "Count", "%"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._menu)
        self.table.setToolTip("Right-click a taxon: its role in the count (pollen sum, spore, marker, ...)")
        self.table.setMinimumHeight(60)  # a short dock keeps room for the note below (fields traversed on slides)
        lay.addWidget(self.table, 1)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #888")
        lay.addWidget(self.note)
        self.samples: list = []
        self.current = None
        self.slide_notes: dict[str, str] = {}  # sample -> fields traversed on its slide scans
        self._quiet = False
        self.show_sample(None)  # no project yet: no target to show

    def _target_edited(self, value: int) -> None:
        if not self._quiet and self.current is not None and value >= 1 and value != self.current.target_sum:
            self.targetChanged.emit(self.current.name, value)

    def _menu(self, pos) -> None:
        item = self.table.itemAt(pos)
        if item is None:
            return
        cid = self.table.item(item.row(), 0).data(Qt.ItemDataRole.UserRole)
        role = self.table.item(item.row(), 0).data(Qt.ItemDataRole.UserRole + 1)
        if cid is None or role == "unnamed":
            return
        menu = QMenu(self)
        for r in TAXON_ROLES:
            act = menu.addAction(ROLE_TEXT[r])
            act.setCheckable(True)
            act.setChecked(r == role)
            act.triggered.connect(lambda _=False, r=r, c=cid: self.roleRequested.emit(int(c), r))
        menu.exec(self.table.viewport().mapToGlobal(pos))

    def set_counts(self, samples: list, name: str | None) -> None:
        self.samples = samples
        self.sample.clear()
        for s in samples:
            self.sample.addItem(f"{s.name}  ({s.progress_text})", s.name)
        names = [s.name for s in samples]
        if name not in names:
            name = names[0] if names else None
        self.show_sample(name)

    def show_sample(self, name: str | None) -> None:
        s = next((x for x in self.samples if x.name == name), None)
        self.current = s
        self._quiet = True
        try:
            # no sample (no project, or nothing counted yet): no target to edit; the spin
            # box read "target 1" (its minimum) with no project open
            self.target.setEnabled(s is not None)
            self.settings_button.setEnabled(s is not None)
            if s is not None:
                self.sample.setCurrentIndex(self.sample.findData(name))
                self.progress.setMaximum(s.target_sum)
                self.progress.setValue(min(s.pollen_sum, s.target_sum))
                self.progress.setFormat(f"{s.pollen_sum} / {s.target_sum}")
                self.target.setSpecialValueText("")
                self.target.setMinimum(1)
                self.target.setValue(s.target_sum)
            else:
                self.progress.setMaximum(1)
                self.progress.setValue(0)
                self.progress.setFormat("no grains counted")
                self.target.setMinimum(0)
                self.target.setSpecialValueText("\u2013")  # shown at the minimum: no value
                self.target.setValue(0)
        finally:
            self._quiet = False
        rows = [] if s is None else s.taxa + s.excluded
        self.table.setRowCount(len(rows))
        grey = QColor("#8a8a8a")
        for i, t in enumerate(rows):
            name_text = display_taxon(t.taxon)
            if not t.in_sum and t.role != "unnamed":  # an unnamed grain's name says it ("pollen (unidentified)")
                name_text += f"  ({t.role})"
            cells = [name_text, str(t.count), "" if math.isnan(t.percent) else f"{t.percent:.1f}"]
            for j, text in enumerate(cells):
                it = QTableWidgetItem(text)
                if j:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if not t.in_sum:
                    it.setForeground(grey)
                if j == 0:
                    it.setData(Qt.ItemDataRole.UserRole, t.category_id)
                    it.setData(Qt.ItemDataRole.UserRole + 1, t.role)
                    if not math.isnan(t.ci_lo):
                        it.setToolTip(f"{plural(t.count, 'grain')}, {t.percent:.1f} % (95 %: {t.ci_lo:.1f}-{t.ci_hi:.1f} %)")
                self.table.setItem(i, j, it)
        if s is None:
            self.note.setText("Accepted, corrected and added grains are counted per sample (slide).")
        else:
            bits = [f"{plural(s.images, 'image')}, {s.reviewed_images} reviewed"]
            if s.undecided:
                bits.append(f"{plural(s.undecided, 'proposal')} to review")
            text = "; ".join(bits)
            slides = self.slide_notes.get(s.name)
            if slides:  # slide scans reviewed field by field: what was traversed
                text += "\n" + slides
            self.note.setText(text)
        self.concentration.setText(concentration_text(s))
        self.concentration.setVisible(bool(self.concentration.text()))


class CountController(QObject):
    """Keeps the count dock in step: re-reads counts in a worker once store changes pause,
    follows the sample of the image on screen, and writes the settings the dock edits."""

    countsReady = Signal()
    slideNotesReady = Signal()  # the fields traversed on slide scans were re-read

    def __init__(self, window):
        super().__init__(window)
        self.win = window
        self.ctl = window.ctl
        self.panel = CountPanel()
        self.jobs = JobRunner(self)
        self.samples: list = []
        self.sample_name: str | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.refresh)
        self.ctl.storeChanged.connect(self._store_changed)
        self.ctl.projectChanged.connect(self._project_changed)
        self.ctl.projectClosing.connect(lambda: self.jobs.cancel_all())
        self.ctl.imageShown.connect(self._image_shown)
        self.panel.sampleChosen.connect(self._choose)
        self.panel.targetChanged.connect(self.set_target)
        self.panel.roleRequested.connect(self.set_role)
        self.panel.settingsRequested.connect(self.open_settings)

    def _store_changed(self, ev) -> None:
        if ev.label == "set sample" and self.ctl.image_id is not None:
            self.sample_name = None  # the image on screen may have moved to another sample
            self._image_shown(self.ctl.image_id)
        self._timer.start()

    def _project_changed(self) -> None:
        self.samples = []
        self.sample_name = None
        self.panel.set_counts([], None)
        if self.ctl.project is not None:
            self.refresh()

    def _image_shown(self, image_id: int) -> None:
        from pollenstudio.project.counting import NO_SAMPLE

        p = self.ctl.project
        if p is None:
            return
        try:
            name = p.image(image_id).group or NO_SAMPLE
        except PollenStudioError:
            return
        if name != self.sample_name:
            self.sample_name = name
            self.panel.show_sample(name) if any(s.name == name for s in self.samples) else self._timer.start()

    def _choose(self, name: str) -> None:
        self.sample_name = name
        self.panel.show_sample(name)

    def refresh(self) -> None:
        p = self.ctl.project
        if p is None:
            return

        def done(samples, p=p):
            if self.ctl.project is p:
                self.samples = samples
                self.panel.set_counts(samples, self.sample_name)
                self.countsReady.emit()
                self._read_slide_notes(samples)

        self.jobs.submit("count", count_job, str(p.db_path), str(p.folder), on_done=done,
                         on_error=lambda msg: log.warning("counts not read: %s", msg))

    def _read_slide_notes(self, samples) -> None:
        """The fields traversed on the samples' slide scans (gui.slide_overview), in a worker."""
        from pollenstudio.gui.slide_overview import slide_notes_job

        p = self.ctl.project

        def done(notes, p=p):
            if self.ctl.project is p and notes != self.panel.slide_notes:
                self.panel.slide_notes = notes
                self.panel.show_sample(self.panel.current.name if self.panel.current is not None else self.sample_name)
                self.slideNotesReady.emit()

        self.jobs.submit("slides", slide_notes_job, str(p.db_path), str(p.folder), samples, on_done=done,
                         on_error=lambda msg: log.warning("slide fields not read: %s", msg))

    def set_target(self, sample: str, target: int) -> None:
        p = self.ctl.project
        if p is None:
            return
        try:
            settings = dict(p.sample_settings().get(sample, {}))
            settings["target_sum"] = int(target)
            p.set_sample_settings(sample, settings)
        except PollenStudioError as exc:
            self.ctl.errorRaised.emit("Target sum", str(exc))

    def open_settings(self, sample: str | None = None):
        """The count settings dialog of ``sample`` (default: the one in the dock); the
        dock re-reads the counts when it is saved. Returns the dialog (non-modal)."""
        from pollenstudio.gui.sample_settings import SampleSettingsDialog
        from pollenstudio.project.counting import NO_SAMPLE

        p = self.ctl.project
        if p is None:
            return None
        name = sample or (self.panel.current.name if self.panel.current is not None else self.sample_name) or NO_SAMPLE
        count = next((s for s in self.samples if s.name == name), None)
        dlg = SampleSettingsDialog(p, name, count, parent=self.win)
        dlg.accepted.connect(self.refresh)
        dlg.open()
        self.settings_dialog = dlg
        return dlg

    def set_role(self, category_id: int, role: str) -> None:
        p = self.ctl.project
        if p is None:
            return
        try:
            p.set_taxon_role(category_id, role)
        except PollenStudioError as exc:
            self.ctl.errorRaised.emit("Role in the count", str(exc))


# ------------------------------------------------------------------ scale bar
class ScaleBarOverlay(QWidget):
    """A scale bar drawn over the canvas's bottom-left corner, in screen pixels: its
    length in µm is a round number and its screen length follows the zoom, so it is
    right at every zoom. Hidden when the image on screen has no pixel scale."""

    def __init__(self, canvas):
        super().__init__(canvas.view.viewport())
        self.canvas = canvas
        self.um_per_px: float | None = None
        self.bar: tuple[float, float] | None = None  # (µm, screen px)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        canvas.vb.sigRangeChanged.connect(lambda *a: self.update_bar())
        canvas.vb.sigResized.connect(lambda *a: self.update_bar())
        self.hide()

    def set_scale(self, um_per_px: float | None) -> None:
        self.um_per_px = um_per_px
        self.update_bar()

    def zoom(self) -> float:
        """Screen pixels per image pixel."""
        px = self.canvas.vb.viewPixelSize()[0]
        return 1.0 / px if px > 0 else 0.0

    def update_bar(self) -> None:
        vp = self.parentWidget()
        self.setGeometry(0, 0, vp.width(), vp.height())
        z = self.zoom()
        self.bar = scale_bar(self.um_per_px, z, max_screen_px=160) if self.um_per_px and z > 0 else None
        self.update()

    def paintEvent(self, _ev) -> None:
        if self.bar is None:
            return
        um, length = self.bar
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        x0, y0 = 16.0, self.height() - 18.0
        text = format_um(um)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        p.fillRect(QRectF(x0 - 6, y0 - 24, length + 12, 32), QColor(0, 0, 0, 120))
        pen = QPen(QColor("white"), 4)
        pen.setCapStyle(Qt.PenCapStyle.FlatCap)
        p.setPen(pen)
        p.drawLine(QPointF(x0, y0), QPointF(x0 + length, y0))
        p.setPen(QColor("white"))
        p.drawText(QRectF(x0, y0 - 22, max(length, 60), 16), Qt.AlignmentFlag.AlignLeft, text)
        p.end()


# ------------------------------------------------------------------ pixel scale dialog
class ScaleDialog(QDialog):
    """Edit > Pixel scale...: µm per pixel for the whole project or the selected images;
    type it, or drag a line over a scale bar (or stage micrometer) on the image on screen
    and type its length."""

    def __init__(self, project, image_ids: list[int], image=None, current: float | None = None, parent=None):
        super().__init__(parent)
        self.project = project
        self.image_ids = image_ids
        self.setWindowTitle("Pixel scale")
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        intro = QLabel("Micrometres per pixel make sizes and the scale bar right. TIFF files that state "
                       "their scale (OME PhysicalSizeX, resolution tags) get it on import.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.value = QDoubleSpinBox()
        self.value.setDecimals(5)
        self.value.setRange(0.0, 1000.0)
        self.value.setSingleStep(0.01)
        self.value.setSuffix(" µm/px")
        self.value.setSpecialValueText("not set")
        self.value.setValue(current or 0.0)
        form.addRow("Scale", self.value)
        self.scope_all = QRadioButton("every image in the project")
        self.scope_sel = QRadioButton(f"the {len(image_ids)} selected image{'s' if len(image_ids) != 1 else ''}")
        grp = QButtonGroup(self)
        grp.addButton(self.scope_all)
        grp.addButton(self.scope_sel)
        (self.scope_sel if image_ids else self.scope_all).setChecked(True)
        self.scope_sel.setEnabled(bool(image_ids))
        box = QVBoxLayout()
        box.addWidget(self.scope_sel)
        box.addWidget(self.scope_all)
        form.addRow("Apply to", box)
        lay.addLayout(form)
        self.line = None
        if image is not None:
            lay.addWidget(self._measure(image))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

    def _measure(self, image) -> QWidget:
        import pyqtgraph as pg

        w = QWidget()
        v = QVBoxLayout(w)
        v.setContentsMargins(0, 8, 0, 0)
        v.addWidget(QLabel("<b>Measure a scale bar</b>: drag the line's ends onto the bar's ends, type its length."))
        self.view = pg.GraphicsLayoutWidget()
        self.view.setMinimumHeight(260)
        vb = self.view.addViewBox(lockAspect=True, invertY=True)
        if hasattr(image, "levels"):  # a pyramid level fine enough to place the line's ends (zoom with the wheel)
            fine = [lv for lv in image.levels if lv.shape[1] >= min(1600, image.width)]
            level = fine[-1] if fine else image.levels[0]
            self.shrink = image.width / level.shape[1]
        else:
            level, self.shrink = image, 1.0
        vb.addItem(pg.ImageItem(level, axisOrder="row-major"))
        hgt, wid = level.shape[:2]
        self.line = pg.LineSegmentROI([[wid * 0.1, hgt * 0.9], [wid * 0.4, hgt * 0.9]], pen=pg.mkPen("#ffcc00", width=3))
        vb.addItem(self.line)
        v.addWidget(self.view)
        row = QHBoxLayout()
        row.addWidget(QLabel("Length of the bar"))
        self.length = QDoubleSpinBox()
        self.length.setRange(0.0, 100000.0)
        self.length.setDecimals(2)
        self.length.setSuffix(" µm")
        self.length.setValue(50.0)
        row.addWidget(self.length)
        self.measured = QLabel()
        row.addWidget(self.measured, 1)
        use = QPushButton("Use this scale")
        use.clicked.connect(self.use_line)
        row.addWidget(use)
        v.addLayout(row)
        self.line.sigRegionChanged.connect(lambda *a: self._show_line())
        self.length.valueChanged.connect(lambda *a: self._show_line())
        self._show_line()
        return w

    def line_points(self) -> tuple[float, float, float, float]:
        """The line's ends in full-resolution image pixels."""
        h = self.line.getHandles()
        a, b = (self.line.mapToParent(x.pos()) for x in h[:2])
        s = self.shrink
        return a.x() * s, a.y() * s, b.x() * s, b.y() * s

    def _show_line(self) -> None:
        x1, y1, x2, y2 = self.line_points()
        try:
            ump = um_per_px_from_line(x1, y1, x2, y2, self.length.value())
            self.measured.setText(f"{math.hypot(x2 - x1, y2 - y1):.0f} px → {ump:.4f} µm/px")
        except PollenStudioError as exc:
            self.measured.setText(str(exc))

    def use_line(self) -> None:
        try:
            self.value.setValue(um_per_px_from_line(*self.line_points(), self.length.value()))
        except PollenStudioError as exc:
            QMessageBox.warning(self, "Pixel scale", str(exc))

    def save(self) -> None:
        v = self.value.value() or None
        try:
            self.project.set_um_per_px(v, None if self.scope_all.isChecked() else self.image_ids)
        except PollenStudioError as exc:
            QMessageBox.warning(self, "Pixel scale", str(exc))
            return
        self.accept()


# ------------------------------------------------------------------ actions
def _selected_ids(win) -> list[int]:
    from pollenstudio.gui.relink_dialog import selected_image_ids

    return selected_image_ids(win)


def open_scale_dialog(win) -> ScaleDialog | None:
    p = win.ctl.project
    if p is None:
        return None
    ids = _selected_ids(win)
    current = p.image(ids[0]).um_per_px if ids else None
    dlg = ScaleDialog(p, ids, image=win.canvas.image, current=current, parent=win)
    dlg.finished.connect(lambda _r: win.counts.image_scale_changed())
    dlg.open()
    return dlg


def set_sample_of_selection(win, name: str | None = None) -> None:
    p = win.ctl.project
    if p is None:
        return
    ids = _selected_ids(win)
    if not ids:
        return
    if name is None:
        current = p.image(ids[0]).group or ""
        name, ok = QInputDialog.getText(win, "Sample", f"Sample (slide) of the {len(ids)} selected image(s); "
                                        "empty: none", text=current)
        if not ok:
            return
    try:
        p.set_images_group(ids, name)
    except PollenStudioError as exc:
        QMessageBox.warning(win, "Sample", str(exc))


def report_dialog(win, out: str | None = None, open_after: bool = True):
    """File > Report...: pick a file (.html / .pdf / .csv), write it in a worker, open it."""
    p = win.ctl.project
    if p is None:
        return None
    if out is None:
        out, _ = QFileDialog.getSaveFileName(win, "Count report", str(p.folder / "report.html"),
                                             "Report (*.html *.pdf *.csv);;HTML (*.html);;PDF (*.pdf);;CSV (*.csv)")
        if not out:
            return None
    win.statusBar().showMessage(f"Writing the count report {Path(out).name}...")

    def done(summary):
        win.statusBar().showMessage(f"Report written: {summary['path']} ({plural(summary['samples'], 'sample')}, "
                                    f"{plural(summary['grains'], 'grain')})", 10000)
        win.counts.last_report = summary
        if open_after:
            QDesktopServices.openUrl(QUrl.fromLocalFile(summary["path"]))

    def failed(msg):
        win.statusBar().clearMessage()
        win.counts.last_report = None
        QMessageBox.warning(win, "Count report", msg)

    return win.counts.jobs.submit("report", report_job, str(p.db_path), str(p.folder), str(out),
                                  on_done=done, on_error=failed)


def outline_job(token, image, box, um_per_px):
    """Worker job: the outline of the grain in ``box``, from the pixels around it only
    (``image`` a DisplayImage / SlideImage: a slide is never read whole for one grain)."""
    import dataclasses

    from pollenstudio.core.types import Box
    from pollenstudio.engine.shape import fit_outline

    token.check()
    pad = max(box.width, box.height) * 0.5 + 16
    arr, ox, oy = image.window(box.x1 - pad, box.y1 - pad, box.x2 + pad, box.y2 + pad)
    if arr is None:
        return None, um_per_px
    shape = fit_outline(arr, Box(box.x1 - ox, box.y1 - oy, box.x2 - ox, box.y2 - oy))
    if shape is not None and (ox or oy):
        shape = dataclasses.replace(shape, centre=(shape.centre[0] + ox, shape.centre[1] + oy),
                                    outline=shape.outline + np.asarray([ox, oy], dtype=shape.outline.dtype))
    return shape, um_per_px


def measure_outline(win):
    """Review > Measure grain outline: the selected box's outline and fitted ellipse
    (``engine.shape``), in a worker, stored on the grain (``Project.set_outline``, one
    undoable step: Ctrl+Z takes it off). A stored outline is drawn on the canvas while
    its box is selected and measured in the Selected box panel; moving or resizing the
    box drops it (``Project.move_annotation``)."""
    a = win.ctl.selected_annotation()
    img = win.canvas.image
    if a is None or img is None:
        win.statusBar().showMessage("Select a box to measure its grain's outline", 5000)
        return None
    counts = win.counts
    sel = a.id

    p, box = win.ctl.project, a.box

    def done(result):
        shape, _ump = result
        counts.last_shape = shape
        if shape is not None and win.ctl.project is p:
            try:
                cur = p.annotation(sel)
            except PollenStudioError:
                return  # deleted (or undone) meanwhile
            if cur.box != box:
                return  # moved while it was measured: the outline would be stale
            try:
                p.set_outline(sel, shape.polygon)  # the store's change redraws the panel and the canvas
            except PollenStudioError as exc:
                QMessageBox.warning(win, "Grain outline", str(exc))
            return
        if win.ctl.selected == sel:
            counts.outline_text = "Outline: nothing stands out from the slide in this box"
            counts.outline_for = sel
            counts.show_size()

    return counts.jobs.submit("outline", outline_job, img, a.box, counts.current_um_per_px, on_done=done,
                              on_error=lambda msg: QMessageBox.warning(win, "Grain outline", msg))


def install_counting(win) -> CountController:
    """Add counting to the main window (see the module docstring)."""
    counts = win.counts = CountController(win)
    counts.last_report = None
    win.count_dock = win._dock("Count", counts.panel, Qt.DockWidgetArea.RightDockWidgetArea)
    win.tabifyDockWidget(win.taxa_dock, win.count_dock)
    QTimer.singleShot(0, win.taxa_dock.raise_)  # the taxa (digit keys) stay in front

    file_menu = win.menuBar().actions()[0].menu()
    act = QAction("Report...", win)
    act.setStatusTip("Counts per sample with 95 % intervals and a pollen diagram, as HTML, PDF or CSV")
    act.triggered.connect(lambda: report_dialog(win))
    file_menu.insertAction(win.act_find_missing, act)
    win.act_report = act

    edit_menu = win.menuBar().actions()[1].menu()
    edit_menu.addSeparator()
    win.act_pixel_scale = edit_menu.addAction("Pixel scale...", lambda: open_scale_dialog(win))
    win.act_pixel_scale.setStatusTip("Micrometres per pixel of the project or the selected images: typed, or "
                                     "measured on a scale bar")
    win.act_set_sample = edit_menu.addAction("Set sample of selected images...", lambda: set_sample_of_selection(win))
    win.act_set_sample.setStatusTip("Which slide the images belong to: counts and reports are per sample")
    win.act_sample_settings = edit_menu.addAction("Count settings of the sample...", lambda: counts.open_settings())
    win.act_sample_settings.setStatusTip("Target sum and concentration (exotic marker tablets, sample volume or "
                                         "weight, or sampled air volume) of the sample in the Count panel")
    view = win.images.view
    sample_act = QAction("Set sample...", view)
    sample_act.triggered.connect(lambda: set_sample_of_selection(win))
    view.addAction(sample_act)

    counts.scale_bar = ScaleBarOverlay(win.canvas)
    win.act_scale_bar = QAction("Scale bar", win)
    win.act_scale_bar.setCheckable(True)
    win.act_scale_bar.setStatusTip("A scale bar in µm on the image (needs a pixel scale)")
    win.act_scale_bar.toggled.connect(lambda on: (counts.scale_bar.setVisible(on), counts.scale_bar.update_bar()))
    win.act_scale_bar.toggled.connect(lambda on: win.settings.setValue("view/scale_bar", on))
    win.view_menu.insertAction(win.view_menu.actions()[3], win.act_scale_bar)
    win.view_menu.addAction(win.count_dock.toggleViewAction())
    win.act_scale_bar.setChecked(str(win.settings.value("view/scale_bar", True)).lower() not in ("false", "0"))

    def image_scale_changed(*_a) -> None:
        p, iid = win.ctl.project, win.ctl.image_id
        ump = None
        if p is not None and iid is not None:
            try:
                ump = p.image(iid).um_per_px
            except PollenStudioError:
                ump = None
        counts.scale_bar.set_scale(ump)
        counts.current_um_per_px = ump
        show_size()

    def show_size() -> None:
        a = win.ctl.selected_annotation()
        ump = getattr(counts, "current_um_per_px", None)
        if a is None or a.id != counts.outline_for:
            counts.outline_text, counts.outline_for = "", a.id if a is not None else None
        size = outline_size(a.polygon) if a is not None and a.polygon else None
        if size is not None:  # the stored outline of the selected grain
            pts = np.asarray(a.polygon, dtype=np.float64).reshape(-1, 2)
            pts = np.vstack([pts, pts[:1]])
            counts.outline_curve.setData(pts[:, 0], pts[:, 1])
            counts.outline_text = "Outline: " + size.describe(ump)
        else:
            counts.outline_curve.setData([], [])
            if counts.outline_text.startswith("Outline: ellipse"):
                counts.outline_text = ""  # its outline went (moved, undone)
        if a is None:
            return
        text = box_axes_text(a.box.width, a.box.height, ump)
        extra = f"<br><span>{html.escape(counts.outline_text)}</span>" if counts.outline_text else ""
        # the panel keeps the text it was given (``text``): the size goes after it, once
        win.topk.label.setText(getattr(win.topk, "text", "") + f"<br><span>Size: {html.escape(text)}</span>{extra}")

    import pyqtgraph as pg

    counts.outline_text, counts.outline_for, counts.last_shape = "", None, None
    counts.outline_curve = pg.PlotCurveItem(pen=pg.mkPen("#00e5ff", width=2))
    win.canvas.vb.addItem(counts.outline_curve, ignoreBounds=True)
    counts.show_size = show_size
    review_menu = win.menuBar().actions()[2].menu()
    win.act_outline = review_menu.addAction("Measure grain outline", lambda: measure_outline(win))
    win.act_outline.setStatusTip("Trace the selected grain's outline and keep it on the grain: ellipse axes, area, "
                                 "long/short ratio (exported; moving the box drops it)")

    counts.image_scale_changed = image_scale_changed
    counts.current_um_per_px = None
    win.ctl.imageShown.connect(image_scale_changed)
    win.ctl.storeChanged.connect(lambda ev: ev.label == "calibration" and image_scale_changed())
    win.ctl.boxesChanged.connect(show_size)  # after the window's own handler filled the panel
    return counts
