"""`pollenstudio server push|pull|list`: move a project between a folder and a lab's
PostgreSQL server (issue 30; docs/lab-server.md)."""

from __future__ import annotations

HELP = "move a project to a lab's PostgreSQL server and back, or list the projects there"
EPILOG = """A server project is named by a URL: postgresql://[USER@]HOST[:PORT]/DATABASE?project=NAME
(NAME: lower-case letters, digits and _). Passwords belong in ~/.pgpass or PGPASSWORD.
Every command takes such a URL wherever it takes a project folder. Image files stay where
they are: paths are stored relative to the project's image root, which each workstation
maps to its own mount (POLLENSTUDIO_IMAGE_ROOT, or --image-root).

  pollenstudio server push ~/cores/lake7 postgresql://pollen.lab/pollen?project=lake7
  pollenstudio server pull postgresql://pollen.lab/pollen?project=lake7 ~/cores/lake7-copy
  pollenstudio server list postgresql://pollen.lab/pollen
"""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("push", help="copy a project folder to a new project on the server (nothing is lost; the "
                                    "folder is left as it is)")
    p.add_argument("folder", help="project folder (or its project.pollen file)")
    p.add_argument("url", help="postgresql://[USER@]HOST[:PORT]/DATABASE?project=NAME (a name not yet taken)")
    p.add_argument("--json", action="store_true", help="print a JSON summary to stdout")
    p = sub.add_parser("pull", help="copy a server project into a new project folder (nothing is lost)")
    p.add_argument("url", help="postgresql://[USER@]HOST[:PORT]/DATABASE?project=NAME")
    p.add_argument("folder", help="folder for the new project (stored image paths are rewritten relative to it)")
    p.add_argument("--image-root", metavar="DIR",
                   help="where this machine sees the project's images (default: POLLENSTUDIO_IMAGE_ROOT, else the "
                        "root recorded on the server)")
    p.add_argument("--json", action="store_true", help="print a JSON summary to stdout")
    p = sub.add_parser("list", help="the projects in a database of the server")
    p.add_argument("url", help="postgresql://[USER@]HOST[:PORT]/DATABASE")


def run(args) -> int:
    from pollenstudio.commands._console import print_json

    if args.action == "list":
        return _list(args.url)
    from pollenstudio.project.server_copy import pull, push

    if args.action == "push":
        report = push(args.folder, args.url)
    else:
        report = pull(args.url, args.folder, image_root=args.image_root)
    if args.json:
        print_json(report.to_dict())
    else:
        rows = ", ".join(f"{t}: {n}" for t, n in report.rows.items() if n)
        print(f"{report.source} -> {report.target} ({rows})")
    return 0


def _list(url: str) -> int:
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.project import dialect

    if not dialect.is_server_url(url):
        raise ProjectError(f"{url!r} is not a PostgreSQL URL: postgresql://HOST/DATABASE")
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    conninfo = dialect.unsplit_url(parts._replace(query=urlencode([(k, v) for k, v in parse_qsl(parts.query)
                                                          if k != "project"])))
    base = dialect.hide_password(conninfo)
    location = dialect.ServerLocation(conninfo, "public", base)
    conn = dialect.connect_server(location, read_only=True)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = ? ORDER BY 1",
            (dialect.VERSION_TABLE,))]
    finally:
        conn.close()
    for name in names:
        print(f"{name}\t{base}{'&' if '?' in base else '?'}project={name}")
    if not names:
        print("no projects in this database yet (pollenstudio server push FOLDER URL makes one)")
    return 0
