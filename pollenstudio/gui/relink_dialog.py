"""File > Find missing images...: search folders for moved or renamed image files,
relink what was found and, if the user confirms, remove the images still missing.

The search and the relink are ``project.relink`` (by content, then by name); this module
is only the dialog. The search runs in a worker (hashing a large folder takes a while)
and can be cancelled; removing images is one undoable step (Edit > Undo brings them back
with their annotations).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.gui.workers import JobRunner
from pollenstudio.project.relink import RelinkReport, apply_relink, find_missing_files


class RelinkDialog(QDialog):
    """Search folders -> report -> "Relink found" / "Remove still missing..."."""

    def __init__(self, project, parent=None):
        super().__init__(parent)
        self.project = project
        self.report: RelinkReport | None = None
        self.setWindowTitle("Find missing images")
        self.runner = JobRunner(self)
        n_missing = len(project.missing_images())
        self.intro = QLabel(f"{n_missing} image(s) of this project are missing from where the project expects "
                            "them. Search these folders (and their sub-folders) by content, then by file name:")
        self.intro.setWordWrap(True)
        self.folders = QListWidget()
        self.folders.addItem(str(project.folder))
        add = QPushButton("Add folder...")
        add.clicked.connect(self._add_folder)
        remove = QPushButton("Remove folder")
        remove.clicked.connect(lambda: [self.folders.takeItem(self.folders.row(i))
                                        for i in self.folders.selectedItems()])
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        row = QHBoxLayout()
        for w in (add, remove, self.search_button):
            row.addWidget(w)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.relink_button = self.buttons.addButton("Relink found", QDialogButtonBox.ButtonRole.ApplyRole)
        self.remove_button = self.buttons.addButton("Remove still missing...", QDialogButtonBox.ButtonRole.ActionRole)
        self.relink_button.setEnabled(False)
        self.remove_button.setEnabled(n_missing > 0)
        self.relink_button.clicked.connect(self.relink)
        self.remove_button.clicked.connect(self.remove_missing)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        for w in (self.intro, self.folders):
            lay.addWidget(w)
        lay.addLayout(row)
        for w in (self.progress, self.text, self.buttons):
            lay.addWidget(w)
        self.resize(640, 480)

    def _add_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Search folder", str(self.project.folder))
        if d:
            self.folders.addItem(d)

    def search_dirs(self) -> list[str]:
        return [self.folders.item(i).text() for i in range(self.folders.count())]

    def search(self) -> None:
        self.search_button.setEnabled(False)
        self.relink_button.setEnabled(False)
        self.progress.setVisible(True)
        self.text.setPlainText("Searching...")
        self.runner.submit("relink", lambda token, dirs: find_missing_files(self.project, dirs, token),
                           self.search_dirs(), on_done=self._found, on_error=self._failed,
                           on_progress=self._on_progress)

    def _on_progress(self, done: int, total: int, msg: str) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def _found(self, report: RelinkReport) -> None:
        self.report = report
        self.progress.setVisible(False)
        self.search_button.setEnabled(True)
        self.text.setPlainText(report.text())
        self.relink_button.setEnabled(bool(report.found))

    def _failed(self, msg: str) -> None:
        self.progress.setVisible(False)
        self.search_button.setEnabled(True)
        self.text.setPlainText(f"Search failed: {msg}")

    def relink(self) -> None:
        if self.report is None:
            return
        try:
            apply_relink(self.project, self.report)
        except PollenStudioError as exc:
            self.text.appendPlainText(f"\nRelink failed: {exc}")
            return
        self.text.appendPlainText(f"\nRelinked {len(self.report.found)} image(s).")
        self.relink_button.setEnabled(False)
        self.remove_button.setEnabled(bool(self.project.missing_images()))

    def remove_missing(self, confirm: bool = True) -> int:
        missing = self.project.missing_images()
        if not missing:
            return 0
        if confirm:
            answer = QMessageBox.question(
                self, "Remove missing images",
                f"Remove {len(missing)} image(s) whose file was not found from the project, with their "
                "annotations? The files themselves are not touched, and Edit > Undo brings the images back.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return 0
        n = self.project.remove_images([r.id for r in missing], label="remove missing images")
        self.text.appendPlainText(f"\nRemoved {n} missing image(s) from the project (Edit > Undo brings them back).")
        self.remove_button.setEnabled(False)
        return n


def open_relink_dialog(window) -> None:
    """The File menu's entry point: needs an open project."""
    project = window.ctl.project
    if project is None:
        window.statusBar().showMessage("Open a project first", 4000)
        return
    dlg = RelinkDialog(project, window)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.open()


def selected_image_ids(window) -> list[int]:
    """Images selected in the image list, else the one on screen."""
    from pollenstudio.gui.image_list import ImageIdRole

    view = window.images.view
    ids = [i.data(ImageIdRole) for i in view.selectionModel().selectedIndexes()] if view.selectionModel() else []
    ids = [int(i) for i in ids if i is not None]
    if not ids and window.ctl.image_id is not None:
        ids = [window.ctl.image_id]
    return ids


def remove_images(window, image_ids: list[int], confirm: bool = True) -> int:
    """Remove images from the project after a confirmation: one undoable step that keeps
    their annotations in the undo history (the files on disk are not touched)."""
    project = window.ctl.project
    if project is None or not image_ids:
        return 0
    if confirm:
        names = ", ".join(project.image(i).path for i in image_ids[:3]) + (" ..." if len(image_ids) > 3 else "")
        answer = QMessageBox.question(
            window, "Remove images",
            f"Remove {len(image_ids)} image(s) from the project ({names}) with their annotations? The files "
            "stay on disk, and Edit > Undo brings the images back.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return 0
    try:
        n = project.remove_images(image_ids)
    except PollenStudioError as exc:
        window.statusBar().showMessage(str(exc), 8000)
        return 0
    window.statusBar().showMessage(f"Removed {n} image(s) from the project (Edit > Undo brings them back)", 8000)
    return n


def install_remove_images(window) -> None:
    """A "Remove from project..." entry in the image list's context menu."""
    from PySide6.QtGui import QAction

    view = window.images.view
    act = QAction("Remove from project...", view)
    act.triggered.connect(lambda: remove_images(window, selected_image_ids(window)))
    view.addAction(act)
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
    window.act_remove_images = act
