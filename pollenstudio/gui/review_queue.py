"""Review queue panel: undecided proposals across the project, most uncertain first.

The controller supplies the ordered items (already filtered by the confidence threshold);
this panel shows them, follows the current one, and reports the threshold slider. The
table model pages rows in like the image list, so 100,000 proposals do not stall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QSlider, QTableView, QVBoxLayout, QWidget

from pollenstudio.core.types import DEFAULT_CONF
from pollenstudio.core.words import plural

PAGE = 500
# Where the "Min. confidence" slider starts: every proposal a detection kept is shown.
# A different thing from DEFAULT_CONF (what a detection keeps), set to the same value.
DEFAULT_REVIEW_THRESHOLD = DEFAULT_CONF


def slider_floor(lowest_score: float | None) -> float:
    """The slider's lowest value. Detection (GUI and ``pollenstudio detect``) keeps nothing
    below DEFAULT_CONF, so a lower position would promise proposals that cannot exist; the
    floor goes lower only as far as the project really holds proposals (e.g. written by
    ``pollenstudio detect --conf 0.1``), so every one of them can still be shown."""
    floor = DEFAULT_CONF if lowest_score is None else min(DEFAULT_CONF, max(0.0, float(lowest_score)))
    return math.floor(floor * 100 + 1e-9) / 100


@dataclass(frozen=True)
class QueueItem:
    ann_id: int
    image_id: int
    image_name: str
    taxon: str
    color: str
    score: float | None
    margin: float | None = None  # top-1 minus top-2 probability, when the model gave top-k


class QueueModel(QAbstractTableModel):
    HEADERS = ("Image", "Taxon", "Score")

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._items: list[QueueItem] = []
        self._loaded = 0
        self._pos: dict[int, int] = {}

    def set_items(self, items: list[QueueItem]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self._pos = {it.ann_id: i for i, it in enumerate(self._items)}
        self._loaded = min(PAGE, len(self._items))
        self.endResetModel()

    def items(self) -> list[QueueItem]:
        return self._items

    def row_of(self, ann_id: int) -> int | None:
        i = self._pos.get(ann_id)
        if i is not None and i >= self._loaded:
            self.beginInsertRows(QModelIndex(), self._loaded, i)
            self._loaded = i + 1
            self.endInsertRows()
        return i

    def item(self, row: int) -> QueueItem:
        return self._items[row]

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and self._loaded < len(self._items)

    def fetchMore(self, parent=QModelIndex()) -> None:
        n = min(PAGE, len(self._items) - self._loaded)
        if n > 0:
            self.beginInsertRows(QModelIndex(), self._loaded, self._loaded + n - 1)
            self._loaded += n
            self.endInsertRows()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self._loaded

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        it = self._items[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return it.image_name
            if col == 1:
                return it.taxon
            if col == 2:
                return "" if it.score is None else f"{it.score:.2f}"
        if role == Qt.ItemDataRole.DecorationRole and col == 1:
            return QColor(it.color)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 2:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            m = "" if it.margin is None else f", margin to 2nd taxon {it.margin:.2f}"
            return f"{it.image_name}: {it.taxon} score {it.score if it.score is not None else '-'}{m}"
        return None


class ReviewQueuePanel(QWidget):
    itemActivated = Signal(int, int)  # annotation id, image id
    thresholdChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = QueueModel(self)
        self.view = QTableView(self)
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.setShowGrid(False)
        self.view.setAlternatingRowColors(True)
        hh = self.view.horizontalHeader()
        # fixed widths: ResizeToContents measures every row on each change (30 ms per
        # selection at 1,000 rows)
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Interactive)
        hh.resizeSection(1, 110)
        hh.resizeSection(2, 48)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(round(slider_floor(None) * 100), 100)
        self.slider.setValue(round(DEFAULT_REVIEW_THRESHOLD * 100))
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setToolTip(f"Proposals below this confidence are hidden (not rejected). Detection keeps "
                               f"proposals from {DEFAULT_CONF:.2f}: the slider starts there")
        self.slider_label = QLabel(self)
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        row.addWidget(QLabel("Min. confidence", self))
        row.addWidget(self.slider, 1)
        row.addWidget(self.slider_label)
        lay.addLayout(row)
        lay.addWidget(self.summary)
        lay.addWidget(self.view, 1)
        self.slider.valueChanged.connect(self._slider_moved)
        self.view.clicked.connect(self._clicked)
        self._slider_moved(self.slider.value(), emit=False)

    def threshold(self) -> float:
        return self.slider.value() / 100.0

    def set_threshold(self, value: float) -> None:
        self.slider.setValue(int(round(value * 100)))

    def set_floor(self, lowest_score: float | None) -> None:
        """Let the slider reach down to the lowest proposal in the project (see slider_floor)."""
        self.slider.setMinimum(round(slider_floor(lowest_score) * 100))

    def _slider_moved(self, value: int, emit: bool = True) -> None:
        self.slider_label.setText(f"{value / 100:.2f}")
        if emit:
            self.thresholdChanged.emit(value / 100.0)

    def set_items(self, items: list[QueueItem], hidden: int = 0, total: int | None = None) -> None:
        """``items``: the first (most uncertain) proposals; ``total``: how many in all."""
        self.model.set_items(items)
        total = len(items) if total is None else total
        if total > len(items):
            text = f"{plural(total, 'proposal')} to review (the {len(items)} most uncertain listed)"
        else:
            images = len({it.image_id for it in items})
            text = (f"{total} proposal{'s' if total != 1 else ''} to review on "
                    f"{images} image{'s' if images != 1 else ''}")
        if hidden:
            text += f" ({hidden} below the threshold hidden)"
        if not total and not hidden:
            text = "Nothing left to review."
        self.summary.setText(text)

    def set_nothing_detected(self) -> None:
        """The project holds no proposal and no decision yet: point at Detect, not at an
        empty queue."""
        self.summary.setText("No proposals yet: Detect (Ctrl+D) proposes grains on this image; "
                             "Model > Detect all images for the whole project.")

    def set_current(self, ann_id: int | None) -> None:
        row = None if ann_id is None else self.model.row_of(ann_id)
        if row is None:
            self.view.clearSelection()
            return
        idx = self.model.index(row, 0)
        self.view.selectRow(row)
        self.view.scrollTo(idx)

    def _clicked(self, idx: QModelIndex) -> None:
        it = self.model.item(idx.row())
        self.itemActivated.emit(it.ann_id, it.image_id)
