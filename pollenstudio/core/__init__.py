"""Plain types shared by every layer. Imports nothing else from the package."""

from pollenstudio.core.errors import (
    Cancelled,
    CheckpointError,
    ImageReadError,
    ImportFormatError,
    ModelMismatchError,
    PollenStudioError,
    ProjectError,
)
from pollenstudio.core.progress import CancelToken, NullProgress, Progress
from pollenstudio.core.types import (
    Annotation,
    AnnotationStatus,
    Box,
    Category,
    DEFAULT_CONF,
    Detection,
    ImageRecord,
    OBJECT_STATUSES,
    ReviewStatus,
    Source,
)

__all__ = [
    "Annotation",
    "AnnotationStatus",
    "Box",
    "Cancelled",
    "CancelToken",
    "Category",
    "CheckpointError",
    "DEFAULT_CONF",
    "Detection",
    "ImageReadError",
    "ImageRecord",
    "ImportFormatError",
    "ModelMismatchError",
    "NullProgress",
    "OBJECT_STATUSES",
    "PollenStudioError",
    "Progress",
    "ProjectError",
    "ReviewStatus",
    "Source",
]
