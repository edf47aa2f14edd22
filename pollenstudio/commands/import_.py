"""`pollenstudio import PROJECT FILE_OR_FOLDER`: COCO JSON, a YOLO folder or a folder of images."""

from __future__ import annotations

HELP = "import a COCO JSON, a YOLO folder (classes.txt + labels) or a folder of images into a project"


def add_arguments(parser) -> None:
    parser.add_argument("project", help="project folder (created when it holds no project yet)")
    parser.add_argument("source", help="COCO .json file (or a folder holding one, e.g. a Roboflow export), "
                        "YOLO dataset folder (classes.txt + labels), or folder of images")
    parser.add_argument("--images", help="COCO: folder the file names are relative to (default: the JSON's folder)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys
    from pathlib import Path

    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.core.errors import ImportFormatError
    from pollenstudio.project import Project
    from pollenstudio.project.schema import DB_NAME

    source = Path(args.source)
    target = Path(args.project)
    if not source.exists():
        raise ImportFormatError(f"{source}: not found")
    created = not (target / DB_NAME).exists() and not target.is_file()
    folder_existed = target.exists()
    proj = Project.create(target) if created else Project.open(target)
    progress = ConsoleProgress("import", quiet=args.quiet or args.json)
    try:
        with proj:
            if source.is_file() and source.suffix.lower() == ".json":
                from pollenstudio.project.coco import import_coco

                kind = "coco"
                summary = import_coco(proj, source, images_root=args.images, progress=progress).to_dict()
            elif source.is_dir():
                from pollenstudio.project.yolo import import_yolo, is_yolo_folder

                from pollenstudio.project.coco import find_coco_files, import_coco

                coco_files = [] if is_yolo_folder(source) else find_coco_files(source)
                if is_yolo_folder(source):
                    kind = "yolo"
                    summary = import_yolo(proj, source, progress=progress).to_dict()
                elif len(coco_files) == 1:
                    kind = "coco"
                    summary = import_coco(proj, coco_files[0], progress=progress).to_dict()
                elif coco_files:
                    names = ", ".join(str(f.relative_to(source)) for f in coco_files)
                    raise ImportFormatError(f"{source} holds several COCO files ({names}); import them one by one")
                else:
                    kind = "images"
                    res = proj.add_folder(source, progress=progress)
                    summary = {"images_added": len(res.added), "duplicates": res.duplicates,
                               "unreadable": [{"path": p, "reason": r} for p, r in res.errors]}
            else:
                raise ImportFormatError(f"{source}: expected a COCO .json file or a folder (YOLO dataset or images)")
            # recorded only on success: a failed import leaves the project as it was
            run_id = proj.start_run("import", {"source": str(source.resolve()), "kind": kind})
            proj.finish_run(run_id, "done", summary)
    except BaseException:
        if created:  # do not leave an empty project behind a failed first import
            for suffix in ("", "-wal", "-shm"):
                (target / (DB_NAME + suffix)).unlink(missing_ok=True)
            if not folder_existed and not any(target.iterdir()):
                target.rmdir()
        raise
    summary = {"project": str(target), "created": created, "kind": kind, **summary}
    if args.json:
        print_json(summary)
    else:
        shown = {k: v for k, v in summary.items() if v not in ([], 0, None) or k.endswith("added")}
        for k, v in shown.items():
            if isinstance(v, list):
                v = f"{len(v)}: " + ", ".join(str(x) for x in v[:5]) + (" ..." if len(v) > 5 else "")
            print(f"{k}: {v}", file=sys.stdout)
    return 0
