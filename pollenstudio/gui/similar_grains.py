"""The review panel's reference strip: the project's reviewed grains most like the selected one.

A palynologist checks a name against their own reference grains. When the model in use names
grains with a taxon classifier that keeps its reviewed grains (issue 27), selecting a box
shows the most similar of them (crop, taxon, similarity) under the top-k list; a click
selects that grain on its image. 1-9 still relabels the selected box.

Work happens off the GUI thread in two jobs: (1) embed the selected grain and find its
nearest reviewed grains (``TaxonClassifier.nearest``); (2) read their crops. The GUI thread
only reads annotation rows (one SQL query) between them.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QToolButton, QVBoxLayout, QWidget

from pollenstudio.core.types import display_taxon
from pollenstudio.gui.workers import JobRunner

STRIP_N = 6  # reference grains shown
_RUNNING: set = set()
THUMB = 64  # px


@dataclass
class Similar:
    ann_id: int
    image_id: int
    taxon: str
    similarity: float
    path: str
    box: tuple[float, float, float, float]
    crop: object = None  # (h, w, 3) uint8, read by the second job


_CLASSIFIERS: dict = {}


def nearest_job(token, model_key, model_path: str, path: str, box, k: int):
    """(annotation id, taxon, similarity) of the ``k`` reviewed grains most like the grain in
    ``box`` on ``path``; None when the model in use has no taxon classifier on an embedding
    network that keeps them. Touches no project: only the model file and the image."""
    import numpy as np

    from pollenstudio.engine.classify import embed, load_classifier
    from pollenstudio.gui.gallery import _open_pixels

    if model_key not in _CLASSIFIERS:
        _CLASSIFIERS.clear()
        _CLASSIFIERS[model_key] = load_classifier(model_path)
    clf = _CLASSIFIERS[model_key]
    if (clf is None or clf.spec.network is None or not len(clf.exemplars)
            or not (clf.exemplar_ids >= 0).any()):
        return None
    token.check()
    img = _open_pixels(path)  # read by region: embed reads the crop around the box only
    E = embed(None, img, np.array([box], np.float64), clf.spec)
    token.check()
    return [n for n in clf.nearest(E, k + 1)[0] if n[0] >= 0]


def crops_job(token, items: list[Similar]):
    from pollenstudio.gui.gallery import GrainRow, _open_pixels, make_crop

    cache = {}
    for it in items:
        token.check()
        if it.path not in cache:
            cache[it.path] = _open_pixels(it.path)
        it.crop = make_crop(cache[it.path], GrainRow(it.ann_id, it.image_id, it.box, 0, None, ""))
    return items


class SimilarGrains(QObject):
    """Finds the reference grains of the selected box (two jobs, newest request wins)."""

    ready = Signal()  # ``items`` holds the answer for ``ann_id``
    activated = Signal(int, int)  # image id, annotation id

    def __init__(self, model_controller, parent: QObject | None = None):
        super().__init__(parent)
        self.mc = model_controller
        self.jobs = JobRunner(self)
        model_controller.projectClosing.connect(self._closing)
        self.ann_id: int | None = None
        self.items: list[Similar] = []
        self.note = ""

    def _closing(self) -> None:
        self.jobs.cancel_all()
        self.ann_id, self.items, self.note = None, [], ""

    def request(self, ann) -> None:
        """Look up the reference grains of annotation ``ann`` (None clears)."""
        p = self.mc.project
        if ann is None or p is None:
            self.ann_id, self.items, self.note = None, [], ""
            self.jobs.cancel_all()
            self.ready.emit()
            return
        if ann.id == self.ann_id:
            return
        self.ann_id, self.items = ann.id, []
        self.ready.emit()
        from pollenstudio.core.errors import CheckpointError, ProjectError
        from pollenstudio.engine.models import resolve_model

        try:
            resolved = resolve_model(p)  # the model in use (one query; its file is read in the job)
        except (CheckpointError, ProjectError):
            self.items, self.note = [], ""
            self.ready.emit()
            return
        path = str(p.image_path(p.image(ann.image_id)))
        box = (ann.box.x1, ann.box.y1, ann.box.x2, ann.box.y2)
        want = ann.id
        self._keep(self.jobs.submit("nearest", nearest_job, resolved.key, str(resolved.path), path, box, STRIP_N,
                                    on_done=lambda res: self._nearest_done(want, res),
                                    on_error=lambda msg: self._failed(want, msg)))

    @staticmethod
    def _keep(job) -> None:
        """A job outlives this object (its window may close while it runs): keep it, and so its
        signals, until it has ended."""
        _RUNNING.add(job)
        for sig in (job.signals.finished, job.signals.failed, job.signals.cancelled):
            sig.connect(lambda *_, job=job: _RUNNING.discard(job))

    def _failed(self, want: int, msg: str) -> None:
        if want == self.ann_id:
            self.note = f"no reference grains: {msg.splitlines()[0][:120] if msg else 'failed'}"
            self.ready.emit()

    def _nearest_done(self, want: int, found) -> None:
        p = self.mc.project
        if want != self.ann_id or p is None:
            return
        if found is None:  # a plain detector: no strip at all
            self.items, self.note = [], ""
            self.ready.emit()
            return
        items = []
        for aid, taxon, sim in found:
            if aid == want:
                continue
            try:
                a = p.annotation(aid)
                rec = p.image(a.image_id)
            except Exception:  # removed since the classifier was fitted
                continue
            items.append(Similar(aid, a.image_id, taxon, sim, str(p.image_path(rec)), (a.box.x1, a.box.y1, a.box.x2, a.box.y2)))
            if len(items) == STRIP_N:
                break
        if not items:
            self.note = "no reviewed grain left to compare with"
            self.ready.emit()
            return
        self._keep(self.jobs.submit("crops", crops_job, items, on_done=lambda res: self._crops_done(want, res),
                                    on_error=lambda msg: self._failed(want, msg)))

    def _crops_done(self, want: int, items) -> None:
        if want != self.ann_id:
            return
        self.items, self.note = list(items), ""
        self.ready.emit()


class SimilarStrip(QWidget):
    """A row of reference-grain thumbnails with taxon and similarity; click selects one."""

    activated = Signal(int, int)  # image id, annotation id

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel("Most similar reviewed grains", self)
        self.title.setStyleSheet("color:#888")
        self.row = QWidget(self)
        self.row_lay = QHBoxLayout(self.row)
        self.row_lay.setContentsMargins(0, 0, 0, 0)
        self.row_lay.setSpacing(4)
        scroll = QScrollArea(self)
        scroll.setWidget(self.row)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setFixedHeight(THUMB + 58)  # thumbnail, two caption lines, a scroll bar
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.scroll = scroll
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.addWidget(self.title)
        lay.addWidget(scroll)
        self.buttons: list[QToolButton] = []
        self.set_items([], "")

    def set_items(self, items: list[Similar], note: str) -> None:
        from pollenstudio.gui.gallery import _to_qimage

        for b in self.buttons:
            b.deleteLater()
        self.buttons = []
        while self.row_lay.count():
            self.row_lay.takeAt(0)
        self.title.setText("Most similar reviewed grains" + (f": {note}" if note else ""))
        self.title.setVisible(bool(items or note))
        for it in items:
            b = QToolButton(self.row)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keys stay with the review
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            if it.crop is not None:
                pm = QPixmap.fromImage(_to_qimage(it.crop)).scaled(
                    THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
                b.setIcon(pm)
                b.setIconSize(pm.size())
            name = display_taxon(it.taxon)
            b.setText(f"{name[:11]}\n{it.similarity:.2f}")
            b.setToolTip(f"{name}: similarity {it.similarity:.2f} (reviewed grain {it.ann_id}; click to show it)")
            b.clicked.connect(lambda _=False, it=it: self.activated.emit(it.image_id, it.ann_id))
            self.row_lay.addWidget(b)
            self.buttons.append(b)
        self.row_lay.addStretch(1)
        self.scroll.setVisible(bool(items))
