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
    return "".join(parts)


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
