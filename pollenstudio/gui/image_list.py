"""Image list: review status, counts, thumbnails made lazily off the GUI thread.

The model filters and sorts itself (a proxy over a paged model would defeat the paging)
and hands rows to the view in pages of :data:`PAGE` via ``canFetchMore``/``fetchMore``,
so a project of 10,000 images opens at once. Thumbnails are requested only for rows the
view paints, newest request first, by one background job that drains the queue.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.types import ReviewStatus
from pollenstudio.gui.workers import NewestFirstLoader

PAGE = 500
THUMB = 56

STATUS_COLOURS = {
    ReviewStatus.NEW: "#9e9e9e",
    ReviewStatus.IN_REVIEW: "#e6a23c",
    ReviewStatus.REVIEWED: "#4caf50",
}
STATUS_TEXT = {ReviewStatus.NEW: "new", ReviewStatus.IN_REVIEW: "to review", ReviewStatus.REVIEWED: "reviewed"}
# a reviewed image nobody marked finished: its proposals are decided, which makes it training
# data, but grains the model missed may still lack a box. Said in the list until Enter.
DECIDED_TEXT = "decided, not finished"
DECIDED_COLOUR = "#9ccc65"
DECIDED_TIP = ("Every proposal is decided, so this image is training data; a grain without a box on it "
               "teaches the model 'no grain here'. Press Enter on it once every grain has a box (finished).")


def status_text(r) -> str:
    """What the list says of an image's review state ("decided, not finished" until Enter)."""
    if r.status is ReviewStatus.REVIEWED and not r.finished:
        return DECIDED_TEXT
    return STATUS_TEXT[r.status]

FILTERS = {
    "All images": lambda r: True,
    "Not reviewed": lambda r: r.status is not ReviewStatus.REVIEWED,
    "Reviewed": lambda r: r.status is ReviewStatus.REVIEWED,
    "With proposals": lambda r: r.n_proposed > 0,
}
REVIEW_NEXT = "Review this next"
SORTS = {
    # what reviewing an image is expected to teach the model, most first (engine.review_order);
    # reviewed images last. The values are read afresh whenever the list is sorted this way.
    REVIEW_NEXT: lambda r: (r.review_value is None, -(r.review_value or 0.0), r.id),
    "Name": lambda r: r.name.lower(),
    "Most proposals first": lambda r: (-r.n_proposed, r.name.lower()),
    "Status": lambda r: ({ReviewStatus.IN_REVIEW: 0, ReviewStatus.NEW: 1, ReviewStatus.REVIEWED: 2}[r.status], r.name.lower()),
    "Project order": None,
}

# The list's sort when a project opens, so what N / P walk. "Review this next" would be the
# default if it taught the model faster than another order; bench/learning_curve.py measured
# it against random order (mAP@.5, 3 seeds, bench/results/learning_curve.txt): 0.247 vs 0.243
# at k = 10, 0.296 vs 0.318 at k = 20, 0.338 vs 0.340 at k = 40 reviewed fields: no gain, so
# the project's order stays the default and "Review this next" is a choice in the sort box.
DEFAULT_SORT = "Project order"

ImageIdRole = Qt.ItemDataRole.UserRole + 1
RowRole = Qt.ItemDataRole.UserRole + 2


@dataclass
class ImageRow:
    id: int
    name: str
    path: str  # absolute path, for the thumbnail
    width: int
    height: int
    status: ReviewStatus
    n_proposed: int = 0  # undecided proposals
    n_objects: int = 0  # accepted + edited + added
    review_value: float | None = None  # "review this next" value (None: reviewed, or not read)
    finished: bool = False  # marked finished with Enter / 0 (else a reviewed image is only decided)


def _make_thumbnail(path: str, size: int = THUMB) -> QImage | None:
    import cv2
    import numpy as np

    from pollenstudio.core.imageio import read_image, to_uint8

    p = Path(path)
    img = None
    if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
        # decode at 1/8 scale: a 20000 px slide scan thumbnail costs a fraction of a full read
        data = np.fromfile(p, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_8)
        if img is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img is None and p.suffix.lower() in (".tif", ".tiff"):
        from pollenstudio.core.slide import shared_slide

        try:
            slide = shared_slide(p)
            if slide.lazy or slide.planes > 1:
                # a whole-slide scan from its smallest level that is large enough, tile row by
                # tile row; a focal stack from its middle plane
                img = to_uint8(slide.thumbnail(size, plane=slide.planes // 2))
        except Exception:
            img = None
    if img is None and p.suffix.lower() in (".tif", ".tiff"):
        img = _tiff_preview(p, size)
    if img is None:
        img = to_uint8(read_image(p))
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    h, w = img.shape[:2]
    s = size / max(h, w)
    img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    return QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def _tiff_preview(path: Path, size: int):
    """Every n-th pixel of an uncompressed TIFF through a memory map: a 16000 px slide scan
    gives its thumbnail without reading 768 MB. None when the file is compressed/tiled."""
    import numpy as np
    import tifffile

    from pollenstudio.core.imageio import to_uint8

    try:
        mm = tifffile.memmap(path, mode="r")
    except Exception:
        return None
    if mm.ndim == 3 and mm.shape[0] in (3, 4) and mm.shape[2] not in (3, 4):
        mm = np.moveaxis(mm, 0, -1)
    step = max(1, max(mm.shape[:2]) // (size * 4))
    small = np.ascontiguousarray(mm[::step, ::step])
    if small.ndim == 3:
        small = small[..., :3]
    return to_uint8(small)


class ThumbnailLoader(NewestFirstLoader):
    """Makes thumbnails in one background job, most recently requested first (only the
    latest :data:`MAX_QUEUED` requests are kept; see :class:`NewestFirstLoader`)."""

    ready = Signal(int, QImage)  # image id, thumbnail
    MAX_QUEUED = 128

    def __init__(self, parent: QObject | None = None, pool=None):
        super().__init__(parent, pool)
        self._current: int | None = None  # being decoded now

    def request(self, image_id: int, path: str) -> None:
        if image_id != self._current:
            self._enqueue(image_id, path)

    def _drain(self, token) -> None:
        while True:
            token.check()
            with self._lock:
                item = self._queue.popitem(last=True) if self._queue else None  # newest first: on screen now
                if item is None:
                    return
                image_id, path = item
                self._current = image_id
            try:
                thumb = _make_thumbnail(path)
            except Exception:  # a bad file gets no thumbnail; opening it shows the error
                thumb = None
            if token.cancelled:
                return
            if thumb is None:
                self.failed.add(image_id)
            else:
                try:
                    self.ready.emit(image_id, thumb)
                except RuntimeError:  # the list was destroyed (app closing)
                    return
            self._current = None


class ImageListModel(QAbstractListModel):
    # A row whose thumbnail or status changed. Not ``dataChanged``: QListView answers that
    # with a relayout costing ~120 ms at 10,000 rows, which would stall every thumbnail
    # arrival and every accept; rows here never change size, so a repaint is enough.
    rowRepaint = Signal(int)

    def __init__(self, parent: QObject | None = None, loader: ThumbnailLoader | None = None):
        super().__init__(parent)
        self._all: list[ImageRow] = []
        self._all_pos: dict[int, int] = {}
        self._rows: list[ImageRow] = []  # filtered + sorted
        self._loaded = 0
        self._pos: dict[int, int] = {}  # image id -> row in _rows
        self.filter_name = "All images"
        self.sort_name = DEFAULT_SORT
        # () -> {image id: value} for the images not yet reviewed (set by the window); read
        # whenever the list is sorted by REVIEW_NEXT, so the order follows the latest reviews
        self.review_values = None
        self.loader = loader or ThumbnailLoader(self)
        self.loader.ready.connect(self._thumb_ready)
        self._thumbs: dict[int, QPixmap] = {}

    # --- content -----------------------------------------------------------------------
    def set_rows(self, rows: list[ImageRow]) -> None:
        self.loader.clear()
        self._thumbs.clear()
        self._all = list(rows)
        self._all_pos = {r.id: i for i, r in enumerate(self._all)}
        self._rebuild()

    def update_rows(self, rows: list[ImageRow]) -> None:
        """New status/counts for some images; rows keep their place (no jump while reviewing)."""
        if not rows:
            return
        for r in rows:
            j = self._all_pos.get(r.id)
            if j is not None:
                if r.review_value is None and r.status is not ReviewStatus.REVIEWED:
                    r.review_value = self._all[j].review_value  # read again at the next sort
                self._all[j] = r
            i = self._pos.get(r.id)
            if i is not None:
                self._rows[i] = r
                if i < self._loaded:
                    self.rowRepaint.emit(i)

    def set_filter(self, name: str) -> None:
        self.filter_name = name
        self._rebuild()

    def set_sort(self, name: str) -> None:
        self.sort_name = name
        self._rebuild()

    def _rebuild(self) -> None:
        self.beginResetModel()
        if self.sort_name == REVIEW_NEXT:
            self._read_values()
        pred = FILTERS[self.filter_name]
        rows = [r for r in self._all if pred(r)]
        key = SORTS[self.sort_name]
        if key is not None:
            rows.sort(key=key)
        self._rows = rows
        self._pos = {r.id: i for i, r in enumerate(rows)}
        self._loaded = min(PAGE, len(rows))
        self.endResetModel()

    def _read_values(self) -> None:
        values = self.review_values() if self.review_values is not None else {}
        for r in self._all:
            r.review_value = values.get(r.id)

    def resort(self) -> None:
        """Sort again (e.g. detection wrote new proposals): the order of "review this next"
        changes with them, the other sorts with the rows' counts."""
        self._rebuild()

    def total(self) -> int:
        return len(self._rows)

    def row_of(self, image_id: int) -> int | None:
        """Row of an image in the filtered list, loading pages up to it if needed."""
        i = self._pos.get(image_id)
        if i is None:
            return None
        if i >= self._loaded:
            self.beginInsertRows(QModelIndex(), self._loaded, i)
            self._loaded = i + 1
            self.endInsertRows()
        return i

    def ids(self) -> list[int]:
        """Image ids in list order (filtered and sorted): N/P walk this."""
        return [r.id for r in self._rows]

    def row_data(self, row: int) -> ImageRow:
        return self._rows[row]

    def counts(self) -> dict[str, int]:
        c = collections.Counter(r.status for r in self._all)
        return {
            "images": len(self._all),
            "reviewed": c[ReviewStatus.REVIEWED],
            "to_review": c[ReviewStatus.IN_REVIEW],
            "new": c[ReviewStatus.NEW],
        }

    # --- paging ------------------------------------------------------------------------
    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and self._loaded < len(self._rows)

    def fetchMore(self, parent=QModelIndex()) -> None:
        n = min(PAGE, len(self._rows) - self._loaded)
        if n <= 0:
            return
        self.beginInsertRows(QModelIndex(), self._loaded, self._loaded + n - 1)
        self._loaded += n
        self.endInsertRows()

    # --- Qt model ----------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self._loaded

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self._loaded:
            return None
        r = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return r.name
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = f"{r.path}\n{r.width} x {r.height} px\n{status_text(r)}"
            if status_text(r) == DECIDED_TEXT:
                tip += f"\n{DECIDED_TIP}"
            if r.review_value is not None and self.sort_name == REVIEW_NEXT:
                tip += f"\nreview value {r.review_value:.2f} (higher: reviewing it teaches the model more)"
            return tip
        if role == ImageIdRole:
            return r.id
        if role == RowRole:
            return r
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnail(r)
        return None

    def thumbnail(self, r: ImageRow) -> QPixmap | None:
        """The thumbnail if made; else ask for it and return None for now."""
        pm = self._thumbs.get(r.id)
        if pm is None:
            self.loader.request(r.id, r.path)
        return pm

    def _thumb_ready(self, image_id: int, img: QImage) -> None:
        self._thumbs[image_id] = QPixmap.fromImage(img)
        i = self._pos.get(image_id)
        if i is not None and i < self._loaded:
            self.rowRepaint.emit(i)


class _Delegate(QStyledItemDelegate):
    """Thumbnail, name, status dot and counts in one compact row."""

    def sizeHint(self, option, index) -> QSize:
        return QSize(200, THUMB + 8)

    def paint(self, painter: QPainter, option, index) -> None:
        # read the model directly: round-tripping Python objects and empty values through
        # QVariant (index.data) corrupted None's refcount under PySide6 6.12 / Python 3.11
        model = index.model()
        if not isinstance(model, ImageListModel) or index.row() >= model.rowCount():
            return
        r = model.row_data(index.row())
        painter.save()
        rect = option.rect
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, option.palette.highlight())
            fg = option.palette.highlightedText().color()
        else:
            fg = option.palette.text().color()
        thumb = model.thumbnail(r)
        trect = QRect(rect.left() + 4, rect.top() + 4, THUMB, THUMB)
        if thumb is not None:
            pm = thumb
            x = trect.left() + (THUMB - pm.width()) // 2
            y = trect.top() + (THUMB - pm.height()) // 2
            painter.drawPixmap(x, y, pm)
        else:
            painter.fillRect(trect, QColor("#3a3a3a"))
        tx = trect.right() + 8
        font = QFont(option.font)
        painter.setFont(font)
        painter.setPen(fg)
        fm = painter.fontMetrics()
        name = fm.elidedText(r.name, Qt.TextElideMode.ElideMiddle, rect.right() - tx - 4)
        painter.drawText(tx, rect.top() + 4 + fm.ascent(), name)
        dot = QColor(DECIDED_COLOUR if status_text(r) == DECIDED_TEXT else STATUS_COLOURS[r.status])
        painter.setBrush(dot)
        painter.setPen(Qt.PenStyle.NoPen)
        y2 = rect.top() + 8 + fm.height()
        painter.drawEllipse(tx, y2 + 3, 9, 9)
        painter.setPen(fg)
        small = QFont(font)
        small.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        painter.setFont(small)
        sfm = painter.fontMetrics()
        text = status_text(r)
        if r.n_objects or r.n_proposed:  # confirmed grains, then what still waits for review
            text += f" · {r.n_objects} grain{'' if r.n_objects == 1 else 's'}"
            if r.n_proposed:
                text += f" + {r.n_proposed} to review"
        painter.drawText(tx + 14, y2 + sfm.ascent(), text)
        painter.restore()


class ImageListPanel(QWidget):
    """List with filter and sort boxes; emits the image the user picked."""

    imageActivated = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = ImageListModel(self)
        self.view = QListView(self)
        self.view.setModel(self.model)
        self.view.setItemDelegate(_Delegate(self.view))
        self.view.setUniformItemSizes(True)  # no per-row size query: scrolling 10,000 rows stays cheap
        self.view.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys belong to the review (N/P walk the list)
        self.view.setVerticalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        # lay rows out in slices between events: a relayout of 10,000 rows in one go
        # (after each page fetched) is a ~100 ms stall
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(250)
        self.filter = QComboBox(self)
        self.filter.addItems(list(FILTERS))
        self.filter.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.sort = QComboBox(self)
        self.sort.addItems(list(SORTS))
        self.sort.setCurrentText(DEFAULT_SORT)
        self.sort.setToolTip("Review this next (default): images whose review is expected to teach the model most "
                             "first - uncertain proposals, disagreement with the flipped image, taxa with few "
                             "reviewed grains. N / P follow the list's order.")
        self.sort.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.summary = QLabel(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(self.filter, 1)
        row.addWidget(self.sort, 1)
        lay.addLayout(row)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.summary)
        self.filter.currentTextChanged.connect(self._filter_changed)
        self.sort.currentTextChanged.connect(self._sort_changed)
        self.view.clicked.connect(lambda idx: self.imageActivated.emit(idx.data(ImageIdRole)))
        self.model.rowRepaint.connect(self._repaint_row)
        self._current: int | None = None
        # the summary counts statuses over every image (~5 ms at 10,000): after a review
        # edit it follows once the key presses pause, not on each one
        from PySide6.QtCore import QTimer

        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(150)
        self._summary_timer.timeout.connect(self._refresh_summary)

    def _repaint_row(self, row: int) -> None:
        rect = self.view.visualRect(self.model.index(row))
        if rect.isValid() and rect.intersects(self.view.viewport().rect()):
            self.view.viewport().update(rect)

    def set_rows(self, rows: list[ImageRow]) -> None:
        self.model.set_rows(rows)
        self._refresh_summary()

    def update_rows(self, rows: list[ImageRow]) -> None:
        self.model.update_rows(rows)
        self._summary_timer.start()

    def resort(self) -> None:
        self.model.resort()
        self.show_current(self._current)

    def _filter_changed(self, name: str) -> None:
        self.model.set_filter(name)
        self.show_current(self._current)
        self._refresh_summary()

    def _sort_changed(self, name: str) -> None:
        self.model.set_sort(name)
        self.show_current(self._current)

    def show_current(self, image_id: int | None) -> None:
        self._current = image_id
        if image_id is None:
            return
        row = self.model.row_of(image_id)
        if row is None:
            self.view.clearSelection()
            return
        idx = self.model.index(row)
        self.view.setCurrentIndex(idx)
        self.view.scrollTo(idx)

    def _refresh_summary(self) -> None:
        c = self.model.counts()
        shown = self.model.total()
        extra = f" · {shown} shown" if shown != c["images"] else ""
        n = c["images"]
        self.summary.setText(f"{n} image{'' if n == 1 else 's'} · {c['reviewed']} reviewed · {c['to_review']} to review{extra}")
