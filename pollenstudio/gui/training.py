"""Model > Train...: the training dashboard.

Start a training run on the project's reviewed images (what to train: Auto by default, the
recipe of :mod:`pollenstudio.engine.recipe`, or detector / classifier / both; base version or
scratch, epochs, input size, device, batch) in a worker; before Start the dashboard says
what Auto chose and how long it is expected to take; follow the loss and mAP curves live; Cancel; on
finish compare the new version with the active model on the same validation images
(overall and per taxon) and make it active with "Use this model"; list every model version
and reactivate an older one.

Worker side (no widgets): :func:`train_job` runs ``engine.train.train_project`` and then
``engine.compare.compare_with_reference`` (the active model scored on the new run's
validation split; ``pollenstudio train`` prints the same comparison). The Trainer's events go into a
:class:`TrainFeed` (a thread-safe queue) that the dashboard drains on a timer: a fast batch
loop never floods the GUI thread with signals, and the curves redraw a few times a second
at most. Training has its own one-thread pool, so a long run never holds a thread the
review reads (queue page, taxon counts, thumbnails) need.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import pyqtgraph as pg
from PySide6.QtCore import QThreadPool, QTimer, Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.errors import CheckpointError, PollenStudioError
from pollenstudio.core import gcguard
from pollenstudio.core.types import display_taxon
from pollenstudio.core.words import plural
from pollenstudio.gui.workers import JobRunner

log = logging.getLogger(__name__)

TRAIN_SERIAL = threading.Lock()  # held while a training job runs: closing a project waits on it
CLOSE_WAIT_S = 60.0  # a cancelled run stops within one batch (or one validation pass)
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 8
IMGSZ_CHOICES = (320, 416, 512, 640, 800, 960, 1024, 1280)
GAIN, LOSS, NEUTRAL = "#1e7b45", "#b03a2e", "#6b7680"  # AP change colours (readable on white)
CURVE_COLOURS = {"batch": "#a9bcd6", "loss": "#1f4e79", "map50": "#d35400", "map50_95": "#117a65"}


# ---------------------------------------------------------------------------- worker side (no widgets)


@dataclass
class TrainRequest:
    """What the user asked for in the dashboard."""

    base: int | str | None  # model version id or checkpoint file to start from; None: from scratch
    epochs: int = DEFAULT_EPOCHS
    imgsz: int = 640
    batch: int = DEFAULT_BATCH
    device: str = "auto"
    model_cfg: object = None  # architecture when training from scratch (None: HieraEdgeNet-n, full)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    stage: str = "detector"  # detector | classifier | both (Auto resolved to the recipe's choice)
    recipe: object = None  # engine.recipe.Recipe under Auto: its freeze, lr and augmentation are used

    def train_config(self):
        from pollenstudio.engine.train import TrainConfig

        if self.recipe is not None:  # the form's epochs / size / batch / device override the recipe's
            return self.recipe.train_config(epochs=int(self.epochs), imgsz=int(self.imgsz), batch=int(self.batch),
                                            device=self.device, threads=self.threads)
        return TrainConfig(epochs=int(self.epochs), imgsz=int(self.imgsz), batch=int(self.batch),
                           device=self.device, threads=self.threads)


@dataclass
class TrainOutcome:
    """A finished run: the new version and the reference it was compared with."""

    version_id: int
    name: str
    metrics: dict  # new version, EvalResult.to_dict on the validation split ({} without one)
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    seconds: float
    reference_name: str | None = None  # the model that was active when the run finished
    reference_id: int | None = None
    reference_metrics: dict | None = None  # same validation images, same evaluation
    note: str = ""  # why there is no comparison, in words
    class_agnostic: bool = False  # the reference names no taxon here (grain model): finding only, both models
    finding: dict | None = None  # the new version's class-agnostic figures on the same images
    too_few: str = ""  # too few validation images / grains for a score: said instead of figures


class TrainFeed:
    """Events from the training thread, drained by the GUI on a timer. Tuples:
    ("phase", text), ("batch", x_epochs, loss), ("epoch", epoch, loss, map50, map50_95),
    ("trained", version_id), ("outcome", TrainOutcome)."""

    def __init__(self):
        self._q: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, *event) -> None:
        self._q.put(event)

    def drain(self) -> list[tuple]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out


def train_job(token, project, request: TrainRequest, feed: TrainFeed) -> TrainOutcome:
    """Worker job: train a new version (never activated here), then score the active model
    on the new run's validation images. Cancel stops training within one batch (the engine
    records the run as cancelled; no version is registered); a cancel while the active
    model is being scored only skips that comparison."""
    # Until its first batch is done the run imports torch's training code, reads the images
    # and builds the model and the optimiser: no garbage collection meanwhile (see gcguard).
    burst = gcguard.Burst()
    with TRAIN_SERIAL, burst:
        from pollenstudio.engine.compare import compare_with_reference
        from pollenstudio.engine.train import readable_version_name, train_project

        token.check()
        feed.put("phase", "Reading the reviewed images and preparing the model...")

        def on_train_start(trainer):
            feed.put("phase", f"Training on {plural(len(trainer.train_samples), 'image')}, validating on "
                              f"{len(trainer.val_samples)} (device {trainer.device})")

        def on_batch_end(trainer, epoch, i, n, loss):
            burst.end()
            feed.put("batch", epoch + (i + 1) / max(1, n), float(loss))

        def on_epoch_end(trainer, epoch, m):
            feed.put("epoch", int(epoch), float(m.get("loss", float("nan"))), m.get("map50"), m.get("map50_95"))

        cfg = request.train_config()
        if request.stage == "classifier":
            feed.put("phase", "Naming grains: embedding the reviewed grains and fitting the taxon classifier...")
        res = train_project(project, cfg, model_cfg=request.model_cfg, base=request.base, activate=False,
                            name=readable_version_name(project), stage=request.stage,
                            progress=token, callbacks={"on_train_start": on_train_start, "on_batch_end": on_batch_end,
                                                       "on_epoch_end": on_epoch_end})
        feed.put("trained", res.version_id)
        cmp = compare_with_reference(project, res.version_id, device=cfg.device, conf=cfg.conf, batch=cfg.batch,
                                     progress=token, on_phase=lambda text: feed.put("phase", text))
        out = TrainOutcome(res.version_id, cmp.name, dict(res.metrics), res.n_train_images, res.n_val_images,
                           res.result.epochs_run, res.result.best_epoch, res.result.seconds, cmp.reference_name,
                           cmp.reference_id, cmp.reference_metrics, cmp.note, cmp.class_agnostic, cmp.finding, cmp.too_few)
        feed.put("outcome", out)
        return out


def device_choices_job(token) -> list[tuple[str, str]]:
    """(value, label) of the GPUs training can use; imports torch, so off the GUI thread."""
    with gcguard.held():
        from pollenstudio.engine.predict import gpu_choices

        return gpu_choices()


def plan_job(token, project, base, device: str = "auto"):
    """What a run from ``base`` on ``device`` will learn and what Auto would choose: a
    TrainPlan (reads every reviewed grain: a worker)."""
    from pollenstudio.engine.recipe import auto_plan

    return auto_plan(project, base, device)


STAGE_CHOICES = (
    ("Auto (recommended)", "auto"),
    ("Name grains only (classifier)", "classifier"),
    ("Detector + classifier", "both"),
    ("Detector (taxa in its head)", "detector"),
)


def format_duration(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


# ---------------------------------------------------------------------------- the dashboard


def _plot(title: str, ylabel: str) -> pg.PlotWidget:
    w = pg.PlotWidget(background="w")
    w.setTitle(title, color="#2c3e50", size="11pt")
    pi = w.getPlotItem()
    for side in ("left", "bottom"):
        ax = pi.getAxis(side)
        ax.setPen(pg.mkPen("#4a5560"))
        ax.setTextPen(pg.mkPen("#2c3e50"))
        ax.enableAutoSIPrefix(False)  # "mAP (x0.001)" with ticks 100..300 misreads as percent
    pi.setLabel("bottom", "epoch", color="#2c3e50")
    pi.setLabel("left", ylabel, color="#2c3e50")
    pi.showGrid(x=True, y=True, alpha=0.15)
    pi.setMenuEnabled(False)
    w.setMinimumHeight(200)
    return w


def _item(text: str, align=Qt.AlignmentFlag.AlignRight, colour: str | None = None, bold=False) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    it.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
    if colour:
        it.setForeground(QBrush(QColor(colour)))
    if bold:
        f = QFont()
        f.setBold(True)
        it.setFont(f)
    return it


def _delta_item(d: float | None) -> QTableWidgetItem:
    if d is None:
        return _item("-", colour=NEUTRAL)
    if abs(d) < 0.0005:
        return _item("±0.000", colour=NEUTRAL)
    return _item(f"{'▲' if d > 0 else '▼'} {d:+.3f}", colour=GAIN if d > 0 else LOSS, bold=True)


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().hide()
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setAlternatingRowColors(True)
    h = t.horizontalHeader()
    h.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    for c in range(1, len(headers)):
        h.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
    return t


class TrainingDashboard(QDialog):
    """Model > Train...: one per open project, non-modal; closing it leaves a run going."""

    def __init__(self, ctl, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctl = ctl
        self.project = ctl.project
        self.setWindowTitle(f"Train a model - {self.project.name}")
        self.resize(1180, 860)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)  # one run at a time, never in the global pool
        self.jobs = JobRunner(self, pool=self.pool)
        self.job = None
        self.feed = TrainFeed()
        self.outcome: TrainOutcome | None = None
        self.trained_version: int | None = None  # registered by the current run (even if its comparison was cancelled)
        self.threads: int | None = None  # torch CPU threads for runs (None: torch's default)
        self.scratch_model_cfg = None  # architecture for "from scratch" (None: HieraEdgeNet-n, full)
        self._t0 = 0.0
        self._first = None  # (time, steps) of the first finished batch: setup time is not in the ETA
        self._epochs = 0
        self._phase = ""
        self._batch_xy: tuple[list, list] = ([], [])
        self._epoch_rows: list[tuple] = []  # (epoch + 1, loss, map50, map50_95)

        self._build()
        self._poll = QTimer(self)
        self._poll.setInterval(250)
        self._poll.timeout.connect(self._drain)
        ctl.modelChanged.connect(self._model_changed)
        ctl.projectClosing.connect(self.shutdown)
        ctl.projectChanged.connect(self._project_changed)
        self.refresh_versions()
        self._fill_bases()
        self._set_running(False)
        self.jobs.submit("devices", device_choices_job, on_done=self._devices_found,
                         on_error=lambda msg: log.warning("GPU check failed: %s", msg))

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        settings = QGroupBox("New training run", self)
        g = QGridLayout(settings)
        self.stage = QComboBox(self)
        for label, value in STAGE_CHOICES:
            self.stage.addItem(label, value)
        self.stage.setToolTip("Auto picks what to train from your reviewed images and grains, the device and the image "
                              "size (shown below before Start). With few reviewed grains per taxon it keeps the "
                              "detector and names its grains with a taxon classifier (seconds); with many it also "
                              "fine-tunes the detector. Epochs and image size you type override Auto's.")
        self.stage.activated.connect(lambda _i: self._refresh_data_note())
        self._plan = None  # TrainPlan of the current base / device (with the auto recipe)
        self._auto_values: tuple | None = None  # (epochs, imgsz) as Auto last wrote them
        self.base = QComboBox(self)
        self.base.setToolTip("The model the run starts from: the one in use (a version of this project, or the "
                             "shipped grain model), another version, or a new network from scratch (needs "
                             "hundreds of reviewed images)")
        self.base.setMinimumWidth(260)
        self.base.activated.connect(lambda _i: self._refresh_data_note())  # what it learns depends on the base
        self.epochs = QSpinBox(self)
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(DEFAULT_EPOCHS)
        self.epochs.setToolTip("Passes over the training images; validation after each")
        self.imgsz = QComboBox(self)
        self.imgsz.setEditable(True)
        self.imgsz.addItems([str(v) for v in IMGSZ_CHOICES])
        self.imgsz.setToolTip("Model input side in pixels (a multiple of 32): larger sees small grains better, "
                              "trains slower")
        self.data_note = QLabel(self)
        self.data_note.setWordWrap(True)
        # room for what the run reads, learns and Auto's choice: a wrapped label in the grid
        # got one line's height and its lines were drawn over each other (issue 28 screenshots)
        self.data_note.setMinimumHeight(4 * self.data_note.fontMetrics().lineSpacing())
        self.data_note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.device = QComboBox(self)
        self.device.addItem("Automatic (GPU if there is one)", "auto")
        self.device.addItem("CPU", "cpu")
        self.device.activated.connect(lambda _i: self._refresh_data_note())  # Auto depends on the device
        self.batch = QSpinBox(self)
        self.batch.setRange(1, 256)
        self.batch.setValue(DEFAULT_BATCH)
        self.batch.setToolTip("Images per step: lower it if the GPU runs out of memory")
        self.start_button = QPushButton("Start training", self)
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop after the current batch: no model version is added")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        for col, (label, w) in enumerate((("Train", self.stage), ("Base model", self.base), ("Epochs", self.epochs),
                                          ("Image size", self.imgsz), ("Device", self.device), ("Batch", self.batch))):
            g.addWidget(QLabel(label, self), 0, col)
            g.addWidget(w, 1, col)
        g.setColumnStretch(1, 3)
        g.setColumnStretch(4, 2)
        g.addWidget(self.start_button, 1, 6)
        g.addWidget(self.cancel_button, 1, 7)
        g.addWidget(self.data_note, 2, 0, 1, 8)

        self._build_continuous(g)

        self.progress = QProgressBar(self)
        self.progress.setFormat("%p %")
        self.time_label = QLabel(self)
        self.phase_label = QLabel(self)
        self.phase_label.setWordWrap(True)
        # Showing the bar or a longer phase text must not reflow the dialog: a reflow resizes
        # the plots, and re-rendering them took 80 ms of the GUI thread as a run started.
        keep = self.progress.sizePolicy()
        keep.setRetainSizeWhenHidden(True)
        self.progress.setSizePolicy(keep)
        self.phase_label.setMinimumHeight(2 * self.phase_label.fontMetrics().lineSpacing())
        status = QHBoxLayout()
        status.addWidget(self.progress, 2)
        status.addWidget(self.time_label, 3)

        self.loss_plot = _plot("Training loss", "loss per image")
        li = self.loss_plot.getPlotItem()
        # a long run has 100,000s of batches: draw only what one pixel column can show
        li.setDownsampling(auto=True, mode="peak")
        li.setClipToView(True)
        li.addLegend(offset=(-10, 10), labelTextColor="#2c3e50", brush=pg.mkBrush(255, 255, 255, 220))
        self.batch_curve = li.plot([], [], pen=pg.mkPen(CURVE_COLOURS["batch"], width=1), name="each batch")
        self.loss_curve = li.plot([], [], pen=pg.mkPen(CURVE_COLOURS["loss"], width=2.5), symbol="o", symbolSize=7,
                                  symbolBrush=CURVE_COLOURS["loss"], symbolPen=None, name="epoch mean")
        self.map_plot = _plot("Validation mAP (held-out reviewed images)", "mAP")
        mi = self.map_plot.getPlotItem()
        # two columns: a low, wide legend sits in the empty band below the curves
        mi.addLegend(offset=(-10, -10), labelTextColor="#2c3e50", brush=pg.mkBrush(255, 255, 255, 220), colCount=2)
        self.map50_curve = mi.plot([], [], pen=pg.mkPen(CURVE_COLOURS["map50"], width=2.5), symbol="o", symbolSize=7,
                                   symbolBrush=CURVE_COLOURS["map50"], symbolPen=None, name="mAP@.5")
        self.map5095_curve = mi.plot([], [], pen=pg.mkPen(CURVE_COLOURS["map50_95"], width=2.5), symbol="s",
                                     symbolSize=7, symbolBrush=CURVE_COLOURS["map50_95"], symbolPen=None,
                                     name="mAP@.5:.95")
        # where the model in use stands on the same images, drawn once the run has scored it;
        # named in the legend (a label on the line hid the curve wherever the two met)
        ref_pen = pg.mkPen(CURVE_COLOURS["map50"], width=1.5, style=Qt.PenStyle.DashLine)
        self.reference_line = pg.InfiniteLine(angle=0, movable=False, pen=ref_pen)
        self.reference_line.hide()
        mi.addItem(self.reference_line, ignoreBounds=True)
        self.reference_key = pg.PlotDataItem([], [], pen=ref_pen)  # its legend entry only
        mi.setYRange(0.0, 1.1, padding=0.0)
        mi.setXRange(0, 1, padding=0.02)
        li.setXRange(0, 1, padding=0.02)
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot, 1)
        plots.addWidget(self.map_plot, 1)

        result = QGroupBox("Result: new version next to the active model, same validation images", self)
        rl = QVBoxLayout(result)
        self.result_label = QLabel("Train a model to compare it with the active one here.", self)
        self.result_label.setWordWrap(True)
        self.summary = _table(["", "active", "new", "change"])
        self.summary.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        # the two models' columns share the width; a long version name is elided (full name
        # in the header's tooltip) instead of pushing the figures out of sight behind a scrollbar
        sh = self.summary.horizontalHeader()
        sh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        for col in (1, 2):
            sh.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
        sh.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.summary.setRowCount(4)
        self.summary.setFixedHeight(self.summary.horizontalHeader().sizeHint().height()
                                    + 4 * self.summary.verticalHeader().defaultSectionSize() + 4)
        self.summary.setRowCount(0)
        self.taxa_table = _table(["taxon", "grains", "AP50 active", "AP50 new", "change"])
        self.taxa_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.use_button = QPushButton("Use this model", self)
        self.use_button.setToolTip("Make the new version active: detection uses it from now on")
        self.use_button.clicked.connect(self.use_new_model)
        rl.addWidget(self.result_label)
        rl.addWidget(self.summary)
        rl.addWidget(QLabel("AP50 per taxon", self))
        rl.addWidget(self.taxa_table, 1)
        rl.addWidget(self.use_button, 0, Qt.AlignmentFlag.AlignRight)

        versions = QGroupBox("Model versions of this project", self)
        vl = QVBoxLayout(versions)
        self.versions = _table(["name", "created", "parent", "mAP@.5", "mAP@.5:.95", "in use", "validated on"])
        self.versions.setToolTip("mAP figures are only comparable on the same validation images: figures measured on "
                                 "other images than the newest version's are greyed. The Result box compares two "
                                 "versions on the same images.")
        self.versions.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.versions.itemSelectionChanged.connect(self._version_selected)
        self.versions.itemDoubleClicked.connect(lambda _it: self.activate_selected())
        self.activate_button = QPushButton("Use selected version", self)
        self.activate_button.setToolTip("Make the selected version active again (double-click does the same)")
        self.activate_button.clicked.connect(self.activate_selected)
        self.rename_button = QPushButton("Rename...", self)
        self.rename_button.setToolTip("Give the selected version a name you will recognise")
        self.rename_button.clicked.connect(self.rename_selected)
        vl.addWidget(self.versions, 1)
        vbuttons = QHBoxLayout()
        window = self.parent()
        if window is not None and hasattr(window, "model_progress"):
            self.progress_button = QPushButton("Model progress...", self)
            self.progress_button.setToolTip("How this project's versions improved with the reviewed grains, and which "
                                            "taxa need more")
            self.progress_button.clicked.connect(window.model_progress)
            vbuttons.addWidget(self.progress_button)
        vbuttons.addStretch(1)
        vbuttons.addWidget(self.rename_button)
        vbuttons.addWidget(self.activate_button)
        vl.addLayout(vbuttons)

        bottom = QHBoxLayout()
        bottom.addWidget(result, 5)
        bottom.addWidget(versions, 6)

        hint = QLabel("Training reads reviewed images only and never changes an annotation. Closing this window "
                      "keeps a run going; Model > Train... shows it again.", self)
        hint.setObjectName("hint")
        hint.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(settings)
        lay.addLayout(status)
        lay.addWidget(self.phase_label)
        lay.addLayout(plots, 5)
        lay.addLayout(bottom, 4)
        lay.addWidget(hint)

    def _build_continuous(self, g: QGridLayout) -> None:
        """The continuous option (gui/continuous.py), when the window has one."""
        from PySide6.QtWidgets import QCheckBox

        self.continuous = getattr(self.ctl, "continuous", None)
        if self.continuous is None:
            return
        row = QHBoxLayout()
        self.continuous_box = QCheckBox("Retrain continuously: after every", self)
        self.continuous_box.setToolTip("Off by default. Fine-tunes the model in use in the background; the new version "
                                       "is used only if it beats the model in use on the same validation images, and "
                                       "the status bar says what happened")
        self.continuous_every = QSpinBox(self)
        self.continuous_every.setRange(1, 10000)
        self.continuous_every.setSuffix(" newly reviewed images")
        self.continuous_state = QLabel(self)
        self.continuous_state.setWordWrap(True)
        row.addWidget(self.continuous_box)
        row.addWidget(self.continuous_every)
        row.addWidget(self.continuous_state, 1)
        g.addLayout(row, 3, 0, 1, 7)
        self.continuous_box.toggled.connect(self.continuous.set_enabled)
        self.continuous_every.valueChanged.connect(self.continuous.set_every)
        self.continuous.stateChanged.connect(self._continuous_state)
        self.continuous.message.connect(lambda _t: self._continuous_state())
        self._continuous_state()

    def _continuous_state(self) -> None:
        c = self.continuous
        if c is None or self.project is None:
            return
        self.continuous_box.blockSignals(True)
        self.continuous_box.setChecked(c.enabled)
        self.continuous_box.blockSignals(False)
        self.continuous_every.blockSignals(True)
        self.continuous_every.setValue(c.every)
        self.continuous_every.blockSignals(False)
        rule = "A new version replaces the model in use only if it is better on the same validation images."
        if c.running():
            text = "Training in the background... " + rule
        elif c.enabled:
            text = f"{c.new_reviewed()} of {c.every} newly reviewed so far. " + rule
        else:
            text = rule
        if c.last:
            text += "\nLast run: " + c.last.removeprefix("Retrained in the background: ")
        self.continuous_state.setText(text)

    # ------------------------------------------------------------------ choices
    def _model_changed(self) -> None:
        if self.project is None:
            return
        self.refresh_versions()
        if not self.running():
            self._fill_bases()  # the base box names the model now in use, not the one before

    def _fill_bases(self) -> None:
        """The base box: the project's versions, the shipped default model (the grain model)
        and a new network; the model in use is chosen (issue 28: a new project, whose model in
        use is the shipped grain model, was offered "From scratch", also after every run)."""
        from pollenstudio.engine.models import DEFAULT_LABEL
        from pollenstudio.engine.paths import default_model_path

        p = self.project
        self.base.clear()
        active = p.active_model_version()
        try:  # the shipped default model (the grain model when installed): what a new project detects with
            path = default_model_path()
        except CheckpointError:
            path = None
        files = {}
        for mv in p.model_versions():
            f = p.model_file(mv)
            if f is None or not f.is_file():
                continue
            files[f.resolve()] = mv.id
            # with no active version the shipped model is in use, also when detection has
            # registered its file as a version (the dashboard offered "From scratch" then)
            in_use = mv.active or (active is None and path is not None and f.resolve() == path.resolve())
            self.base.addItem(mv.name + ("  (in use)" if in_use else ""), mv.id)
        if path is not None and path.resolve() not in files:
            self.base.addItem(f"{DEFAULT_LABEL} ({path.stem})" + ("  (in use)" if active is None else ""), str(path))
        self.base.addItem("From scratch (new HieraEdgeNet-n)", None)
        # the model in use; else (its file is gone) the shipped model; else a new network
        i = self.base.findData(active.id) if active is not None else -1
        if i < 0 and path is not None:
            i = self.base.findData(files.get(path.resolve(), str(path)))
        self.base.setCurrentIndex(i if i >= 0 else self.base.count() - 1)
        if not getattr(self, "_imgsz_chosen", False):
            # the active model's size once, when the dashboard opens; after that the field
            # keeps what the user set (it forgot 160 after each run)
            imgsz = (active.config.get("model", {}).get("imgsz") or active.config.get("imgsz")) if active else None
            self.imgsz.setCurrentText(str(imgsz or 640))
            self._imgsz_chosen = True
        if self._auto_values is None:
            self._auto_values = (self.epochs.value(), self.imgsz.currentText())
        self._refresh_data_note()

    def _refresh_data_note(self) -> None:
        """Which images training reads: say it where the run is started."""
        p = self.project
        if p is None:
            return
        finished, decided = p.reviewed_breakdown()
        n = finished + decided
        note = (f"Training data: {n} reviewed image{'s' if n != 1 else ''} ({finished} marked finished with Enter / 0, "
                f"{decided} with every proposal decided). Images still in review are left out.")
        self.data_note.setText(note)
        if n:  # and what it will learn, once a worker has read the grains
            base = self.base.currentData()
            self.jobs.submit("plan", plan_job, p, None if base is None else str(base), self.device.currentData() or "auto",
                             on_done=lambda plan, note=note: self._plan_ready(plan, note),
                             on_error=lambda msg: log.warning("training plan failed: %s", msg))

    def _plan_ready(self, plan, note: str) -> None:
        """Say what the run will learn and, under Auto, what Auto chose (filling epochs and
        image size unless the user typed their own: those override Auto's)."""
        self._plan = plan
        text = plan.describe()
        r = plan.recipe
        if self.stage.currentData() == "auto" and r is not None:
            if r.trains_detector and (self.epochs.value(), self.imgsz.currentText()) == self._auto_values:
                self.epochs.setValue(r.epochs)
                self.imgsz.setCurrentText(str(r.imgsz))
                self._auto_values = (self.epochs.value(), self.imgsz.currentText())
        elif r is not None:  # an explicit choice: the recipe line would describe another run
            text = text.replace(r.describe(), "").strip() + f" Training: {self.stage.currentText()}."
        self.data_note.setText(f"{note}\n{text}")
        if not self.running():  # epochs and image size mean nothing to a classifier-only run
            stage, _ = self.chosen_stage()
            for w in (self.epochs, self.imgsz):
                w.setEnabled(stage != "classifier")

    def chosen_stage(self) -> tuple[str, object]:
        """(stage, recipe) the Start button runs: Auto's choice, or the one picked."""
        value = self.stage.currentData()
        if value != "auto":
            return value, None
        if self._plan is None or self._plan.recipe is None:
            return "detector", None  # the grains are still being read: today's detector training
        return self._plan.recipe.stage, self._plan.recipe

    def _devices_found(self, gpus: list) -> None:
        for value, label in gpus:
            if self.device.findData(value) < 0:
                self.device.addItem(label, value)

    def request(self) -> TrainRequest:
        """The run the form describes; raises PollenStudioError for a bad image size."""
        text = self.imgsz.currentText().strip()
        if not text.isdigit() or int(text) < 64 or int(text) % 32:
            raise PollenStudioError(f"image size must be a multiple of 32 and at least 64 (got {text or 'nothing'})")
        stage, recipe = self.chosen_stage()
        if stage == "classifier" and self.base.currentData() is None:
            raise PollenStudioError("naming grains needs a detector to find them: choose a base model (the grain model "
                                    "or a version of this project), not \"from scratch\"")
        return TrainRequest(base=self.base.currentData(), epochs=self.epochs.value(), imgsz=int(text),
                            batch=self.batch.value(), device=self.device.currentData(),
                            model_cfg=self.scratch_model_cfg, threads=self.threads, stage=stage, recipe=recipe)

    # ------------------------------------------------------------------ running
    def running(self) -> bool:
        return self.job is not None and not self.job.done

    def start(self) -> bool:
        if self.project is None or self.running():
            return False
        if self.continuous is not None and self.continuous.running():
            self._say("Continuous retraining is training a new version in the background: start this run when it "
                      "has finished (the status bar says when).", error=True)
            return False
        try:
            req = self.request()
        except PollenStudioError as exc:
            self._say(str(exc), error=True)
            return False
        if req.model_cfg is None and req.base is None:
            from pollenstudio.engine.models import scratch_model_config

            req.model_cfg = scratch_model_config(req.imgsz)
        self.feed = TrainFeed()
        self.outcome, self.trained_version = None, None
        self._batch_xy = ([], [])
        self._epoch_rows = []
        self._epochs = req.epochs
        self._t0 = time.monotonic()
        self._first = None
        self._phase = "train" if req.stage != "classifier" else "classify"  # no epochs: images embedded
        for c in (self.batch_curve, self.loss_curve, self.map50_curve, self.map5095_curve):
            c.setData([], [])
        for p in (self.loss_plot, self.map_plot):
            p.getPlotItem().setXRange(0, req.epochs, padding=0.02)
        self.reference_line.hide()
        self.map_plot.getPlotItem().legend.removeItem(self.reference_key)
        self._clear_result()
        self.progress.setRange(0, 0)
        self.time_label.setText("starting...")
        self._say("Reading the reviewed images and preparing the model...")
        self.job = self.jobs.submit("train", train_job, self.project, req, self.feed, on_done=self._finished,
                                    on_error=self._failed, on_progress=self._progress)
        self.job.signals.cancelled.connect(self._cancelled)
        self._set_running(True)
        self._poll.start()
        return True

    def cancel(self) -> None:
        if self.running():
            self.job.token.cancel()
            self.cancel_button.setEnabled(False)
            self._say("Cancelling: the run stops after the current batch...")

    def shutdown(self) -> None:
        """The project is closing: stop a run and wait for its last write (the run record)
        before the database closes under it."""
        if self.running():
            self.jobs.cancel("train")
            if TRAIN_SERIAL.acquire(timeout=CLOSE_WAIT_S):
                TRAIN_SERIAL.release()
            else:
                log.warning("training did not stop within %.0f s of the project closing", CLOSE_WAIT_S)
        self._poll.stop()

    def _project_changed(self) -> None:
        if self.ctl.project is not self.project:
            self.project = None
            self.hide()
            self.deleteLater()

    def _set_running(self, on: bool) -> None:
        for w in (self.stage, self.base, self.epochs, self.imgsz, self.device, self.batch, self.start_button):
            w.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        self.progress.setVisible(on or self.progress.value() > 0)

    def _progress(self, done: int, total: int, msg: str) -> None:
        if total <= 0:
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        if self._phase != "train":
            self.time_label.setText(f"{msg.rsplit('/', 1)[-1]}  ·  image {done} / {total}")
            return
        now = time.monotonic()
        if self._first is None:
            self._first = (now, done)
        t1, d1 = self._first
        rate = (done - d1) / (now - t1) if now > t1 and done > d1 else 0.0
        epoch = min(self._epochs, max(1, -(-done * self._epochs // total)))
        text = f"epoch {epoch} / {self._epochs}  ·  {format_duration(now - self._t0)} elapsed"
        if rate > 0:
            from pollenstudio.gui.model_jobs import format_eta

            text += f"  ·  about {format_eta((total - done) / rate)}"
        self.time_label.setText(text)

    def _drain(self) -> None:
        events = self.feed.drain()
        if not events:
            return
        bx, by = self._batch_xy
        curves = False
        for ev in events:
            kind = ev[0]
            if kind == "batch":
                bx.append(ev[1])
                by.append(ev[2])
            elif kind == "epoch":
                _, epoch, loss, m50, m5095 = ev
                if not self._epoch_rows:
                    # a full garbage collection holds the GIL while it walks every object
                    # (350-500 ms stalls during runs, bench/ui_stall_model.py): what the first
                    # epoch's validation imported and built is taken out of those walks, as
                    # train_job's burst did for the model and the first batch
                    gcguard.freeze()
                self._epoch_rows.append((epoch + 1, loss, m50, m5095))
                curves = True
            elif kind == "phase":
                self._say(ev[1])
            elif kind == "trained":
                self.trained_version = ev[1]
                self._phase = "compare"
                self.progress.setRange(0, 0)
            elif kind == "outcome":
                self.outcome = ev[1]
        self.batch_curve.setData(bx, by)
        if curves:
            rows = self._epoch_rows
            self.loss_curve.setData([r[0] for r in rows], [r[1] for r in rows])
            scored = [r for r in rows if r[2] is not None]
            self.map50_curve.setData([r[0] for r in scored], [r[2] for r in scored])
            self.map5095_curve.setData([r[0] for r in scored], [r[3] for r in scored])
            top = max([r[2] for r in scored] + [0.0])
            # a fixed 0..1 scale would flatten early epochs; never zoom in past 0..0.2
            self.map_plot.getPlotItem().setYRange(0.0, min(1.1, max(0.2, top * 1.15)), padding=0.02)

    def _finished(self, outcome: TrainOutcome) -> None:
        if self.project is None:  # the project closed under the run
            return
        self._drain()
        self._end()
        self.outcome = outcome
        self.show_outcome(outcome)

    def _cancelled(self) -> None:
        if self.project is None:  # the project closed under the run
            return
        self._drain()
        self._end()
        if self.outcome is not None:  # cancelled while scoring the old model: the version is there
            self.show_outcome(self.outcome)
            return
        if self.trained_version is not None:
            self._say("The new version was registered; the comparison with the active model was cancelled.")
            self.refresh_versions()
            return
        n = len(self._epoch_rows)
        self._say(f"Training cancelled after {n} finished epoch{'s' if n != 1 else ''}. No model version was "
                  "added; the project is unchanged (the run is recorded as cancelled).")

    def _failed(self, msg: str) -> None:
        if self.project is None:  # the project closed under the run
            return
        self._drain()
        self._end()
        self._say(f"Training failed: {msg}", error=True)

    def _end(self) -> None:
        self._poll.stop()
        n = len(self._epoch_rows)
        took = format_duration(time.monotonic() - self._t0)
        if self._phase == "classify" or (self.outcome is not None and self.outcome.epochs_run == 0 and not n):
            self.time_label.setText(f"taxon classifier fitted in {took}")
        else:
            self.time_label.setText(f"{n} epoch{'s' if n != 1 else ''} in {took}")
        self._set_running(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.outcome is not None else 0)
        self.progress.hide()
        self._phase = ""
        self._fill_bases()

    def _say(self, text: str, error: bool = False) -> None:
        self.phase_label.setStyleSheet(f"color: {LOSS}" if error else "")
        self.phase_label.setText(text)

    # ------------------------------------------------------------------ results
    def _clear_result(self) -> None:
        self.summary.setRowCount(0)
        self.taxa_table.setRowCount(0)
        self.use_button.setEnabled(False)
        self.use_button.setText("Use this model")
        self.result_label.setText("Results appear here when the run finishes.")

    def show_outcome(self, o: TrainOutcome) -> None:
        new, old = o.metrics or {}, o.reference_metrics
        epochs = plural(o.epochs_run, "epoch") + (f" (best {o.best_epoch + 1})" if o.best_epoch >= 0 else "")
        if o.epochs_run == 0:
            epochs = "a taxon classifier on the detector's grains"
        words = (f"New version <b>{o.name}</b>: {epochs} on {plural(o.n_train, 'image')} in {format_duration(o.seconds)}; "
                 f"scored on {o.n_val} held-out validation image{'s' if o.n_val != 1 else ''}")
        if new.get("n_truth") is not None:
            words += f" ({plural(new['n_truth'], 'grain')})"
        words += "."
        if o.note:
            words += " " + o.note
        self.result_label.setText(words)
        if o.too_few:  # a figure on one image or a handful of grains means nothing: said instead
            self.summary.setRowCount(0)
            self.taxa_table.setRowCount(0)
            self.reference_line.hide()
            self._say(f"Done: {o.name} is registered. It cannot be scored yet: {o.too_few}.")
            self._update_use_button()
            self.refresh_versions()
            return
        self._say(f"Done: {o.name} is registered. " + ("Compare, then press \"Use this model\" to detect with it."
                                                        if o.version_id is not None else ""))
        old_name = o.reference_name or "active"
        self.summary.setHorizontalHeaderLabels(["", f"active: {old_name}", f"new: {o.name}", "change"])
        for col in (1, 2):
            self.summary.horizontalHeaderItem(col).setToolTip(self.summary.horizontalHeaderItem(col).text())
        rows = (("mAP@.5", "map50"), ("mAP@.5:.95", "map50_95"), ("precision", "precision"), ("recall", "recall"))
        if o.class_agnostic:  # the model in use names no taxon here: both compared on finding grains
            new = o.finding or {}
            rows = tuple((f"finding {label}", key) for label, key in rows)
            self.summary.setToolTip("Class-agnostic (finding only): every grain one class, taxa not scored, "
                                    f"because {old_name} names none of this project's taxa")
        else:
            self.summary.setToolTip("")
        self.summary.setRowCount(len(rows))
        for r, (label, key) in enumerate(rows):
            a = None if old is None else old.get(key)
            b = new.get(key)
            self.summary.setItem(r, 0, _item(label, Qt.AlignmentFlag.AlignLeft))
            self.summary.setItem(r, 1, _item(_fmt(a)))
            self.summary.setItem(r, 2, _item(_fmt(b), bold=True))
            self.summary.setItem(r, 3, _delta_item(None if a is None or b is None else b - a))
        if old is not None and old.get("map50") is not None and not o.class_agnostic:  # finding only: not on this scale
            self.reference_line.setValue(old["map50"])
            self.reference_line.show()
            legend = self.map_plot.getPlotItem().legend
            legend.removeItem(self.reference_key)
            legend.addItem(self.reference_key, f"{old_name} (in use): mAP@.5 {old['map50']:.3f}")
            top = max(old["map50"], *[r[2] for r in self._epoch_rows if r[2] is not None], 0.0)
            self.map_plot.getPlotItem().setYRange(0.0, min(1.1, max(0.2, top * 1.15)), padding=0.02)
        from pollenstudio.engine.compare import taxon_changes

        changes = taxon_changes(None if o.class_agnostic else old, o.metrics or {})
        self.taxa_table.setRowCount(len(changes))
        for r, c in enumerate(changes):
            self.taxa_table.setItem(r, 0, _item(display_taxon(c.name), Qt.AlignmentFlag.AlignLeft))
            self.taxa_table.setItem(r, 1, _item(str(c.grains)))
            self.taxa_table.setItem(r, 2, _item(_fmt(c.old)))
            self.taxa_table.setItem(r, 3, _item(_fmt(c.new)))
            self.taxa_table.setItem(r, 4, _delta_item(c.delta))
        self._update_use_button()
        self.refresh_versions()

    def _update_use_button(self) -> None:
        o = self.outcome
        p = self.project
        if o is None or p is None:
            self.use_button.setEnabled(False)
            return
        active = p.active_model_version()
        in_use = active is not None and active.id == o.version_id
        self.use_button.setEnabled(not in_use)
        self.use_button.setText(f"{o.name} is in use" if in_use else "Use this model")

    def use_new_model(self) -> bool:
        if self.outcome is None:
            return False
        return self.ctl.activate_model_version(self.outcome.version_id)

    # ------------------------------------------------------------------ versions
    def refresh_versions(self) -> None:
        p = self.project
        if p is None:
            return
        versions = p.model_versions()
        from pollenstudio.engine.evaluate import too_few_to_score

        names = {mv.id: mv.name for mv in versions}
        keep = self.selected_version()
        t = self.versions
        t.setRowCount(len(versions))
        # figures are comparable only on the same validation images: those of the newest
        # version trained here are the yardstick, the others say where theirs come from
        ref_val = next((tuple(mv.summary.get("val_image_ids") or ()) for mv in reversed(versions)
                        if mv.summary.get("val_image_ids")), ())
        for r, mv in enumerate(reversed(versions)):  # newest first
            m = mv.metrics or {}
            created = datetime.fromtimestamp(mv.created).strftime("%Y-%m-%d %H:%M") if mv.created else "-"
            name = _item(mv.name, Qt.AlignmentFlag.AlignLeft, bold=mv.active)
            name.setData(Qt.ItemDataRole.UserRole, mv.id)
            f = p.model_file(mv)
            if f is None or not f.is_file():
                name.setToolTip(f"weights file missing: {mv.file}")
                name.setForeground(QBrush(QColor(NEUTRAL)))
            val = tuple(mv.summary.get("val_image_ids") or ())
            has_figures = m.get("map50") is not None or m.get("map50_95") is not None
            if val:
                where = (f"{len(val)} image{'s' if len(val) != 1 else ''} of this project"
                         + ("" if val == ref_val else " (other images)"))
            elif has_figures:
                where = "other images (model card)"
            else:
                where = "-"
            comparable = bool(val) and val == ref_val
            t.setItem(r, 0, name)
            t.setItem(r, 1, _item(created, Qt.AlignmentFlag.AlignLeft))
            t.setItem(r, 2, _item(names.get(mv.parent_id, "-") if mv.parent_id else "-", Qt.AlignmentFlag.AlignLeft))
            few = too_few_to_score(m)
            for col, key in ((3, "map50"), (4, "map50_95")):
                it = _item("-" if few else _fmt(m.get(key)), colour=None if comparable or not has_figures else NEUTRAL)
                if few:
                    it.setToolTip(few[0].upper() + few[1:])
                elif has_figures and not comparable:
                    it.setToolTip("Measured on other validation images: not comparable with the figures above")
                t.setItem(r, col, it)
            t.setItem(r, 5, _item("● in use" if mv.active else "", Qt.AlignmentFlag.AlignLeft, colour=GAIN, bold=True))
            t.setItem(r, 6, _item(where, Qt.AlignmentFlag.AlignLeft, colour=None if comparable else NEUTRAL))
            if mv.id == keep:
                t.selectRow(r)
        self._version_selected()
        self._update_use_button()
        self._refresh_data_note()

    def rename_selected(self) -> bool:
        from PySide6.QtWidgets import QInputDialog

        mv_id = self.selected_version()
        if mv_id is None or self.project is None:
            return False
        old = self.project.model_version(mv_id).name
        name, ok = QInputDialog.getText(self, "Rename model version", "Name:", text=old)
        return ok and self.rename_version(mv_id, name)

    def rename_version(self, mv_id: int, name: str) -> bool:
        try:
            self.project.rename_model_version(mv_id, name.strip())
        except PollenStudioError as exc:
            self._say(str(exc), error=True)
            return False
        self.refresh_versions()
        self._fill_bases()
        self.ctl.modelChanged.emit()
        return True

    def selected_version(self) -> int | None:
        rows = self.versions.selectionModel().selectedRows() if self.versions.selectionModel() else []
        if not rows:
            return None
        it = self.versions.item(rows[0].row(), 0)
        return None if it is None else it.data(Qt.ItemDataRole.UserRole)

    def select_version(self, mv_id: int) -> None:
        for r in range(self.versions.rowCount()):
            if self.versions.item(r, 0).data(Qt.ItemDataRole.UserRole) == mv_id:
                self.versions.selectRow(r)
                return

    def _version_selected(self) -> None:
        mv_id = self.selected_version()
        active = self.project.active_model_version() if self.project is not None else None
        self.activate_button.setEnabled(mv_id is not None and (active is None or active.id != mv_id))

    def activate_selected(self) -> bool:
        mv_id = self.selected_version()
        return mv_id is not None and self.ctl.activate_model_version(mv_id)
