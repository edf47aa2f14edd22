"""Taxon gallery: every grain of a taxon across the project as a grid of crops.

Review > Taxon gallery (Ctrl+G). Filter by status and minimum score, sort by score (least
certain first by default) or by image; select one or many (click, Shift/Ctrl+click,
Ctrl+A, arrows with Shift) and press 1-9 to relabel, A to accept, X / Delete to reject
(one undo step for the whole selection); Enter or a double-click opens the grain on its
image in the main window. Edits go through the review controller like every other edit.
Escape, the window's close button and Alt+F4 close the gallery and change nothing; it is a
window of its own (minimised without the main window).

Crops are cut in one background job, several per image decode, newest request first, and
kept on disk under ``<project>/cache/crops`` (keyed by annotation and box, so a moved box
gets a new crop): a gallery of 10,000 grains scrolls on cached files after the first pass.
Rows are paged into the view 500 at a time; the view lays them out in batches.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.types import OBJECT_STATUSES, AnnotationStatus, display_taxon
from pollenstudio.gui.workers import JobRunner, NewestFirstLoader

log = logging.getLogger(__name__)

CROP_PX = 96  # longer side of a crop on disk and on screen
CELL = QSize(CROP_PX + 12, CROP_PX + 26)
PAGE = 500
MARGIN = 0.15  # share of the box side shown around it
AnnIdRole = Qt.ItemDataRole.UserRole + 1

STATUS_FILTERS = {
    "All but rejected": [s for s in AnnotationStatus if s is not AnnotationStatus.REJECTED],
    "To review": [AnnotationStatus.PROPOSED],
    "Confirmed": sorted(OBJECT_STATUSES, key=list(AnnotationStatus).index),
    "Rejected": [AnnotationStatus.REJECTED],
    "All": list(AnnotationStatus),
}
SORTS = {"Least certain first": "score", "Most certain first": "-score", "By image": "image"}
STATUS_COLOURS = {"proposed": "#e6a23c", "accepted": "#3cb44b", "edited": "#3cb44b", "added": "#3cb44b",
                  "rejected": "#e53935"}


@dataclass(frozen=True)
class GrainRow:
    ann_id: int
    image_id: int
    box: tuple[float, float, float, float]
    category_id: int
    score: float | None
    status: str


@dataclass
class GalleryRead:
    rows: list[GrainRow]
    paths: dict[int, str]  # image id -> file path, for the images of ``rows``
    confirmed: int
    undecided: int
    rejected: int


def gallery_job(token, db_path: str, folder: str, category_id, statuses, min_score: float, order: str) -> GalleryRead:
    """Worker job: the gallery's rows (a taxon of 50,000 grains is ~0.2 s of reading and
    building rows: never on the GUI thread)."""
    import os

    from pollenstudio.gui.store_reads import reader

    with reader(db_path, folder) as p:
        raw = p.grain_rows(category_id, statuses, min_score, order)
        token.check()
        rows = [GrainRow(r[0], r[1], (r[2], r[3], r[4], r[5]), r[6], r[7], r[8]) for r in raw]
        token.check()
        c = collections.Counter(r.status for r in rows)
        wanted = {r.image_id for r in rows}
        paths = {}
        for rec in p.images():
            if rec.id in wanted:
                paths[rec.id] = rec.path if os.path.isabs(rec.path) else os.path.join(folder, rec.path)
        return GalleryRead(rows, paths, sum(c[s.value] for s in OBJECT_STATUSES), c["proposed"], c["rejected"])


def crop_cache_dir(project_folder: str | Path) -> Path:
    return Path(project_folder) / "cache" / "crops"


def crop_file(cache: Path, row: GrainRow) -> Path:
    x1, y1, x2, y2 = (int(round(v)) for v in row.box)
    return cache / f"{row.ann_id}_{x1}_{y1}_{x2}_{y2}.jpg"


def _crop_rect(box, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 4.0) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    return a, b, int(min(width, max(a + 1, cx + side / 2))), int(min(height, max(b + 1, cy + side / 2)))


def make_crop(img, row: GrainRow):
    """(h, w, 3) uint8 crop of the grain with a little context, longer side CROP_PX."""
    import cv2
    import numpy as np

    from pollenstudio.core.imageio import to_uint8

    h, w = img.shape[:2]
    a, b, c, d = _crop_rect(row.box, w, h)
    crop = np.asarray(img[b:d, a:c])
    crop = to_uint8(crop) if crop.dtype != np.uint8 else crop
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    crop = np.ascontiguousarray(crop[..., :3])
    s = CROP_PX / max(crop.shape[:2])
    size = (max(1, int(round(crop.shape[1] * s))), max(1, int(round(crop.shape[0] * s))))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def _open_pixels(path: str):
    """The image's pixels for cropping, read by region (``core.slide.SlideArray``): a
    whole-slide scan reads only the tiles under each crop, a focal stack gives crops of its
    middle plane, a small field is decoded once."""
    from pollenstudio.core.slide import slide_pixels

    return slide_pixels(path)


def _to_qimage(rgb) -> QImage:
    h, w = rgb.shape[:2]
    return QImage(rgb.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class CropLoader(NewestFirstLoader):
    """Cuts crops in one background job, newest request first, all queued crops of an image
    from one decode; reads and writes the disk cache. Only the latest MAX_QUEUED requests are
    kept (rows scrolled past ask again when painted again; see :class:`NewestFirstLoader`)."""

    ready = Signal(int, QImage)  # annotation id, crop
    MAX_QUEUED = 400

    def __init__(self, cache: Path, paths, parent: QObject | None = None, pool=None):
        super().__init__(parent, pool)
        self.cache = cache
        self.paths = paths  # image id -> file path (callable)

    def request(self, row: GrainRow) -> None:
        self._enqueue(row.ann_id, row)

    def _emit(self, ann_id: int, img: QImage) -> bool:
        try:
            self.ready.emit(ann_id, img)
            return True
        except RuntimeError:  # the gallery is gone
            return False

    def _drain(self, token) -> None:
        import cv2

        self.cache.mkdir(parents=True, exist_ok=True)
        while True:
            token.check()
            item = self._pop_newest()
            if item is None:
                return
            _, row = item
            f = crop_file(self.cache, row)
            if f.is_file():
                img = QImage(str(f))
                if not img.isNull():
                    if not self._emit(row.ann_id, img):
                        return
                    continue
            # one decode for every queued crop of this image
            with self._lock:
                same = [r for r in self._queue.values() if r.image_id == row.image_id]
                for r in same:
                    del self._queue[r.ann_id]
            try:
                pixels = _open_pixels(self.paths(row.image_id))
            except Exception as exc:
                log.debug("no crops from image %s: %s", row.image_id, exc)
                self.failed.update(r.ann_id for r in [row, *same])
                continue
            for r in [row, *same]:
                if token.cancelled:
                    return
                try:
                    rgb = make_crop(pixels, r)
                    cv2.imwrite(str(crop_file(self.cache, r)), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                except Exception as exc:
                    log.debug("crop %s failed: %s", r.ann_id, exc)
                    self.failed.add(r.ann_id)
                    continue
                if not self._emit(r.ann_id, _to_qimage(rgb)):
                    return


class GalleryModel(QAbstractListModel):
    rowRepaint = Signal(int)

    def __init__(self, loader: CropLoader, parent: QObject | None = None):
        super().__init__(parent)
        self.loader = loader
        self.loader.ready.connect(self._crop_ready)
        self._rows: list[GrainRow] = []
        self._pos: dict[int, int] = {}
        self._loaded = 0
        self._crops: dict[int, QPixmap] = {}

    def set_rows(self, rows: list[GrainRow]) -> None:
        self.beginResetModel()
        self.loader.clear()
        self._rows = list(rows)
        self._pos = {r.ann_id: i for i, r in enumerate(self._rows)}
        self._loaded = min(PAGE, len(self._rows))
        self.endResetModel()

    def update_row(self, row: GrainRow) -> None:
        i = self._pos.get(row.ann_id)
        if i is None:
            return
        if row.box != self._rows[i].box:
            self._crops.pop(row.ann_id, None)
        self._rows[i] = row
        if i < self._loaded:
            self.rowRepaint.emit(i)

    def total(self) -> int:
        return len(self._rows)

    def row_data(self, i: int) -> GrainRow:
        return self._rows[i]

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self._loaded

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and self._loaded < len(self._rows)

    def fetchMore(self, parent=QModelIndex()) -> None:
        n = min(PAGE, len(self._rows) - self._loaded)
        if n <= 0:
            return
        self.beginInsertRows(QModelIndex(), self._loaded, self._loaded + n - 1)
        self._loaded += n
        self.endInsertRows()

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self._loaded:
            return None
        r = self._rows[index.row()]
        if role == AnnIdRole:
            return r.ann_id
        if role == Qt.ItemDataRole.DisplayRole:
            return "drawn" if r.score is None else f"{r.score:.2f}"
        if role == Qt.ItemDataRole.DecorationRole:
            pm = self._crops.get(r.ann_id)
            if pm is None:
                self.loader.request(r)
            return pm
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{r.status}" + ("" if r.score is None else f", score {r.score:.2f}") + " · Enter opens it on its image"
        return None

    def crops_cached(self) -> int:
        return len(self._crops)

    def _crop_ready(self, ann_id: int, img: QImage) -> None:
        self._crops[ann_id] = QPixmap.fromImage(img)
        i = self._pos.get(ann_id)
        if i is not None and i < self._loaded:
            self.rowRepaint.emit(i)


class _Delegate(QStyledItemDelegate):
    """A crop, a status strip (orange: to review, green: confirmed, red: rejected), the score."""

    def __init__(self, model: GalleryModel, parent=None):
        super().__init__(parent)
        self.model = model

    def sizeHint(self, option, index) -> QSize:
        return CELL

    def paint(self, painter: QPainter, option, index) -> None:
        r = self.model.row_data(index.row())
        rect = option.rect
        painter.save()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, option.palette.highlight())
        pm = index.data(Qt.ItemDataRole.DecorationRole)
        area = QRect(rect.x() + 6, rect.y() + 4, CROP_PX, CROP_PX)
        if pm is not None:
            x = area.x() + (CROP_PX - pm.width()) // 2
            y = area.y() + (CROP_PX - pm.height()) // 2
            painter.drawPixmap(x, y, pm)
        else:
            painter.fillRect(area, QColor("#3a3a3a"))
        painter.fillRect(QRect(area.x(), area.bottom() + 2, CROP_PX, 4), QColor(STATUS_COLOURS.get(r.status, "#888")))
        painter.setPen(QPen(option.palette.highlightedText().color() if option.state & QStyle.StateFlag.State_Selected
                            else option.palette.text().color()))
        painter.drawText(QRect(area.x(), area.bottom() + 6, CROP_PX, 16), Qt.AlignmentFlag.AlignCenter,
                         str(index.data(Qt.ItemDataRole.DisplayRole)))
        painter.restore()


class GalleryDialog(QDialog):
    """Non-modal; one per main window. ``ctl`` is the review controller."""

    openRequested = Signal(int, int)  # annotation id, image id

    def __init__(self, ctl, parent: QWidget | None = None):
        super().__init__(parent)
        # a window of its own (minimise / maximise / close), not a dialog box over the main window
        self.setWindowFlags(Qt.WindowType.Window | Qt.WindowType.WindowMinMaxButtonsHint
                            | Qt.WindowType.WindowCloseButtonHint)
        self.ctl = ctl
        p = ctl.project
        self.setWindowTitle(f"Taxon gallery - {p.name}")
        self.resize(980, 720)
        folder = str(p.folder)
        paths: dict[int, str] = {}

        def path_of(image_id: int) -> str:  # called on the worker thread; the dict is filled here first
            return paths[image_id]

        self._paths = paths
        self.jobs = JobRunner(self)
        self._counts = (0, 0, 0)
        self.loader = CropLoader(crop_cache_dir(folder), path_of, self)
        self.model = GalleryModel(self.loader, self)
        self.view = QListView(self)
        self.view.setModel(self.model)
        self.view.setItemDelegate(_Delegate(self.model, self.view))
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)
        self.view.setGridSize(CELL)
        self.view.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.view.setVerticalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(250)
        self.view.installEventFilter(self)
        self.view.doubleClicked.connect(lambda idx: self.open_grain(idx.row()))
        self.model.rowRepaint.connect(self._repaint_row)

        self.taxon = QComboBox(self)
        self.status = QComboBox(self)
        self.status.addItems(list(STATUS_FILTERS))
        self.min_score = QDoubleSpinBox(self)
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setPrefix("score ≥ ")
        self.sort = QComboBox(self)
        self.sort.addItems(list(SORTS))
        self.summary = QLabel(self)
        hint = QLabel("1-9 relabel · A accept · X reject · Enter / double-click: open on its image · "
                      "Shift/Ctrl+click, Ctrl+A: select many · Esc closes (changes nothing)", self)
        hint.setObjectName("hint")
        top = QHBoxLayout()
        for w in (QLabel("Taxon", self), self.taxon, self.status, self.min_score, self.sort):
            top.addWidget(w)
        top.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.summary)
        lay.addWidget(hint)
        for w in (self.taxon, self.status, self.sort):
            w.currentIndexChanged.connect(lambda _i: self.reload())
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.min_score.valueChanged.connect(lambda _v: self.reload())
        ctl.projectClosing.connect(self.close)
        ctl.storeChanged.connect(self._store_changed)
        self.fill_taxa()

    def _store_changed(self, ev) -> None:
        """Edits made in the main window (or undone) show here too."""
        if self.isVisible() and self.ctl.project is not None and ev.annotation_ids:
            self._refresh_rows(list(ev.annotation_ids))

    # ------------------------------------------------------------------ content
    def fill_taxa(self, select: int | None = None) -> None:
        keep = select if select is not None else self.taxon.currentData()
        self.taxon.blockSignals(True)
        self.taxon.clear()
        for c in self.ctl.categories():
            self.taxon.addItem(display_taxon(c.name), c.id)
        i = self.taxon.findData(keep) if keep is not None else -1
        self.taxon.setCurrentIndex(max(i, 0))
        self.taxon.blockSignals(False)
        self.reload()

    def show_taxon(self, category_id: int) -> None:
        i = self.taxon.findData(category_id)
        if i >= 0 and i != self.taxon.currentIndex():
            self.taxon.setCurrentIndex(i)  # reloads

    def reload(self) -> None:
        """Re-read the rows for the current filters in a worker (a newer read cancels the
        older); ``loading()`` is true until they are in."""
        p = self.ctl.project
        if p is None:
            return
        self.summary.setText("Reading grains...")
        self.jobs.submit("rows", gallery_job, str(p.db_path), str(p.folder), self.taxon.currentData(),
                         STATUS_FILTERS[self.status.currentText()], self.min_score.value(),
                         SORTS[self.sort.currentText()], on_done=self._rows_read,
                         on_error=lambda msg: self.summary.setText(f"Could not read the grains: {msg}"))

    def loading(self) -> bool:
        return self.jobs.busy("rows")

    def _rows_read(self, res: GalleryRead) -> None:
        self._paths.update(res.paths)
        self.model.set_rows(res.rows)
        self._counts = (res.confirmed, res.undecided, res.rejected)
        self._summarise()

    def _summarise(self) -> None:
        n = self.model.total()
        confirmed, undecided, rejected = self._counts
        self.summary.setText(f"{n} grain{'s' if n != 1 else ''}: {confirmed} confirmed, {undecided} to review"
                             + (f", {rejected} rejected" if rejected else ""))

    def _repaint_row(self, row: int) -> None:
        rect = self.view.visualRect(self.model.index(row))
        if rect.isValid() and rect.intersects(self.view.viewport().rect()):
            self.view.viewport().update(rect)

    # ------------------------------------------------------------------ actions
    def selected_ids(self) -> list[int]:
        rows = sorted(i.row() for i in self.view.selectionModel().selectedIndexes())
        return [self.model.row_data(r).ann_id for r in rows]

    def _refresh_rows(self, ids: list[int]) -> None:
        p = self.ctl.project
        for aid in ids:
            try:
                a = p.annotation(aid)
            except Exception:
                continue
            i = self.model._pos.get(aid)
            if i is None:
                continue
            old = self.model.row_data(i)
            self._count(old.status, -1)
            self._count(a.status.value, +1)
            self.model.update_row(replace(old, box=a.box.xyxy(), category_id=a.category_id, status=a.status.value,
                                          score=a.score))
        self._summarise()

    def _count(self, status: str, d: int) -> None:
        c, u, r = self._counts
        if status in {s.value for s in OBJECT_STATUSES}:
            c += d
        elif status == "proposed":
            u += d
        elif status == "rejected":
            r += d
        self._counts = (c, u, r)

    def relabel(self, digit: str) -> None:
        ids = self.selected_ids()
        cid = self.ctl.hotkeys().get(digit)
        if not ids or cid is None:
            return
        self.ctl.relabel_many(ids, cid)
        self._refresh_rows(ids)

    # Not named accept / reject: those are QDialog's, and Qt calls reject() on Escape, the
    # window's close button and Alt+F4 (an override there rejected every selected grain)
    def accept_selected(self) -> None:
        ids = self.selected_ids()
        if ids:
            self.ctl.accept_many(ids)
            self._refresh_rows(ids)

    def reject_selected(self) -> None:
        ids = self.selected_ids()
        if ids:
            self.ctl.reject_many(ids)
            self._refresh_rows(ids)

    def open_grain(self, row: int | None = None) -> None:
        if row is None:
            idx = self.view.currentIndex()
            if not idx.isValid():
                return
            row = idx.row()
        r = self.model.row_data(row)
        self.ctl.go_to(r.ann_id, r.image_id)
        self.openRequested.emit(r.ann_id, r.image_id)

    def eventFilter(self, obj, ev) -> bool:
        if obj is self.view and isinstance(ev, QKeyEvent) and ev.type() == QKeyEvent.Type.KeyPress:
            k, mods = ev.key(), ev.modifiers()
            plain = not (mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier))
            text = ev.text()
            if plain and text and text in "123456789":
                self.relabel(text)
                return True
            if plain and k == Qt.Key.Key_A:
                self.accept_selected()
                return True
            if plain and k in (Qt.Key.Key_X, Qt.Key.Key_Delete):
                self.reject_selected()
                return True
            if k in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.open_grain()
                return True
        return super().eventFilter(obj, ev)

    def showEvent(self, ev) -> None:
        # a window of its own: no transient parent, so minimising it leaves the main window
        # alone (as the main window's transient child the window manager minimised both)
        handle = self.windowHandle()
        if handle is not None and handle.transientParent() is not None:
            handle.setTransientParent(None)
        super().showEvent(ev)

    def done(self, result: int) -> None:
        """Escape, the close button and Alt+F4 end here (QDialog.reject): the gallery closes
        and no annotation changes."""
        self._stop()
        super().done(result)

    def closeEvent(self, ev) -> None:
        self._stop()
        super().closeEvent(ev)

    def _stop(self) -> None:
        self.loader.clear()
        self.jobs.cancel_all()
