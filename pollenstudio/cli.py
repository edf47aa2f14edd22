"""`pollenstudio` entry point: no arguments opens the GUI; subcommands work headless.

Each subcommand lives in ``pollenstudio.commands.<name>`` with ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import heavy libraries
(torch, Qt) inside ``run`` so that ``--help`` and ``--version`` are instant and need no
display.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pollenstudio import __version__
from pollenstudio.core.errors import Cancelled, PollenStudioError

# name -> module under pollenstudio.commands
COMMANDS = {
    "gui": "gui",
    "synth": "synth",
    "demo": "demo",
    "import": "import_",
    "export": "export",
    "detect": "detect",
    "calibrate": "calibrate",
    "train": "train",
    "eval": "eval",
    "relink": "relink",
    "report": "report",
    "export-model": "export_model",
    "server": "server",
}


def _load(name: str):
    return importlib.import_module(f"pollenstudio.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pollenstudio",
        description="Review, correct and retrain pollen detections on microscope images. "
        "Without a command, opens the main window.",
    )
    parser.add_argument("--version", action="version", version=f"pollenstudio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("pollenstudio.commands"):
                continue  # command not built yet in this checkout
            raise
        epilog = getattr(mod, "EPILOG", None)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
        if name == "detect":  # issue 30: --workers N / --distributed spread one detection over processes
            _add_cluster(p, mod.run)
    return parser


def _add_cluster(parser, run_one) -> None:
    from pollenstudio.commands import detect_cluster

    detect_cluster.add_arguments(parser)
    parser.set_defaults(_run=lambda a: detect_cluster.run(a) if detect_cluster.wants_cluster(a) else run_one(a))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        if "gui" not in parser._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
            parser.print_help()
            return 2
        args = parser.parse_args(["gui"])
        run = args._run
    try:
        rc = int(run(args) or 0)
        # flush here, not at interpreter exit: a reader that went away before a
        # block-buffered stdout was flushed is then caught below instead of Python printing
        # "Exception ignored ... BrokenPipeError" on its way out
        sys.stdout.flush()
        return rc
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pollenstudio export ... --json | head`): stop quietly, as
        # Unix tools do, and keep Python from complaining again when it flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except PollenStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: not enough memory for this job (try a smaller --batch or --imgsz)", file=sys.stderr)
        return 1
    except OSError as exc:
        # a file system refusal (no space, permission, read-only, /proc): say which file and why
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: say so in one line, full details only when asked
        if os.environ.get("POLLENSTUDIO_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}\n(this is a bug in PollenStudio; "
              "run again with POLLENSTUDIO_DEBUG=1 for the details and please report them)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
