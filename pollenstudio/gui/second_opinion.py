"""Review > Second opinion...: check names other reviewers gave, one grain at a time (issue
30). The grain is shown with its name and who gave it; C confirms, D disputes with the taxon
chosen in the list (digit keys pick one), S skips. Opinions go to ``project.opinions``; the
agreement so far is shown at the bottom and goes into the report.

Why a dialog of its own and not a mode of the review window: the pass walks grains across
all images in the first reviewer's order, needs no boxes to draw or move, and must never
change a grain (a checker's dispute is an opinion, not a decision) - the review window's
keys all change grains.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

from pollenstudio.core.errors import PollenStudioError
from pollenstudio.core.types import display_taxon, is_unassigned_taxon
from pollenstudio.project import opinions as op

VIEW_PX = 260  # side of the grain's picture


class SecondOpinionDialog(QDialog):
    def __init__(self, project, parent=None):
        super().__init__(parent)
        self.setObjectName("secondOpinion")
        self.setWindowTitle("Second opinion")
        self.project = project
        self.queue = op.pending(project)
        self.total = len(self.queue)
        self.pos = 0
        self.checked = 0
        self._pixels: dict[int, object] = {}  # image id -> pixels of the last image cut from

        self.picture = QLabel()
        self.picture.setFixedSize(VIEW_PX, VIEW_PX)
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setStyleSheet("background:#222;color:#ccc")
        self.name = QLabel()
        self.name.setStyleSheet("font-size:16pt;font-weight:bold")
        self.who = QLabel()
        self.who.setWordWrap(True)
        self.taxa = QComboBox()
        self.categories = [c for c in project.categories() if not is_unassigned_taxon(c.name)]
        for i, c in enumerate(self.categories):
            key = f"{i + 1}  " if i < 9 else ""
            self.taxa.addItem(f"{key}{display_taxon(c.name)}", c.id)
        self.confirm_btn = QPushButton("Confirm (C)")
        self.dispute_btn = QPushButton("Dispute (D)")
        self.skip_btn = QPushButton("Skip (S)")
        self.confirm_btn.clicked.connect(self.confirm)
        self.dispute_btn.clicked.connect(self.dispute)
        self.skip_btn.clicked.connect(self.skip)
        self.progress = QLabel()
        self.agreement = QLabel()
        self.agreement.setWordWrap(True)
        self.agreement.setStyleSheet("color:#555")
        self.note = QLabel()
        self.note.setWordWrap(True)

        side = QVBoxLayout()
        side.addWidget(self.name)
        side.addWidget(self.who)
        side.addSpacing(8)
        side.addWidget(QLabel("If you see another taxon:"))
        side.addWidget(self.taxa)
        row = QHBoxLayout()
        for b in (self.confirm_btn, self.dispute_btn, self.skip_btn):
            row.addWidget(b)
        side.addLayout(row)
        side.addWidget(self.note)
        side.addStretch(1)
        side.addWidget(self.progress)
        top = QHBoxLayout()
        top.addWidget(self.picture)
        top.addLayout(side, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.agreement)

        for key, fn in (("C", self.confirm), ("D", self.dispute), ("S", self.skip), ("Right", self.skip)):
            QShortcut(QKeySequence(key), self, fn)
        for i in range(min(9, len(self.categories))):
            QShortcut(QKeySequence(str(i + 1)), self, lambda i=i: self.taxa.setCurrentIndex(i))
        self.resize(640, 340)
        self._show()

    # ------------------------------------------------------------------ showing
    def current(self):
        return self.queue[self.pos] if self.pos < len(self.queue) else None

    def _show(self) -> None:
        a = self.current()
        self._update_agreement()
        for b in (self.confirm_btn, self.dispute_btn, self.skip_btn):
            b.setEnabled(a is not None)
        if a is None:
            self.picture.setPixmap(QPixmap())
            self.picture.setText("")
            self.name.setText("Nothing left to check")
            self.who.setText("Every grain another reviewer named has your opinion (or was skipped)."
                             if self.total else "No grain named by another reviewer yet.")
            self.progress.setText(f"{self.checked} of {self.total} checked")
            return
        cat = self.project.category(a.category_id)
        self.name.setText(display_taxon(cat.name))
        rec = self.project.image(a.image_id)
        when = time.strftime("%d %b %H:%M", time.localtime(a.updated))
        self.who.setText(f"Named by <b>{a.author}</b> on {when}<br>{rec.path}, grain {a.id}")
        i = self.taxa.findData(a.category_id)
        others = [k for k in range(self.taxa.count()) if k != i]
        if others and (self.taxa.currentIndex() == i or self.taxa.currentIndex() < 0):
            self.taxa.setCurrentIndex(others[0])
        self.progress.setText(f"Grain {self.pos + 1} of {len(self.queue)}; {self.checked} checked")
        self.picture.setPixmap(self._crop(a))

    def _crop(self, a) -> QPixmap:
        # the gallery's crop rule (box and margin) and pixel access; cut at this view's size,
        # not the gallery's 96 px thumbnails (a checker needs the grain's detail)
        import cv2
        import numpy as np

        from pollenstudio.core.imageio import to_uint8
        from pollenstudio.gui.gallery import _crop_rect, _open_pixels, _to_qimage

        try:
            if a.image_id not in self._pixels:
                self._pixels = {a.image_id: _open_pixels(str(self.project.image_path(a.image_id)))}
            img = self._pixels[a.image_id]
            h, w = img.shape[:2]
            x1, y1, x2, y2 = _crop_rect(a.box.xyxy(), w, h)
            crop = np.asarray(img[y1:y2, x1:x2])
        except (PollenStudioError, OSError, ValueError) as exc:
            self.picture.setText(f"Picture not available:\n{exc}")
            return QPixmap()
        crop = to_uint8(crop) if crop.dtype != np.uint8 else crop
        if crop.ndim == 2:
            crop = np.repeat(crop[..., None], 3, axis=2)
        crop = np.ascontiguousarray(crop[..., :3])
        s = VIEW_PX / max(crop.shape[:2])
        size = (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        return QPixmap.fromImage(_to_qimage(crop))

    def _update_agreement(self) -> None:
        ag = op.agreement(self.project)
        if ag is None:
            self.agreement.setText("Agreement: none yet")
            return
        self.agreement.setText(f"Agreement so far: {ag.agreed} of {ag.n} confirmed = {100 * ag.percent:.0f} % "
                               f"({100 * ag.lo:.0f}-{100 * ag.hi:.0f} %); Cohen's kappa {ag.kappa.text()}. "
                               "Per taxon in File > Report.")

    # ------------------------------------------------------------------ opinions
    def _record(self, fn, *args) -> None:
        a = self.current()
        if a is None:
            return
        try:
            fn(self.project, a.id, *args)
        except PollenStudioError as exc:
            self.note.setText(str(exc))
            return
        self.note.setText("")
        self.checked += 1
        self.pos += 1
        self._show()

    def confirm(self) -> None:
        self._record(op.confirm)

    def dispute(self) -> None:
        cid = self.taxa.currentData()
        if cid is None:
            self.note.setText("Choose the taxon you see in the list (or with its digit key), then D")
            return
        self._record(op.dispute, int(cid))

    def skip(self) -> None:
        if self.current() is not None:
            self.pos += 1
            self._show()
