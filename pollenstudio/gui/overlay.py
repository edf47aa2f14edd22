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

COLORMAP = "inferno"  # the warm map: dark (low) to bright yellow (high)
# the overlay's colour maps: "warm" (dark to yellow) vanishes on orange-brown stained grains,
# "cool" (navy to cyan) on a blue stain; "auto" picks per image the one that contrasts
COLORMAPS = {"warm": "Dark to yellow", "cool": "Blue to cyan"}
COOL_STOPS = ((0.0, (10, 18, 70)), (0.35, (25, 80, 215)), (0.7, (0, 200, 255)), (1.0, (200, 255, 255)))
LEVELS = ("P3", "P4", "P5")
LEVEL_NAMES = {"P3": "fine edges", "P4": "medium edges", "P5": "coarse edges (shape)"}  # what the list shows
EDGE_TITLE = "Edges the model sees"  # the edge overlay's name: what it shows, not a layer's ("edge map P3")
LEVEL_TIPS = {
    "P3": "P3: fine edges (stride 8), exine outline and sculpture",
    "P4": "P4: medium edges (stride 16)",
    "P5": "P5: coarse edges (stride 32), whole-grain shape",
}


def _ramp(name: str, n: int) -> np.ndarray:
    """(n, 3) uint8 RGB of colour map ``name`` ("warm" or "cool"), low to high."""
    if name == "cool":
        xs = [x for x, _ in COOL_STOPS]
        return np.stack([np.interp(np.linspace(0, 1, n), xs, [c[i] for _, c in COOL_STOPS]) for i in range(3)],
                        axis=1).round().astype(np.uint8)
    return pg.colormap.get(COLORMAP).getLookupTable(0.0, 1.0, n, alpha=False).astype(np.uint8)[:, :3]


def heat_lut(name: str = "warm") -> np.ndarray:
    """(256, 4) uint8 RGBA: the colour map, with low values more transparent so the grain
    stays visible under weak attention and strong attention stands out."""
    lut = np.zeros((256, 4), np.uint8)
    lut[:, :3] = _ramp(name, 256)
    lut[:, 3] = np.round(255 * (0.15 + 0.85 * np.linspace(0.0, 1.0, 256) ** 0.7)).astype(np.uint8)
    return lut


def choose_colormap(image: np.ndarray) -> str:
    """The colour map that contrasts with a slide: "cool" when its coloured pixels (stained
    grains, a pink or lilac mount) are warm or purple - red, orange, brown, yellow, pink,
    magenta, violet - else "warm" (a blue or green stain, a grey image). ``image``: (H, W, 3)
    RGB or (H, W) grey, any bit depth (a small copy will do)."""
    import cv2

    from pollenstudio.core.imageio import to_uint8

    a = image if image.dtype == np.uint8 else to_uint8(image)
    if a.ndim == 2 or a.shape[2] == 1:
        return "warm"  # grey: the dark-to-yellow ramp reads well
    hsv = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32)
    hue = hsv[:, 0] * (360.0 / 256.0)
    weight = (hsv[:, 1] / 255.0) * (hsv[:, 2] / 255.0)  # colour that shows: saturated and not dark
    total = float(weight.sum())
    if total <= 1e-6 * len(weight):
        return "warm"
    warm = float(weight[(hue < 75) | (hue >= 260)].sum())  # violet, lilac, magenta, pink, red, orange, brown
    return "cool" if warm >= 0.5 * total else "warm"


def legend_pixmap(width: int = 110, height: int = 12, name: str = "warm") -> QPixmap:
    lut = _ramp(name, width)
    rgb = np.ascontiguousarray(np.repeat(lut[None, :, :3], height, axis=0))
    img = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())


class OverlayBar(QToolBar):
    """E / G toggles (the window's actions), level, opacity and legend."""

    levelChanged = Signal(str)  # "P3" | "P4" | "P5"
    opacityChanged = Signal(float)
    colormapChanged = Signal(str)  # "auto" | "warm" | "cool"

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
        self.colors = QComboBox(self)
        self.colors.addItem("Auto colours", "auto")
        for key, text in COLORMAPS.items():
            self.colors.addItem(text, key)
        self.colors.setToolTip("The overlay's colours. By default chosen per image to contrast with the slide: "
                               "blue to cyan over orange, brown or pink stains, dark to yellow otherwise")
        self.colors.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.addWidget(self.colors)
        self.addWidget(QLabel("  low ", self))
        self.legend = QLabel(self)
        self.addWidget(self.legend)
        self.addWidget(QLabel(" high  ", self))
        self.show_colormap("warm")
        self.state = QLabel(self)
        self.addWidget(self.state)
        self.level.currentIndexChanged.connect(lambda _i: self.levelChanged.emit(self.level_id()))
        self.colors.currentIndexChanged.connect(lambda _i: self.colormapChanged.emit(self.colormap_choice()))
        self.opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100.0))

    def level_id(self) -> str:
        """The chosen edge level's id: "P3", "P4" or "P5"."""
        return self.level.currentData() or LEVELS[0]

    def colormap_choice(self) -> str:
        """"auto" (per image), "warm" or "cool"."""
        return self.colors.currentData() or "auto"

    def show_colormap(self, name: str) -> None:
        """The legend of the colour map in use (``name``: "warm" or "cool")."""
        self.colormap = name
        self.legend.setPixmap(legend_pixmap(name=name))
        high = "cyan" if name == "cool" else "yellow"
        self.legend.setToolTip(f"Colour of the overlay: low attention (dark) to high attention ({high})")

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

    def set_annotation(self, ann, taxon: str = "", plane_name: str | None = None) -> None:
        """The selected box: taxon, status, score, its sharpest plane (``plane_name``: the
        plane as its files name it, e.g. "z-3"; else its 1-based number) and the top-k."""
        if ann is None:
            self.label.setText("<i>No box selected</i>")
            return
        score = f" · score {ann.score:.2f}" if ann.score is not None else ""
        rows = [f"<b>{html.escape(taxon)}</b> <span style='color:#888'>({ann.status.value}{score})</span>"]
        if getattr(ann, "plane", None) is not None:
            rows.append(f"<br>sharpest on focal plane {html.escape(plane_name or str(ann.plane + 1))}")
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
