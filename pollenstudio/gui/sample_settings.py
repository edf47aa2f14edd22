"""Count settings of a sample in the GUI (issue 20): the target sum and what a concentration
is computed from - an exotic marker (tablets added, spores per tablet and their spread, the
sample's volume or weight, the marker taxon) or a sampled air volume - with the resulting
concentration and its error shown as the values are typed.

The same settings ``pollenstudio report --set`` stores (``Project.set_sample_settings``,
checked by ``project.counting.check_settings``), for one sample or as the project's
defaults. Nothing is stored until Save; a bad value is named and nothing changes; Cancel
leaves everything as it was. The marker taxon's role is project-wide (the same taxon is
the marker in every sample).
"""

from __future__ import annotations

import html

from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.types import display_taxon, is_unassigned_taxon

MARKER_KEYS = ("marker_tablets", "marker_per_tablet", "marker_per_tablet_sd", "quantity", "quantity_unit")
MODES = ("none", "marker", "air")


def _spin(lo: float, hi: float, decimals: int, suffix: str = "", step: float = 1.0, unset: str = "not set"):
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(step)
    s.setSuffix(suffix)
    s.setKeyboardTracking(True)
    if unset:
        s.setSpecialValueText(unset)  # shown at the minimum (0): the value is not set
    return s


class SampleSettingsDialog(QDialog):
    """Edit one sample's (or the project's default) count settings. ``sample``: the
    sample's name (``project.counting.NO_SAMPLE`` for images without one); ``count``: its
    ``SampleCount`` (for the preview), or None."""

    def __init__(self, project, sample: str, count=None, parent=None):
        super().__init__(parent)
        self.project = project
        self.sample = sample
        self.count = count
        self.setWindowTitle(f"Count settings - {sample}")
        self.setMinimumWidth(580)
        stored = project.sample_settings()
        self.defaults = dict(stored.get("", {}))
        self.own = dict(stored.get(sample, {}))
        roles = project.taxon_roles()
        self.taxa = [c for c in project.categories() if not is_unassigned_taxon(c.name)]
        self.markers = [c.id for c in self.taxa if roles.get(c.id) == "marker"]

        lay = QVBoxLayout(self)
        scope = QHBoxLayout()
        scope.addWidget(QLabel("Settings of"))
        self.scope_sample = QRadioButton(f"sample {sample}")
        self.scope_default = QRadioButton("every sample without its own (project default)")
        grp = QButtonGroup(self)
        grp.addButton(self.scope_sample)
        grp.addButton(self.scope_default)
        self.scope_sample.setChecked(True)
        scope.addWidget(self.scope_sample)
        scope.addWidget(self.scope_default)
        scope.addStretch(1)
        lay.addLayout(scope)

        form = QFormLayout()
        self.target = QSpinBox()
        self.target.setRange(1, 1_000_000)
        self.target.setSingleStep(50)
        self.target.setSuffix(" grains")
        self.target.setToolTip("Count this sample until its pollen sum reaches this many grains (e.g. 300 or 500)")
        form.addRow("Target pollen sum", self.target)
        lay.addLayout(form)

        conc = QGroupBox("Concentration")
        cl = QVBoxLayout(conc)
        row = QHBoxLayout()
        self.mode_none = QRadioButton("none")
        self.mode_marker = QRadioButton("exotic marker (e.g. Lycopodium tablets)")
        self.mode_air = QRadioButton("sampled air volume")
        self.modes = QButtonGroup(self)
        for i, b in enumerate((self.mode_none, self.mode_marker, self.mode_air)):
            self.modes.addButton(b, i)
            row.addWidget(b)
        row.addStretch(1)
        cl.addLayout(row)

        self.marker_box = QWidget()
        mf = QFormLayout(self.marker_box)
        mf.setContentsMargins(0, 0, 0, 0)
        self.marker_taxon = QComboBox()
        self.marker_taxon.addItem("(choose the marker taxon)", None)
        for c in self.taxa:
            self.marker_taxon.addItem(display_taxon(c.name), c.id)
        if self.markers:
            self.marker_taxon.setCurrentIndex(self.marker_taxon.findData(self.markers[0]))
        self.marker_taxon.setToolTip("The taxon whose grains are the added marker spores: counted out of the "
                                     "pollen sum, in every sample")
        mf.addRow("Marker taxon", self.marker_taxon)
        self.tablets = _spin(0, 1000, 1, " tablets", 1.0)
        mf.addRow("Tablets added", self.tablets)
        self.per_tablet = _spin(0, 10_000_000, 0, " spores", 100.0)
        self.per_tablet.setToolTip("Spores per tablet, from the batch certificate (e.g. 18,583)")
        mf.addRow("Spores per tablet", self.per_tablet)
        self.per_tablet_sd = _spin(0, 1_000_000, 0, " spores", 100.0, unset="0 (not known)")
        self.per_tablet_sd.setToolTip("Standard deviation of spores per tablet (batch certificate); 0 if not known")
        mf.addRow("± per tablet (SD)", self.per_tablet_sd)
        q = QHBoxLayout()
        self.quantity = _spin(0, 100_000, 4, "", 0.1)
        self.unit = QComboBox()
        self.unit.addItem("cm³ (volume)", "cm3")
        self.unit.addItem("g (dry weight)", "g")
        q.addWidget(self.quantity, 1)
        q.addWidget(self.unit)
        mf.addRow("Sample quantity", q)
        cl.addWidget(self.marker_box)

        self.air_box = QWidget()
        af = QFormLayout(self.air_box)
        af.setContentsMargins(0, 0, 0, 0)
        self.air = _spin(0, 1_000_000, 3, " m³", 0.1)
        self.air.setToolTip("Air drawn through the trap for the counted area (e.g. a Hirst trap: 14.4 m³ a day)")
        af.addRow("Air volume", self.air)
        cl.addWidget(self.air_box)

        self.preview = QLabel()
        self.preview.setWordWrap(True)
        cl.addWidget(self.preview)
        lay.addWidget(conc)

        note = QLabel("Stored with the project (the same settings as <tt>pollenstudio report --set</tt>). "
                      "Cancel leaves everything as it was.")
        note.setWordWrap(True)
        note.setStyleSheet("color: #888")
        lay.addWidget(note)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

        self._load(self.own_or_default())
        self.scope_sample.toggled.connect(lambda _on: self._load(self.own_or_default()))
        self.modes.idToggled.connect(lambda *_a: self._update())
        for w in (self.tablets, self.per_tablet, self.per_tablet_sd, self.quantity, self.air):
            w.valueChanged.connect(lambda *_a: self._update())
        self.unit.currentIndexChanged.connect(lambda *_a: self._update())
        self.marker_taxon.currentIndexChanged.connect(lambda *_a: self._update())
        self.target.valueChanged.connect(lambda *_a: self._update())

    # ------------------------------------------------------------------ form <-> settings
    def own_or_default(self) -> dict:
        """What the form starts from: the sample's settings over the defaults, or the defaults."""
        return {**self.defaults, **self.own} if self.scope_sample.isChecked() else dict(self.defaults)

    def _load(self, s: dict) -> None:
        from pollenstudio.project.counting import DEFAULT_TARGET_SUM

        self.target.setValue(int(s.get("target_sum", DEFAULT_TARGET_SUM)))
        self.tablets.setValue(float(s.get("marker_tablets", 0)))
        self.per_tablet.setValue(float(s.get("marker_per_tablet", 0)))
        self.per_tablet_sd.setValue(float(s.get("marker_per_tablet_sd", 0)))
        self.quantity.setValue(float(s.get("quantity", 0)))
        self.unit.setCurrentIndex(max(0, self.unit.findData(s.get("quantity_unit", "cm3"))))
        self.air.setValue(float(s.get("air_volume_m3", 0)))
        mode = "air" if "air_volume_m3" in s else "marker" if any(k in s for k in MARKER_KEYS[:2] + ("quantity",)) else "none"
        self.modes.button(MODES.index(mode)).setChecked(True)
        self._update()

    def mode(self) -> str:
        return MODES[max(0, self.modes.checkedId())]

    def settings(self) -> dict:
        """The form as settings (unset values left out; the other mode's values dropped)."""
        s: dict = {"target_sum": self.target.value()}
        if self.mode() == "marker":
            for key, w in (("marker_tablets", self.tablets), ("marker_per_tablet", self.per_tablet),
                           ("quantity", self.quantity)):
                if w.value() > 0:
                    s[key] = w.value()
            if self.per_tablet_sd.value() > 0:
                s["marker_per_tablet_sd"] = self.per_tablet_sd.value()
            s["quantity_unit"] = self.unit.currentData()
        elif self.mode() == "air" and self.air.value() > 0:
            s["air_volume_m3"] = self.air.value()
        return s

    def problem(self) -> str | None:
        """Why the form cannot be saved, in words, or None."""
        from pollenstudio.project.counting import check_settings

        m = self.mode()
        if m == "marker":
            missing = [name for name, w in (("tablets added", self.tablets), ("spores per tablet", self.per_tablet),
                                             ("sample quantity", self.quantity)) if not w.value() > 0]
            if missing:
                return "An exotic-marker concentration needs " + ", ".join(missing) + "."
            if self.marker_taxon.currentData() is None:
                return "Choose the marker taxon (the taxon its spores are counted as)."
        if m == "air" and not self.air.value() > 0:
            return "A concentration in air needs the sampled air volume."
        try:
            check_settings(self.settings())
        except PollenStudioError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ preview
    def _marker_count(self) -> int:
        """Marker grains of the sample: the taxa that are the marker now, and the one chosen."""
        c = self.count
        if c is None:
            return 0
        ids = set(self.markers) | {self.marker_taxon.currentData()}
        return sum(t.count for t in c.taxa + c.excluded if t.category_id in ids)

    def effective(self) -> dict:
        """The settings the sample would count with after Save (defaults merged)."""
        form = self.settings()
        if self.scope_sample.isChecked():
            return {**self.defaults, **form}
        return {**form, **self.own}

    def _update(self) -> None:
        self.marker_box.setVisible(self.mode() == "marker")
        self.air_box.setVisible(self.mode() == "air")
        problem = self.problem()
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(problem is None)
        self.preview.setText(self._preview(problem))
        # a wrapped label's height follows its width: top-level layouts do not ask, so say it
        width = max(self.preview.width(), self.minimumWidth() - 60)
        self.preview.setMinimumHeight(self.preview.heightForWidth(width))
        self.adjustSize()

    def _preview(self, problem: str | None) -> str:
        from pollenstudio.project.counting import sample_concentration

        if problem is not None:
            return f"<span style='color:#c0392b'>{html.escape(problem)}</span>"
        c = self.count
        if c is None:
            return "<span style='color:#888'>No grains counted on this sample yet.</span>"
        try:
            # the marker taxon chosen here counts as the marker, and out of the pollen sum
            cid = self.marker_taxon.currentData() if self.mode() == "marker" else None
            n = c.pollen_sum - sum(t.count for t in c.taxa if t.category_id == cid)
            conc = sample_concentration(self.effective(), n, self._marker_count())
        except PollenStudioError as exc:
            return f"<span style='color:#c0392b'>No concentration: {html.escape(str(exc))}</span>"
        if conc is None:
            return f"<span style='color:#888'>No concentration (pollen sum {c.pollen_sum}).</span>"
        return (f"Pollen sum {n}: <b>{conc.value:,.0f} ± {conc.se:,.0f} {html.escape(conc.unit)}</b> (± 1 SE; 95 %: "
                f"{conc.lo:,.0f}-{conc.hi:,.0f})<br><span style='color:#888'>{html.escape(conc.method)}</span>")

    # ------------------------------------------------------------------ save
    def save(self) -> None:
        from pollenstudio.project.counting import check_settings

        problem = self.problem()
        if problem is not None:
            QMessageBox.warning(self, "Count settings", problem)
            return
        settings = self.settings()
        name = self.sample if self.scope_sample.isChecked() else ""
        try:
            check_settings(settings)  # everything is checked before anything is stored
            cid = self.marker_taxon.currentData() if self.mode() == "marker" else None
            if cid is not None and cid not in self.markers:
                self.project.set_taxon_role(cid, "marker")
            self.project.set_sample_settings(name, settings)
        except PollenStudioError as exc:
            QMessageBox.warning(self, "Count settings", str(exc))
            return
        self.accept()
