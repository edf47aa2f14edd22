"""Model > Model progress...: where a lab stands.

The learning curve of this project's own model versions (validation mAP@.5 against the
number of reviewed grains they learnt from; per taxon, its AP@.5 against its own grains) and
the taxa with too few reviewed grains to be learnt, with how many more would help. The
figures are read in a worker (:mod:`pollenstudio.engine.learning_progress`); the dialog only
draws.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.words import plural
from pollenstudio.gui.workers import JobRunner

OVERALL = "#1f4e79"
GOOD, SHORT = "#1e7b45", "#b03a2e"
FALLBACK_COLOURS = ("#d35400", "#117a65", "#8e44ad", "#2c3e50", "#c0392b", "#16a085", "#7f8c8d", "#b7950b")


def progress_job(token, project):
    from pollenstudio.engine.learning_progress import taxa_needs, version_points

    points = version_points(project)
    threshold, source, needs = taxa_needs(project, points)
    return points, threshold, source, needs


def _plot(title: str, xlabel: str, ylabel: str) -> pg.PlotWidget:
    w = pg.PlotWidget(background="w")
    p = w.getPlotItem()
    p.setTitle(title, color="#2c3e50", size="11pt")
    for side, text in (("bottom", xlabel), ("left", ylabel)):
        ax = p.getAxis(side)
        ax.setLabel(text, color="#2c3e50")
        ax.setPen(pg.mkPen("#6b7680"))
        ax.setTextPen(pg.mkPen("#2c3e50"))
    p.showGrid(x=True, y=True, alpha=0.25)
    p.setYRange(0.0, 1.05, padding=0.0)
    # top left: curves rise to the right, so that corner stays empty longest
    p.addLegend(offset=(10, 10), labelTextColor="#2c3e50", brush=pg.mkBrush(255, 255, 255, 220))
    return w


class ModelProgressDialog(QDialog):
    def __init__(self, ctl, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctl = ctl  # ModelController
        self.project = ctl.project
        self.setWindowTitle(f"Model progress - {self.project.name}")
        self.resize(1100, 720)
        self.jobs = JobRunner(self)
        self.points, self.threshold, self.source, self.needs = [], 0, "", []
        self.headline = QLabel("Reading the model versions...", self)
        self.headline.setWordWrap(True)
        self.overall = _plot("Whole model: validation mAP by reviewed grains", "reviewed grains learnt from", "mAP")
        self.per_taxon = _plot("Per taxon: validation AP@.5 by that taxon's reviewed grains", "reviewed grains of the taxon",
                               "AP@.5")
        plots = QHBoxLayout()
        plots.addWidget(self.overall, 1)
        plots.addWidget(self.per_taxon, 1)
        self.table = QTableWidget(0, 5, self)
        self.table.setHorizontalHeaderLabels(["taxon", "reviewed grains", "AP@.5 (newest version)", "to be learnt",
                                              "what would help"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)
        self.source_label = QLabel(self)
        self.source_label.setWordWrap(True)
        self.source_label.setObjectName("hint")
        note = QLabel("Each version is scored on its own held-out reviewed images, which grow with the project: "
                      "points are not measured on the same images. Model > Train... compares two versions on the "
                      "same images.", self)
        note.setObjectName("hint")
        note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.headline)
        lay.addLayout(plots, 5)
        lay.addWidget(QLabel("Taxa and their reviewed grains (fewest first)", self))
        lay.addWidget(self.table, 3)
        lay.addWidget(self.source_label)
        lay.addWidget(note)
        ctl.modelChanged.connect(self.refresh)
        ctl.projectChanged.connect(self._project_changed)
        self.refresh()

    def _project_changed(self) -> None:
        if self.ctl.project is not self.project:
            self.project = None
            self.hide()
            self.deleteLater()

    def refresh(self) -> None:
        if self.project is None:
            return
        self.jobs.submit("progress", progress_job, self.project, on_done=self._show,
                         on_error=lambda msg: self.headline.setText(f"Could not read the model versions: {msg}"))

    def _colour(self, name: str, i: int) -> str:
        c = next((c for c in self.project.categories() if c.name == name), None)
        return c.color if c is not None and c.color else FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)]

    def _show(self, result) -> None:
        if self.project is None:
            return
        self.points, self.threshold, self.source, self.needs = result
        pts = self.points
        short = [t for t in self.needs if t.more > 0]
        if pts:
            last = max(pts, key=lambda p: (p.created, p.version_id))
            head = (f"{len(pts)} trained version{'s' if len(pts) != 1 else ''}; newest, {last.name}: mAP@.5 "
                    f"{last.map50:.3f} after {last.grains} reviewed grains.")
        else:
            head = "No trained version with validation figures yet: review some images, then Model > Train..."
        if short:
            head += (f" {len(short)} of {plural(len(self.needs), 'taxon')} {'has' if len(short) == 1 else 'have'} fewer "
                     f"than {plural(self.threshold, 'reviewed grain')}: "
                     f"review about {sum(t.more for t in short)} more grains of them.")
        elif self.needs:
            head += f" Every taxon has at least {self.threshold} reviewed grains."
        self.headline.setText(head)
        self.source_label.setText(f"\"To be learnt\": {self.source}.")
        self._draw(pts)
        self._fill_table()

    def _draw(self, pts) -> None:
        for w in (self.overall, self.per_taxon):
            p = w.getPlotItem()
            p.clear()
            p.legend.clear()
        o = self.overall.getPlotItem()
        if pts:
            xs = [p.grains for p in pts]
            o.plot(xs, [p.map50 or 0.0 for p in pts], pen=pg.mkPen(OVERALL, width=2.5), symbol="o", symbolSize=8,
                   symbolBrush=OVERALL, symbolPen=None, name="mAP@.5")
            o.plot(xs, [p.map50_95 or 0.0 for p in pts], pen=pg.mkPen("#117a65", width=2), symbol="s", symbolSize=7,
                   symbolBrush="#117a65", symbolPen=None, name="mAP@.5:.95")
            o.setXRange(0, max(xs) * 1.08 + 1, padding=0.0)
        t = self.per_taxon.getPlotItem()
        names = sorted({n for p in pts for n in p.per_taxon})
        top = max([g for p in pts for g, _ in p.per_taxon.values()] + [self.threshold, 1])
        for i, name in enumerate(names):
            series = sorted((p.per_taxon[name][0], p.per_taxon[name][1]) for p in pts
                            if name in p.per_taxon and p.per_taxon[name][1] is not None)
            if not series:
                continue
            col = self._colour(name, i)
            t.plot([g for g, _ in series], [a for _, a in series], pen=pg.mkPen(col, width=2), symbol="o",
                   symbolSize=7, symbolBrush=col, symbolPen=None, name=name)
        if self.threshold:
            line = pg.InfiniteLine(self.threshold, angle=90, movable=False,
                                   pen=pg.mkPen("#6b7680", width=1.5, style=Qt.PenStyle.DashLine),
                                   label=plural(self.threshold, "grain"), labelOpts={"position": 0.5, "color": "#2c3e50", "fill": (255, 255, 255, 220)})
            t.addItem(line)
        t.setXRange(0, top * 1.08, padding=0.0)

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.needs))
        for r, n in enumerate(self.needs):
            cells = [n.name, str(n.reviewed), "-" if n.ap50 is None else f"{n.ap50:.2f}", str(n.needed)]
            if n.more:
                help_text, colour = f"review {n.more} more grain{'s' if n.more != 1 else ''}", SHORT
            elif n.learnt:
                help_text, colour = "learnt", GOOD
            else:
                help_text, colour = "enough grains: train again (Model > Train...)", None
            cells.append(help_text)
            for c, text in enumerate(cells):
                it = QTableWidgetItem(text)
                align = Qt.AlignmentFlag.AlignLeft if c in (0, 4) else Qt.AlignmentFlag.AlignRight
                it.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
                if c == 4 and colour:
                    it.setForeground(QBrush(QColor(colour)))
                self.table.setItem(r, c, it)
