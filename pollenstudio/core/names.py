"""Names people give things (taxa, model versions, samples): one rule for every way in.

A name is one line of visible text. Refused, whatever the way in (CLI option, GUI dialog,
COCO/YOLO import, a model's class list):
- control characters (line breaks, tabs, the ESC that starts an ANSI terminal escape): a
  line break splits a name in YOLO's ``classes.txt`` and shifts every class index, an
  escape sequence repaints the terminal of whoever lists the names;
- text-direction controls (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C): a
  right-to-left override shows a name in another order than it is stored, so two names
  that look alike are not, and a crafted name can hide what it says;
- lone surrogates (cannot be written as UTF-8), empty names, more than ``MAX_NAME``
  characters.
Joiners (U+200C, U+200D) stay allowed: some scripts need them.
"""

from __future__ import annotations

import unicodedata

from pollenstudio.core.errors import InvalidNameError

MAX_NAME = 200  # characters
DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a name (or a file name read from an annotation file), in words;
    None when it can. Length is not checked here (see :func:`check_name`)."""
    for ch in text:
        if ch in DIRECTION_CONTROLS:
            return (f"contains an invisible text-direction character (U+{ord(ch):04X}), which makes it display "
                    "in another order than it is written")
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp"):
            return "contains a line break or control character"
        if cat == "Cs":
            return "contains an invalid character (a lone surrogate)"
    return None


def check_name(name, what: str = "taxon name") -> str:
    """``name`` stripped, or :class:`InvalidNameError` saying why it cannot be a ``what``
    ("taxon name", "model version name", "sample name")."""
    if name is not None and not isinstance(name, str):
        raise InvalidNameError(f"a {what} is text, got {type(name).__name__}")
    name = (name or "").strip()
    if not name:
        raise InvalidNameError(f"a {what} cannot be empty")
    why = text_problem(name)
    if why:
        raise InvalidNameError(f"the {what} {name[:40]!r} {why}")
    if len(name) > MAX_NAME:
        raise InvalidNameError(f"a {what} is at most {MAX_NAME} characters long (this one has {len(name)})")
    return name


def clean_name(text: str, fallback: str = "unnamed") -> str:
    """A name made from text nobody typed as a name (a file name): the characters
    :func:`check_name` refuses become "_", cut to ``MAX_NAME``."""
    out = "".join("_" if text_problem(ch) else ch for ch in str(text)).strip()[:MAX_NAME].strip()
    return out or fallback


__all__ = ["DIRECTION_CONTROLS", "MAX_NAME", "check_name", "clean_name", "text_problem"]
