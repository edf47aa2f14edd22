"""The Focus bar names a plane as its files do (issue 29): a stack of plane files numbered
relative to focus (``field_z-4.png`` ... ``field_z+6.png``, with gaps) shows "Plane z-1 (3 / 5)",
not only its index; a stack whose files carry no number keeps "Plane 3 / 5"."""

import os

import cv2
import pytest
from gui_windows import open_main_window

PLANES = ["-4", "-2", "-1", "+3", "+6"]  # in focus order; gaps between them


@pytest.fixture
def named_window(qtbot, settings, tmp_path):
    from pollenstudio.engine.synthetic import SynthConfig
    from pollenstudio.engine.synthetic.stack import render_stack
    from pollenstudio.project import Project

    planes, _objects = render_stack(5, SynthConfig(width=320, height=240), len(PLANES))
    src = tmp_path / "src"
    src.mkdir()
    for z, arr in zip(reversed(PLANES), reversed(planes)):  # written in another order than their numbers
        cv2.imwrite(str(src / f"field_z{z}.png"), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
    proj = Project.create(tmp_path / "p")
    proj.add_folder(src, stack_pattern="*_z{z}.png")
    proj.close()
    win = open_main_window(qtbot, settings, tmp_path / "p")
    qtbot.waitUntil(lambda: win.canvas.image is not None, timeout=5000)
    return win, planes


def test_the_focus_bar_names_planes_as_their_files_do(qtbot, named_window, tmp_path):
    import numpy as np

    win, planes = named_window
    st = win.stacks
    assert st.view == 2
    assert win.stack_bar.plane_label.text().strip() == "Plane z-1 (3 / 5)"
    assert np.array_equal(np.asarray(win.canvas.image.levels[0]), planes[2])  # plane 3 is the file z-1
    win.actions["plane_next"].trigger()
    qtbot.waitUntil(lambda: st.view == 3, timeout=5000)
    assert win.stack_bar.plane_label.text().strip().startswith("Plane z+3 (4 / 5)")
    assert [st.plane_name(k) for k in range(5)] == [f"z{z}" for z in PLANES]
    if os.environ.get("POLLENSTUDIO_SHOTS"):  # a look at the bar: POLLENSTUDIO_SHOTS=folder
        win.grab().save(os.path.join(os.environ["POLLENSTUDIO_SHOTS"], "stack_plane_names.png"))


def test_planes_without_numbers_in_their_names_go_by_index(qtbot, settings, tmp_path):
    from pollenstudio.engine.synthetic import SynthConfig
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset
    from pollenstudio.project import Project
    from pollenstudio.project.coco import import_coco

    generate_stack_dataset(tmp_path / "s", 1, 5, seed=3, cfg=SynthConfig(width=320, height=240))
    proj = Project.create(tmp_path / "p")
    import_coco(proj, tmp_path / "s" / "annotations.json")
    proj.close()
    win = open_main_window(qtbot, settings, tmp_path / "p")
    qtbot.waitUntil(lambda: win.stacks.view == 2, timeout=5000)
    assert win.stack_bar.plane_label.text().strip() == "Plane 3 / 5"
    assert win.stacks.plane_name(4) == "5"


def test_the_model_menu_offers_the_three_stack_modes_with_the_measured_default(qtbot, named_window):
    from pollenstudio.core.types import DEFAULT_STACK_MODE, STACK_MODES

    win, _planes = named_window
    acts = win.stack_mode_actions
    assert list(acts) == list(STACK_MODES)
    assert [m for m, a in acts.items() if a.isChecked()] == [DEFAULT_STACK_MODE]
    assert "measured best" in acts[DEFAULT_STACK_MODE].text()
    assert win.models.stack_mode == DEFAULT_STACK_MODE
    acts["both"].trigger()
    assert win.models.stack_mode == "both" and [m for m, a in acts.items() if a.isChecked()] == ["both"]
    acts["planes"].trigger()
    assert win.models.stack_mode == "planes" and [m for m, a in acts.items() if a.isChecked()] == ["planes"]
    if os.environ.get("POLLENSTUDIO_SHOTS"):
        menu = acts["edf"].parent()
        menu.popup(win.mapToGlobal(win.rect().center()))
        qtbot.waitUntil(menu.isVisible, timeout=3000)
        menu.grab().save(os.path.join(os.environ["POLLENSTUDIO_SHOTS"], "stack_modes_menu.png"))
        menu.hide()


def test_the_selected_box_panel_names_its_plane_as_the_files_do(qtbot, named_window):
    from pollenstudio.core.types import Box

    win, _planes = named_window
    ctl = win.ctl
    rec = ctl.image_record
    cat = ctl.project.add_category("Betula")
    aid = ctl.project.add_annotation(rec.id, Box(40, 40, 90, 90), cat, plane=4)
    ctl.show_image(rec.id, select=aid)
    qtbot.waitUntil(lambda: ctl.selected == aid and "focal plane" in win.topk.label.text(), timeout=5000)
    assert "sharpest on focal plane z+6" in win.topk.label.text()
    assert win.stack_bar.box_label.text().strip().startswith("selected box: plane z+6")
    if os.environ.get("POLLENSTUDIO_SHOTS"):
        qtbot.wait(300)  # layouts settle before the picture
        win.grab().save(os.path.join(os.environ["POLLENSTUDIO_SHOTS"], "stack_plane_names_box.png"))
        win.topk.grab().save(os.path.join(os.environ["POLLENSTUDIO_SHOTS"], "stack_plane_names_panel.png"))
