"""`pollenstudio report PROJECT --out report.html|.pdf|.csv`: the slide counts, as
palynologists report them (``project.pollen_report``). Also stores what the counts need:
a taxon's role (--role) and a sample's target sum and marker / volume settings (--set)."""

from __future__ import annotations

from pollenstudio.commands._project import PROJECT_HELP

HELP = "write the count report (per-sample counts, percentages with 95-percent intervals, pollen diagram) as HTML, PDF or CSV"

EPILOG = """examples:
  pollenstudio report myproject --out counts.html
  pollenstudio report myproject --out counts.csv --reviewed-only
  pollenstudio report myproject --role Lycopodium=marker --role Polypodium=spore --out counts.pdf
  pollenstudio report myproject --set target_sum=500 --set slide-3:marker_tablets=2 \\
      --set slide-3:marker_per_tablet=18583 --set slide-3:quantity=1.0 --out counts.html

roles: pollen (in the pollen sum; the default), spore, marker (exotic marker for
concentrations), indeterminate, excluded.  settings (SAMPLE:KEY=VALUE, or KEY=VALUE for the
project's defaults): target_sum, marker_tablets, marker_per_tablet, marker_per_tablet_sd,
quantity, quantity_unit (cm3|g), air_volume_m3."""


def add_arguments(parser) -> None:
    parser.add_argument("project", help=PROJECT_HELP)
    parser.add_argument("--out", help="report file: .html, .pdf or .csv (without it, settings are only stored)")
    parser.add_argument("--format", choices=["html", "pdf", "csv"], help="format (default: from --out's ending)")
    parser.add_argument("--reviewed-only", action="store_true", help="count images marked reviewed only")
    parser.add_argument("--ci", choices=["wilson", "clopper-pearson"], default="wilson",
                        help="confidence interval of percentages (default: wilson)")
    parser.add_argument("--role", action="append", default=[], metavar="TAXON=ROLE",
                        help="set a taxon's role in counts (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="[SAMPLE:]KEY=VALUE",
                        help="store a count setting of a sample, or of the project without SAMPLE (repeatable)")
    parser.add_argument("--outlines", action="store_true",
                        help="first trace the outline of every counted grain on a calibrated image that has none "
                             "yet (reads the images) and store it on the grain (one undoable step); the report "
                             "gives mean ellipse axes per taxon from the stored outlines")
    parser.add_argument("--json", action="store_true", help="print a JSON summary to stdout")


def _parse_set(text: str) -> tuple[str, str, object]:
    from pollenstudio.core.errors import ScaleError

    if "=" not in text:
        raise ScaleError(f"--set {text!r}: write [SAMPLE:]KEY=VALUE, e.g. target_sum=500")
    left, value = text.split("=", 1)
    sample, key = left.rsplit(":", 1) if ":" in left else ("", left)
    key = key.strip()
    val: object = value.strip()
    if key != "quantity_unit":
        try:
            val = float(value)
        except ValueError:
            raise ScaleError(f"--set {text!r}: {key} takes a number") from None
    return sample.strip(), key, val


def _check_samples(proj, samples) -> None:
    """A setting for a sample the project does not have would be stored and never used:
    refuse it, naming the samples there are (a typing slip is the likely cause)."""
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.project.counting import NO_SAMPLE

    wanted = [s for s in dict.fromkeys(samples) if s]
    if not wanted:
        return
    known = sorted({r.group or NO_SAMPLE for r in proj.images()}, key=lambda k: (k == NO_SAMPLE, k.lower()))
    unknown = [s for s in wanted if s not in known]
    if unknown:
        have = (f"its samples are: {', '.join(known)}" if known else "it has no images yet")
        raise ProjectError(f"--set: the project has no sample named {unknown[0]!r} ({have}); "
                           "write SAMPLE:KEY=VALUE with one of them, or KEY=VALUE for the project's defaults")


def run(args) -> int:
    from pollenstudio.commands._console import print_json
    from pollenstudio.commands._project import open_project
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.project.pollen_report import report_format, write_report

    if args.out is None and not (args.role or args.set):
        raise ProjectError("nothing to do: give --out FILE for a report, or --role / --set to store settings")
    if args.out is not None:
        report_format(args.out, args.format)  # a bad name fails before anything is stored
    changes = [_parse_set(s) for s in args.set]
    roles = []
    for r in args.role:
        if "=" not in r:
            raise ProjectError(f"--role {r!r}: write TAXON=ROLE, e.g. Lycopodium=marker")
        roles.append(tuple(x.strip() for x in r.rsplit("=", 1)))
    with open_project(args.project) as proj:
        # check everything first: a bad value changes nothing
        from pollenstudio.core.types import TAXON_ROLES
        from pollenstudio.project.counting import check_settings

        cats = []
        for name, role in roles:
            cat = proj.category_by_name(name)
            if cat is None:
                raise ProjectError(f"--role: no taxon named {name!r} in the project")
            if role not in TAXON_ROLES:
                raise ProjectError(f"--role {name}={role}: a role is one of {', '.join(TAXON_ROLES)}")
            cats.append((cat.id, role))
        _check_samples(proj, [sample for sample, _, _ in changes])
        stored = proj.sample_settings()
        merged: dict[str, dict] = {}
        for sample, key, val in changes:
            merged.setdefault(sample, dict(stored.get(sample, {})))[key] = val
        for sample, settings in merged.items():
            check_settings(settings)
        for cid, role in cats:
            proj.set_taxon_role(cid, role)
        for sample, settings in merged.items():
            proj.set_sample_settings(sample, settings)
        summary = {"roles": len(cats), "settings": len(changes)}
        if args.out is not None:
            measured = None
            if args.outlines:
                from pollenstudio.commands._console import ConsoleProgress
                from pollenstudio.engine.shape import measure_project

                measured = measure_project(proj, args.reviewed_only, ConsoleProgress("outlines", quiet=args.json))
                if measured:
                    proj.set_outlines(measured, "measure outlines")
            summary = write_report(proj, args.out, args.format, reviewed_only=args.reviewed_only, ci_method=args.ci)
            if measured is not None:
                summary["outlines"] = len(measured)
    if args.json:
        print_json(summary)
    else:
        print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    return 0
