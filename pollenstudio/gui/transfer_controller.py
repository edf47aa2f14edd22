"""Import / export for the window: the project's transfer service run in a worker.

File > Import..., File > Export... and "Open image folder" call
:mod:`pollenstudio.project.transfer`, the same service as ``pollenstudio import`` /
``export``: format detection, the import run record and the rollback of a project the
import created live there, not here. This object only puts the calls on a worker and
cancels them when the project closes.
"""

from __future__ import annotations

from PySide6.QtCore import QObject

from pollenstudio.gui.workers import JobRunner
from pollenstudio.project import transfer

# File > Import... format names -> the service's import kinds
DIALOG_KINDS = {"coco": "coco", "yolo": "yolo", "folder": "images"}


def _import_job(token, project, source: str, kind: str, images_root: str | None,
                stack_pattern: str | None = None) -> dict:
    return transfer.import_into(project, source, kind, images_root, progress=token,
                                stack_pattern=stack_pattern).to_dict()


def _export_job(token, project, fmt: str, out: str, reviewed_only: bool, copy_images: bool,
                planes_as_images: bool = False, stack_view: str = "edf") -> dict:
    return transfer.export_project(project, fmt, out, reviewed_only, copy_images, progress=token,
                                   planes_as_images=planes_as_images, stack_view=stack_view)


def _new_project_job(token, folder: str):
    """A project in an image folder with its images: (Project, ImportResult). Cancel or
    failure removes the project again (the images are never touched)."""
    return transfer.import_to_folder(folder, folder, kind="images", progress=token)


class TransferController(QObject):
    def __init__(self, review, parent: QObject | None = None):
        super().__init__(parent)
        self.review = review  # ReviewController: the open project
        self.jobs = JobRunner(self)
        review.projectClosing.connect(self.jobs.cancel_all)

    @property
    def project(self):
        return self.review.project

    def export_data(self, fmt: str, path: str, reviewed_only: bool = True, copy_images: bool = True,
                    on_done=None, on_error=None, planes_as_images: bool = False, stack_view: str = "edf"):
        """Export in a worker: fmt "coco", "yolo" or "csv". on_done gets the summary dict."""
        return self.jobs.submit("export", _export_job, self.project, fmt, path, reviewed_only, copy_images,
                                planes_as_images, stack_view, on_done=on_done, on_error=on_error)

    def import_data(self, fmt: str, path: str, images_root: str | None = None,
                    on_done=None, on_error=None, on_progress=None, stack_pattern: str | None = None):
        """Import in a worker: fmt "coco", "yolo" or "folder" (images only); recorded as a
        run. The store's events refresh the views; on_done gets the summary dict."""
        return self.jobs.submit("import-data", _import_job, self.project, path, DIALOG_KINDS.get(fmt, fmt),
                                images_root, stack_pattern, on_done=on_done, on_error=on_error,
                                on_progress=on_progress)

    def new_project(self, folder: str, on_done=None, on_error=None, on_progress=None):
        """Create a project in an image folder and add its images, in a worker. on_done
        gets (Project, ImportResult); the caller adopts the project."""
        return self.jobs.submit("new-project", _new_project_job, str(folder),
                                on_done=on_done, on_error=on_error, on_progress=on_progress)
