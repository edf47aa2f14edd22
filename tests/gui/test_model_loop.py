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
def model_window(qtbot, settings, scene_template, tmp_path, tiny_model_path):
    import shutil

    from pollenstudio.gui.main_window import MainWindow

    dst = tmp_path / "proj"
    shutil.copytree(scene_template, dst)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.ctl.imageShown, timeout=5000):
        assert win.open_project(str(dst))
    win.ctl.choose_model(str(tiny_model_path))
    qtbot.waitUntil(lambda: win.ctl.model_name() is not None, timeout=10000)
    yield win
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
    with qtbot.waitSignal(ctl.detectStarted, timeout=1000):
        win.act_detect_all.trigger()
    assert win.st_progress.isVisible() and win.st_cancel.isVisible()
    with qtbot.waitSignal(ctl.detectEnded, timeout=60000) as ended:
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
    ctl.detect_batch = 1
    n = len(ctl.project.images())
    progress = []
    ctl.detectProgress.connect(lambda d, t, m: progress.append(d))
    ctl.detect_which("all")
    job = ctl.jobs._slots["detect"]
    qtbot.waitUntil(lambda: any(d >= 1 for d in progress), timeout=30000)
    win.st_cancel.click()
    assert not win.st_progress.isVisible()
    qtbot.waitUntil(lambda: job.done, timeout=30000)
    done_images = {a.image_id for a in _proposals(ctl.project)}
    # one image per batch: the cancel lands after at most one more image
    assert 1 <= len(done_images) <= min(progress[-1] + 1, n - 1)
    assert ctl.project.runs("detect")[-1].status == "cancelled"
    # a new run after the cancel finishes the rest
    with qtbot.waitSignal(ctl.detectEnded, timeout=60000):
        ctl.detect_which("all")
    assert {a.image_id for a in _proposals(ctl.project)} == {r.id for r in ctl.project.images()}


def test_no_model_says_what_to_do(qtbot, window, monkeypatch):
    import pollenstudio.gui.controller as controller_mod

    errors = []
    window.ctl.errorRaised.connect(lambda t, m: errors.append((t, m)))
    monkeypatch.setattr(controller_mod.ReviewController, "model_available", lambda self: False)
    assert not window.ctl.detect_which("all")
    assert errors and "Choose model file" in errors[0][1]
    assert not window.ctl.detecting()
