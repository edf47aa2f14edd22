"""QApplication setup and the last line of defence: an exception in a slot is logged and
shown in a dialog; the app keeps running and no edit already saved is lost."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from pollenstudio.core.errors import PollenStudioError

log = logging.getLogger("pollenstudio.gui")

ORG = "PollenStudio"
APP = "PollenStudio"
STYLE = Path(__file__).resolve().parents[2] / "resources" / "style.qss"


def error_text(exc: BaseException) -> str:
    """What the user reads: our typed errors speak for themselves, anything else is a bug."""
    if isinstance(exc, PollenStudioError):
        return str(exc)
    return (
        f"Something went wrong ({type(exc).__name__}: {exc}).\n\n"
        "Your edits so far are saved. The details are in the log; please report them."
    )


def show_error(parent: QWidget | None, title: str, message: str) -> QMessageBox:
    """Non-modal error box (a modal one would stall timers and tests behind it)."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.show()
    return box


class ErrorReporter(QObject):
    """``sys.excepthook`` replacement: log with traceback, show the gist, carry on."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.last_message: str | None = None
        self.count = 0
        self._previous = None
        self._dialog: QMessageBox | None = None

    def install(self) -> "ErrorReporter":
        self._previous = sys.excepthook
        sys.excepthook = self.handle
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            sys.excepthook = self._previous
            self._previous = None

    def handle(self, exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        log.error("unhandled exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        self.count += 1
        self.last_message = error_text(exc)
        if QApplication.instance() is None:
            return  # during shutdown: the log has it, there is no window to show it in
        if self._dialog is not None and self._dialog.isVisible():
            return  # one dialog at a time: a failing paint loop must not open hundreds
        parent = QApplication.activeWindow()
        self._dialog = show_error(parent, "PollenStudio: error", self.last_message)


_REPORTER: ErrorReporter | None = None


def error_reporter() -> ErrorReporter | None:
    return _REPORTER


def create_app(argv: list[str] | None = None, install_hook: bool = True) -> QApplication:
    """The QApplication (reused if one exists, as under pytest-qt) with name, style and,
    unless ``install_hook`` is false, the error reporter as ``sys.excepthook``."""
    global _REPORTER
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    if STYLE.is_file():
        app.setStyleSheet(STYLE.read_text(encoding="utf-8"))
    if install_hook and _REPORTER is None:
        _REPORTER = ErrorReporter(app).install()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app
