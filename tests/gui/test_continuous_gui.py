"""Continuous retraining in the app (off by default): a real background fine-tune of the tiny
test model, then the gate on the identical validation images. A candidate whose detection
head is zeroed never becomes active; a better one does; the status bar says which. Also the
Model progress view on the versions this made."""

import os
import shutil

import pytest
from fixtures_models import TAXA, reviewed_project, tiny_model_path, zeroed_head_copy  # noqa: F401

from pollenstudio.core.types import Box
from pollenstudio.gui.continuous import META_KEY


@pytest.fixture(scope="session")
def reviewed_scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cont") / "proj"
    reviewed_project(folder, 8, seed=21, scene_seed=300).close()
    return folder


def _shot(widget, name):
    if os.environ.get("PS_SHOTS"):  # screenshots for a person to look at
        widget.grab().save(os.path.join(os.environ["PS_SHOTS"], name))


def test_continuous_retraining_keeps_a_worse_model_out_and_takes_a_better_one(qtbot, window_on_copy, reviewed_scenes,
                                                                              tiny_model_path):
    from pollenstudio.engine.compare import gate_candidate

    win = window_on_copy(reviewed_scenes, tiny_model_path)
    cont = win.continuous
    try:
        p = win.ctl.project
        assert not cont.enabled and not win.act_continuous.isChecked()  # off by default
        good = p.active_model_version()
        win.settings.setValue("continuous/epochs", 1)
        cont.set_every(3)
        win.act_continuous.setChecked(True)
        assert cont.enabled and p.get_meta(META_KEY) == "8"  # counted from when it was switched on
        assert not cont.check()  # nothing newly reviewed yet
        # an edit schedules a look at the count (once the reviewer pauses)
        rec = p.images()[0]
        win.ctl.show_image(rec.id)
        qtbot.waitUntil(lambda: win.ctl.image_id == rec.id, timeout=5000)
        p.set_meta(META_KEY, "5")  # as if three images had been reviewed since
        cont._check.setInterval(50)
        seen = []
        cont.decided.connect(seen.append)

        def broken(project, vid, token):  # the trained candidate, broken on purpose
            path = project.model_file(project.model_version(vid))
            zeroed_head_copy(path, path)
            return gate_candidate(project, vid, device="cpu", batch=4, progress=token)

        cont.gate = broken
        win.ctl.add(Box(5, 5, 40, 40))  # any edit
        qtbot.waitUntil(lambda: cont.running(), timeout=5000)
        assert "in the background" in win.statusBar().currentMessage()
        dlg = win.training_dashboard()  # one run at a time: the dashboard says why it waits
        assert not dlg.start() and "Continuous retraining is training" in dlg.phase_label.text()
        qtbot.waitUntil(lambda: len(seen) == 1, timeout=120000)
        d = seen[0]
        assert not d.activate and d.candidate["map50"] < d.reference["map50"]
        assert p.active_model_version().id == good.id  # never the worse model
        msg = win.statusBar().currentMessage()
        assert msg.startswith(f"Retrained in the background: kept {good.name}") and "not better" in msg
        worse = d.version_id

        # now the model in use is the broken one, and the next candidate is good
        assert win.models.activate_model_version(worse)

        def better(project, vid, token):
            shutil.copyfile(tiny_model_path, project.model_file(project.model_version(vid)))
            return gate_candidate(project, vid, device="cpu", batch=4, progress=token)

        cont.gate = better
        p.set_meta(META_KEY, "0")
        assert cont.check()
        qtbot.waitUntil(lambda: len(seen) == 2, timeout=120000)
        d2 = seen[1]
        assert d2.activate and d2.candidate["map50"] > d2.reference["map50"]
        assert p.active_model_version().id == d2.version_id
        assert win.statusBar().currentMessage().startswith("Retrained in the background: now using the new version")
        win.resize(1400, 820)
        _shot(win, "continuous_status_bar.png")
        qtbot.waitUntil(lambda: "Last run: " in dlg.continuous_state.text(), timeout=5000)
        assert dlg.continuous_box.isChecked() and dlg.continuous_every.value() == 3
        _shot(dlg, "continuous_dashboard.png")
        dlg.continuous_box.setChecked(False)
        assert not cont.enabled and not win.act_continuous.isChecked()

        # the progress view draws this project's versions
        dlg.progress_button.click()  # also opened from the dashboard
        prog = win._progress
        qtbot.waitUntil(lambda: len(prog.points) == 2 and prog.table.rowCount() == len(TAXA), timeout=20000)
        assert "2 trained versions" in prog.headline.text()  # the chosen model file is no point
        _shot(prog, "model_progress.png")
    finally:
        cont.shutdown()
        win.close()
