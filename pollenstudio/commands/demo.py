"""`pollenstudio demo`: a ready-to-review demo project with the shipped default model active.

The command line over :mod:`pollenstudio.engine.demo`, which builds (or reuses) the demo.
"""

from __future__ import annotations

import argparse
import sys

from pollenstudio.commands._console import positive_int
from pollenstudio.engine.demo import DEMO_IMAGES, ENV_DIR, create_demo, default_demo_dir

HELP = "Create (or reuse) a demo project of generated micrographs with the default model active; prints its folder."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, metavar="DIR",
                   help=f"demo project folder (default: ${ENV_DIR}, else {default_demo_dir()})")
    p.add_argument("--n", type=positive_int, default=None,
                   help=f"number of generated images in a new demo (default {DEMO_IMAGES})")
    p.add_argument("--fresh", action="store_true",
                   help="rebuild the demo from scratch (review work done in the demo is lost)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="model file for a new demo (default: the shipped default model)")
    p.add_argument("--open", action="store_true", help="open the demo project in the main window")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from pollenstudio.commands._console import ConsoleProgress, print_json

    progress = ConsoleProgress("demo", quiet=args.quiet or args.json)
    res = create_demo(args.dir, n=args.n, model=args.model, fresh=args.fresh, progress=progress)
    if args.json:
        print_json(res.to_dict())
    else:
        verb = "created" if res.created else "reusing"
        print(f"{verb} demo project: {res.images} images, model {res.model} active; open it with "
              f"pollenstudio gui \"{res.folder}\" and detect with Ctrl+D", file=sys.stderr)
        print(str(res.folder))
    if args.open:
        from pollenstudio.commands import gui

        return gui.run(argparse.Namespace(project=str(res.folder)))
    return 0
