"""Typed errors with messages a palynologist can act on.

Library code raises these; the GUI shows the message in a dialog or the status bar, the
CLI prints it and exits non-zero. Nothing catches and hides them.
"""


class PollenStudioError(Exception):
    """Base class of every error PollenStudio raises on purpose."""


class ImageReadError(PollenStudioError):
    """An image file is missing, corrupt or in a layout we cannot use."""


class ProjectError(PollenStudioError):
    """A project file is missing, not a project, or of a newer schema."""


class ImportFormatError(PollenStudioError):
    """An annotation file (COCO, YOLO, CSV) is malformed; nothing was imported."""


class CheckpointError(PollenStudioError):
    """A model file is corrupt, unsafe, or not a PollenStudio checkpoint."""


class ModelMismatchError(PollenStudioError):
    """A model does not fit the task (other taxa, other input layout)."""


class Cancelled(PollenStudioError):
    """A long job stopped because the user asked it to."""


class DamagedProjectError(ProjectError):
    """The project database is damaged; it is not written to. The message says how to
    recover it from the automatic backup."""


class ScaleError(PollenStudioError):
    """A pixel scale or count setting that cannot be right (a zero-length line, a negative
    length, a marker count of nothing)."""


class InvalidNameError(ProjectError):
    """A name given to a taxon, model version or sample that cannot be stored as it is (empty,
    too long, a line break, a control or text-direction character)."""
