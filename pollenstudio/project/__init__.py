"""project layer: the annotation store (SQLite), undo/redo, proposal merge, COCO / YOLO / CSV.

No torch, no Qt here (tests/unit/test_layering.py enforces it).
"""

from pollenstudio.project.store import (
    AddImagesResult,
    ChangeEvent,
    ImageCounts,
    ModelVersion,
    Project,
    ProposalResult,
    Run,
)

__all__ = ["AddImagesResult", "ChangeEvent", "ImageCounts", "ModelVersion", "Project", "ProposalResult", "Run"]
