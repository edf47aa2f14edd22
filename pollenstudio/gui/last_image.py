"""The image a project was left on, per project folder, kept in the user's settings: a
project reopens on it (it opened on the first image of the list). Not in the project file:
looking at an image is not an edit."""

from __future__ import annotations

import json

KEY = "review/last_image"
MAX_PROJECTS = 50


def _read(settings) -> dict[str, int]:
    try:
        data = json.loads(settings.value(KEY, "") or "{}")
    except (TypeError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def last_image(settings, folder: str) -> int | None:
    """The image id ``folder``'s project was left on, or None."""
    return _read(settings).get(str(folder))


def remember_image(settings, folder: str, image_id: int) -> None:
    data = _read(settings)
    data.pop(str(folder), None)
    data[str(folder)] = int(image_id)  # newest last: the oldest projects are forgotten first
    while len(data) > MAX_PROJECTS:
        data.pop(next(iter(data)))
    settings.setValue(KEY, json.dumps(data))
