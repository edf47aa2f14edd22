"""`pollenstudio import PROJECT FILE_OR_FOLDER`: COCO JSON, a YOLO folder or a folder of images."""

from __future__ import annotations

HELP = "import a COCO JSON, a YOLO folder (classes.txt + labels) or a folder of images into a project"


def add_arguments(parser) -> None:
    parser.add_argument("project", help="project folder (created when it holds no project yet)")
    parser.add_argument("source", help="COCO .json file (or a folder holding one, e.g. a Roboflow export), "
                        "YOLO dataset folder (classes.txt + labels), or folder of images")
    parser.add_argument("--images", help="COCO: folder the file names are relative to (default: the JSON's folder)")
    parser.add_argument("--stack-pattern", metavar="PATTERN",
                        help="image folders: file names of focal planes, '{z}' the plane number, '*' any text "
                        "(e.g. '*_z{z}.png', '{z}z.png'); files differing only in '{z}' in one folder are one "
                        "focal stack (multi-page and OME-TIFF stacks are recognised without it); a pattern that "
                        "groups no files into a stack is refused, so no plane is counted as an image of its own")
    parser.add_argument("--json", action="store_true", help="print a JSON summary to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.project.transfer import import_to_folder

    progress = ConsoleProgress("import", quiet=args.quiet or args.json)
    proj, result = import_to_folder(args.project, args.source, images_root=args.images, progress=progress,
                                    stack_pattern=args.stack_pattern)
    proj.close()
    summary = {"project": str(args.project), "created": result.created, **result.to_dict()}
    if args.json:
        print_json(summary)
    else:
        shown = {k: v for k, v in summary.items() if v not in ([], 0, None) or k.endswith("added")}
        for k, v in shown.items():
            if isinstance(v, list):
                v = f"{len(v)}: " + ", ".join(str(x) for x in v[:5]) + (" ..." if len(v) > 5 else "")
            print(f"{k}: {v}", file=sys.stdout)
    return 0
