"""`pollenstudio gui [PROJECT]`: the main window (also what plain `pollenstudio` opens)."""

from __future__ import annotations

HELP = "open the main window"


def add_arguments(parser) -> None:
    parser.add_argument("project", nargs="?", metavar="PROJECT",
                        help="project folder (or its project.pollen file), image folder or one image file (a slide scan) to open, or a project on "
                             "a lab server: postgresql://[USER@]HOST[:PORT]/DATABASE?project=NAME")


def run(args) -> int:
    import sys
    from pathlib import Path

    from pollenstudio.gui.app import create_app
    from pollenstudio.gui.main_window import MainWindow

    app = create_app(sys.argv[:1])
    win = MainWindow()
    win.show()
    target = getattr(args, "project", None)
    if target:
        from pollenstudio.commands._project import is_image_argument, is_server
        from pollenstudio.project.schema import DB_NAME

        p = Path(target)
        if is_server(target):  # a Path would fold the URL's //
            win.open_project(target)
        elif is_image_argument(target):  # one file (a slide scan): its folder's project, showing it
            win.open_image_file(str(p))
        elif p.is_dir() and not (p / DB_NAME).exists():
            win.open_folder(str(p))
        else:
            win.open_project(str(p))
    return int(app.exec())
