"""Review this next in the app: a sort of the image list, what N walks when chosen, after a
detection with the flipped pass (a tiny trained model on scenes it knows). The default sort
is the project's order (review this next did not teach faster than random order)."""

import os

import cv2
import numpy as np
import pytest
from fixtures_models import IMGSZ, TAXA, random_grains, render_scene, tiny_model_path  # noqa: F401

from pollenstudio.engine.review_order import project_review_values
from pollenstudio.gui.image_list import DEFAULT_SORT, REVIEW_NEXT


@pytest.fixture(scope="session")
def noisy_scenes(tmp_path_factory):
    from pollenstudio.project import Project

    folder = tmp_path_factory.mktemp("noisy") / "proj"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(11)
    for i in range(6):
        img, _b, _c = render_scene(IMGSZ, IMGSZ, random_grains(rng, IMGSZ, IMGSZ, 1 + i % 4, margin=4), seed=900 + i)
        noise = np.random.default_rng(i).normal(0, 15 * (i % 3), img.shape)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / "images" / f"field{i + 1:02d}.png"), img[..., ::-1].copy())
    proj = Project.create(folder)
    proj.ensure_categories(TAXA)
    proj.add_folder(folder / "images")
    proj.close()
    return folder


def test_review_this_next_sort_and_n_follows_it(qtbot, window_on_copy, noisy_scenes, tiny_model_path):
    win = window_on_copy(noisy_scenes, tiny_model_path)
    try:
        assert DEFAULT_SORT == "Project order" and win.images.sort.currentText() == DEFAULT_SORT
        win.images.sort.setCurrentText(REVIEW_NEXT)
        # the flipped pass: by default only with a GPU (the tests run on the CPU)
        assert win.models.flip_pass is None and win.flip_pass_actions["auto"].isChecked()
        p = win.ctl.project
        with qtbot.waitSignal(win.models.detectEnded, timeout=60000):
            win.models.detect([p.images()[0].id])
        assert p.runs("detect")[-1].params["flip_pass"] is False
        win.flip_pass_actions["on"].trigger()
        assert win.models.flip_pass is True and win.settings.value("detect/flip_pass") == "on"
        with qtbot.waitSignal(win.models.detectEnded, timeout=60000) as ended:
            win.act_detect_all.trigger()
        assert ended.args[0].startswith("Detection done"), ended.args
        assert p.runs("detect")[-1].params["flip_pass"] is True
        values = project_review_values(p)
        expected = sorted(values, key=lambda i: (-values[i], i))
        assert len(set(values.values())) > 1
        assert win.images.model.ids() == expected  # the list re-sorted when detection ended
        # N walks that order from the top
        win.ctl.show_image(expected[0])
        qtbot.waitUntil(lambda: win.ctl.image_id == expected[0], timeout=5000)
        win.actions["next_image"].trigger()
        qtbot.waitUntil(lambda: win.ctl.image_id == expected[1], timeout=5000)
        win.resize(1400, 800)
        qtbot.wait(300)
        if os.environ.get("PS_SHOTS"):  # screenshots for a person to look at
            win.grab().save(os.path.join(os.environ["PS_SHOTS"], "review_next_window.png"))
        # the other sorts are still there; coming back reads the values afresh
        win.images.sort.setCurrentText("Name")
        assert win.images.model.ids() == sorted(expected)  # field01..06 were added in name order
        win.images.sort.setCurrentText(REVIEW_NEXT)
        assert win.images.model.ids() == expected
    finally:
        win.models.jobs.cancel_all()
        win.ctl.jobs.cancel_all()
        win.close()
