"""File > Import... and File > Export... dialogs.

The dialogs collect choices and show progress and results in words; the work runs in a
worker through ``TransferController.import_data`` / ``export_data``, which call the same
service as ``pollenstudio import`` / ``export`` (``pollenstudio.project.transfer``).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.stack import STACK_PATTERN_HELP
from pollenstudio.core.words import plural

EXPORT_FORMATS = {  # combo text -> (format, default file name, is a folder)
    "COCO JSON (boxes and taxa)": ("coco", "annotations.json", False),
    "YOLO folder (images + label files)": ("yolo", "yolo", True),
    "CSV counts per image and taxon": ("csv", "counts.csv", False),
    "CSV of grains (box and outline sizes)": ("grains", "grains.csv", False),
}
IMPORT_FORMATS = {  # combo text -> (format, is a folder)
    "COCO JSON file": ("coco", False),
    "YOLO folder": ("yolo", True),
    "Folder of images (no annotations)": ("folder", True),
}


def _path_row(parent: QWidget, edit: QLineEdit, browse) -> QWidget:
    w = QWidget(parent)
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    b = QPushButton("Browse...", w)
    b.clicked.connect(browse)
    lay.addWidget(b)
    return w


class _JobDialog(QDialog):
    """Shared: a run button, a progress bar shown while the job runs, a result line."""

    def __init__(self, ctl, title: str, run_text: str, parent=None):
        super().__init__(parent)
        self.ctl = ctl
        self.setWindowTitle(title)
        self.setMinimumWidth(560)
        self.form = QFormLayout()
        self.progress = QProgressBar(self)
        self.progress.hide()
        self.result = QLabel(self)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox(self)
        self.run_button = self.buttons.addButton(run_text, QDialogButtonBox.ButtonRole.AcceptRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.run_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(self.form)
        lay.addWidget(self.progress)
        lay.addWidget(self.result)
        lay.addWidget(self.buttons)
        self.job = None
        self.summary: dict | None = None
        self.error: str | None = None

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _running(self) -> None:
        self.summary, self.error = None, None
        self.run_button.setEnabled(False)
        self.progress.setRange(0, 0)  # busy until the job reports counts
        self.progress.show()
        self.result.setText("Working...")

    def _progress(self, done: int, total: int, msg: str) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        if msg:
            self.result.setText(msg)

    def _done(self, summary: dict, words: str) -> None:
        self.summary = summary
        self.progress.hide()
        self.run_button.setEnabled(True)
        self.result.setStyleSheet("")
        self.result.setText(words)

    def _failed(self, msg: str) -> None:
        self.error = msg
        self.progress.hide()
        self.run_button.setEnabled(True)
        self.result.setStyleSheet("color: #c0392b")
        self.result.setText(msg)

    def reject(self) -> None:
        if self.job is not None and not self.job.done:
            self.job.token.cancel()
        super().reject()


class ExportDialog(_JobDialog):
    def __init__(self, ctl, parent=None):
        super().__init__(ctl, "Export annotations", "Export", parent)
        self.fmt = QComboBox(self)
        self.fmt.addItems(list(EXPORT_FORMATS))
        self.reviewed = QRadioButton("Reviewed images only: accepted, corrected and drawn boxes (training data)", self)
        self.all = QRadioButton("All images, with undecided proposals and their scores", self)
        self.reviewed.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.reviewed)
        group.addButton(self.all)
        self.copy_images = QCheckBox("Copy the image files into the folder", self)
        self.copy_images.setChecked(True)
        # focal stacks (issue 19): COCO planes as images of their own; YOLO's view of a stack
        self.planes_as_images = QCheckBox("Also write each focal plane that holds grains as an image of its own", self)
        self.planes_as_images.setToolTip("For tools that know no focal stacks; importing the file folds the planes "
                                         "back into their stack")
        self.stack_view = QComboBox(self)
        self.stack_view.addItems(["All-in-focus (EDF) composite", "Sharpest plane"])
        self.stack_view.setToolTip("YOLO has no planes: a focal stack is written as one image")
        self.path = QLineEdit(self)
        folder = ctl.project.folder if ctl.project is not None else Path.home()
        self._folder = Path(folder) / "exports"
        self.form.addRow("Format", self.fmt)
        self.form.addRow("What", self.reviewed)
        self.form.addRow("", self.all)
        self.form.addRow("YOLO", self.copy_images)
        has_stacks = ctl.project is not None and ctl.project.has_stacks()
        if has_stacks:
            self.form.addRow("COCO stacks", self.planes_as_images)
            self.form.addRow("YOLO stacks", self.stack_view)
        self.form.addRow("Save to", _path_row(self, self.path, self._browse))
        self.fmt.currentTextChanged.connect(self._format_changed)
        self._format_changed(self.fmt.currentText())

    def format(self) -> str:
        return EXPORT_FORMATS[self.fmt.currentText()][0]

    def _format_changed(self, text: str) -> None:
        fmt, name, _folder = EXPORT_FORMATS[text]
        self.copy_images.setEnabled(fmt == "yolo")
        self.planes_as_images.setEnabled(fmt == "coco")
        self.stack_view.setEnabled(fmt == "yolo")
        old = self.path.text()
        if not old or Path(old).parent == self._folder:
            self.path.setText(str(self._folder / name))

    def _browse(self) -> None:
        fmt, name, folder = EXPORT_FORMATS[self.fmt.currentText()]
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Export into folder", str(self._folder))
        else:
            filt = "COCO JSON (*.json)" if fmt == "coco" else "CSV (*.csv)"
            path, _ = QFileDialog.getSaveFileName(self, "Export to file", self.path.text(), filt)
        if path:
            self.path.setText(path)

    def start(self) -> None:
        path = self.path.text().strip()
        if not path:
            self._failed("Choose where to save the export.")
            return
        self._running()
        self.job = self.ctl.export_data(
            self.format(), path, reviewed_only=self.reviewed.isChecked(),
            copy_images=self.copy_images.isChecked(), on_done=self._export_done, on_error=self._failed,
            planes_as_images=self.planes_as_images.isChecked(),
            stack_view="edf" if self.stack_view.currentIndex() == 0 else "best",
        )

    def _export_done(self, summary: dict) -> None:
        what = "reviewed" if summary.get("reviewed_only") else "all"
        kind = "reviewed image" if summary.get("reviewed_only") else "image"
        if self.format() == "csv":
            words = (f"Wrote counts of {plural(summary['grains'], 'grain')} in {plural(summary['taxa'], 'taxon')} "
                     f"({what} images) to {summary['path']}")  # always several: "all images" is a kind, not a count
        elif self.format() == "grains":
            words = (f"Wrote {plural(summary['grains'], 'grain')} ({summary['outlines']} with an outline) on "
                     f"{plural(summary['images'], kind)} to {summary['path']}")
        else:
            words = (f"Wrote {plural(summary['annotations'], 'annotation')} on {plural(summary['images'], kind)} "
                     f"to {summary['path']}")
            if summary.get("skipped"):
                first = summary["skipped"][0]["reason"]
                words += (f" ({len(summary['skipped'])} image(s) not exported: missing, changed or unreadable; "
                          f"first: {first})")
        if summary.get("images") == 0 and summary.get("reviewed_only"):
            words += ". No image is fully reviewed yet: review one, or export all with scores."
        self._done(summary, words)


class ImportDialog(_JobDialog):
    def __init__(self, ctl, parent=None):
        super().__init__(ctl, "Import annotations or images", "Import", parent)
        self.fmt = QComboBox(self)
        self.fmt.addItems(list(IMPORT_FORMATS))
        self.path = QLineEdit(self)
        self.images_root = QLineEdit(self)
        self.images_root.setPlaceholderText("folder the file names are relative to (default: the JSON's folder)")
        self.form.addRow("Format", self.fmt)
        self.form.addRow("From", _path_row(self, self.path, self._browse))
        self.form.addRow("Images in", _path_row(self, self.images_root, self._browse_root))
        # focal planes kept as files (issue 19); multi-page / OME-TIFF stacks need no pattern
        self.stack_pattern = QLineEdit(self)
        self.stack_pattern.setPlaceholderText("e.g. *_z{z}.png or {z}z.png (empty: every file is an image)")
        self.stack_pattern.setToolTip(STACK_PATTERN_HELP)
        self.form.addRow("Focal planes", self.stack_pattern)

        def kind_changed(t):
            self.images_root.setEnabled(IMPORT_FORMATS[t][0] == "coco")
            self.stack_pattern.setEnabled(IMPORT_FORMATS[t][0] == "folder")

        self.fmt.currentTextChanged.connect(kind_changed)
        kind_changed(self.fmt.currentText())

    def format(self) -> str:
        return IMPORT_FORMATS[self.fmt.currentText()][0]

    def _browse(self) -> None:
        fmt, folder = IMPORT_FORMATS[self.fmt.currentText()]
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Import from folder")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Import COCO file", "", "COCO JSON (*.json)")
        if path:
            self.path.setText(path)

    def _browse_root(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder with the images")
        if path:
            self.images_root.setText(path)

    def start(self) -> None:
        path = self.path.text().strip()
        if not path:
            self._failed("Choose what to import.")
            return
        self._running()
        self.job = self.ctl.import_data(
            self.format(), path, images_root=self.images_root.text().strip() or None,
            stack_pattern=(self.stack_pattern.text().strip() or None) if self.format() == "folder" else None,
            on_done=self._import_done, on_error=self._failed, on_progress=self._progress,
        )

    def _import_done(self, summary: dict) -> None:
        if summary["kind"] == "images":
            words = f"Added {plural(summary['images_added'], 'image')}"
            if summary.get("stacks"):
                words += f" ({plural(summary['stacks'], 'focal stack')} of {plural(summary['planes'], 'plane')})"
            if summary["duplicates"]:
                n_dup = len(summary['duplicates'])
                words += f"; {n_dup} {'was' if n_dup == 1 else 'were'} already in the project"
            if summary["unreadable"]:
                first = summary["unreadable"][0]
                words += f"; {len(summary['unreadable'])} could not be read (first: {first['path']}: {first['reason']})"
        else:
            n_reused, n_dup = summary['images_reused'], summary['annotations_duplicate']
            words = (f"Added {plural(summary['images_added'], 'image')} and "
                     f"{plural(summary['annotations_added'], 'annotation')}"
                     f" ({plural(n_reused, 'image')} {'was' if n_reused == 1 else 'were'} already in the project,"
                     f" {plural(n_dup, 'annotation')} {'was a duplicate' if n_dup == 1 else 'were duplicates'})")
            if summary.get("categories_added"):
                words += f"; new taxa: {', '.join(summary['categories_added'])}"
            problems = summary.get("missing_files") or summary.get("unreadable_images") or []
            if problems:
                words += f"; {len(problems)} image files missing or unreadable (first: {problems[0]})"
            for w in summary.get("warnings", [])[:3]:
                words += f"\n{w}"
        self._done(summary, words)
