"""Model overlays: the colour-mapped heat layer's controls and the selected box's top-k taxa.

The maps themselves come from ``pollenstudio.engine.explain`` via worker jobs
(``model_jobs.edge_job`` / ``gradcam_job``); this module only draws: an "Overlay" toolbar
(E / G toggles, edge level P3/P4/P5, opacity slider, low->high colour legend) and a small
panel listing the selected box's most probable taxa.
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from pollenstudio.core.types import display_taxon

COLORMAP = "inferno"  # dark (low) to bright yellow (high): readable over brown/yellow grains
LEVELS = ("P3", "P4", "P5")
LEVEL_NAMES = {"P3": "fine edges", "P4": "medium edges", "P5": "coarse edges (shape)"}  # what the list shows
LEVEL_TIPS = {
    "P3": "P3: fine edges (stride 8), exine outline and sculpture",
    "P4": "P4: medium edges (stride 16)",
    "P5": "P5: coarse edges (stride 32), whole-grain shape",
}


def heat_lut() -> np.ndarray:
    """(256, 4) uint8 RGBA: the colour map, with low values more transparent so the grain
    stays visible under weak attention and strong attention stands out."""
    lut = pg.colormap.get(COLORMAP).getLookupTable(0.0, 1.0, 256, alpha=True).astype(np.uint8)
    lut[:, 3] = np.round(255 * (0.15 + 0.85 * np.linspace(0.0, 1.0, 256) ** 0.7)).astype(np.uint8)
    return lut


def legend_pixmap(width: int = 110, height: int = 12) -> QPixmap:
    lut = pg.colormap.get(COLORMAP).getLookupTable(0.0, 1.0, width, alpha=False).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(lut[None, :, :3], height, axis=0))
    img = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())


class OverlayBar(QToolBar):
    """E / G toggles (the window's actions), level, opacity and legend."""

    levelChanged = Signal(str)  # "P3" | "P4" | "P5"
    opacityChanged = Signal(float)

    def __init__(self, edge_action, gradcam_action, parent: QWidget | None = None):
        super().__init__("Overlay", parent)
        self.setObjectName("overlay_toolbar")
        self.setMovable(False)
        self.addWidget(QLabel(" Overlay ", self))
        self.addAction(edge_action)
        self.level = QComboBox(self)
        for name in LEVELS:
            self.level.addItem(LEVEL_NAMES[name], name)  # the level's id (P3...) is the item data
        for i, name in enumerate(LEVELS):
            self.level.setItemData(i, LEVEL_TIPS[name], Qt.ItemDataRole.ToolTipRole)
        self.level.setToolTip("Edge-map level: fine edges (exine outline, sculpture; P3) to coarse (grain shape; P5)")
        self.level.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.addWidget(self.level)
        self.addAction(gradcam_action)
        self.addWidget(QLabel("  Opacity ", self))
        self.opacity = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setFixedWidth(100)
        self.opacity.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.addWidget(self.opacity)
        self.addWidget(QLabel("  low ", self))
        self.legend = QLabel(self)
        self.legend.setPixmap(legend_pixmap())
        self.legend.setToolTip("Colour of the overlay: low attention (dark) to high attention (yellow)")
        self.addWidget(self.legend)
        self.addWidget(QLabel(" high  ", self))
        self.state = QLabel(self)
        self.addWidget(self.state)
        self.level.currentIndexChanged.connect(lambda _i: self.levelChanged.emit(self.level_id()))
        self.opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100.0))

    def level_id(self) -> str:
        """The chosen edge level's id: "P3", "P4" or "P5"."""
        return self.level.currentData() or LEVELS[0]

    def set_state(self, text: str) -> None:
        self.state.setText(text)


class TopKPanel(QWidget):
    """The selected box: taxon, status, score and the model's top-k taxa with probabilities;
    below, the image's rejected boxes (click one to select and show it: a wrong reject is
    found here and undone with 1-9 or A)."""

    rejectedActivated = Signal(int)  # annotation id

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel(self)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.label.setWordWrap(True)
        self.rejected_title = QLabel(self)
        self.rejected_list = QListWidget(self)
        self.rejected_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.rejected_list.setMaximumHeight(110)
        self.rejected_list.itemClicked.connect(
            lambda it: self.rejectedActivated.emit(int(it.data(Qt.ItemDataRole.UserRole))))
        from pollenstudio.gui.similar_grains import SimilarStrip

        self.similar = SimilarStrip(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.addWidget(self.label)
        lay.addWidget(self.similar)
        lay.addStretch(1)
        lay.addWidget(self.rejected_title)
        lay.addWidget(self.rejected_list)
        self.set_annotation(None)
        self.set_rejected([])

    def set_rejected(self, items: list[tuple[int, str, float | None]]) -> None:
        """(annotation id, taxon, score) of the image's rejected boxes."""
        if items == getattr(self, "_rejected", None):
            return  # every key press lands here: rebuild only when the list changed
        self._rejected = list(items)
        self.rejected_title.setText(f"Rejected on this image: {len(items)}" + (" (R shows them)" if items else ""))
        self.rejected_list.clear()
        for aid, taxon, score in items:
            it = QListWidgetItem(f"{taxon}" + (f"  {score:.2f}" if score is not None else ""))
            it.setData(Qt.ItemDataRole.UserRole, aid)
            self.rejected_list.addItem(it)
        self.rejected_list.setVisible(bool(items))

    def set_annotation(self, ann, taxon: str = "") -> None:
        if ann is None:
            self.label.setText("<i>No box selected</i>")
            return
        score = f" · score {ann.score:.2f}" if ann.score is not None else ""
        rows = [f"<b>{html.escape(taxon)}</b> <span style='color:#888'>({ann.status.value}{score})</span>"]
        if getattr(ann, "plane", None) is not None:
            rows.append(f"<br>sharpest on focal plane {ann.plane + 1}")
        if ann.topk:
            rows.append("<table cellspacing='0' cellpadding='1'>")
            for name, p in ann.topk:
                bar = "&#9608;" * max(0, int(round(p * 10)))
                rows.append(
                    f"<tr><td>{html.escape(display_taxon(name))}&nbsp;</td><td align='right'>{p * 100:.0f}&nbsp;%&nbsp;</td>"
                    f"<td style='color:#e6a23c'>{bar}</td></tr>"
                )
            rows.append("</table>")
        else:
            rows.append("<br><span style='color:#888'>no per-taxon probabilities stored for this box</span>")
        self.label.setText("".join(rows))
        self.text = self.label.text()
