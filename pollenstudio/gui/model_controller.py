"""Model controller: which model the project uses, detection, and explanations.

The window owns it next to the review controller. It reads the open project, the image on
screen and the selection from the review controller and never edits annotations itself:
detection writes proposals through the store, whose change events reach the views through
the review controller like any other edit.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.words import plural
from pollenstudio.gui.workers import JobRunner


class ModelController(QObject):
    # the project's lifecycle, forwarded from the review controller (training dashboard)
    projectChanged = Signal()
    projectClosing = Signal()
    message = Signal(str)  # status-bar note
    errorRaised = Signal(str, str)  # title, message: shown in a dialog
    detectStarted = Signal(int)  # images to detect
    detectProgress = Signal(int, int, str)  # images done, total, last image name
    detectEnded = Signal(str)  # what happened, in words ("" never)
    detectSummary = Signal(object)  # the finished detection's engine.detect_job.DetectSummary
    modelChanged = Signal()  # active model version or device description changed
    explanationReady = Signal(object)  # model_jobs.Explanation for the current image
    explanationFailed = Signal(str)

    def __init__(self, review, parent: QObject | None = None):
        super().__init__(parent)
        self.review = review  # ReviewController: project, image on screen, selection
        self.jobs = JobRunner(self)
        from pollenstudio.gui.model_jobs import PredictorCache

        self.predictors = PredictorCache()
        self.device_text = ""  # "CPU, 2 threads" once known (found in a worker: torch import)
        self.detect_batch: int | None = None  # None: the predictor's default
        # a second pass on the horizontally flipped image: "review this next" then weighs how
        # much the two passes disagree. Detection then takes about 2.3x as long on a CPU (bench/flip_pass_cost.py),
        # so None (default) runs it only on a GPU; True / False: always / never (Model menu)
        self.flip_pass: bool | None = None
        review.projectClosing.connect(self.projectClosing.emit)  # e.g. a training run records itself first
        review.projectClosing.connect(self._project_closing)
        review.projectChanged.connect(self._project_changed)
        review.storeChanged.connect(self._store_changed)

    @property
    def project(self):
        return self.review.project

    # ------------------------------------------------------------------ project lifecycle
    def _project_changed(self) -> None:
        self.predictors.clear()
        self.projectChanged.emit()
        self.modelChanged.emit()

    def _project_closing(self) -> None:
        detecting = self.jobs.busy("detect")
        self.jobs.cancel_all()
        if detecting:
            # a cancelled detection stops within one batch: let it finish its last write
            # (and record the run as cancelled) before the database is closed under it
            from pollenstudio.gui.model_jobs import DETECT_SERIAL

            if DETECT_SERIAL.acquire(timeout=10.0):
                DETECT_SERIAL.release()

    def _store_changed(self, ev) -> None:
        if ev.kind == "model_versions":
            self.predictors.clear()
            self.modelChanged.emit()

    # ------------------------------------------------------------------ model choice
    def model_name(self) -> str | None:
        """Name of the active model version (None: no version active)."""
        mv = self.project.active_model_version() if self.project is not None else None
        return None if mv is None else mv.name

    def model_available(self) -> bool:
        """An active model version with weights, or a shipped default model."""
        p = self.project
        if p is None:
            return False
        from pollenstudio.core.errors import CheckpointError
        from pollenstudio.engine.models import resolve_model

        try:
            resolve_model(p)
        except CheckpointError:
            return False
        return True

    def choose_model(self, path: str) -> None:
        """Check a checkpoint file in a worker, then register it as a model version and
        make it active (the next detection uses it)."""
        from pollenstudio.gui.model_jobs import check_checkpoint_job

        if self.project is None:
            return

        def done(result, path=path):
            config, self.device_text = result
            p = self.project
            if p is None:
                return
            try:
                from pollenstudio.core.names import clean_name  # a file name is not refused as a name

                p.add_model_version(clean_name(Path(path).stem, "model"), path, None, config, None, None,
                                    {"registered_by": "gui"}, True)
            except PollenStudioError as exc:
                self.errorRaised.emit("Cannot use this model file", str(exc))
                return
            self.predictors.clear()
            self.message.emit(f"Model {Path(path).stem} is now active")
            self.modelChanged.emit()

        self.jobs.submit("model", check_checkpoint_job, str(path), on_done=done,
                         on_error=lambda msg: self.errorRaised.emit("Cannot use this model file", msg))

    def activate_model_version(self, mv_id: int) -> bool:
        """Make a registered version active (training dashboard, version list): the status
        bar shows it and the next detection loads it. False: refused (said in words)."""
        p = self.project
        if p is None:
            return False
        try:
            mv = p.model_version(mv_id)
            f = p.model_file(mv)
            if f is None or not f.is_file():
                raise PollenStudioError(f"the weights file of model version {mv.name} is missing ({mv.file}); "
                                        "choose another version or a model file")
            p.set_active_model_version(mv_id)
        except PollenStudioError as exc:
            self.errorRaised.emit("Cannot use this model", str(exc))
            return False
        self.predictors.clear()  # the store event clears it too; never detect with the old one
        self.message.emit(f"Model {mv.name} is now active: the next detection uses it")
        self.modelChanged.emit()
        return True

    # ------------------------------------------------------------------ detection
    def detect(self, image_ids: list[int]) -> bool:
        """Detect on ``image_ids`` in a worker; proposals land image by image. A running
        detection is cancelled first (its late results never land). False: nothing started."""
        from pollenstudio.gui.model_jobs import detect_job

        if self.project is None:
            return False
        if not image_ids:
            self.message.emit("No images to detect")
            return False
        if not self.model_available():
            self.errorRaised.emit(
                "No model to detect with",
                "This project has no model yet. Choose a model file (File > Choose model file...) "
                "or train a model on your reviewed images (pollenstudio train PROJECT).",
            )
            return False
        ids = list(image_ids)

        def done(result):
            summary, name, device = result
            self.device_text = device
            self.modelChanged.emit()
            words = (f"Detection done: {summary.proposals} proposal{'s' if summary.proposals != 1 else ''} on "
                     f"{summary.done} image{'s' if summary.done != 1 else ''} with {name}")
            if getattr(summary, "tiles_skipped", 0):
                words += f", {summary.tiles_skipped} of {plural(summary.tiles, 'tile')} skipped as blank"
            if summary.merged:
                words += f" ({summary.merged} duplicate box{'es' if summary.merged != 1 else ''} on the same grains folded)"
            if summary.capped:
                path, kept, dropped = summary.capped[0]
                words += (
                    f"; WARNING: the detection cap was hit on {len(summary.capped)} image(s) "
                    f"({path}: kept {kept}" + (f", dropped {dropped} weaker)" if dropped else ", a tile was full)")
                )
            if summary.failed:
                words += f"; {plural(len(summary.failed), 'image')} could not be read ({summary.failed[0][0]}: {summary.failed[0][1]})"
            if getattr(summary, "size_dropped", 0):
                words += f"; {summary.size_dropped} box(es) far off the calibrated grain size dropped"
            if getattr(summary, "size_warnings", None):
                words += (f"; WARNING: {len(summary.size_warnings)} image(s) look far off their calibrated grain size "
                          f"({summary.size_warnings[0][0]})")
            self.detectSummary.emit(summary)
            self.detectEnded.emit(words)

        def failed(msg):
            self.detectEnded.emit(f"Detection failed: {msg}")
            self.errorRaised.emit("Detection failed", msg)

        self.jobs.submit("detect", detect_job, self.project, self.predictors, ids, self.detect_batch,
                         getattr(self, "stack_mode", None), self.flip_pass,
                         on_done=done, on_error=failed, on_progress=self.detectProgress.emit)
        self.detectStarted.emit(len(ids))
        return True

    def detect_which(self, which: str) -> bool:
        """"image" (the one on screen), "all" or "unreviewed"."""
        from pollenstudio.engine.detect_job import select_images

        if self.project is None:
            return False
        if which == "image":
            iid = self.review.image_id
            return self.detect([iid] if iid is not None else [])
        return self.detect(select_images(self.project, which))

    def detecting(self) -> bool:
        return self.jobs.busy("detect")

    def cancel_detection(self) -> None:
        if self.jobs.busy("detect"):
            self.jobs.cancel("detect")
            self.detectEnded.emit("Detection cancelled: images finished before the cancel keep their proposals")

    # ------------------------------------------------------------------ explanations
    def find_box_at(self, x: float, y: float, on_result) -> bool:
        """B + click without a stored proposal there: the model's candidate at the click,
        else the grain's outline, in a worker; ``on_result((Box, how) or None)``."""
        from pollenstudio.gui import model_jobs

        p, rec = self.project, self.review.image_record
        if p is None or rec is None:
            return False
        self.jobs.submit("clickbox", model_jobs.click_box_job, p, self.predictors, self._source(rec), x, y,
                         on_done=on_result, on_error=lambda msg: on_result(None))
        return True

    def explain(self, kind: str, level: str = "P3", region=None, max_side: int | None = None) -> bool:
        """Compute an overlay for the current image in a worker: kind "edge" (HEM edge
        map at ``level``; on ``region`` (x0, y0, x1, y1), the part of the image on screen,
        at most ``max_side`` px across) or "gradcam" (the selected box, on a window around
        it). A newer request replaces it."""
        from pollenstudio.gui import model_jobs

        r = self.review
        p = self.project
        if p is None or r.image_record is None:
            return False
        if not self.model_available():
            self.explanationFailed.emit("No model: choose a model file (File > Choose model file...) first")
            return False
        path = self._source(r.image_record)  # focal stacks: the plane (or EDF view) on screen
        view = path[2] if isinstance(path, tuple) else None
        iid = r.image_id
        if kind == "edge":
            args = (model_jobs.edge_job, p, self.predictors, iid, path, level,
                    max_side or model_jobs.EXPLAIN_MAX_SIDE, region)
        else:
            a = r.selected_annotation()
            if a is None:
                self.explanationFailed.emit("Select a box for Grad-CAM")
                return False
            args = (model_jobs.gradcam_job, p, self.predictors, iid, path, a)

        def done(exp):
            exp.plane = view
            if exp.image_id == self.review.image_id and view == self._view():
                self.explanationReady.emit(exp)

        self.jobs.submit("explain", *args, on_done=done, on_error=self.explanationFailed.emit)
        return True

    def _view(self):
        st = getattr(self.review, "stacks", None)
        return st.view if st is not None and st.record is not None else None

    def _source(self, rec):
        from pollenstudio.gui.stack_view import pixel_source

        return pixel_source(self.project, rec, self._view())

    def cancel_explanation(self) -> None:
        self.jobs.cancel("explain")
