"""Where the shipped data folders are: ``models/`` and ``resources/`` at the repository root.

With an editable install (the supported way to run from a checkout) the package lives in
``<repo>/pollenstudio``, so both folders sit next to it. ``POLLENSTUDIO_MODELS`` overrides
the models folder (e.g. a lab that keeps its models on a shared drive). Which model a
reference means (active version, version id, file) is :mod:`pollenstudio.engine.models`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pollenstudio.core.errors import CheckpointError

_REPO = Path(__file__).resolve().parents[2]

# File names tried, in order, for the shipped six-taxon model in models/ (the demo's model).
DEFAULT_MODEL_NAMES = ("default.safetensors", "hieraedgenet-n.safetensors", "default.pt")
# The taxon-agnostic grain model ("pollen"): what new projects detect with when it is installed.
GRAIN_MODEL_NAMES = ("pollen-grain-n.safetensors",)


def repo_root() -> Path:
    return _REPO


def models_dir() -> Path:
    env = os.environ.get("POLLENSTUDIO_MODELS")
    return Path(env) if env else _REPO / "models"


def resources_dir() -> Path:
    return _REPO / "resources"


def default_model_path() -> Path:
    """The model a project without an active version detects with: the shipped grain model
    (finds grains of any taxon, names them "pollen") when installed, else the six-taxon model;
    a :class:`CheckpointError` saying what to do when there is neither."""
    for name in GRAIN_MODEL_NAMES:
        p = models_dir() / name
        if p.is_file():
            return p
    return taxa_model_path()


def taxa_model_path() -> Path:
    """The shipped six-taxon model (the demo's), or a :class:`CheckpointError`."""
    folder = models_dir()
    for name in DEFAULT_MODEL_NAMES:
        p = folder / name
        if p.is_file():
            return p
    found = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise CheckpointError(
        f"no default model is installed in {folder}. Train a model on your reviewed images "
        "(pollenstudio train PROJECT) or choose a model file (--model PATH)."
    )

