"""Box editing logic, driven with fake pointer positions in image pixels (no Qt)."""

import sys

from hypothesis import given
from hypothesis import strategies as st

from pollenstudio.core.types import Box
from pollenstudio.gui.interaction import (
    BoxEditor,
    Hit,
    Mode,
    Part,
    cycle,
    drag_draw,
    drag_move,
    drag_resize,
    hit_test,
    nudge,
)

BIG = Box(10, 10, 200, 200)
SMALL = Box(50, 50, 70, 70)
BOUNDS = (300.0, 300.0)


def run(gesture, points):
    box = next(gesture)
    for p in points:
        box = gesture.send(p)
    return box


def test_interaction_module_does_not_import_qt():
    import subprocess

    code = "import sys, pollenstudio.gui.interaction; print([m for m in sys.modules if m.startswith(('PySide6','pyqtgraph'))])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_small_box_inside_large_one_is_picked():
    boxes = [("big", BIG), ("small", SMALL)]
    assert hit_test(boxes, 60, 60, tol=2) == Hit("small", Part.BODY)
    # order of drawing does not matter
    assert hit_test(list(reversed(boxes)), 60, 60, tol=2) == Hit("small", Part.BODY)
    assert hit_test(boxes, 150, 150, tol=2) == Hit("big", Part.BODY)
    assert hit_test(boxes, 250, 250, tol=2) is None


def test_press_just_outside_an_edge_still_grabs_within_tolerance():
    boxes = [("a", Box(100, 100, 120, 120))]
    assert hit_test(boxes, 122, 110, tol=3) == Hit("a", Part.BODY)
    assert hit_test(boxes, 126, 110, tol=3) is None


def test_selected_handles_win_over_a_smaller_box_under_them():
    # the small box sits on the big box's top-left corner; with big selected the handle wins
    boxes = [("big", BIG), ("corner", Box(5, 5, 15, 15))]
    assert hit_test(boxes, 10, 10, tol=3, selected="big") == Hit("big", Part.NW)
    assert hit_test(boxes, 10, 10, tol=3, selected=None) == Hit("corner", Part.BODY)
    assert hit_test(boxes, 105, 200, tol=3, selected="big") == Hit("big", Part.S)
    assert hit_test(boxes, 200, 105, tol=3, selected="big") == Hit("big", Part.E)


def test_drag_move_keeps_size_and_stays_inside_image():
    moved = run(drag_move(SMALL, (60, 60), BOUNDS), [(65, 62), (80, 90)])
    assert moved == Box(70, 80, 90, 100)
    clamped = run(drag_move(SMALL, (60, 60), BOUNDS), [(1000, -1000)])
    assert clamped == Box(280, 0, 300, 20)


def test_resize_each_handle_moves_only_its_edges():
    b = Box(100, 100, 200, 200)
    start_for = {
        Part.NW: (100, 100), Part.N: (150, 100), Part.NE: (200, 100), Part.E: (200, 150),
        Part.SE: (200, 200), Part.S: (150, 200), Part.SW: (100, 200), Part.W: (100, 150),
    }
    expected = {
        Part.NW: Box(110, 110, 200, 200), Part.N: Box(100, 110, 200, 200),
        Part.NE: Box(100, 110, 210, 200), Part.E: Box(100, 100, 210, 200),
        Part.SE: Box(100, 100, 210, 210), Part.S: Box(100, 100, 200, 210),
        Part.SW: Box(110, 100, 200, 210), Part.W: Box(110, 100, 200, 200),
    }
    for part, start in start_for.items():
        end = (start[0] + 10, start[1] + 10)
        assert run(drag_resize(b, part, start, BOUNDS), [end]) == expected[part], part


def test_resize_past_opposite_edge_flips_and_never_collapses():
    b = Box(100, 100, 200, 200)
    flipped = run(drag_resize(b, Part.E, (200, 150), BOUNDS), [(50, 150)])
    assert flipped == Box(50, 100, 100, 200)
    tiny = run(drag_resize(b, Part.E, (200, 150), BOUNDS), [(100.5, 150)])
    assert tiny.width >= 2 and tiny.x1 == 100


def test_resize_is_clipped_to_image():
    b = Box(250, 250, 290, 290)
    assert run(drag_resize(b, Part.SE, (290, 290), BOUNDS), [(400, 400)]) == Box(250, 250, 300, 300)


def test_draw_any_direction_normalises():
    assert run(drag_draw((50, 60), BOUNDS), [(20, 10)]) == Box(20, 10, 50, 60)
    assert run(drag_draw((290, 290), BOUNDS), [(400, 350)]) == Box(290, 290, 300, 300)


def test_nudge_stays_inside():
    assert nudge(SMALL, 1, 0, BOUNDS) == Box(51, 50, 71, 70)
    assert nudge(SMALL, -100, -100, BOUNDS) == Box(0, 0, 20, 20)


def test_cycle_wraps_both_ways():
    keys = [3, 1, 2]
    assert cycle(keys, None, 1) == 3
    assert cycle(keys, None, -1) == 2
    assert cycle(keys, 2, 1) == 3
    assert cycle(keys, 3, -1) == 2
    assert cycle([], None, 1) is None


def test_editor_click_selects_without_edit_and_drag_edits():
    ed = BoxEditor()
    boxes = [("big", BIG), ("small", SMALL)]
    out = ed.press(boxes, (60, 60), 2, None, BOUNDS)
    assert out.kind == "select" and out.key == "small" and ed.mode is Mode.MOVE
    assert ed.release((60, 60)).kind == "none"
    ed.press(boxes, (60, 60), 2, "small", BOUNDS)
    ed.move((62, 61))
    out = ed.release((70, 65))
    assert out.kind == "edit" and out.key == "small" and out.box == Box(60, 55, 80, 75)
    assert ed.mode is Mode.IDLE


def test_editor_resize_through_selected_handle():
    ed = BoxEditor()
    ed.press([("s", SMALL)], (70, 70), 3, "s", BOUNDS)
    assert ed.mode is Mode.RESIZE
    out = ed.release((90, 100))
    assert out == type(out)("edit", "s", Box(50, 50, 90, 100))


def test_editor_draw_needs_arming_and_ignores_clicks():
    ed = BoxEditor()
    out = ed.press([], (10, 10), 2, None, BOUNDS)
    assert ed.mode is Mode.PAN and out.kind == "select" and out.key is None
    assert ed.pan_delta((15, 12)) == (-5, -2)
    ed.release((15, 12))
    ed.draw_armed = True
    ed.press([("big", BIG)], (60, 60), 2, None, BOUNDS)  # draws even over an existing box
    assert ed.mode is Mode.DRAW
    out = ed.release((61, 60.5))
    assert out.kind == "none" and not ed.draw_armed  # a click is not a box; B disarms
    ed.draw_armed = True
    ed.press([], (60, 60), 2, None, BOUNDS)
    ed.move((80, 70))
    assert ed.preview == Box(60, 60, 80, 70)
    out = ed.release((90, 95))
    assert out.kind == "create" and out.box == Box(60, 60, 90, 95)


def test_editor_cancel_discards_gesture():
    ed = BoxEditor()
    ed.press([("s", SMALL)], (60, 60), 2, None, BOUNDS)
    ed.move((100, 100))
    ed.cancel()
    assert ed.release((100, 100)).kind == "none"


coords = st.floats(min_value=-50, max_value=350, allow_nan=False)


@given(coords, coords, coords, coords, st.sampled_from(list(Part)))
def test_any_drag_gives_a_valid_box_inside_the_image(sx, sy, ex, ey, part):
    b = Box(100, 120, 160, 150)
    g = drag_move(b, (sx, sy), BOUNDS) if part is Part.BODY else drag_resize(b, part, (sx, sy), BOUNDS)
    out = run(g, [(ex, ey)])
    assert out.is_valid() and out.width >= 2 - 1e-9 and out.height >= 2 - 1e-9
    assert 0 <= out.x1 and out.x2 <= 300 and 0 <= out.y1 and out.y2 <= 300
    if part is Part.BODY:
        assert abs(out.width - 60) < 1e-9 and abs(out.height - 30) < 1e-9
