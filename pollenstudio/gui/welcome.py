"""Welcome page: what a first-time user sees. Open an image folder (makes a project),
open a project, reopen a recent one, or open the demo project."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pollenstudio import __version__
from pollenstudio.engine.demo import demo_project_path


def demo_hook():
    """The function that prepares the demo project and returns its folder (slow: call it
    in a worker): :func:`pollenstudio.engine.demo.demo_project_path`."""
    return demo_project_path


def folder_has_images(folder: str | Path, limit: int = 20000) -> bool:
    """Whether ``folder`` (or a sub-folder) holds an image file PollenStudio reads; stops at
    the first one (hidden folders and a project's own caches are not looked in)."""
    import os

    from pollenstudio.core.imageio import IMAGE_SUFFIXES

    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("cache", "models")]
        for f in files:
            if Path(f).suffix.lower() in IMAGE_SUFFIXES:
                return True
            seen += 1
            if seen > limit:
                return False
    return False


def no_images_text(folder: str | Path) -> str:
    return (f"No images in {folder}, so no project was made there. A project starts from a folder of microscope "
            f"images (JPEG, PNG, TIFF or BMP): choose one with Open image folder, or open the demo project to try "
            f"PollenStudio first.")


def demo_available() -> bool:
    """The demo is part of every build; a missing default model is reported when the
    user asks for the demo (with what to do instead)."""
    return True


class WelcomePage(QWidget):
    openFolderRequested = Signal()
    openProjectRequested = Signal()
    openRecentRequested = Signal(str)
    openDemoRequested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("welcome")
        title = QLabel("PollenStudio", self)
        title.setObjectName("welcomeTitle")
        subtitle = QLabel(
            "Detect, review and count pollen grains on microscope images; retrain the detector on "
            "what you reviewed.",
            self,
        )
        subtitle.setWordWrap(True)
        subtitle.setObjectName("welcomeSubtitle")

        self.open_folder = QPushButton("Open image folder...", self)
        self.open_folder.setToolTip("Choose a folder of JPEG / PNG / TIFF images; a project is created in it")
        self.open_project = QPushButton("Open project...", self)
        self.open_project.setToolTip("Open a folder that holds a project.pollen file")
        self.open_demo = QPushButton("Open demo project", self)
        for b in (self.open_folder, self.open_project, self.open_demo):
            b.setMinimumHeight(40)
            b.setObjectName("welcomeButton")
        self.open_folder.setDefault(True)
        self.set_demo_available(demo_available())

        self.recent = QListWidget(self)
        self.recent.setObjectName("recentList")
        self.recent_label = QLabel("Recent projects", self)
        self.recent_label.setObjectName("sectionLabel")
        self.empty_recent = QLabel("Projects you open will be listed here.", self)
        self.empty_recent.setObjectName("hint")

        hints = QLabel(
            "<b>Reviewing</b>: A accept · X reject · 1-9 taxon · Tab next proposal · N/P next/previous image"
            " · B draw a box · Ctrl+Z undo · F1 all shortcuts",
            self,
        )
        hints.setObjectName("hint")
        hints.setWordWrap(True)
        # why the welcome page is shown again (e.g. an image folder with no images in it)
        self.notice = QLabel(self)
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #b35900;")
        self.notice.hide()

        left = QVBoxLayout()
        left.addWidget(self.open_folder)
        left.addWidget(self.open_project)
        left.addWidget(self.open_demo)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(self.recent_label)
        right.addWidget(self.recent, 1)
        right.addWidget(self.empty_recent)
        row = QHBoxLayout()
        row.addLayout(left, 2)
        row.addSpacing(24)
        row.addLayout(right, 3)

        card = QFrame(self)
        card.setObjectName("welcomeCard")
        card.setMaximumWidth(860)
        inner = QVBoxLayout(card)
        inner.setContentsMargins(36, 30, 36, 30)
        inner.addWidget(title)
        inner.addWidget(subtitle)
        inner.addWidget(self.notice)
        inner.addSpacing(18)
        inner.addLayout(row, 1)
        inner.addSpacing(12)
        inner.addWidget(hints)
        version = QLabel(f"version {__version__}", card)
        version.setObjectName("hint")
        inner.addWidget(version, 0, Qt.AlignmentFlag.AlignRight)

        outer = QVBoxLayout(self)
        outer.addStretch(1)
        h = QHBoxLayout()
        h.addStretch(1)
        h.addWidget(card, 4)
        h.addStretch(1)
        outer.addLayout(h, 6)
        outer.addStretch(1)

        self.open_folder.clicked.connect(self.openFolderRequested)
        self.open_project.clicked.connect(self.openProjectRequested)
        self.open_demo.clicked.connect(self.openDemoRequested)
        self.recent.itemActivated.connect(lambda it: self.openRecentRequested.emit(it.data(Qt.ItemDataRole.UserRole)))
        self.recent.itemClicked.connect(lambda it: self.openRecentRequested.emit(it.data(Qt.ItemDataRole.UserRole)))

    def set_notice(self, text: str) -> None:
        """A note above the buttons ("" hides it)."""
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def set_demo_available(self, ok: bool) -> None:
        self.open_demo.setEnabled(ok)
        self.open_demo.setToolTip(
            "Sample micrographs with the default model" if ok
            else "The demo project is not installed in this build yet"
        )

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        from urllib.parse import urlsplit

        from pollenstudio.core.errors import ProjectError
        from pollenstudio.project.dialect import is_server_url, parse_server_url

        for p in paths:
            if is_server_url(p):  # a project on a lab server: its name, then the server and database
                try:
                    loc = parse_server_url(p)
                except ProjectError:  # the window offers well-formed URLs only
                    continue
                where = urlsplit(loc.conninfo)
                host = f"{where.hostname or 'this computer'}{f':{where.port}' if where.port else ''}"
                it = QListWidgetItem(f"{loc.project}\non {host}, database {where.path.strip('/')}")
                it.setData(Qt.ItemDataRole.UserRole, p)
                it.setToolTip(str(loc))
                self.recent.addItem(it)
                continue
            path = Path(p)
            it = QListWidgetItem(f"{path.name}\n{path.parent}")
            it.setData(Qt.ItemDataRole.UserRole, str(path))
            it.setToolTip(str(path))
            self.recent.addItem(it)
        self.recent.setVisible(bool(paths))
        self.empty_recent.setVisible(not paths)
