"""A whole-slide scan in the review window (issue 29): shown from the file's own levels
without decoding level 0 whole, fields of view in meander order with ] / [ and V, kept in
the project, Tab across the slide's grains in the same order, the density of proposals and
the fields traversed in the Count dock."""

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
cv2 = pytest.importorskip("cv2")

from fixtures_models import tiny_model_path  # noqa: E402,F401
from pollenstudio.core.types import Box, Detection  # noqa: E402
from pollenstudio.gui.slide_overview import density_map  # noqa: E402

W, H = 3000, 2200
SIDE = 1024  # the default field (no grain-size calibration)


def _write_slide(path, w=W, h=H, planes=1, levels=2, tile=(256, 256)):
    """A tiled pyramidal (OME-)TIFF with ``levels`` reduced copies, like a scanner's: a
    gradient with a bright square every 500 px, so levels differ visibly."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 128)], -1).astype(np.uint8)
    base[(xx % 500 < 40) & (yy % 500 < 40)] = 250
    data = np.stack([np.roll(base, 7 * k, axis=1) for k in range(planes)])
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(data, subifds=levels, tile=tile, compression="zlib", photometric="rgb",
                 metadata={"axes": "ZYXS"})
        for k in range(1, levels + 1):
            lh, lw = h >> k, w >> k
            tw.write(np.stack([cv2.resize(p, (lw, lh), interpolation=cv2.INTER_AREA) for p in data]),
                     subfiletype=1, tile=tile, compression="zlib", photometric="rgb")
    return data


# centres along the meander: field 0 (row 0, col 0), field 2 (row 0, col 2), field 3
# (row 1, col 2: the second row runs right to left), field 5 (row 1, col 0)
GRAINS = [(2500, 300), (300, 300), (2600, 1500), (400, 1400), (350, 500)]


@pytest.fixture
def slide_project(tmp_path):
    from pollenstudio.project import Project

    path = tmp_path / "scan.ome.tif"
    _write_slide(path)
    proj = Project.create(tmp_path / "proj")
    res = proj.add_images([path])
    iid = res.added[0]
    dets = [Detection(Box(x - 30, y - 30, x + 30, y + 30), 0, "pollen", 0.9 - 0.1 * i) for i, (x, y) in enumerate(GRAINS)]
    proj.write_proposals(iid, dets)
    proj.close()
    return tmp_path / "proj", iid, path


def _whole(*_a, **_k):
    raise AssertionError("an image or a focal plane was decoded whole")


@pytest.fixture
def no_whole_decode(monkeypatch):
    """Decoding any image, or any plane of a focal stack, whole fails the test."""
    from pollenstudio.core import imageio, stack

    monkeypatch.setattr(imageio, "read_image", _whole)
    monkeypatch.setattr(stack.FocalStack, "plane", _whole)


def _window_on(qtbot, settings, folder, iid):
    """A shown main window on the project in ``folder``, showing image ``iid``."""
    from pollenstudio.gui.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    win.open_project(str(folder))
    if win.ctl.image_id != iid:
        win.ctl.show_image(iid)
    return win


@pytest.fixture
def slide_window(qtbot, settings, slide_project, no_whole_decode):
    """A main window on the slide project; decoding any image whole fails the test."""
    folder, iid, path = slide_project
    win = _window_on(qtbot, settings, folder, iid)
    qtbot.waitUntil(lambda: win.canvas.image is not None and win.canvas.image.lazy, timeout=10000)
    yield win, iid, path
    win.close()


# the rules themselves (meander, order, what a traverse counts): tests/unit/test_slide_fields.py


def test_density_map_counts_centres_per_cell():
    d = density_map([(10, 10), (20, 20), (2990, 2190), (1500, 1100)], W, H, cells=4)
    assert d.shape == (3, 4)  # 750 px cells: 4 across, ceil(2200 / 750) = 3 down
    assert d[0, 0] == 2 and d[2, 3] == 1 and d[1, 2] == 1 and d.sum() == 4


# ------------------------------------------------------------------ the window
def test_slide_opens_by_region_never_whole(slide_window, qtbot):
    from pollenstudio.gui.pyramid import SlideImage

    win, iid, _path = slide_window
    img = win.canvas.image
    assert isinstance(img, SlideImage) and (img.width, img.height) == (W, H)
    slide = img.slide
    calls = []
    real = slide.region

    def counting_region(x, y, w, h, level=0, plane=0):
        calls.append((level, w, h))
        return real(x, y, w, h, level, plane)

    slide.region = counting_region
    c = win.canvas
    c.set_zoom(1.0, (1500, 1100))
    qtbot.waitUntil(lambda: not c.detail_pending() and c.detail.isVisible(), timeout=5000)
    assert calls, "the detail was not read from the slide"
    level0 = [(w, h) for lv, w, h in calls if lv == 0]
    assert level0 and all(w * h < W * H / 2 for w, h in level0), "level 0 read beyond the view"
    # the detail covers the view, read from level 0 at 100 %
    x, y, w, h = c.detail.mapRectToParent(c.detail.boundingRect()).getRect()
    r = c.vb.viewRect()
    assert x <= r.left() + 1 and y <= r.top() + 1 and x + w >= min(W, r.right()) - 1
    # zoomed out to a quarter: the overview (or a coarser level of the file), never level 0
    calls.clear()
    c.set_zoom(0.25, (1500, 1100))
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not c.detail_pending(), timeout=5000)
    assert all(lv > 0 for lv, _w, _h in calls)
    assert img.level_for(0.25) == img.overview_level and img.level_for(1.0) == 0
    # with a small overview, each zoom takes the file level closest to screen pixels
    from pollenstudio.gui.pyramid import SlideImage

    small = SlideImage(slide, overview_max=400)
    assert [small.level_for(z) for z in (2.0, 1.0, 0.5, 0.25, 0.05)] == [0, 0, 1, 2, small.overview_level]
    assert slide._cache.size <= slide._cache.limit


def test_fields_meander_with_keys_and_persist(slide_window, qtbot, settings):
    from PySide6.QtCore import Qt

    from pollenstudio.project.slide_fields import load_state

    win, iid, _path = slide_window
    sr = win.slide_review
    assert sr.active and len(sr.fields) == 9 and sr.visited == set()
    win.canvas.fit()
    win.canvas.view.setFocus()
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_BracketRight)
    assert sr.current == 0
    for _ in range(3):
        qtbot.keyClick(win.canvas.view, Qt.Key.Key_BracketRight)
    assert sr.current == 3 and sr.visited == {0, 1, 2, 3}
    f = sr.fields[3]
    r = win.canvas.vb.viewRect()
    assert r.contains(f.x1 + 1, f.y1 + 1) and r.contains(f.x2 - 1, f.y2 - 1)  # the field fills the view
    assert (f.row, f.col) == (1, 2)  # the second row starts at the right
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_BracketLeft)
    assert sr.current == 2
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_V)  # unmark the field in view
    assert 2 not in sr.visited
    side, visited, current = load_state(win.ctl.project, iid)
    assert (side, visited, current) == (SIDE, {0, 1, 3}, 2)
    # the overview draws visited fields and the field shown
    ov = sr.panel.overview
    assert ov.visited == {0, 1, 3} and ov.current == 2
    # kept in the project: a new window on it goes on where the review was
    folder = win.ctl.project.folder
    win.close_project()
    from pollenstudio.gui.main_window import MainWindow

    win2 = MainWindow(settings)
    qtbot.addWidget(win2)
    win2.show()
    win2.open_project(str(folder))
    if win2.ctl.image_id != iid:
        win2.ctl.show_image(iid)
    qtbot.waitUntil(lambda: win2.slide_review.active, timeout=10000)
    assert win2.slide_review.visited == {0, 1, 3} and win2.slide_review.current == 2
    win2.close()


def test_tab_walks_grains_in_meander_order(slide_window, qtbot):
    from PySide6.QtCore import Qt

    win, _iid, _path = slide_window
    win.canvas.view.setFocus()
    seen = []
    for _ in range(len(GRAINS)):
        qtbot.keyClick(win.canvas.view, Qt.Key.Key_Tab)
        a = win.ctl.selected_annotation()
        seen.append(tuple(round(v) for v in a.box.center))
        assert win.canvas.box_in_view(a.box)  # the view centres on each grain
    assert seen == [(300, 300), (350, 500), (2500, 300), (2600, 1500), (400, 1400)]
    # accepting one goes on along the slide, not by score
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_Tab)  # wraps to the first
    assert tuple(round(v) for v in win.ctl.selected_annotation().box.center) == (300, 300)
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: win.ctl.selected_annotation() is not None
                    and tuple(round(v) for v in win.ctl.selected_annotation().box.center) == (350, 500), timeout=3000)


def test_density_and_count_dock(slide_window, qtbot):
    from PySide6.QtCore import Qt

    win, iid, _path = slide_window
    ov = win.slide_review.panel.overview
    d = ov.density
    assert d is not None and d.sum() == len(GRAINS)
    # accept the two grains of field 0 and traverse it: the Count dock says so
    p = win.ctl.project
    for a in p.annotations(iid):
        if a.box.center[0] < 1000 and a.box.center[1] < 1000:
            p.accept(a.id)
    win.canvas.fit()
    win.canvas.view.setFocus()
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_BracketRight)
    qtbot.waitUntil(lambda: "1 of 9 fields traversed" in win.counts.panel.note.text(), timeout=15000)
    note = win.counts.panel.note.text()
    assert "2 grains in them" in note
    # 300 grains at 2 per field: 150 fields, more than the slide's 8 left
    assert "about 150 more fields for the target sum at this rate, more than the 8 fields left" in note
    # a click on the overview brings that point into view (centred as far as the slide's
    # edge allows), at the zoom of a field
    assert not win.canvas.vb.viewRect().contains(2600, 1500)
    pt = ov.to_widget(2600, 1500)
    qtbot.mouseClick(ov, Qt.MouseButton.LeftButton, pos=pt.toPoint())
    r = win.canvas.vb.viewRect()
    assert r.contains(2600, 1500) and r.width() < W


def test_focal_planes_of_a_slide_by_region(qtbot, settings, tmp_path, no_whole_decode):
    """A 3-plane pyramidal slide: Page Down swaps planes read by region, End the EDF view,
    nothing decoded whole."""
    from PySide6.QtCore import Qt

    from pollenstudio.gui.pyramid import SlideImage
    from pollenstudio.project import Project

    path = tmp_path / "planes.ome.tif"
    _write_slide(path, planes=3)
    proj = Project.create(tmp_path / "p3")
    iid = proj.add_images([path]).added[0]
    assert proj.image(iid).planes == 3
    proj.close()
    win = _window_on(qtbot, settings, tmp_path / "p3", iid)
    qtbot.waitUntil(lambda: isinstance(win.canvas.image, SlideImage), timeout=10000)
    assert win.stacks.view == 1
    win.canvas.view.setFocus()
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_PageDown)
    qtbot.waitUntil(lambda: getattr(win.canvas.image, "view", None) == 2, timeout=5000)
    assert isinstance(win.canvas.image, SlideImage)
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_End)
    qtbot.waitUntil(lambda: getattr(win.canvas.image, "view", None) == "edf", timeout=5000)
    c = win.canvas
    c.set_zoom(1.0, (1500, 1100))
    qtbot.waitUntil(lambda: not c.detail_pending() and c.detail.isVisible(), timeout=5000)
    win.close()


def test_model_jobs_read_regions_of_a_slide(slide_project, tiny_model_path, monkeypatch, no_whole_decode):
    """Edge map of the view, Grad-CAM of a grain and B + click read regions of a slide
    (from a coarse level for a map of the whole slide), never the whole slide."""
    from pollenstudio.core.progress import CancelToken
    from pollenstudio.gui import model_jobs
    from pollenstudio.gui.pyramid import shared_slide
    from pollenstudio.project import Project

    folder, iid, path = slide_project
    proj = Project.open(folder)
    monkeypatch.setattr(model_jobs, "_open_pixels", _whole, raising=False)
    slide = shared_slide(str(path))
    reads = []
    real = slide.region
    monkeypatch.setattr(slide, "region", lambda x, y, w, h, level=0, plane=0: (reads.append((level, w, h)),
                                                                                 real(x, y, w, h, level, plane))[1])

    class Cache:  # the tiny model, as the predictor cache would give it
        def __init__(self):
            from pollenstudio.engine.predict import Predictor

            self.pred = Predictor.from_checkpoint(tiny_model_path)

        def get(self, _project):
            return self.pred

    cache = Cache()
    tok = CancelToken()
    # the whole slide's edge map at 512 px: read from a level of about that size
    exp = model_jobs.edge_job(tok, proj, cache, iid, str(path), "P3", max_side=512, region=None)
    assert (exp.width, exp.height) == (W, H) and exp.rect is None
    assert reads and all(lv > 0 for lv, _w, _h in reads)
    assert exp.heat.shape[1] <= 512
    # the edge map of a view: that region only
    reads.clear()
    exp = model_jobs.edge_job(tok, proj, cache, iid, str(path), "P3", max_side=2048, region=(1000, 800, 1600, 1200))
    assert exp.rect is not None and exp.rect[0] <= 1000 and exp.rect[2] >= 1600
    assert all(w * h <= 700 * 500 for _lv, w, h in reads)
    # Grad-CAM of a proposal: a window around its box
    reads.clear()
    ann = next(a for a in proj.annotations(iid))
    try:
        exp = model_jobs.gradcam_job(tok, proj, cache, iid, str(path), ann)
    except Exception as exc:  # the tiny model knows other taxa: refused in words, after the read
        assert "taxon" in str(exc)
    assert reads and all(w * h < W * H / 4 for _lv, w, h in reads)
    # B + click: a window around the click, the box in slide pixels
    reads.clear()
    res = model_jobs.click_box_job(tok, proj, cache, str(path), 2500.0, 300.0)
    assert reads and all(w <= model_jobs.CLICK_WINDOW and h <= model_jobs.CLICK_WINDOW for _lv, w, h in reads)
    if res is not None:
        box, _how = res
        assert box.x2 > 1000  # in the slide's frame, not the window's
    proj.close()


def test_tiles_stream_into_the_view(slide_window, qtbot, monkeypatch):
    """A detection's tiles reach the window as they finish (model_jobs' on_tile hook): dashed
    previews on the canvas and in the density, replaced by the stored proposals."""
    import threading

    from pollenstudio.core.progress import CancelToken
    from pollenstudio.gui import model_jobs

    win, iid, _path = slide_window
    sr = win.slide_review
    p = win.ctl.project
    before = sr.panel.overview.density.sum()
    seen = []

    def fake_detect_project(project, pred, image_ids, progress=None, stack_mode=None, flip_pass=False, on_tile=None):
        assert on_tile is not None, "the GUI's tile hook was not passed to the detection"
        on_tile(iid, 0, [Detection(Box(1000, 1000, 1060, 1060), 0, "pollen", 0.8)])
        on_tile(iid, 1, [Detection(Box(2000, 1500, 2050, 1550), 0, "pollen", 0.7),
                         Detection(Box(2100, 1500, 2150, 1550), 0, "pollen", 0.6)])
        seen.append(True)
        return "summary"

    monkeypatch.setattr("pollenstudio.engine.detect_job.detect_project", fake_detect_project)

    class Pred:
        device = None
        model_version_id = None
        source = "fake"
        device_description = "cpu"

    class Cache:
        def get(self, _project, _batch=None):
            return Pred()

    sr._start_draining()
    t = threading.Thread(target=model_jobs.detect_job, args=(CancelToken(), p, Cache(), [iid]))
    t.start()
    t.join(10)
    assert seen
    qtbot.waitUntil(lambda: len(sr.preview.get(iid, [])) == 3, timeout=3000)
    xs, _ys = sr.preview_item.getData()
    assert len(xs) == 3 * 8 and 1000 in xs and 2150 in xs
    assert sr.panel.overview.density.sum() == before + 3
    # the image's proposals are stored: the previews go
    p.write_proposals(iid, [Detection(Box(1000, 1000, 1060, 1060), 0, "pollen", 0.8)])
    qtbot.waitUntil(lambda: iid not in sr.preview, timeout=3000)
    xs, _ys = sr.preview_item.getData()
    assert xs is None or len(xs) == 0


def test_tab_after_moving_to_a_field_starts_there(slide_window, qtbot):
    """A grain selected in one field, then ] to another: Tab goes to the field shown (seen in
    a real window: it went back to the grain left behind)."""
    from PySide6.QtCore import Qt

    win, _iid, _path = slide_window
    win.canvas.view.setFocus()
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_Tab)
    assert tuple(round(v) for v in win.ctl.selected_annotation().box.center) == (300, 300)  # field 0
    win.slide_review.go_to_field(3)
    assert win.ctl.selected is None
    qtbot.keyClick(win.canvas.view, Qt.Key.Key_Tab)
    assert tuple(round(v) for v in win.ctl.selected_annotation().box.center) == (2600, 1500)  # field 3's grain
