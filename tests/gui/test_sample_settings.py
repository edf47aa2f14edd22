"""Count settings of a sample in the window (issue 20): target sum, exotic marker (tablets,
spores per tablet, quantity, marker taxon) or air volume; checked as typed, stored per
sample on Save, nothing stored on Cancel, and the dock shows the concentration with its
error, the same figure count_samples (and so the report) gives."""

import math

import pytest

from pollenstudio.core.types import Box


def _sample_with_marker(window):
    p = window.ctl.project
    ids = [r.id for r in p.images()]
    p.set_images_group(ids, "slide-1")
    cats = p.categories()
    betula = cats[0].id
    lyco = p.add_category("Lycopodium")
    with p.batch("grains"):
        for k in range(12):
            p.add_annotation(ids[0], Box(5 + 20 * (k % 10), 5 + 30 * (k // 10), 20 + 20 * (k % 10), 20 + 30 * (k // 10)), betula)
        for k in range(4):
            p.add_annotation(ids[1], Box(5 + 20 * k, 150, 20 + 20 * k, 165), lyco)
    window.ctl.show_image(ids[0])
    return p, lyco


def _wait_counts(qtbot, window, lyco_count=4):
    panel = window.counts.panel
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.name == "slide-1"
                    and panel.current.count_of("Lycopodium") == lyco_count, timeout=5000)
    return panel


def test_marker_settings_are_checked_stored_and_give_the_concentration(qtbot, window, tmp_path):
    from pollenstudio.project.counting import count_samples
    from pollenstudio.project.statistics import marker_concentration

    p, lyco = _sample_with_marker(window)
    panel = _wait_counts(qtbot, window)
    assert panel.concentration.text() == ""  # nothing asked for yet
    dlg = window.counts.open_settings()
    qtbot.addWidget(dlg)
    assert dlg.sample == "slide-1" and dlg.mode() == "none"
    save = dlg.buttons.button(dlg.buttons.StandardButton.Save)
    dlg.target.setValue(500)
    dlg.mode_marker.setChecked(True)
    assert not save.isEnabled() and "tablets added" in dlg.preview.text()  # incomplete: cannot be saved
    dlg.tablets.setValue(2)
    dlg.per_tablet.setValue(18583)
    dlg.per_tablet_sd.setValue(1708)
    dlg.quantity.setValue(1.5)
    assert not save.isEnabled() and "marker taxon" in dlg.preview.text()
    dlg.marker_taxon.setCurrentIndex(dlg.marker_taxon.findData(lyco))
    assert save.isEnabled()
    pollen_sum = panel.current.pollen_sum - 4  # Lycopodium leaves the sum once it is the marker
    want = marker_concentration(pollen_sum, 4, 2, 18583, 1.5, 1708, "cm3")
    assert f"{want.value:,.0f} ± {want.se:,.0f} grains/cm3" in dlg.preview.text()
    dlg.show()
    qtbot.waitExposed(dlg)
    dlg.tablets.setValue(2.0)  # a change while shown: the dialog fits the preview
    qtbot.wait(50)
    dlg.grab().save(str(tmp_path / "sample-settings.png"))
    dlg.save()
    assert dlg.result() == dlg.DialogCode.Accepted
    assert p.sample_settings()["slide-1"] == {"target_sum": 500, "marker_tablets": 2.0, "marker_per_tablet": 18583.0,
                                              "marker_per_tablet_sd": 1708.0, "quantity": 1.5, "quantity_unit": "cm3"}
    assert p.taxon_roles()[lyco] == "marker"
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.target_sum == 500
                    and panel.current.concentration is not None, timeout=5000)
    s = panel.current
    assert s.concentration.value == pytest.approx(want.value) and s.concentration.se == pytest.approx(want.se)
    assert f"{want.value:,.0f} ± {want.se:,.0f} grains/cm3" in panel.concentration.text()
    assert panel.progress.format() == f"{pollen_sum} / 500"
    assert count_samples(p, samples=["slide-1"])[0].concentration.value == pytest.approx(want.value)
    window.count_dock.show()
    window.count_dock.raise_()
    panel.grab().save(str(tmp_path / "count-dock-concentration.png"))

    # Cancel stores nothing, whatever was typed
    before = p.sample_settings()
    dlg = window.counts.open_settings()
    qtbot.addWidget(dlg)
    assert dlg.mode() == "marker" and dlg.tablets.value() == 2 and dlg.marker_taxon.currentData() == lyco
    dlg.mode_air.setChecked(True)
    dlg.air.setValue(14.4)
    dlg.reject()
    assert p.sample_settings() == before


def test_air_volume_and_project_defaults(qtbot, window):
    from pollenstudio.project.statistics import air_concentration

    p, _lyco = _sample_with_marker(window)
    panel = _wait_counts(qtbot, window)
    dlg = window.counts.open_settings()
    qtbot.addWidget(dlg)
    dlg.scope_default.setChecked(True)  # every sample without its own settings
    dlg.mode_air.setChecked(True)
    assert "air volume" in dlg.preview.text()
    dlg.air.setValue(14.4)
    n = panel.current.pollen_sum
    want = air_concentration(n, 14.4)
    assert f"{want.value:,.0f} ± {want.se:,.0f} grains/m3" in dlg.preview.text()
    dlg.save()
    assert p.sample_settings() == {"": {"target_sum": 300, "air_volume_m3": 14.4}}
    qtbot.waitUntil(lambda: panel.current is not None and panel.current.concentration is not None, timeout=5000)
    assert panel.current.concentration.unit == "grains/m3"
    assert math.isclose(panel.current.concentration.value, n / 14.4)


def test_bad_values_are_named_and_change_nothing(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    p, _lyco = _sample_with_marker(window)
    _wait_counts(qtbot, window)
    dlg = window.counts.open_settings()
    qtbot.addWidget(dlg)
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: warned.append(a[2]))
    dlg.mode_marker.setChecked(True)
    dlg.tablets.setValue(1)
    dlg.save()  # spores per tablet, quantity and the marker taxon are missing
    assert warned and "spores per tablet" in warned[-1] and dlg.result() != dlg.DialogCode.Accepted
    assert p.sample_settings() == {} and "marker" not in p.taxon_roles().values()
