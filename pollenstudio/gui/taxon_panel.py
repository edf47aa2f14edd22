"""Taxon panel (list with hotkeys and counts; add / rename / recolour / merge) and the
searchable taxon picker. Both only emit requests; the controller changes the project."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.types import UNASSIGNED_TAXA, Category, display_taxon, is_unassigned_taxon

CategoryIdRole = Qt.ItemDataRole.UserRole + 1
SearchRole = Qt.ItemDataRole.UserRole + 2
NewNameRole = Qt.ItemDataRole.UserRole + 3


@dataclass(frozen=True)
class TaxonRow:
    category: Category
    n_image: int  # boxes of this taxon on the current image, confirmed + undecided (not rejected)
    n_project: int  # likewise in the whole project
    n_image_confirmed: int = 0  # grains a person confirmed (accepted / edited / added)
    n_project_confirmed: int = 0

    @property
    def image_text(self) -> str:
        return count_text(self.n_image_confirmed, self.n_image - self.n_image_confirmed)

    @property
    def project_text(self) -> str:
        return count_text(self.n_project_confirmed, self.n_project - self.n_project_confirmed)


def count_text(confirmed: int, undecided: int) -> str:
    """"12" when every box is decided, "12 + 4" when 4 proposals still wait for review: a
    count never mixes what a person confirmed with what a model only proposed."""
    return f"{confirmed} + {undecided}" if undecided > 0 else str(confirmed)


class TaxonPanel(QWidget):
    assignRequested = Signal(int)  # category id, for the selected box
    addRequested = Signal(str)
    renameRequested = Signal(int, str)
    recolourRequested = Signal(int, str)
    mergeRequested = Signal(int, int)  # from, into
    keyRequested = Signal(int, str)  # category id, digit: its key in every project

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["Key", "Taxon", "Image", "Project"])
        for col in (2, 3):
            self.table.horizontalHeaderItem(col).setToolTip(
                "Confirmed grains (accepted, edited, drawn); \"+ N\": proposals still to review")
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setShowGrid(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Double-click: give the selected box this taxon")
        self.table.cellDoubleClicked.connect(lambda r, c: self._assign_row(r))
        buttons = QHBoxLayout()
        for text, slot in (("Add", self._add), ("Rename", self._rename), ("Colour", self._recolour), ("Key", self._set_key),
                           ("Merge into...", self._merge)):
            b = QPushButton(text, self)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(slot)
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)
        self._rows: list[TaxonRow] = []

    def set_rows(self, rows: list[TaxonRow]) -> None:
        same_taxa = [r.category for r in rows] == [r.category for r in self._rows]
        self._rows = list(rows)
        if same_taxa:
            # every review key press lands here: only the counts change, so set their text
            # rather than rebuild 4 items per taxon (setItem cost ~5 ms per refresh)
            for i, r in enumerate(rows):
                for col, text in ((2, r.image_text), (3, r.project_text)):
                    it = self.table.item(i, col)
                    if it.text() != text:
                        it.setText(text)
            return
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            c = r.category
            key = QTableWidgetItem(c.hotkey or "")
            key.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            name = QTableWidgetItem(display_taxon(c.name))
            name.setData(Qt.ItemDataRole.DecorationRole, QColor(c.color))
            name.setData(CategoryIdRole, c.id)
            n_img = QTableWidgetItem(r.image_text)
            n_prj = QTableWidgetItem(r.project_text)
            for it in (n_img, n_prj):
                it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            for col, it in enumerate((key, name, n_img, n_prj)):
                self.table.setItem(i, col, it)

    def rows(self) -> list[TaxonRow]:
        return self._rows

    def selected_category(self) -> Category | None:
        r = self.table.currentRow()
        return self._rows[r].category if 0 <= r < len(self._rows) else None

    def _assign_row(self, row: int) -> None:
        if 0 <= row < len(self._rows):
            self.assignRequested.emit(self._rows[row].category.id)

    def _add(self) -> None:
        name, ok = QInputDialog.getText(self, "Add taxon", "Name of the new taxon:")
        if ok and name.strip():
            self.addRequested.emit(name.strip())

    def _rename(self) -> None:
        c = self.selected_category()
        if c is None:
            return
        name, ok = QInputDialog.getText(self, "Rename taxon", f"New name for {c.name}:", text=c.name)
        if ok and name.strip() and name.strip() != c.name:
            self.renameRequested.emit(c.id, name.strip())

    def _recolour(self) -> None:
        c = self.selected_category()
        if c is None:
            return
        col = QColorDialog.getColor(QColor(c.color), self, f"Colour of {c.name}")
        if col.isValid():
            self.recolourRequested.emit(c.id, col.name())

    def _set_key(self) -> None:
        c = self.selected_category()
        if c is None:
            return
        digit, ok = QInputDialog.getInt(self, "Taxon key", f"Digit key for {c.name} (in every project):",
                                        int(c.hotkey or 1), 1, 9)
        if ok:
            self.keyRequested.emit(c.id, str(digit))

    def _merge(self) -> None:
        c = self.selected_category()
        if c is None:
            return
        others = [r.category for r in self._rows if r.category.id != c.id]
        dlg = TaxonPicker(others, self, title=f"Merge {c.name} into...")
        if dlg.exec() == QDialog.DialogCode.Accepted and dlg.chosen is not None:
            self.mergeRequested.emit(c.id, dlg.chosen)


def _is_new(item: QListWidgetItem) -> bool:
    return item.data(NewNameRole) is not None


class TaxonPicker(QDialog):
    """Type to filter, arrows to move, Enter to pick: for projects with more than 9 taxa.
    With ``allow_new`` a name no taxon has is offered as a new taxon (the last row; Enter
    on it sets ``new_name``): T is also how a taxon is made during review."""

    def __init__(self, categories: list[Category], parent: QWidget | None = None, title: str = "Choose taxon",
                 allow_new: bool = False):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(320, 420)
        self.chosen: int | None = None
        self.new_name: str | None = None
        self.allow_new = allow_new
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Type to search taxa, or a new name" if allow_new else "Type to search taxa")
        self.list = QListWidget(self)
        self._names = set()
        for c in categories:
            it = QListWidgetItem(display_taxon(c.name) + (f"   [{c.hotkey}]" if c.hotkey else ""))
            it.setData(CategoryIdRole, c.id)
            it.setData(Qt.ItemDataRole.DecorationRole, QColor(c.color))
            # an unnamed grain's row is found by any of its names ("unidentified", "pollen")
            words = {c.name.lower(), display_taxon(c.name).lower()}
            if is_unassigned_taxon(c.name):
                words |= set(UNASSIGNED_TAXA)
                self._names |= set(UNASSIGNED_TAXA)
            self._names.add(c.name.strip().lower())
            it.setData(SearchRole, " | ".join(sorted(words)))
            self.list.addItem(it)
        self.new_item = QListWidgetItem("")
        self.new_item.setData(NewNameRole, True)
        self.new_item.setForeground(QColor("#2a7ae2"))
        self.list.addItem(self.new_item)
        self.new_item.setHidden(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.search)
        lay.addWidget(self.list, 1)
        self.search.textChanged.connect(self._filter)
        self.search.returnPressed.connect(self._accept_current)
        self.list.itemActivated.connect(lambda _it: self._accept_current())
        self.search.installEventFilter(self)
        self._filter("")

    def _visible_rows(self) -> list[int]:
        return [i for i in range(self.list.count()) if not self.list.item(i).isHidden()]

    def _filter(self, text: str) -> None:
        t = text.strip().lower()
        first = None
        for i in range(self.list.count()):
            it = self.list.item(i)
            if _is_new(it):
                continue
            name = it.data(SearchRole)
            hide = bool(t) and t not in name
            it.setHidden(hide)
            if not hide and first is None:
                first = i
        # a name no taxon has: offered as a new taxon, below the partial matches
        new = self.allow_new and bool(t) and t not in self._names
        self.new_item.setHidden(not new)
        if new:
            self.new_item.setText(f"+ New taxon \u201c{text.strip()}\u201d")
            self.new_item.setData(NewNameRole, text.strip())
        # prefix matches first: typing "bet" should land on Betula, not Alnus betulifolia
        pref = [i for i in self._visible_rows()
                if not _is_new(self.list.item(i))
                and any(w.startswith(t) for w in self.list.item(i).data(SearchRole).split(" | "))]
        row = pref[0] if pref else first
        if row is None and new:
            row = self.list.row(self.new_item)
        if row is not None:
            self.list.setCurrentRow(row)

    def eventFilter(self, obj, ev) -> bool:
        if obj is self.search and isinstance(ev, QKeyEvent) and ev.type() == QKeyEvent.Type.KeyPress:
            if ev.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                rows = self._visible_rows()
                if rows:
                    cur = self.list.currentRow()
                    i = rows.index(cur) if cur in rows else 0
                    i = min(len(rows) - 1, i + 1) if ev.key() == Qt.Key.Key_Down else max(0, i - 1)
                    self.list.setCurrentRow(rows[i])
                return True
        return super().eventFilter(obj, ev)

    def _accept_current(self) -> None:
        it = self.list.currentItem()
        if it is None or it.isHidden():
            return
        if _is_new(it):
            self.new_name = str(it.data(NewNameRole))
        else:
            self.chosen = int(it.data(CategoryIdRole))
        self.accept()
