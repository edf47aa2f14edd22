"""CSV cells a spreadsheet reads as text, never as a formula (CSV / formula injection).

Excel, LibreOffice Calc and Google Sheets run a cell that starts with ``=``, ``+``, ``-`` or
``@`` as a formula (tab, carriage return and line feed before one of them do the same in
some of them), so a taxon or sample named ``=HYPERLINK("http://...")`` or
``=cmd|' /C calc'!A0`` would run when the user opens the count report. As the OWASP
"CSV Injection" advice says, such a text cell is written with a single quote in front
(``'=HYPERLINK(...)``): spreadsheets show it as the text it is, and the quote tells a reader
of the raw file that it was added. Numbers are left alone, also as text (``"-1.5"``): they
are not formulas and must stay numbers.

Every CSV writer of the package goes through :func:`write_rows` (``project.report``:
``export csv`` / ``export grains``; ``project.pollen_report``: ``report --out x.csv``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value):
    """``value`` as a spreadsheet should read it: a text that a spreadsheet would run as a
    formula gets a leading single quote; numbers and other texts are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(row: Mapping) -> dict:
    return {k: safe_cell(v) for k, v in row.items()}


def write_rows(f, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
    """Header and rows to the open text file ``f`` (opened with ``newline=""``), every cell
    through :func:`safe_cell`."""
    w = csv.DictWriter(f, fieldnames=list(columns))  # our own fixed column names
    w.writeheader()
    w.writerows(safe_row(r) for r in rows)


__all__ = ["FORMULA_START", "safe_cell", "safe_row", "write_rows"]
