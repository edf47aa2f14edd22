"""F1: every keyboard shortcut, built from the same table the actions come from."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from pollenstudio.gui.shortcuts import CANVAS_KEYS, SHORTCUTS


def shortcuts_html() -> str:
    groups: dict[str, list[tuple[str, str]]] = {}
    for s in SHORTCUTS:
        if s.name.startswith("taxon_") and s.name != "taxon_1":
            continue  # one row "1 ... 9" instead of nine
        keys = " / ".join(k for k in s.keys if k != "Backtab")
        text = s.text
        if s.name == "taxon_1":
            keys, text = "1 ... 9", "Assign the taxon with that hotkey"
        if not s.enabled:
            text += " (not available yet)"
        groups.setdefault(s.group, []).append((keys, text))
    groups.setdefault("Canvas", []).extend(CANVAS_KEYS)
    parts = ["<style>td{padding:2px 14px 2px 0} th{text-align:left;padding-top:10px}</style><table>"]
    for group, rows in groups.items():
        parts.append(f"<tr><th colspan=2>{html.escape(group)}</th></tr>")
        for keys, text in rows:
            parts.append(f"<tr><td><b>{html.escape(keys)}</b></td><td>{html.escape(text)}</td></tr>")
    parts.append("</table>")
    parts.append(LEARNING_LOOP_HTML)
    return "".join(parts)


# Not keys, but what N walks and what the model does on its own: said where the keys are.
LEARNING_LOOP_HTML = (
    "<h4>Which image next, and how the model learns</h4>"
    "<p><b>N / P</b> follow the image list's order (the project's order by default). The sort <b>Review this "
    "next</b> puts first the "
    "images whose review is expected to teach the model most: proposals the model is unsure of (score near 0.5), "
    "grains it hesitates to name (two taxa close), grains it finds differently on the mirrored image, and taxa "
    "with few reviewed grains. Reviewed images come last. The list sorts again after a detection of several "
    "images; hover an image for its value. It is not the default because, measured, it taught the model no "
    "faster than a random order. Other sorts: Name, Most proposals first, Status, Project order.</p>"
    "<p><b>Model &gt; Flipped second pass</b>: detection also runs on each image mirrored, for the disagreement "
    "above. Default: only when detection runs on a GPU (on a CPU it makes detection about 2.3x as long); or "
    "Always / Never. Without it the order uses the other signals.</p>"
    "<p><b>Model &gt; Retrain continuously</b> (off by default; also in Model &gt; Train..., with N): after every "
    "N newly reviewed images a new version is trained in the background from the model in use; it is used only "
    "if it beats the model in use on the same validation images. The status bar says what happened.</p>"
    "<p><b>Model &gt; Model progress...</b>: how this project's versions improved with the reviewed grains, overall "
    "and per taxon, and which taxa need more reviewed grains to be learnt.</p>"
)


class HelpDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(520, 640)
        lay = QVBoxLayout(self)
        self.text = QTextBrowser(self)
        self.text.setHtml(shortcuts_html())
        lay.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
