"""The user's taxon list: one order and one colour per taxon, kept across projects.

A taxon's digit key is its place among the user's first nine named taxa, and its colour is
the one it had when the user first met it (or chose since), so Asteraceae is 4 / orange in
every project, whatever order a model lists its classes in. New taxa join at the end the
first time a project shows them (not the demo's: the window does not teach it the demo
project's taxa, which then take the digits left free). "Unidentified" / "pollen" (a grain
not yet named) never take a key. Stored in QSettings (``taxa/list``) as JSON: ``[{"name": ..., "color": ...}]``.
"""

from __future__ import annotations

import json

from PySide6.QtCore import QSettings

from pollenstudio.core.types import UNIDENTIFIED_COLOR, is_unassigned_taxon

KEY = "taxa/list"
N_KEYS = 9


class UserTaxa:
    def __init__(self, settings: QSettings):
        self.settings = settings
        self._items: list[dict] = self._read()
        self._reindex()

    def _reindex(self) -> None:
        self._pos = {i["name"].lower(): k for k, i in enumerate(self._items)}
        self._keys = None

    def _read(self) -> list[dict]:
        raw = self.settings.value(KEY, "")
        try:
            items = json.loads(raw) if raw else []
        except (TypeError, ValueError):
            items = []
        return [i for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]

    def _write(self) -> None:
        self._reindex()
        self.settings.setValue(KEY, json.dumps(self._items))

    # -- reads ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [i["name"] for i in self._items]

    def _index(self, name: str) -> int | None:
        return self._pos.get(name.strip().lower())

    def keys(self) -> dict[str, str]:
        """Taxon name (lower case) -> digit, for the first nine named taxa."""
        if self._keys is None:
            out = {}
            for i in self._items:
                if len(out) >= N_KEYS:
                    break
                if not is_unassigned_taxon(i["name"]):
                    out[i["name"].lower()] = str(len(out) + 1)
            self._keys = out
        return self._keys

    def knows(self, name: str) -> bool:
        """Whether ``name`` is in the list (it then keeps its key and colour everywhere)."""
        return self._index(name) is not None

    def key_for(self, name: str) -> str | None:
        return self.keys().get(name.strip().lower())

    def color_for(self, name: str) -> str | None:
        if is_unassigned_taxon(name):
            return UNIDENTIFIED_COLOR
        k = self._index(name)
        return None if k is None else self._items[k].get("color")

    # -- edits ---------------------------------------------------------------------------
    def learn(self, categories) -> bool:
        """Add taxa the list does not know yet (in the given order, with their colour).
        Returns whether the list changed."""
        changed = False
        for c in categories:
            if is_unassigned_taxon(c.name) or self._index(c.name) is not None:
                continue
            self._items.append({"name": c.name, "color": c.color})
            changed = True
        if changed:
            self._write()
        return changed

    def set_color(self, name: str, color: str) -> None:
        k = self._index(name)
        if k is None:
            self._items.append({"name": name, "color": color})
        else:
            self._items[k]["color"] = color
        self._write()

    def rename(self, old: str, new: str) -> None:
        k = self._index(old)
        if k is not None and self._index(new) is None:
            self._items[k]["name"] = new
            self._write()

    def set_key(self, name: str, digit: str) -> None:
        """Give ``name`` the digit ``digit`` (1-9): it moves to that place among the keyed
        taxa, the others keep their order."""
        n = int(digit)
        if not 1 <= n <= N_KEYS or is_unassigned_taxon(name):
            raise ValueError("a taxon key is a digit 1-9, for a named taxon")
        k = self._index(name)
        item = self._items.pop(k) if k is not None else {"name": name, "color": None}
        named = [j for j, i in enumerate(self._items) if not is_unassigned_taxon(i["name"])]
        pos = named[n - 1] if n - 1 < len(named) else len(self._items)
        self._items.insert(pos, item)
        self._write()
