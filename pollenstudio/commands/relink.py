"""`pollenstudio relink PROJECT [SEARCH_DIR...]`: find moved or renamed image files again."""

from __future__ import annotations

from pollenstudio.commands._project import PROJECT_HELP

HELP = "find the files of a project's missing images (moved or renamed) by content, then by name"
EPILOG = """Searches SEARCH_DIR (default: the project folder) and its sub-folders. An image is
matched first by content (the SHA-256 recorded when it was added: finds moved and renamed
files), then by file name with the same pixel size. A focal stack kept as plane files is
matched only by the content of all its planes together, and then every plane is relinked
(fields whose planes are named alike, 0z.png, 1z.png ..., are never told apart by name).
Prints what was found and how, and what is still missing and why.

  pollenstudio relink myproject /mnt/slides /home/me/old_images
  pollenstudio relink myproject --dry-run          # only report
  pollenstudio relink myproject --remove-missing   # drop images still not found (undoable)
"""


def add_arguments(parser) -> None:
    parser.add_argument("project", help=PROJECT_HELP)
    parser.add_argument("search", nargs="*", metavar="SEARCH_DIR",
                        help="folders to search (default: the project folder)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be relinked, change nothing")
    parser.add_argument("--remove-missing", action="store_true",
                        help="remove the images still missing afterwards from the project, with their annotations "
                             "(one step; Edit > Undo in the GUI brings them back)")
    parser.add_argument("--json", action="store_true", help="print a JSON report to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.project.relink import relink_project

    from pollenstudio.commands._project import open_project

    with open_project(args.project) as proj:
        report = relink_project(proj, args.search or None, ConsoleProgress("search", quiet=args.quiet or args.json),
                                dry_run=args.dry_run)
        removed = 0
        if args.remove_missing and not args.dry_run and report.still_missing:
            removed = proj.remove_images([i for i, _ in report.still_missing], label="remove missing images")
    if args.json:
        print_json({**report.to_dict(), "removed": removed})
    else:
        print(report.text())
        if removed:
            print(f"removed {removed} missing image(s) from the project (undoable)")
        elif args.dry_run:
            print("dry run: nothing changed")
    return 0
