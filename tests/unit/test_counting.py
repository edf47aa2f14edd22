"""Slide counts (issue 20): statistics against hand-computed cases, the pollen sum and its
exclusions, samples from folders, pixel scales from TIFF metadata and a drawn line."""

import math

import numpy as np
import pytest

from pollenstudio.core.errors import ProjectError, ScaleError
from pollenstudio.core.pixelscale import nice_length, scale_bar, um_per_px_from_file, um_per_px_from_line
from pollenstudio.core.types import Box
from pollenstudio.project import Project
from pollenstudio.project.counting import NO_SAMPLE, count_samples
from pollenstudio.project.statistics import air_concentration, marker_concentration, proportion_ci

Z95 = 1.959963984540054


# ------------------------------------------------------------------ statistics
def test_wilson_interval_matches_the_formula_by_hand():
    # 10 Betula in a pollen sum of 100: p = 0.1
    k, n = 10, 100
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    lo, hi = proportion_ci(k, n, "wilson")
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == (0.0552, 0.1744)  # the published table value


def test_clopper_pearson_interval_at_the_edges():
    # none of 10 seen: upper bound solves (1 - p)^10 = 0.025; all 10: lower bound p^10 = 0.025
    assert proportion_ci(0, 10, "clopper-pearson") == pytest.approx((0.0, 1 - 0.025 ** 0.1), abs=1e-9)
    assert proportion_ci(10, 10, "clopper-pearson") == pytest.approx((0.025 ** 0.1, 1.0), abs=1e-9)
    assert math.isnan(proportion_ci(0, 0)[0])
    with pytest.raises(ScaleError):
        proportion_ci(5, 3)
    with pytest.raises(ScaleError):
        proportion_ci(1, 3, "agresti")


def test_marker_concentration_worked_example():
    # 300 pollen grains and 150 Lycopodium spores counted; 2 tablets of 18,583 +- 1,708
    # spores added to 1 cm3 of sediment.
    #   L = 2 x 18,583 = 37,166;  C = 300 / 150 x 37,166 / 1 = 74,332 grains/cm3
    #   sd(L) = 1,708 x sqrt(2) = 2,415.5;  (sd(L) / L)^2 = 0.0042239
    #   SE / C = sqrt(1/300 + 1/150 + 0.0042239) = sqrt(0.0142239) = 0.119264
    #   SE = 74,332 x 0.119264 = 8,865
    c = marker_concentration(300, 150, tablets=2, per_tablet=18583, quantity=1.0, per_tablet_sd=1708)
    assert c.value == pytest.approx(74332.0)
    assert c.se == pytest.approx(8865, abs=1.0)
    assert c.unit == "grains/cm3"
    assert c.lo < c.value < c.hi
    # without the batch spread only the counting error is left: sqrt(0.01) = 10 %
    assert marker_concentration(300, 150, 2, 18583, 1.0).rel_se == pytest.approx(0.1)
    with pytest.raises(ScaleError, match="marker"):
        marker_concentration(300, 0, 2, 18583, 1.0)
    with pytest.raises(ScaleError):
        marker_concentration(300, 10, 2, 18583, 0.0)


def test_air_concentration_exact_poisson():
    # 10 grains in 2 m3: 5 grains/m3; the exact 95 % interval of a count of 10 is 4.795-18.390
    c = air_concentration(10, 2.0)
    assert c.value == 5.0 and c.unit == "grains/m3"
    assert (round(c.lo * 2, 3), round(c.hi * 2, 3)) == (4.795, 18.39)
    assert air_concentration(0, 1.0).hi == pytest.approx(3.689, abs=1e-3)
    with pytest.raises(ScaleError):
        air_concentration(3, -1)


# ------------------------------------------------------------------ counts
def make_counted(folder, counts: dict, groups=("slide-A", "slide-B"), ump=0.5):
    """Images in ``groups`` and confirmed grains: counts = {(group, taxon): n}."""
    p = Project.create(folder)
    taxa = sorted({t for _, t in counts})
    ids = p.ensure_categories(taxa)
    images = [{"path": f"{g}/img.png", "width": 4000, "height": 4000, "group": g, "key": g, "um_per_px": ump}
              for g in groups]
    anns = []
    for (g, taxon), n in counts.items():
        for k in range(n):
            x, y = (k % 100) * 40, (k // 100) * 40
            anns.append({"image_key": g, "box": Box(x, y, x + 30, y + 20), "category_id": ids[taxon],
                         "status": "accepted", "source": "model"})
    with p.importing():
        p.bulk_insert(images, anns)
    return p, ids


def test_excluded_categories_stay_out_of_the_sum(tmp_path):
    p, ids = make_counted(tmp_path / "p", {("slide-A", "Betula"): 30, ("slide-A", "Pinus"): 10,
                                           ("slide-A", "Lycopodium"): 25, ("slide-A", "Polypodium"): 8,
                                           ("slide-A", "unidentified"): 3, ("slide-B", "Betula"): 5})
    p.set_taxon_role(ids["Lycopodium"], "marker")
    p.set_taxon_role(ids["Polypodium"], "spore")
    a, b = count_samples(p)
    assert a.name == "slide-A" and a.pollen_sum == 40 and [t.taxon for t in a.taxa] == ["Betula", "Pinus"]
    assert {t.taxon: t.role for t in a.excluded} == {"Lycopodium": "marker", "Polypodium": "spore",
                                                     "unidentified": "unnamed"}
    betula = a.taxa[0]
    assert betula.percent == pytest.approx(75.0)
    assert (betula.ci_lo, betula.ci_hi) == pytest.approx(tuple(100 * x for x in proportion_ci(30, 40)))
    # spores: percent of pollen sum + spores
    spores = next(t for t in a.excluded if t.taxon == "Polypodium")
    assert spores.percent == pytest.approx(100 * 8 / 48)
    assert b.pollen_sum == 5 and b.taxa[0].percent == 100.0
    # sizes: 30 x 20 px at 0.5 µm/px -> long 15 µm, short 10 µm
    assert betula.mean_axes() == pytest.approx((15.0, 10.0))
    # back to pollen: in the sum again
    p.set_taxon_role(ids["Polypodium"], "pollen")
    assert count_samples(p)[0].pollen_sum == 48
    with pytest.raises(ProjectError):
        p.set_taxon_role(ids["Betula"], "fern")
    assert count_samples(p)[0].pollen_sum == 48


def test_target_sum_and_marker_concentration_per_sample(tmp_path):
    p, ids = make_counted(tmp_path / "p", {("slide-A", "Betula"): 287, ("slide-A", "Lycopodium"): 41,
                                           ("slide-B", "Betula"): 12})
    p.set_taxon_role(ids["Lycopodium"], "marker")
    p.set_sample_settings("", {"target_sum": 500})
    p.set_sample_settings("slide-A", {"target_sum": 300, "marker_tablets": 1, "marker_per_tablet": 10000,
                                      "quantity": 2.0})
    a, b = count_samples(p)
    assert a.progress_text == "287 / 300" and b.progress_text == "12 / 500"
    assert a.concentration.value == pytest.approx(287 / 41 * 10000 / 2.0)
    assert b.concentration is None
    with pytest.raises(ScaleError):
        p.set_sample_settings("slide-A", {"target_sum": 0})
    with pytest.raises(ScaleError):
        p.set_sample_settings("slide-A", {"tablets": 3})
    assert count_samples(p)[0].target_sum == 300  # bad settings changed nothing
    # a settings asking for a concentration without any marker counted says why
    p.set_sample_settings("slide-B", {"marker_tablets": 1, "marker_per_tablet": 10000, "quantity": 1.0})
    assert "marker" in count_samples(p)[1].concentration_note


def test_unassigned_images_form_their_own_sample_and_selection_sets_it(tmp_path):
    p, ids = make_counted(tmp_path / "p", {("x", "Betula"): 2}, groups=("x",))
    p.set_images_group([1], None)
    assert [s.name for s in count_samples(p)] == [NO_SAMPLE]
    p.set_images_group([1], "  core 3, 120 cm ")
    assert [s.name for s in count_samples(p)] == ["core 3, 120 cm"]
    with pytest.raises(ProjectError):
        p.set_images_group([1], "a\nb")


def _png(path):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 50, 3), 128 + len(str(path)) % 50, np.uint8))


def test_samples_from_subfolders_on_import(tmp_path):
    root = tmp_path / "slides"
    _png(root / "slide-1" / "a.png")
    _png(root / "slide-2" / "deep" / "b.png")
    _png(root / "c.png")
    p = Project.create(tmp_path / "p")
    p.add_folder(root)
    groups = {r.path.rsplit("/", 1)[-1]: r.group for r in p.images()}
    assert groups == {"a.png": "slide-1", "b.png": "slide-2/deep", "c.png": None}


# ------------------------------------------------------------------ pixel scale
def test_scale_from_tiff_resolution_tags(tmp_path):
    import tifffile

    img = np.zeros((32, 32), np.uint16)
    f = tmp_path / "cm.tif"  # 40,000 px per cm = 0.25 µm/px
    tifffile.imwrite(f, img, resolution=(40000, 40000), resolutionunit=3)
    assert um_per_px_from_file(f) == pytest.approx(0.25)
    f = tmp_path / "dpi.tif"  # a desktop default: 72 dpi = 353 µm/px, not a microscope's
    tifffile.imwrite(f, img, resolution=(72, 72), resolutionunit=2)
    assert um_per_px_from_file(f) is None
    f = tmp_path / "imagej.tif"  # ImageJ: unit in the description, resolution in px per µm
    tifffile.imwrite(f, img, imagej=True, resolution=(1 / 0.16, 1 / 0.16), metadata={"unit": "micron"})
    assert um_per_px_from_file(f) == pytest.approx(0.16)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    assert um_per_px_from_file(tmp_path / "bad.tif") is None
    p = Project.create(tmp_path / "p")
    p.add_images([tmp_path / "cm.tif", tmp_path / "dpi.tif"])
    assert sorted((r.um_per_px or 0) for r in p.images()) == pytest.approx([0, 0.25])


def test_scale_from_ome_tiff(tmp_path):
    import tifffile

    f = tmp_path / "x.ome.tif"
    tifffile.imwrite(f, np.zeros((32, 32), np.uint8), ome=True,
                     metadata={"PhysicalSizeX": 0.1083, "PhysicalSizeXUnit": "µm",
                               "PhysicalSizeY": 0.1083, "PhysicalSizeYUnit": "µm"})
    assert um_per_px_from_file(f) == pytest.approx(0.1083)
    f2 = tmp_path / "nm.ome.tif"
    tifffile.imwrite(f2, np.zeros((32, 32), np.uint8), ome=True,
                     metadata={"PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm"})
    assert um_per_px_from_file(f2) == pytest.approx(0.25)


def test_line_calibration_maths():
    # a 50 µm scale bar drawn from (100, 200) to (300, 350): 250 px long -> 0.2 µm/px
    assert um_per_px_from_line(100, 200, 300, 350, 50) == pytest.approx(0.2)
    assert um_per_px_from_line(300, 350, 100, 200, 50) == pytest.approx(0.2)  # either direction
    with pytest.raises(ScaleError):
        um_per_px_from_line(5, 5, 5.2, 5, 50)
    with pytest.raises(ScaleError):
        um_per_px_from_line(0, 0, 100, 0, -1)
    with pytest.raises(ScaleError):
        um_per_px_from_line(0, 0, 100, 0, float("nan"))


def test_scale_bar_is_right_at_every_zoom():
    assert [nice_length(x) for x in (7.3, 20, 0.31, 149)] == [5, 20, 0.2, 100]
    for zoom in (0.05, 0.3, 1.0, 2.7, 16.0):
        um, screen = scale_bar(0.25, zoom, max_screen_px=150)
        # the bar's screen length, back through the zoom and the scale, is its label
        assert screen / zoom * 0.25 == pytest.approx(um)
        assert 150 / 2.5 - 1e-6 <= screen <= 150 + 1e-6


def test_export_csv_has_long_and_short_axes_in_micrometres(tmp_path):
    import csv

    from pollenstudio.project.report import write_counts_csv

    p, ids = make_counted(tmp_path / "p", {("s", "Betula"): 2}, groups=("s",), ump=0.25)
    p.set_image_status(1, "reviewed")
    write_counts_csv(p, tmp_path / "c.csv")
    rows = [r for r in csv.DictReader(open(tmp_path / "c.csv", newline="")) if r["scope"] == "taxon"]
    # 30 x 20 px boxes at 0.25 µm/px: long 7.5 µm, short 5 µm, mean of sides 6.25 µm
    assert (rows[0]["mean_long_um"], rows[0]["mean_short_um"], rows[0]["mean_size_um"]) == ("7.5", "5.0", "6.25")
