"""Issue 31 item 12: count settings that are finite but absurd are refused in words (no
"inf +- inf" or "nan" concentration), and `report --set SAMPLE:...` for a sample the project
does not have is refused naming the samples it has, changing nothing."""

import math
import sqlite3
import subprocess
import sys

import pytest

from pollenstudio.core.errors import ScaleError
from pollenstudio.core.types import Box
from pollenstudio.project import Project
from pollenstudio.project.counting import NO_SAMPLE, check_settings, count_samples


def _counted(folder):
    """Two samples and one image without a sample; Betula grains and Lycopodium markers."""
    p = Project.create(folder)
    ids = p.ensure_categories(["Betula", "Lycopodium"])
    images = [{"path": f"{g}/img.png", "width": 2000, "height": 2000, "group": g or None, "key": g}
              for g in ("slide-A", "slide-B", "")]
    anns = [{"image_key": g, "box": Box(40 * k, 0, 40 * k + 30, 20), "category_id": ids[t], "status": "accepted",
             "source": "human"} for g in ("slide-A", "slide-B") for t, n in (("Betula", 20), ("Lycopodium", 5))
            for k in range(n)]
    with p.importing():
        p.bulk_insert(images, anns)
    p.set_taxon_role(ids["Lycopodium"], "marker")
    return p


@pytest.mark.parametrize("settings", [
    {"air_volume_m3": 1e-320},  # subnormal: n / V overflows to inf
    {"air_volume_m3": 1e12},
    {"marker_per_tablet": 1e308},  # tablets x spores overflows: "nan +- 0" with no grain
    {"marker_per_tablet": 1e-300},
    {"marker_tablets": 1e-300},
    {"marker_tablets": 1e9},
    {"quantity": 1e-320},
    {"quantity": 1e300},
    {"marker_per_tablet_sd": 1e308},
    {"marker_per_tablet": 18583, "marker_per_tablet_sd": 20000},  # a spread larger than the mean
])
def test_absurd_finite_settings_are_refused_in_words(settings):
    with pytest.raises(ScaleError) as exc:
        check_settings(settings)
    text = str(exc.value)
    key = next(iter(settings)) if len(settings) == 1 else "marker_per_tablet_sd"
    assert key in text and "\n" not in text


def test_sensible_settings_still_pass():
    ok = {"target_sum": 300, "marker_tablets": 2, "marker_per_tablet": 18583, "marker_per_tablet_sd": 1708,
          "quantity": 1.0, "quantity_unit": "cm3"}
    assert check_settings(ok) == ok
    assert check_settings({"air_volume_m3": 14.4}) == {"air_volume_m3": 14.4}  # a Hirst trap's day


def test_store_refuses_absurd_settings_and_keeps_the_old_ones(tmp_path):
    p = _counted(tmp_path / "p")
    p.set_sample_settings("slide-A", {"air_volume_m3": 10.0})
    with pytest.raises(ScaleError):
        p.set_sample_settings("slide-A", {"air_volume_m3": 1e-320})
    assert p.sample_settings()["slide-A"] == {"air_volume_m3": 10.0}
    p.close()


def test_absurd_settings_stored_by_an_older_version_give_a_note_not_inf_or_nan(tmp_path):
    p = _counted(tmp_path / "p")
    db = p.db_path
    p.close()
    with sqlite3.connect(db) as conn:  # what an older version let through
        conn.execute("INSERT INTO samples(name, settings) VALUES ('slide-A', '{\"air_volume_m3\": 1e-320}')")
        conn.execute("INSERT INTO samples(name, settings) VALUES ('slide-B', "
                     "'{\"marker_tablets\": 1, \"marker_per_tablet\": 1e308, \"quantity\": 1.0}')")
    p = Project.open(db)
    counts = {s.name: s for s in count_samples(p)}
    for name in ("slide-A", "slide-B"):
        s = counts[name]
        assert s.concentration is None, (name, s.concentration)
        assert "must be from" in s.concentration_note
        assert all(t.concentration is None or math.isfinite(t.concentration.value) for t in s.taxa)
    p.close()


def _report(*args):
    return subprocess.run([sys.executable, "-m", "pollenstudio", "report", *args], capture_output=True, text=True,
                          timeout=120)


def test_report_set_for_an_unknown_sample_is_refused_naming_the_samples(tmp_path):
    p = _counted(tmp_path / "p")
    folder = p.folder
    p.close()
    res = _report(str(folder), "--set", "nosample:target_sum=5")
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert "'nosample'" in err and "slide-A" in err and "slide-B" in err and NO_SAMPLE in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    # one bad --set among good ones stores nothing
    res = _report(str(folder), "--set", "slide-A:target_sum=400", "--set", "slide-Z:target_sum=5")
    assert res.returncode == 1 and "'slide-Z'" in res.stderr
    with Project.open(folder) as p:
        assert p.sample_settings() == {}
    # a known sample, the images without one, and the project's defaults are stored
    res = _report(str(folder), "--set", "slide-A:target_sum=400", "--set", f"{NO_SAMPLE}:target_sum=200",
                  "--set", "target_sum=500")
    assert res.returncode == 0, res.stderr
    with Project.open(folder) as p:
        assert p.sample_settings() == {"slide-A": {"target_sum": 400}, NO_SAMPLE: {"target_sum": 200},
                                       "": {"target_sum": 500}}


def test_report_set_absurd_air_volume_is_refused(tmp_path):
    p = _counted(tmp_path / "p")
    folder = p.folder
    p.close()
    res = _report(str(folder), "--set", "slide-A:air_volume_m3=1e-320", "--out", str(tmp_path / "r.csv"))
    assert res.returncode == 1 and "air volume" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r.csv").exists()
