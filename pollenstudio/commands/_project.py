"""The PROJECT argument of every command: a project folder (or its ``project.pollen`` file),
or a project on a lab's PostgreSQL server, ``postgresql://[USER@]HOST[:PORT]/DB?project=NAME``
(issue 30; docs/lab-server.md). One place decides which it is, so every command takes both."""

from __future__ import annotations

from pathlib import Path

PROJECT_HELP = ("project folder (or its project.pollen file), or a project on a lab server: "
                "postgresql://[USER@]HOST[:PORT]/DATABASE?project=NAME")


def is_server(text) -> bool:
    """True when the argument names a server project (a URL, not a path)."""
    from pollenstudio.project.dialect import is_server_url

    return is_server_url(str(text)) if not isinstance(text, Path) else False


def project_target(text: str) -> str | Path:
    """What to pass on: a server URL unchanged (``Path`` would fold its ``//``), else a Path."""
    return str(text) if is_server(text) else Path(text)


def open_project(text: str, image_root: str | None = None):
    """Open the project the argument names (ProjectError in words when it cannot)."""
    from pollenstudio.project import Project

    return Project.open(project_target(text), image_root=image_root)


def is_image_argument(text) -> bool:
    """True when a command's PROJECT/FOLDER argument is one image file (a slide scan is one
    file, issue 29): it then stands for the project of the file's folder, holding that file."""
    from pollenstudio.core.imageio import is_image_file

    if is_server(text):
        return False
    p = Path(text)
    return p.is_file() and is_image_file(p)



def project_with_image(path):
    """See :func:`pollenstudio.project.transfer.project_with_image`."""
    from pollenstudio.project.transfer import project_with_image as with_image

    return with_image(path)
