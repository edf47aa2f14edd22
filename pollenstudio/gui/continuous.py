"""Continuous retraining (off by default): after every N newly reviewed images, fine-tune the
model in use in the background and switch to the new version only if it beats the model in
use on the same validation images.

The run is the training dashboard's own job (:func:`pollenstudio.gui.training.train_job`, on
a one-thread pool of its own, serialised with the dashboard's runs by ``TRAIN_SERIAL``),
followed by :func:`pollenstudio.engine.compare.gate_candidate`, which scores both models with
one evaluation on the identical list of validation images. Activation happens on the GUI
thread through the model controller, like "Use this model". Whatever happens is said in the
status bar (:attr:`ContinuousRetrainer.message`).

The count of reviewed images at the last run is kept in the project (meta key
:data:`META_KEY`), so "N newly reviewed" survives closing the project.
"""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal

from pollenstudio.core.types import ReviewStatus
from pollenstudio.gui.training import DEFAULT_BATCH, TRAIN_SERIAL, TrainFeed, TrainRequest, train_job
from pollenstudio.gui.workers import JobRunner

log = logging.getLogger(__name__)

META_KEY = "continuous_reviewed_at"  # reviewed images when the last continuous run started
DEFAULT_EVERY = 10  # newly reviewed images between runs
DEFAULT_EPOCHS = 10  # a fine-tune on a few more images; the dashboard's Auto recipe may replace this
CHECK_PAUSE_MS = 1500  # the reviewed-image count is read once the reviewer pauses
CONTINUOUS_SERIAL = threading.Lock()  # held for a whole run (training + gate): closing waits on it


def continuous_job(token, project, request: TrainRequest, gate=None):
    """Worker job: the dashboard's training job, then the gate on the identical validation
    list. Returns (TrainOutcome, GateDecision). ``gate`` (tests) replaces
    ``engine.compare.gate_candidate`` and is called as ``gate(project, version_id, token)``."""
    with CONTINUOUS_SERIAL:
        outcome = train_job(token, project, request, TrainFeed())
        token.check()
        if gate is None:
            from pollenstudio.engine.compare import gate_candidate

            decision = gate_candidate(project, outcome.version_id, device=request.device, batch=request.batch,
                                      progress=token)
        else:
            decision = gate(project, outcome.version_id, token)
    return outcome, decision


class ContinuousRetrainer(QObject):
    """Owned by the main window; the training dashboard and the Model menu switch it."""

    message = Signal(str)  # status-bar note
    stateChanged = Signal()  # enabled / every / running changed
    decided = Signal(object)  # GateDecision of a finished run

    def __init__(self, models, settings, parent: QObject | None = None):
        super().__init__(parent)
        self.models = models  # ModelController: project, activation
        self.settings = settings
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.jobs = JobRunner(self, pool=self.pool)
        self.job = None
        self.gate = None  # tests: a replacement for engine.compare.gate_candidate
        self.last: str = ""  # what the last run did, in words
        self._check = QTimer(self)
        self._check.setSingleShot(True)
        self._check.setInterval(CHECK_PAUSE_MS)
        self._check.timeout.connect(self.check)
        models.review.storeChanged.connect(self._store_changed)
        models.projectClosing.connect(self.shutdown)
        models.projectChanged.connect(self._project_changed)

    # ------------------------------------------------------------------ settings
    @property
    def enabled(self) -> bool:
        return self.settings.value("continuous/enabled", False, type=bool)

    def set_enabled(self, on: bool) -> None:
        if bool(on) == self.enabled:
            return
        self.settings.setValue("continuous/enabled", bool(on))
        p = self.models.project
        if on and p is not None:
            self._baseline(p)  # count from now, not from the project's first image
            self.message.emit(f"Continuous retraining on: a new version is trained after every {self.every} newly "
                              "reviewed images and used only if it is better")
        elif not on:
            self.message.emit("Continuous retraining off")
        self.stateChanged.emit()

    @property
    def every(self) -> int:
        return max(1, self.settings.value("continuous/every", DEFAULT_EVERY, type=int))

    def set_every(self, n: int) -> None:
        self.settings.setValue("continuous/every", max(1, int(n)))
        self.stateChanged.emit()

    @property
    def epochs(self) -> int:
        return max(1, self.settings.value("continuous/epochs", DEFAULT_EPOCHS, type=int))

    # ------------------------------------------------------------------ counting
    def _baseline(self, p) -> int:
        v = p.get_meta(META_KEY)
        if v is None or not v.isdigit():
            n = p.image_count(ReviewStatus.REVIEWED)
            p.set_meta(META_KEY, str(n))
            return n
        return int(v)

    def new_reviewed(self) -> int:
        """Images reviewed since the last continuous run (or since it was switched on)."""
        p = self.models.project
        if p is None:
            return 0
        return max(0, p.image_count(ReviewStatus.REVIEWED) - self._baseline(p))

    def running(self) -> bool:
        return self.job is not None and self.jobs.busy("continuous")

    def _store_changed(self, ev) -> None:
        if self.enabled and ev.kind not in ("model_versions", "runs"):
            self._check.start()

    def _project_changed(self) -> None:
        if self.models.project is not None and self.enabled:
            self._baseline(self.models.project)
        self.stateChanged.emit()

    def check(self) -> bool:
        """Start a run if on, idle and N images were reviewed since the last. True: started."""
        p = self.models.project
        if p is None or not self.enabled or self.running():
            return False
        if self.new_reviewed() < self.every:
            return False
        if TRAIN_SERIAL.locked():  # the dashboard is training: look again later
            self._check.start()
            return False
        active = p.active_model_version()
        if active is None:
            self.message.emit("Continuous retraining waits for a model in use to fine-tune "
                              "(choose or train one in Model > Train...)")
            return False
        return self.start(active)

    def start(self, active) -> bool:
        p = self.models.project
        imgsz = active.config.get("model", {}).get("imgsz") or active.config.get("imgsz") or 640
        req = TrainRequest(base=active.id, epochs=self.epochs, imgsz=int(imgsz), batch=DEFAULT_BATCH, device="auto")
        n = p.image_count(ReviewStatus.REVIEWED)
        p.set_meta(META_KEY, str(n))
        self.job = self.jobs.submit("continuous", continuous_job, p, req, self.gate,
                                    on_done=self._done, on_error=self._failed)
        self.job.signals.cancelled.connect(lambda: self._say("Continuous retraining cancelled"))
        self._say(f"Retraining in the background on {n} reviewed images (continuous retraining, from {active.name})...")
        self.stateChanged.emit()
        return True

    def _done(self, result) -> None:
        if self.models.project is None:
            return
        outcome, d = result
        # what matters first: the status bar cuts a long note at its right end
        if d.activate and self.models.activate_model_version(d.version_id):
            self._say(f"Retrained in the background: now using the new version, {d.reason} ({d.brief()}): {d.name}")
        else:
            figures = f" ({d.brief()})" if d.candidate is not None else ""
            self._say(f"Retrained in the background: kept {d.reference_name or 'the model in use'}, the new version "
                      f"was not used: {d.reason}{figures}: {d.name}")
        self.decided.emit(d)
        self.stateChanged.emit()
        self._check.start()  # more images may have been reviewed meanwhile

    def _failed(self, msg: str) -> None:
        self._say(f"Retraining in the background failed: {msg}")
        self.stateChanged.emit()

    def _say(self, text: str) -> None:
        self.last = text
        self.message.emit(text)

    def shutdown(self) -> None:
        """The project is closing: stop a run before the store closes under it."""
        self._check.stop()
        if self.running():
            self.jobs.cancel("continuous")
            if CONTINUOUS_SERIAL.acquire(timeout=60.0):
                CONTINUOUS_SERIAL.release()
            else:
                log.warning("continuous retraining did not stop within 60 s of the project closing")
        self.job = None
