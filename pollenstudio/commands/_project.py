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
