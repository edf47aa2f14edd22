"""Model in the review loop: background detection with progress and Cancel, the model and
device in the status bar, overlays, export. A tiny trained model (tests/fixtures_models.py)
on scenes it knows, so detections are real."""

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, TAXA, random_grains, render_scene, tiny_model_path  # noqa: F401
from PySide6.QtCore import QTimer


@pytest.fixture(scope="session")
def scene_template(tmp_path_factory):
    from pollenstudio.project import Project

    folder = tmp_path_factory.mktemp("scenes") / "proj"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(6):
        img, _b, _c = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 3, margin=4), seed=500 + i)
        cv2.imwrite(str(folder / "images" / f"scene{i + 1:02d}.png"), img[..., ::-1].copy())
    proj = Project.create(folder)
    proj.ensure_categories(TAXA)
    proj.add_folder(folder / "images")
    proj.close()
    return folder


@pytest.fixture
def model_window(window_on_copy, scene_template, tiny_model_path):
    win = window_on_copy(scene_template, tiny_model_path)
    yield win
    win.models.jobs.cancel_all()
    win.ctl.jobs.cancel_all()
    win.close()


def _proposals(project):
    return [a for r in project.images() for a in project.annotations(r.id) if a.status.value == "proposed"]


def test_detection_runs_in_a_worker_and_proposals_land(qtbot, model_window):
    win = model_window
    ctl = win.ctl
    assert "tiny" in win.st_model.text()  # the chosen model is the active version
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    shown = []
    ctl.boxesChanged.connect(lambda: shown.append(len(ctl.annotations())))
    with qtbot.waitSignal(win.models.detectStarted, timeout=1000):
        win.act_detect_all.trigger()
    assert win.st_progress.isVisible() and win.st_cancel.isVisible()
    with qtbot.waitSignal(win.models.detectEnded, timeout=60000) as ended:
        pass
    timer.stop()
    assert ended.args[0].startswith("Detection done"), ended.args
    assert len(ticks) > 5  # the GUI thread kept handling events during the run
    props = _proposals(ctl.project)
    mv = ctl.project.active_model_version()
    assert len(props) >= 6 and all(a.model_version == mv.id for a in props)
    assert {ctl.project.category(a.category_id).name for a in props} <= set(TAXA)
    assert shown and shown[-1] > 0  # the image on screen got its boxes without a reload
    assert not win.st_progress.isVisible()
    assert "CPU" in win.st_model.text() or "CUDA" in win.st_model.text()


def test_cancel_stops_within_one_batch_and_new_run_wins(qtbot, model_window):
    win = model_window
    ctl = win.ctl
    win.models.detect_batch = 1
    n = len(ctl.project.images())
    progress = []
    win.models.detectProgress.connect(lambda d, t, m: progress.append(d))
    win.models.detect_which("all")
    job = win.models.jobs._slots["detect"]
    qtbot.waitUntil(lambda: any(d >= 1 for d in progress), timeout=30000)
    win.st_cancel.click()
    assert not win.st_progress.isVisible()
    qtbot.waitUntil(lambda: job.done, timeout=30000)
    done_images = {a.image_id for a in _proposals(ctl.project)}
    # one image per batch: the cancel lands after at most one more image
    assert 1 <= len(done_images) <= min(progress[-1] + 1, n - 1)
    assert ctl.project.runs("detect")[-1].status == "cancelled"
    # a new run after the cancel finishes the rest
    with qtbot.waitSignal(win.models.detectEnded, timeout=60000):
        win.models.detect_which("all")
    assert {a.image_id for a in _proposals(ctl.project)} == {r.id for r in ctl.project.images()}


def test_no_model_says_what_to_do(qtbot, window, monkeypatch):
    import pollenstudio.gui.model_controller as controller_mod

    errors = []
    window.models.errorRaised.connect(lambda t, m: errors.append((t, m)))
    monkeypatch.setattr(controller_mod.ModelController, "model_available", lambda self: False)
    assert not window.models.detect_which("all")
    assert errors and "Choose model file" in errors[0][1]
    assert not window.models.detecting()


def _detect_all(qtbot, models):
    with qtbot.waitSignal(models.detectEnded, timeout=60000):
        models.detect_which("all")


def _wait_layer(qtbot, win, kind):
    qtbot.waitUntil(lambda: win.overlay.exp is not None and win.overlay.exp.kind == kind
                    and win.canvas.heat.isVisible(), timeout=30000)
    return win.overlay.exp


def test_edge_map_overlay_has_the_image_shape_and_follows_the_level(qtbot, model_window):
    win = model_window
    win.actions["edge_map"].trigger()  # E
    exp = _wait_layer(qtbot, win, "edge")
    rec = win.ctl.image_record
    assert exp.heat.shape == (rec.height, rec.width)
    rect = win.canvas.heat.boundingRect()
    assert (rect.width(), rect.height()) == (rec.width, rec.height)
    p3 = exp.heat.copy()
    win.overlay_bar.level.setCurrentIndex(win.overlay_bar.level.findData("P5"))  # no recompute: all levels came together
    assert win.overlay.exp.key == "P5" and not np.allclose(win.overlay.exp.heat, p3)
    assert "coarse edges" in win.overlay_bar.state.text() and "P5" not in win.overlay_bar.state.text()
    win.actions["edge_map"].trigger()  # E again hides it
    assert not win.canvas.heat.isVisible()


def test_gradcam_follows_the_selection_and_topk_is_shown(qtbot, model_window):
    win = model_window
    ctl = win.ctl
    _detect_all(qtbot, win.models)
    ctl.set_threshold(0.0)
    anns = [a for a in ctl.annotations() if a.status.value == "proposed"]
    assert len(anns) >= 2
    ctl.select(anns[0].id)
    assert "%" in win.topk.label.text() and TAXA[0] in win.topk.label.text()  # top-k probabilities
    win.actions["gradcam"].trigger()  # G
    first = _wait_layer(qtbot, win, "gradcam")
    assert first.key == anns[0].id and first.heat.shape == (ctl.image_record.height, ctl.image_record.width)
    ctl.select(anns[1].id)
    assert not win.canvas.heat.isVisible()  # the old box's map is gone at once
    second = _wait_layer(qtbot, win, "gradcam")
    assert second.key == anns[1].id
    assert not np.allclose(first.heat, second.heat)

    # each map is hottest inside its own box
    def hot_inside(heat, box):
        y, x = np.unravel_index(np.argmax(heat), heat.shape)
        return box.x1 - 8 <= x <= box.x2 + 8 and box.y1 - 8 <= y <= box.y2 + 8

    assert hot_inside(first.heat, anns[0].box) and hot_inside(second.heat, anns[1].box)


def test_huge_image_maps_are_computed_downscaled_and_stretched(qtbot, model_window):
    from pollenstudio.core.progress import CancelToken
    from pollenstudio.gui import model_jobs

    win = model_window
    ctl = win.ctl
    path = str(ctl.project.image_path(ctl.image_record))
    exp = model_jobs.edge_job(CancelToken(), ctl.project, win.models.predictors, ctl.image_id, path, "P3", max_side=128)
    assert exp.heat.shape == (128, 128) and (exp.width, exp.height) == (IMGSZ, IMGSZ)
    win.overlay.kind = "edge"
    win.overlay.explanation_ready(exp)
    rect = win.canvas.heat.mapRectToParent(win.canvas.heat.boundingRect())
    assert (round(rect.width()), round(rect.height())) == (IMGSZ, IMGSZ)


def test_a_new_detection_replaces_the_running_one(qtbot, model_window):
    win = model_window
    ctl = win.ctl
    win.models.detect_batch = 1
    ids = [r.id for r in ctl.project.images()]
    progress = []
    win.models.detectProgress.connect(lambda d, t, m: progress.append(d))
    win.models.detect(ids)
    old = win.models.jobs._slots["detect"]
    qtbot.waitUntil(lambda: any(d >= 1 for d in progress), timeout=30000)  # mid-run
    with qtbot.waitSignal(win.models.detectEnded, timeout=60000) as ended:
        win.models.detect([ids[-1]])  # the user asks for one image while "all" runs
    assert old.token.cancelled and ended.args[0].startswith("Detection done")
    qtbot.waitUntil(lambda: old.done, timeout=30000)
    runs = ctl.project.runs("detect")
    assert [r.status for r in runs[-2:]] == ["cancelled", "done"]
    # the old run stopped early: most images never got proposals from it
    with_props = {a.image_id for a in _proposals(ctl.project)}
    assert ids[-1] in with_props and len(with_props) < len(ids)


def test_activating_another_version_changes_status_bar_and_next_detection(qtbot, model_window, tmp_path):
    import shutil

    win = model_window
    ctl = win.ctl
    first = ctl.project.active_model_version()
    second_file = shutil.copy(ctl.project.model_file(first), tmp_path / "retrained-v2.safetensors")
    win.models.choose_model(str(second_file))
    qtbot.waitUntil(lambda: "retrained-v2" in win.st_model.text(), timeout=10000)
    second = ctl.project.active_model_version()
    assert second.id != first.id
    with qtbot.waitSignal(win.models.detectEnded, timeout=60000):
        win.models.detect_which("image")
    props = [a for a in ctl.project.annotations(ctl.image_id) if a.status.value == "proposed"]
    assert props and all(a.model_version == second.id for a in props)


def test_a_bad_model_file_is_refused_in_words(qtbot, model_window, tmp_path):
    win = model_window
    errors = []
    win.models.errorRaised.connect(lambda t, m: errors.append((t, m)))
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    n = len(win.ctl.project.model_versions())
    win.models.choose_model(str(bad))
    qtbot.waitUntil(lambda: bool(errors), timeout=10000)
    assert errors[0][0] == "Cannot use this model file" and "broken.safetensors is not a PollenStudio model" in errors[0][1]
    assert len(win.ctl.project.model_versions()) == n  # nothing registered


def test_closing_the_project_mid_detection_waits_for_the_last_write(qtbot, model_window, caplog):
    win = model_window
    ctl = win.ctl
    win.models.detect_batch = 1
    progress = []
    win.models.detectProgress.connect(lambda d, t, m: progress.append(d))
    project = ctl.project
    win.models.detect_which("all")
    job = win.models.jobs._slots["detect"]
    qtbot.waitUntil(lambda: any(d >= 1 for d in progress), timeout=30000)
    win.close_project()
    assert job.done  # stopped before the database closed
    assert "failed" not in caplog.text
    from pollenstudio.project import Project

    with Project.open(project.folder) as again:
        assert again.runs("detect")[-1].status == "cancelled"


def test_help_lists_the_model_keys(window):
    from pollenstudio.gui.help_dialog import shortcuts_html

    html = shortcuts_html()
    assert "Detect this image" in html and "Cancel detection" in html and "Grad-CAM" in html
    assert window.actions["detect_image"].shortcut().toString() == "Ctrl+D"
    assert window.actions["export"].shortcut().toString() == "Ctrl+E"


def test_detect_selected_images_runs_on_exactly_those(qtbot, model_window):
    from PySide6.QtCore import QItemSelectionModel

    win = model_window
    ctl = win.ctl
    sel = win.images.view.selectionModel()
    sel.clearSelection()
    for row in (1, 3):
        sel.select(win.images.model.index(row), QItemSelectionModel.SelectionFlag.Select)
    want = {win.images.model.row_data(r).id for r in (1, 3)}
    with qtbot.waitSignal(win.models.detectEnded, timeout=60000):
        win.act_detect_selected.trigger()
    assert {a.image_id for a in _proposals(ctl.project)} == want


def _queue_totals_while_proposals_arrive(qtbot, window, n_writes: int) -> list[int]:
    """Write one proposal every 200 ms (a detection on the CPU), ``n_writes`` times; return
    the queue totals the panel was given meanwhile."""
    from pollenstudio.core.types import Box, Detection

    p = window.ctl.project
    window.ctl.set_threshold(0.0)
    qtbot.waitUntil(lambda: not window.ctl.reads_pending(), timeout=5000)
    shown = []
    window.ctl.queueReady.connect(lambda items, total, hidden: shown.append(total))
    ids = [r.id for r in p.images()]
    for k in range(n_writes):
        p.write_proposals(ids[k % len(ids)], [Detection(Box(10, 10, 40 + k, 40 + k), 0, TAXA[0], 0.5)])
        qtbot.wait(200)
    return shown


def test_the_queue_follows_a_detection_while_it_runs(qtbot, window):
    """Proposals written every 200 ms show up in the review queue within about a second,
    not only once the run is over."""
    shown = _queue_totals_while_proposals_arrive(qtbot, window, 12)  # 2.4 s of writes
    assert shown, "the queue was not re-read while proposals kept coming"
    assert shown[0] > 0


def test_a_slow_queue_read_is_not_starved_by_new_proposals(qtbot, window, monkeypatch):
    """A queue read slower than the gap between detections (a busy CPU) still lands: the
    next read waits for it instead of cancelling it."""
    import time

    from pollenstudio.gui import store_reads

    real = store_reads.queue_job

    def slow_queue_job(token, *args, **kwargs):
        time.sleep(1.5)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(store_reads, "queue_job", slow_queue_job)
    shown = _queue_totals_while_proposals_arrive(qtbot, window, 20)  # 4 s of writes
    assert shown, "every queue read was cancelled by the next change"
