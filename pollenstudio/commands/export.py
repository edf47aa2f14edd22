"""`pollenstudio export PROJECT --format coco|yolo|csv|grains --out PATH [--all]`.

An image that cannot go into the export (missing, no longer the picture the project
registered, unreadable) is skipped with a warning on stderr (``skipped`` in ``--json``);
the export goes on, as ``detect`` does, and exits 0."""

from __future__ import annotations

from pollenstudio.commands._project import PROJECT_HELP

HELP = "export a project's annotations as COCO JSON, a YOLO folder, a CSV count report or a CSV of grains"


def add_arguments(parser) -> None:
    parser.add_argument("project", help=PROJECT_HELP)
    parser.add_argument("--format", required=True, choices=["coco", "yolo", "csv", "grains"],
                        help="output format (csv: counts per image and taxon; grains: one row per grain with "
                             "box and outline sizes, in µm where the image has a scale)")
    parser.add_argument("--out", required=True, help="output file (coco, csv, grains) or folder (yolo)")
    parser.add_argument("--all", action="store_true",
                        help="every image and every non-rejected annotation with scores (default: reviewed only)")
    parser.add_argument("--no-images", action="store_true",
                        help="yolo: write labels only. Without it the images are copied (never linked: a tool that "
                        "rewrites an exported image in place must not change the original), and only files that "
                        "are the picture the project registered; others are skipped and named")
    parser.add_argument("--planes-as-images", action="store_true",
                        help="coco: write each focal-stack plane that holds grains as an image of its own "
                        "(for tools that know no stacks; import folds them back into their stack)")
    parser.add_argument("--stack-view", choices=["edf", "best"], default="edf",
                        help="yolo: a focal stack is written as its all-in-focus EDF composite (default) "
                        "or its sharpest plane")
    parser.add_argument("--json", action="store_true", help="print a JSON summary to stdout")


def run(args) -> int:
    from pollenstudio.commands._console import print_json
    from pollenstudio.commands._project import open_project
    from pollenstudio.project.transfer import export_project

    with open_project(args.project) as proj:
        summary = export_project(proj, args.format, args.out, reviewed_only=not args.all,
                                 copy_images=not args.no_images, planes_as_images=args.planes_as_images,
                                 stack_view=args.stack_view)
    if args.json:
        print_json(summary)
    else:
        import sys

        for item in summary.get("skipped", []):  # missing, not the registered picture, unreadable
            print(f"warning: not exported: {item['reason']}", file=sys.stderr)
        print(", ".join(f"{k}: {v}" for k, v in summary.items() if not isinstance(v, list))
              + (f", skipped: {len(summary['skipped'])}" if summary.get("skipped") else ""))
    return 0
