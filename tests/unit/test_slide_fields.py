"""A slide's fields of view (issue 29): the meander grid, grains along it, what a traverse
counts, the state kept in the project, and the report's lines on it."""

import pytest

from pollenstudio.core.types import Annotation, AnnotationStatus, Box, Source
from pollenstudio.project import Project
from pollenstudio.project.slide_fields import (
    field_at,
    field_side,
    load_state,
    meander_fields,
    meander_order,
    save_state,
    slide_ids,
    traverse_lines,
    traverse_summary,
)

W, H, SIDE = 3000, 2200, 1024


def test_meander_fields_alternate_direction():
    fields = meander_fields(W, H, SIDE)
    assert [(f.row, f.col) for f in fields] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert [f.index for f in fields] == list(range(9))
    assert fields[2].x2 == W and fields[-1].y2 == H  # edge fields clipped to the slide
    assert field_at(fields, SIDE, 2500, 1500).index == 3
    assert field_at(fields, SIDE, 10, 2100).index == 6
    assert field_at(fields, SIDE, W + 5, 10) is None and field_at(fields, SIDE, 10, H + 5) is None
    assert meander_fields(0, 100, SIDE) == []


def test_field_side_from_the_grain_size():
    assert field_side(None) == 1024
    assert field_side(40.0) == 800  # 20 grains across
    assert field_side(3.0) == 256  # never smaller than a usable field


def test_meander_order_of_grains():
    pts = [(2500, 300), (300, 300), (2600, 1500), (400, 1400), (350, 500)]
    order = meander_order([Box(x - 5, y - 5, x + 5, y + 5) for x, y in pts], W, SIDE)
    assert [pts[i] for i in order] == [(300, 300), (350, 500), (2500, 300), (2600, 1500), (400, 1400)]


def _ann(i, x, y, status):
    return Annotation(id=i, image_id=1, category_id=1, box=Box(x - 5, y - 5, x + 5, y + 5), status=status,
                      source=Source.HUMAN)


def test_traverse_summary_counts_confirmed_grains_in_visited_fields():
    fields = meander_fields(W, H, SIDE)
    anns = [_ann(1, 300, 300, AnnotationStatus.ACCEPTED), _ann(2, 2500, 300, AnnotationStatus.PROPOSED),
            _ann(3, 2600, 1500, AnnotationStatus.ADDED), _ann(4, 400, 1400, AnnotationStatus.REJECTED)]
    s = traverse_summary(fields, SIDE, {0, 3, 5, 99}, anns, um_per_px=0.5)
    assert (s.fields, s.visited, s.grains) == (9, 3, 2)  # 99 is no field of this grid
    assert s.area_px == fields[0].area + fields[3].area + fields[5].area
    assert s.area_text() == f"{s.area_px * 0.25 / 1e6:.2f} mm²"
    assert s.fields_for(10, 2) == 12  # (10 - 2) grains at 2 / 3 per field
    assert s.fields_for(2, 2) == 0
    assert traverse_summary(fields, SIDE, set(), anns).fields_for(10, 0) is None


def test_state_kept_in_the_project_and_in_the_report(tmp_path):
    from pollenstudio.project.counting import count_samples
    from pollenstudio.project.pollen_report import build_report, write_report

    p = Project.create(tmp_path / "p")
    ids = p.ensure_categories(["Pinus"])
    p.bulk_insert([{"path": "slide.tif", "width": W, "height": H, "group": "core 3.20 m", "key": 1, "um_per_px": 0.5},
                   {"path": "field.png", "width": 640, "height": 480, "group": "core 3.20 m", "key": 2}],
                  [{"image_key": 1, "box": Box(x - 10, y - 10, x + 10, y + 10), "category_id": ids["Pinus"],
                    "status": "accepted", "source": "model"} for x, y in ((300, 300), (350, 500), (2600, 1500))])
    slide = next(r.id for r in p.images() if r.path == "slide.tif")
    assert load_state(p, slide) == (None, set(), None) and slide_ids(p) == []
    save_state(p, slide, SIDE, {0, 1}, 1)
    assert load_state(p, slide) == (SIDE, {0, 1}, 1) and slide_ids(p) == [slide]
    p.set_meta(f"slide_fields:{slide}", "{not json")
    assert load_state(p, slide) == (None, set(), None)  # unreadable: the review starts over, nothing raised
    save_state(p, slide, SIDE, {0, 1}, 1)
    lines = traverse_lines(p, count_samples(p))
    assert list(lines) == ["core 3.20 m"]
    assert lines["core 3.20 m"].startswith("slide.tif: 2 of 9 fields traversed (22 %, ")
    # pollen sum 3 (the grain in field 3 counts in the sum, not in the traverse), 1 grain per field: 297 more
    assert "2 grains in them; about 297 more fields for the target sum at this rate, more than the 7 fields left" \
        in lines["core 3.20 m"]
    assert build_report(p).slide_lines == lines
    write_report(p, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Traversed: slide.tif: 2 of 9 fields traversed" in html
    p.close()


@pytest.mark.parametrize("raw", ["[1, 2", "{\"side\": 0}", "{\"visited\": [1]}"])
def test_bad_kept_state_is_no_state(tmp_path, raw):
    p = Project.create(tmp_path / "p")
    p.set_meta("slide_fields:1", raw)
    assert load_state(p, 1)[1] == set()
    p.close()
