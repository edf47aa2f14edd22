"""Several reviewers in the window (issue 30): the image on screen is claimed, one someone
else is reviewing opens read-only or is taken over after a question, others' edits appear
without reopening, crossing edits and undos are said in words, and Review > Second
opinion... starts the checking pass. The rules live in ``project.reviewers`` and
``project.opinions``; this module only turns them into timers, a listener thread, signals
and dialogs.

- SQLite project: a 1 s timer polls ``ChangeFeed`` (one PRAGMA when nobody wrote).
- PostgreSQL project: a thread runs ``reviewers.listen`` (LISTEN/NOTIFY) and posts each
  change to the GUI thread through a queued signal.
- Every 15 s the claim's heartbeat is renewed; a claim taken over by someone else turns the
  image read-only here, with a note saying who took it.
"""

from __future__ import annotations

import os
import threading
import time

from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QInputDialog, QLabel, QMessageBox

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.project import reviewers as rv

SETTING = "review/reviewer_name"


def configured_name(settings: QSettings) -> str | None:
    v = settings.value(SETTING, None)
    return str(v) if v else None


class ReviewersController(QObject):
    """Claims, others' changes and conflicts for one main window."""

    remoteChange = Signal(object)  # RemoteChange, from the listener thread
    readOnlyChanged = Signal(bool)

    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.ctl = win.ctl
        self.read_only = False
        self.holder: rv.Claim | None = None  # who holds the image on screen when read-only here
        self._feed: rv.ChangeFeed | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._asking = False
        self._for = None  # the Project object the watchers are set up for
        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(int(rv.POLL_S * 1000))
        self.poll_timer.timeout.connect(self.poll)
        self.beat_timer = QTimer(self)
        self.beat_timer.setInterval(int(rv.HEARTBEAT_S * 1000))
        self.beat_timer.timeout.connect(self.heartbeat)
        self.banner = QLabel(win.canvas)
        self.banner.setObjectName("readOnlyBanner")
        self.banner.setStyleSheet("QLabel#readOnlyBanner{background:#b3261e;color:white;padding:4px 10px;"
                                  "border-radius:4px;font-weight:bold}")
        self.banner.hide()
        self.remoteChange.connect(self._on_remote, Qt.ConnectionType.QueuedConnection)
        self.ctl.projectChanged.connect(self._project_changed)
        self.ctl.projectClosing.connect(self._closing)
        self.ctl.imageShown.connect(self._image_shown)
        self.ctl.boxesChanged.connect(self._shown_versions)
        self.ctl.storeChanged.connect(self._own_event)
        self.ctl.errorRaised.connect(lambda *_: self.poll())  # a refused edit: show their version at once

    # ------------------------------------------------------------------ project
    @property
    def project(self):
        return self.ctl.project

    def _project_changed(self) -> None:
        p = self.project
        if p is self._for:
            return  # already set up (the window showed an image of it before this signal came)
        self._stop_watching()
        self._set_read_only(False, None)
        self._for = p
        if p is None:
            return
        name = configured_name(self.win.settings)
        if name:
            try:
                rv.set_reviewer(p, rv.reviewer_name(name))
            except PollenStudioError as exc:
                self.ctl.message.emit(str(exc))
        if getattr(p, "server", None) is None:
            self._feed = rv.ChangeFeed(p)
            self.poll_timer.start()
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._listen, args=(p, self._stop), daemon=True,
                                            name="pollenstudio-listen")
            self._thread.start()
        self.beat_timer.start()

    def _listen(self, p, stop) -> None:
        try:
            rv.listen(p, self.remoteChange.emit, stop)
        except Exception as exc:  # the server went away: say so, edits still report their own errors
            if not stop.is_set():
                self.remoteChange.emit(rv.RemoteChange("error", str(exc), (), (), (), "", ""))

    def _stop_watching(self) -> None:
        self.poll_timer.stop()
        self.beat_timer.stop()
        self._feed = None
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self._thread = None

    def _closing(self) -> None:
        p = self.project
        self._stop_watching()
        self._for = None
        if p is not None:
            try:
                rv.release(p)
            except PollenStudioError:
                pass  # the claim expires by itself

    # ------------------------------------------------------------------ claims
    def _image_shown(self, image_id: int) -> None:
        p = self.project
        if p is None:
            return
        self._project_changed()  # the name and the watchers before the first claim
        try:
            c = rv.claim(p, image_id)
        except PollenStudioError as exc:
            self.ctl.message.emit(f"Could not mark the image as yours: {exc}")
            return
        if c.session == p.session:
            self._set_read_only(False, None)
            return
        self._set_read_only(True, c)
        if not self._asking:
            QTimer.singleShot(0, lambda c=c: self.ask_takeover(c))

    def ask_takeover(self, c: rv.Claim) -> bool:
        """The question a second reviewer gets: open read-only, or take the image over."""
        p = self.project
        if p is None or self.ctl.image_id != c.image_id or self._asking:
            return False
        name = os.path.basename(self.ctl.image_record.path) if self.ctl.image_record else f"image {c.image_id}"
        box = QMessageBox(self.win)
        box.setObjectName("takeoverQuestion")
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Image in review")
        box.setText(f"{name}: {c.describe()}.")
        box.setInformativeText(f"Open it read-only (you see {c.reviewer}'s decisions as they are made), or take it "
                               f"over ({c.reviewer} can then no longer change it)?")
        ro = box.addButton("Open read-only", QMessageBox.ButtonRole.RejectRole)
        take = box.addButton("Take over", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(ro)
        self.last_question = box
        self._asking = True
        try:
            box.exec()
        finally:
            self._asking = False
        if box.clickedButton() is take:
            return self.take_over()
        self.ctl.message.emit(f"{name} is open read-only: {c.describe()}")
        return False

    def take_over(self) -> bool:
        p, iid = self.project, self.ctl.image_id
        if p is None or iid is None:
            return False
        try:
            c = rv.claim(p, iid, takeover=True)
        except PollenStudioError as exc:
            self.ctl.errorRaised.emit("Cannot take over", str(exc))
            return False
        self._set_read_only(False, None)
        self.ctl.message.emit(f"You are reviewing this image now (since {time.strftime('%H:%M', time.localtime(c.since))})")
        return True

    def heartbeat(self) -> None:
        p = self.project
        if p is None:
            return
        try:
            held = rv.heartbeat(p)
        except PollenStudioError as exc:
            self.ctl.message.emit(f"Could not renew the claim on the image: {exc}")
            return
        iid = self.ctl.image_id
        if iid is not None and self.read_only and self.holder is not None:
            before = self.holder
            c = rv.claim(p, iid)  # free again (the holder moved on, or their window died): it is ours
            if c.session == p.session:
                self._set_read_only(False, None)
                self.ctl.message.emit(f"{before.reviewer} left this image: you are reviewing it now")
            elif c.session != before.session:
                self._set_read_only(True, c)  # someone else took it meanwhile
            return
        if iid is not None and not self.read_only and iid not in held:
            c = rv.claim(p, iid)  # lost it (taken over, or expired while asleep): claim again if free
            if c.session != p.session:
                self._set_read_only(True, c)
                self.ctl.message.emit(f"{c.reviewer} took over this image: it is read-only for you now")

    def _set_read_only(self, on: bool, holder: rv.Claim | None) -> None:
        self.read_only, self.holder = on, holder
        if on and holder is not None:
            self.banner.setText(f"Read-only: {holder.describe()} (Review > Take over this image)")
            self.banner.adjustSize()
            self.banner.move(10, 10)
            self.banner.show()
            self.banner.raise_()
        else:
            self.banner.hide()
        self.readOnlyChanged.emit(on)

    # ------------------------------------------------------------------ others' changes
    def poll(self) -> None:
        if self._feed is None or self.project is None:
            return
        try:
            changes = self._feed.poll()
        except PollenStudioError as exc:
            self.ctl.message.emit(f"Could not read others' changes: {exc}")
            return
        for ch in changes:
            self._on_remote(ch)

    def _on_remote(self, ch: rv.RemoteChange) -> None:
        p = self.project
        if p is None:
            return
        if ch.kind == "error":
            self.ctl.message.emit(f"Others' changes no longer arrive: {ch.label}")
            return
        if ch.kind == "claim":
            if ch.target == p.session and ch.image_ids and ch.image_ids[0] == self.ctl.image_id:
                holder = rv.claim_of(p, ch.image_ids[0])
                if holder is not None:
                    self._set_read_only(True, holder)
                self.ctl.message.emit(f"{ch.author} took over this image: it is read-only for you now")
            return
        from pollenstudio.project.store import ChangeEvent

        p.deliver(ChangeEvent(ch.kind, ch.label, ch.image_ids, ch.annotation_ids, ch.category_ids))
        if self.ctl.image_id in ch.image_ids:
            self.ctl.message.emit(f"{ch.author}: {ch.label} on this image")

    def _shown_versions(self) -> None:
        """What the window shows is what an edit is checked against (crossing edits)."""
        p = self.project
        if p is not None:
            p._expected = {a.id: float(a.updated) for a in self.ctl.annotations()}

    def _own_event(self, ev) -> None:
        if getattr(ev, "conflicts", ()):
            from pollenstudio.gui.app import show_error

            title = "Undo: not everything was undone" if ev.kind == "undo" else "Redo: not everything was redone"
            self.last_conflict_box = show_error(self.win, title, "\n".join(ev.conflicts))

    # ------------------------------------------------------------------ reviewer name
    def ask_name(self) -> None:
        p = self.project
        current = p.reviewer if p is not None else rv.reviewer_name(configured_name(self.win.settings))
        text, ok = QInputDialog.getText(self.win, "Reviewer name",
                                        "Your decisions are recorded under this name (empty: your login name):",
                                        text=current)
        if not ok:
            return
        try:
            name = rv.reviewer_name(text.strip() or None) if text.strip() else rv.reviewer_name(None)
        except PollenStudioError as exc:
            self.ctl.errorRaised.emit("Reviewer name", str(exc))
            return
        self.win.settings.setValue(SETTING, text.strip())
        if p is not None:
            rv.set_reviewer(p, name)
        self.ctl.message.emit(f"Decisions are recorded as {name}")


def install_reviewers(win) -> ReviewersController:
    """Review > Take over this image / Second opinion... / Reviewer name..., and the claim,
    feed and listener machinery above."""
    rc = win.reviewers = ReviewersController(win)
    menu = next((a.menu() for a in win.menuBar().actions() if a.text().replace("&", "") == "Review"), None)
    if menu is None:
        menu = win.menuBar().addMenu("&Review")
    menu.addSeparator()
    win.act_take_over = QAction("Take over this image", win)
    win.act_take_over.setStatusTip("Review the image on screen yourself; whoever was reviewing it can then no longer "
                                   "change it")
    win.act_take_over.triggered.connect(rc.take_over)
    win.act_take_over.setEnabled(False)
    rc.readOnlyChanged.connect(win.act_take_over.setEnabled)
    menu.addAction(win.act_take_over)
    win.act_second_opinion = QAction("Second opinion...", win)
    win.act_second_opinion.setStatusTip("Check names given by other reviewers: C confirms, D disputes with another "
                                        "taxon; agreement goes into the report")
    win.act_second_opinion.triggered.connect(lambda: open_second_opinion(win))
    menu.addAction(win.act_second_opinion)
    win.act_reviewer_name = QAction("Reviewer name...", win)
    win.act_reviewer_name.triggered.connect(rc.ask_name)
    menu.addAction(win.act_reviewer_name)
    return rc


def open_second_opinion(win):
    from pollenstudio.gui.second_opinion import SecondOpinionDialog

    p = win.ctl.project
    if p is None:
        win.ctl.message.emit("Open a project first")
        return None
    dlg = SecondOpinionDialog(p, win)
    dlg.show()
    win.second_opinion = dlg
    return dlg
