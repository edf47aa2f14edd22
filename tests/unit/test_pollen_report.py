"""The count report (issue 20): builds for an empty project and for 10,000 grains; HTML
embeds the diagram, CSV opens as one row per sample and taxon, PDF is a PDF; the CLI
stores roles and settings and refuses bad input without changing anything."""

import base64
import csv
import re
import time

import pytest

from pollenstudio.cli import main
from pollenstudio.core.atomic import WriteError
from pollenstudio.core.types import Box
from pollenstudio.project import Project
from pollenstudio.project.pollen_report import CSV_COLUMNS, build_report, diagram_taxa, write_report


def big_project(folder, n_grains=10_000, samples=20):
    p = Project.create(folder)
    taxa = ["Pinus", "Betula", "Quercus", "Alnus", "Corylus", "Poaceae", "Lycopodium", "Polypodium"]
    ids = p.ensure_categories(taxa)
    images = [{"path": f"s{s}/i{k}.png", "width": 5000, "height": 5000, "group": f"{100 + 10 * s} cm",
               "key": (s, k), "um_per_px": 0.2 if k else None} for s in range(samples) for k in range(5)]
    anns = []
    for g in range(n_grains):
        s, k = g % samples, (g // samples) % 5
        t = taxa[(g // samples) % len(taxa)]
        x, y = (g % 150) * 30, (g // 150 % 150) * 30
        anns.append({"image_key": (s, k), "box": Box(x, y, x + 25, y + 20), "category_id": ids[t],
                     "status": "accepted" if g % 3 else "added", "source": "model" if g % 3 else "human"})
    with p.importing():
        p.bulk_insert(images, anns)
    p.set_taxon_role(ids["Lycopodium"], "marker")
    p.set_taxon_role(ids["Polypodium"], "spore")
    return p


def test_report_for_ten_thousand_grains_builds_in_seconds(tmp_path):
    p = big_project(tmp_path / "p")
    t = time.perf_counter()
    html = write_report(p, tmp_path / "r.html")
    rows = write_report(p, tmp_path / "r.csv")
    assert time.perf_counter() - t < 20
    assert html["grains"] == 10_000 and html["samples"] == 20
    assert html["pollen_sum"] == 10_000 - sum(1 for g in range(10_000) if (g // 20) % 8 in (6, 7))
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)'", text).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Wilson" in text and "Grain sizes" in text
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == CSV_COLUMNS and rows["grains"] == sum(int(r["count"]) for r in table)
    first = [r for r in table if r["sample"] == "100 cm"]
    assert sum(float(r["percent"]) for r in first if r["in_pollen_sum"] == "1") == pytest.approx(100, abs=0.1)
    assert {r["role"] for r in first} == {"pollen", "marker", "spore"}
    # the marker is in the tables, not in the diagram
    assert "Lycopodium" not in diagram_taxa(build_report(p).samples)[1]


def test_report_for_an_empty_project(tmp_path):
    p = Project.create(tmp_path / "p")
    for ext in ("html", "pdf", "csv"):
        s = write_report(p, tmp_path / f"r.{ext}")
        assert s["grains"] == 0 and s["samples"] == 0
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Sample" not in html and "No sizes" in html and "0 of 0 images reviewed" in html
    assert (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines() == [",".join(CSV_COLUMNS)]


def test_pdf_report_has_the_diagram_and_histograms(tmp_path):
    p = big_project(tmp_path / "p", n_grains=600, samples=3)
    write_report(p, tmp_path / "r.pdf")
    data = (tmp_path / "r.pdf").read_bytes()
    assert data[:5] == b"%PDF-" and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") >= 3


def test_report_refuses_an_unknown_format_and_keeps_the_old_file(tmp_path):
    p = big_project(tmp_path / "p", n_grains=50, samples=2)
    with pytest.raises(WriteError, match="html, .pdf or .csv"):
        write_report(p, tmp_path / "r.docx")
    assert not (tmp_path / "r.docx").exists()


def test_report_cli_sets_roles_and_settings_then_writes(tmp_path, capsys):
    p = big_project(tmp_path / "p", n_grains=400, samples=2)
    p.close()
    out = tmp_path / "r.csv"
    # a bad setting: nothing is stored, no report written
    assert main(["report", str(tmp_path / "p"), "--role", "Pinus=spore", "--set", "target_sum=0",
                 "--out", str(out)]) == 1
    assert not out.exists()
    with Project.open(tmp_path / "p") as q:
        assert q.category_by_name("Pinus").id not in q.taxon_roles()
    assert main(["report", str(tmp_path / "p"), "--role", "Pinus=spore", "--set", "target_sum=150",
                 "--set", "110 cm:target_sum=120", "--out", str(out)]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    pinus = [r for r in table if r["taxon"] == "Pinus"]
    assert pinus and all(r["in_pollen_sum"] == "0" and r["role"] == "spore" for r in pinus)
    assert {r["sample"]: r["target_sum"] for r in table} == {"100 cm": "150", "110 cm": "120"}
    assert main(["report", str(tmp_path / "p"), "--out", str(tmp_path / "x.txt")]) == 1
    assert "html, .pdf or .csv" in capsys.readouterr().err


def test_report_outlines_give_fitted_ellipse_axes(tmp_path, capsys):
    import cv2
    import numpy as np

    img = np.full((240, 320, 3), (226, 218, 204), np.uint8)
    cv2.ellipse(img, (100, 120), (40, 25), 0, 0, 360, (150, 100, 70), -1)  # 80 x 50 px
    cv2.ellipse(img, (240, 120), (30, 30), 0, 0, 360, (150, 100, 70), -1)  # 60 px round
    cv2.imwrite(str(tmp_path / "slide.png"), img[..., ::-1])
    p = Project.create(tmp_path / "p")
    p.add_images([tmp_path / "slide.png"], group="S1", um_per_px=0.5)
    cid = p.add_category("Betula")
    p.add_annotation(1, Box(55, 90, 145, 150), cid)
    p.add_annotation(1, Box(205, 85, 275, 155), cid)
    p.close()
    out = tmp_path / "r.csv"
    assert main(["report", str(tmp_path / "p"), "--outlines", "--out", str(out), "--json"]) == 0
    row = next(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert row["n_outlines"] == "2"
    # mean of (80, 60) px and (50, 60) px at 0.5 µm/px: 35 x 27.5 µm; the box axes say 40 x 32.5
    assert float(row["mean_ellipse_major_um"]) == pytest.approx(35.0, rel=0.05)
    assert float(row["mean_ellipse_minor_um"]) == pytest.approx(27.5, rel=0.05)
    assert float(row["mean_long_um"]) == pytest.approx(40.0)
    # the outlines are stored on the grains (one undo step) and a second report reuses them
    with Project.open(tmp_path / "p") as p:
        assert sorted(p.outlines()) == [1, 2] and p.undo_label() == "measure outlines"
    capsys.readouterr()
    assert main(["report", str(tmp_path / "p"), "--outlines", "--out", str(out), "--json"]) == 0
    assert '"outlines": 0' in capsys.readouterr().out
    row = next(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert row["n_outlines"] == "2" and float(row["mean_ellipse_major_um"]) == pytest.approx(35.0, rel=0.05)
