"""The count report (issue 20): ``pollenstudio report PROJECT --out report.html|.pdf|.csv``
and File > Report.

What it holds, per sample (``project.counting.count_samples``): the taxa in the pollen sum
with counts, percentages and their 95 % intervals, mean long x short axes in µm, the
excluded categories counted on their own, the sum against its target ("287 / 300"), the
concentration when the sample's settings allow one; a pollen diagram (percentage bars per
taxon, one row per sample, every column on the same % scale: the form palynologists read);
size histograms per taxon; and what stands behind the numbers: the project, the model in
use, the model versions whose proposals became counted grains, how much is still
unreviewed, the interval method.

HTML embeds its figures (one file to mail or open in a browser); PDF is made with
matplotlib's PdfPages; CSV has one row per sample and taxon, for spreadsheets. Figures are
drawn with matplotlib's Agg canvas directly (no pyplot, no GUI backend), so reports build
headless and from a worker thread. Every file is written atomically (``core.atomic``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from pollenstudio.core.atomic import WriteError
from pollenstudio.core.types import display_taxon
from pollenstudio.core.words import plural
from pollenstudio.project.counting import UNNAMED_ROLE, SampleCount, TaxonCount, count_samples
from pollenstudio.project.slide_fields import traverse_lines
from pollenstudio.project.statistics import CI_LABEL

FORMATS = ("html", "pdf", "csv")
MAX_DIAGRAM_TAXA = 40
CSV_COLUMNS = ["sample", "taxon", "role", "in_pollen_sum", "count", "percent", "ci_low", "ci_high", "ci_method",
               "pollen_sum", "target_sum", "images", "reviewed_images", "undecided_proposals",
               "mean_long_um", "mean_short_um", "n_measured", "concentration", "concentration_se",
               "concentration_unit", "mean_ellipse_major_um", "mean_ellipse_minor_um", "n_outlines"]


@dataclass
class ReportData:
    project: str
    created: str
    samples: list[SampleCount]
    ci_method: str
    reviewed_only: bool
    model_in_use: str
    grain_sources: list[tuple[str, int]] = field(default_factory=list)  # (model version or "drawn by hand", n)
    images: int = 0
    reviewed_images: int = 0
    undecided: int = 0
    version: str = ""
    agreement: object = None  # project.opinions.Agreement of the second-opinion pass (None: none yet)
    slide_lines: dict = field(default_factory=dict)  # sample -> fields traversed on its slide scans (slide_fields)

    @property
    def grains(self) -> int:
        return sum(t.count for s in self.samples for t in s.taxa + s.excluded)


def build_report(project, reviewed_only: bool = False, ci_method: str = "wilson",
                 ellipses: dict | None = None) -> ReportData:
    """Everything a report shows, read from the project (no files written). ``ellipses``:
    fitted outlines {annotation id: (major, minor) px} when measured (``--outlines``)."""
    from pollenstudio import __version__

    samples = count_samples(project, reviewed_only=reviewed_only, ci_method=ci_method, ellipses=ellipses)
    active = project.active_model_version()
    names = {mv.id: mv.name for mv in project.model_versions()}
    by_mv: dict = {}
    for row in project.grain_table(reviewed_only=reviewed_only):
        by_mv[row[6]] = by_mv.get(row[6], 0) + 1
    sources = sorted(((names.get(k, f"version {k}") if k is not None else "drawn or imported by hand", n)
                      for k, n in by_mv.items()), key=lambda x: -x[1])
    return ReportData(
        project=project.name, created=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), samples=samples,
        ci_method=ci_method, reviewed_only=reviewed_only,
        model_in_use=active.name if active is not None else "the shipped default model",
        grain_sources=sources, images=sum(s.images for s in samples),
        reviewed_images=sum(s.reviewed_images for s in samples), undecided=sum(s.undecided for s in samples),
        version=__version__, agreement=agreement(project, ci_method=ci_method),
        slide_lines=traverse_lines(project, samples),
    )


def agreement_lines(data: ReportData) -> list[str]:
    """The second-opinion pass in words (HTML, PDF): overall, then one line per taxon."""
    ag = data.agreement
    if ag is None:
        return []
    who = "; ".join(f"{a} checked by {b}" for a, b in ag.pairs)
    lines = [f"Second opinion ({who}): {plural(ag.n, 'grain')} checked, {ag.agreed} names confirmed = "
             f"{100 * ag.percent:.1f} % ({100 * ag.lo:.1f}-{100 * ag.hi:.1f} %, "
             f"{CI_LABEL.get(data.ci_method, data.ci_method)}); Cohen's kappa {ag.kappa.text()} (95 %, asymptotic). "
             "The checker saw the first name (not blind)."]
    for t in ag.taxa:
        pct = f"{100 * t.percent:.0f} % ({100 * t.lo:.0f}-{100 * t.hi:.0f} %)" if t.named else "-"
        lines.append(f"  {t.taxon}: {t.confirmed} of {t.named} confirmed {pct}; named so by the checker instead of "
                     f"another taxon {t.proposed_by_second}; kappa against the rest {t.kappa.text()}")
    return lines


# ------------------------------------------------------------------ figures
def agreement(project, ci_method: str = "wilson"):
    from pollenstudio.project.opinions import agreement as compute

    return compute(project, ci_method=ci_method)


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def diagram_taxa(samples: list[SampleCount]) -> tuple[list[str], list[str]]:
    """(taxa in the sum, excluded taxa) as diagram columns, most abundant overall first."""
    tot: dict[str, int] = {}
    exc: dict[str, int] = {}
    for s in samples:
        for t in s.taxa:
            tot[t.taxon] = tot.get(t.taxon, 0) + t.count
        for t in s.excluded:
            if t.role != "marker":  # a laboratory addition, not part of the assemblage
                exc[t.taxon] = exc.get(t.taxon, 0) + t.count
    order = lambda d: sorted(d, key=lambda k: (-d[k], k.lower()))  # noqa: E731
    return order(tot)[:MAX_DIAGRAM_TAXA], order(exc)[: max(0, MAX_DIAGRAM_TAXA - len(tot))]


def pollen_diagram(samples: list[SampleCount]):
    """The pollen diagram as a matplotlib Figure: one row per sample (top to bottom in
    sample order), one column per taxon, horizontal bars of its percentage; every column
    on the same scale (a column's width is its largest value), so bars compare across
    taxa. Excluded categories (spores, marker, ...) follow in grey, as % of sum + them.
    The exotic marker is left out (it is in the tables). The last column is the pollen sum,
    red while under its target."""
    taxa, excluded = diagram_taxa(samples)
    cols = [(t, True) for t in taxa] + [(t, False) for t in excluded]
    rows = [s for s in samples if s.pollen_sum or s.excluded] or samples
    if not cols or not rows:
        fig = _figure(6, 1.6)
        fig.text(0.5, 0.5, "No counted grains yet: accept, correct or add grains to count them",
                 ha="center", va="center", fontsize=11)
        return fig

    def pct(s: SampleCount, name: str, in_sum: bool) -> float:
        for t in (s.taxa if in_sum else s.excluded):
            if t.taxon == name and not math.isnan(t.percent):
                return t.percent
        return 0.0

    values = [[pct(s, name, ins) for s in rows] for name, ins in cols]
    widths = [max(10.0, math.ceil(max(v) / 10.0) * 10.0) for v in values]  # % per column, 10 % steps
    inch_per_pct = 0.028
    label_w = 0.3 + 0.075 * max(len(s.name) for s in rows)
    w = label_w + sum(widths) * inch_per_pct + 0.25 * len(cols) + 1.2
    # room above the columns for the longest name, written at 55 degrees
    label_top = max(1.15, 0.3 + 0.047 * max(len(display_taxon(name)) for name, _ in cols))
    h = 0.45 + label_top + 0.32 * len(rows)
    fig = _figure(min(w, 60), h)
    gs = fig.add_gridspec(1, len(cols) + 1, width_ratios=widths + [18], wspace=0.3,
                          left=label_w / w, right=1 - 0.2 / w, top=1 - label_top / h, bottom=0.45 / h)
    ys = list(range(len(rows)))
    first = None
    for i, ((name, in_sum), v, width) in enumerate(zip(cols, values, widths)):
        ax = fig.add_subplot(gs[0, i], sharey=first)
        first = first or ax
        colour = "#3a7d44" if in_sum else "#8c8c8c"
        ax.barh(ys, v, height=0.72, color=colour, edgecolor="none")
        ax.set_xlim(0, width)
        # ticks inside the column only: the next column's 0 never meets this one's end
        ax.set_xticks([x for x in range(0, int(width), 20 if width >= 40 else 10)])
        ax.tick_params(axis="x", labelsize=6.5, length=2, pad=1)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(display_taxon(name), rotation=55, ha="left", va="bottom", fontsize=8.5,
                     fontstyle="italic" if in_sum else "normal", x=0.05, pad=4)
        for y, val in zip(ys, v):  # a rare taxon's presence stays visible
            if 0 < val < 1.0:
                ax.plot([val + 0.6], [y], marker="+", color=colour, markersize=4)
        if i:
            ax.tick_params(axis="y", labelleft=False)
    first.set_yticks(ys)
    first.set_yticklabels([s.name for s in rows], fontsize=8.5)
    first.set_ylim(len(rows) - 0.5, -0.5)
    axs = fig.add_subplot(gs[0, len(cols)], sharey=first)
    axs.set_axis_off()
    axs.set_title("Pollen sum", rotation=55, ha="left", va="bottom", fontsize=8.5, x=0.05, pad=4)
    for y, s in zip(ys, rows):
        axs.text(0.05, y, s.progress_text, va="center", fontsize=7.5, transform=axs.get_yaxis_transform(),
                 color="#222222" if s.pollen_sum >= s.target_sum else "#c0392b")
    fig.text(label_w / w, 0.08 / h, "% of the pollen sum (grey: % of pollen sum + that category)", fontsize=7.5)
    return fig


def size_histograms(samples: list[SampleCount], max_taxa: int = 12):
    """Histograms of the long axis (µm) per taxon over all samples, or None when no
    counted grain is on a calibrated image."""
    sizes: dict[str, list[float]] = {}
    for s in samples:
        for t in s.taxa + s.excluded:
            sizes.setdefault(t.taxon, []).extend(x[0] for x in t.sizes)
    sizes = {k: v for k, v in sizes.items() if v}
    if not sizes:
        return None
    names = sorted(sizes, key=lambda k: (-len(sizes[k]), k.lower()))[:max_taxa]
    ncol = min(4, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig = _figure(2.6 * ncol, 1.9 * nrow + 0.4)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        v = sizes[name]
        ax.hist(v, bins=min(30, max(5, int(math.sqrt(len(v))))), color="#4c72b0")
        ax.set_title(f"{display_taxon(name)} (n = {len(v)})", fontsize=8.5)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("long axis (µm)", fontsize=7.5)
    fig.subplots_adjust(hspace=0.75, wspace=0.35, top=1 - 0.35 / (1.9 * nrow + 0.4), bottom=0.12)
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ------------------------------------------------------------------ text
def taxon_label(t: TaxonCount) -> str:
    """A count row's taxon as the report shows it (``display_taxon``), with its role when
    it is out of the sum; unnamed grains already say so ("pollen (unidentified)")."""
    name = display_taxon(t.taxon)
    return name if t.in_sum or t.role == UNNAMED_ROLE or t.taxon == t.role else f"{name} ({t.role})"


def _f(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{nd}f}"


def _conc(c) -> str:
    if c is None:
        return ""
    return f"{c.value:,.0f} ± {c.se:,.0f} {c.unit} (95 %: {c.lo:,.0f}-{c.hi:,.0f})"


def provenance_lines(data: ReportData) -> list[str]:
    lines = [
        f"Project {data.project}, report of {data.created} (PollenStudio {data.version}).",
        f"Counted: confirmed grains (accepted, corrected or added by a person)"
        f"{' on images marked reviewed only' if data.reviewed_only else ''}; "
        f"{data.reviewed_images} of {plural(data.images, 'image')} reviewed, {plural(data.undecided, 'proposal')} still "
        "undecided.",
        f"Model in use: {data.model_in_use}. Counted grains came from: "
        + (", ".join(f"{name} ({n})" for name, n in data.grain_sources) or "none yet") + ".",
        f"95 % intervals of percentages: {CI_LABEL.get(data.ci_method, data.ci_method)} (statsmodels). "
        "Excluded categories are out of the pollen sum; their percent is of sum + that category.",
    ]
    return lines


def render_html(data: ReportData) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Pollen count - {e(data.project)}</title><style>",
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border-bottom:1px solid #ddd;padding:3px 9px;text-align:right}td:first-child,th:first-child"
        "{text-align:left}th{background:#f2f2f2}.ex td{color:#666}.note{color:#555;font-size:90%}"
        "progress{width:14em}img{max-width:100%}",
        "</style></head><body>",
        f"<h1>Pollen count: {e(data.project)}</h1>",
        "".join(f"<p class='note'>{e(x)}</p>" for x in provenance_lines(data)),
    ]
    fig = pollen_diagram(data.samples)
    parts.append("<h2>Pollen diagram</h2><img alt='pollen diagram' src='data:image/png;base64,"
                 + base64.b64encode(figure_png(fig)).decode() + "'>")
    for s in data.samples:
        parts.append(f"<h2>Sample {e(s.name)}</h2>")
        done = min(s.pollen_sum, s.target_sum)
        parts.append(f"<p>Pollen sum <b>{s.progress_text}</b> <progress max='{s.target_sum}' value='{done}'></progress>"
                     f" &nbsp; {plural(s.images, 'image')}, {s.reviewed_images} reviewed, "
                     f"{plural(s.undecided, 'proposal')} undecided</p>")
        if data.slide_lines.get(s.name):  # slide scans reviewed field by field
            parts.append("<p class='note'>Traversed: " + "<br>".join(e(x) for x in data.slide_lines[s.name].split("\n"))
                         + "</p>")
        if s.concentration is not None:
            parts.append(f"<p>Concentration (pollen sum): <b>{e(_conc(s.concentration))}</b><br>"
                         f"<span class='note'>{e(s.concentration.method)}</span></p>")
        elif s.concentration_note:
            parts.append(f"<p class='note'>No concentration: {e(s.concentration_note)}</p>")
        if not (s.taxa or s.excluded):
            parts.append("<p class='note'>No counted grains on this sample yet.</p>")
            continue
        conc = s.concentration is not None
        parts.append("<table><tr><th>Taxon</th><th>Count</th><th>%</th><th>95 % interval</th>"
                     "<th>Long × short axis (µm)</th>" + ("<th>Concentration</th>" if conc else "") + "</tr>")
        for t in s.taxa + s.excluded:
            lo, sh = t.mean_axes()
            axes = f"{lo:.1f} × {sh:.1f} (n = {len(t.sizes)})" if lo is not None else ""
            em, en = t.mean_ellipse()
            if em is not None:
                axes += f"; ellipse {em:.1f} × {en:.1f} (n = {len(t.ellipses)})"
            cls = "" if t.in_sum else " class='ex'"
            parts.append(f"<tr{cls}><td>{e(taxon_label(t))}</td><td>{t.count}</td><td>{_f(t.percent)}</td>"
                         f"<td>{_f(t.ci_lo)}-{_f(t.ci_hi)}</td><td>{axes}</td>"
                         + (f"<td>{_f(t.concentration.value, 0) if t.concentration else ''}</td>" if conc else "")
                         + "</tr>")
        parts.append("</table>")
    ag = data.agreement
    if ag is not None:
        first, *taxa = agreement_lines(data)
        parts.append(f"<h2>Second opinion: agreement on names</h2><p>{e(first)}</p>")
        parts.append("<table><tr><th>Taxon (first name)</th><th>Checked</th><th>Confirmed</th><th>%</th>"
                     "<th>95 % interval</th><th>Named so by the checker instead</th><th>Kappa vs rest (95 %)</th></tr>")
        for t in ag.taxa:
            parts.append(f"<tr><td>{e(t.taxon)}</td><td>{t.named}</td><td>{t.confirmed}</td>"
                         f"<td>{_f(100 * t.percent) if t.named else ''}</td>"
                         f"<td>{(_f(100 * t.lo) + '-' + _f(100 * t.hi)) if t.named else ''}</td>"
                         f"<td>{t.proposed_by_second}</td><td>{e(t.kappa.text())}</td></tr>")
        parts.append("</table>")
    hist = size_histograms(data.samples)
    if hist is not None:
        parts.append("<h2>Grain sizes</h2><img alt='size histograms' src='data:image/png;base64,"
                     + base64.b64encode(figure_png(hist)).decode() + "'>")
    else:
        parts.append("<p class='note'>No sizes: no counted grain is on an image with a pixel scale "
                     "(set one with Edit > Pixel scale..., or import TIFFs that carry one).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def csv_rows(data: ReportData) -> list[dict]:
    rows = []
    for s in data.samples:
        common = {"sample": s.name, "pollen_sum": s.pollen_sum, "target_sum": s.target_sum, "images": s.images,
                  "reviewed_images": s.reviewed_images, "undecided_proposals": s.undecided,
                  "ci_method": data.ci_method}
        if not (s.taxa or s.excluded):
            rows.append({**common, "count": 0})
        for t in s.taxa + s.excluded:
            lo, sh = t.mean_axes()
            c = t.concentration
            em, en = t.mean_ellipse()
            rows.append({**common, "taxon": t.taxon, "role": t.role, "in_pollen_sum": int(t.in_sum),
                         "mean_ellipse_major_um": _f(em, 2), "mean_ellipse_minor_um": _f(en, 2),
                         "n_outlines": len(t.ellipses),
                         "count": t.count, "percent": _f(t.percent, 2), "ci_low": _f(t.ci_lo, 2),
                         "ci_high": _f(t.ci_hi, 2), "mean_long_um": _f(lo, 2), "mean_short_um": _f(sh, 2),
                         "n_measured": len(t.sizes), "concentration": _f(c.value, 1) if c else "",
                         "concentration_se": _f(c.se, 1) if c else "", "concentration_unit": c.unit if c else ""})
    return rows


def _table_pages(data: ReportData) -> list[list[str]]:
    lines = [data.project, ""] + provenance_lines(data) + [""]
    for s in data.samples:
        lines += [f"Sample {s.name}: pollen sum {s.progress_text}; {plural(s.images, 'image')}, {s.reviewed_images} "
                  f"reviewed, {plural(s.undecided, 'proposal')} undecided"]
        lines += [f"  traversed: {x}" for x in data.slide_lines.get(s.name, "").split("\n") if x]
        if s.concentration is not None:
            lines.append(f"  concentration {_conc(s.concentration)}")
        elif s.concentration_note:
            lines.append(f"  no concentration: {s.concentration_note}")
        lines.append(f"  {'taxon':<28}{'count':>7}{'%':>8}{'95 % interval':>16}   long x short µm")
        for t in s.taxa + s.excluded:
            lo, sh = t.mean_axes()
            name = taxon_label(t)
            lines.append(f"  {name[:27]:<28}{t.count:>7}{_f(t.percent):>8}{_f(t.ci_lo) + '-' + _f(t.ci_hi):>16}   "
                         + (f"{lo:.1f} x {sh:.1f}" if lo is not None else ""))
        lines.append("")
    lines += agreement_lines(data)
    per = 80
    return [lines[i:i + per] for i in range(0, len(lines), per)] or [[]]


def _wrap(line: str, width: int = 110) -> list[str]:
    import textwrap

    return textwrap.wrap(line, width, subsequent_indent="    ") or [""]


# ------------------------------------------------------------------ writing
def report_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    fmt = (fmt or Path(str(out)).suffix.lstrip(".")).lower()
    fmt = {"htm": "html"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise WriteError(f"a report is .html, .pdf or .csv; cannot tell the format of {out!s} "
                         "(give a file name ending in one of them, or --format)")
    return fmt


def write_report(project, out: str | os.PathLike, fmt: str | None = None, reviewed_only: bool = False,
                 ci_method: str = "wilson", ellipses: dict | None = None) -> dict:
    """Write the report; returns a summary {path, format, samples, grains}. The file is
    replaced atomically: a failure leaves any earlier report as it was."""
    from pollenstudio.core.atomic import atomic_write, check_output_path

    fmt = report_format(out, fmt)
    out = check_output_path(out, "report")
    data = build_report(project, reviewed_only=reviewed_only, ci_method=ci_method, ellipses=ellipses)
    if fmt == "html":
        text = render_html(data)
        with atomic_write(out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    elif fmt == "csv":
        from pollenstudio.core.csvsafe import write_rows

        with atomic_write(out, "w", newline="", encoding="utf-8") as f:
            write_rows(f, CSV_COLUMNS, csv_rows(data))  # names that look like formulas stay text
    else:
        from matplotlib.backends.backend_pdf import PdfPages

        buf = io.BytesIO()
        with PdfPages(buf) as pdf:
            for page in _table_pages(data):
                fig = _figure(8.27, 11.69)  # A4
                text = "\n".join(x for line in page for x in _wrap(line))
                fig.text(0.06, 0.96, text, va="top", ha="left", family="monospace", fontsize=7.2)
                pdf.savefig(fig)
            pdf.savefig(pollen_diagram(data.samples))
            hist = size_histograms(data.samples)
            if hist is not None:
                pdf.savefig(hist)
            pdf.infodict()["Title"] = f"Pollen count: {data.project}"
        with atomic_write(out, "wb", encoding=None) as f:
            f.write(buf.getvalue())
    return {"path": str(out), "format": fmt, "samples": len(data.samples), "grains": data.grains,
            "pollen_sum": sum(s.pollen_sum for s in data.samples),
            "second_opinions": data.agreement.n if data.agreement is not None else 0,
            "kappa": (round(data.agreement.kappa.value, 3)
                      if data.agreement is not None and not math.isnan(data.agreement.kappa.value) else None)}
