"""Model > Inference backend: the choice is remembered and reaches detection's predictor;
runtimes that are not installed are shown disabled."""

from pollenstudio.engine import runtime as rt


def test_backend_choice_is_remembered_and_used(qtbot, settings, monkeypatch):
    from pollenstudio.gui.main_window import MainWindow

    monkeypatch.setattr(rt, "installed_runtimes", lambda: ["onnxruntime"])
    win = MainWindow(settings)
    qtbot.addWidget(win)
    acts = win.backend_actions
    assert list(acts) == ["auto", "torch", "onnxruntime", "openvino"]
    assert acts["onnxruntime"].isEnabled() and not acts["openvino"].isEnabled()
    assert "not installed" in acts["openvino"].text()
    assert acts["torch"].isChecked() and win.models.predictors.backend == "torch"  # the suite's default
    acts["onnxruntime"].trigger()
    assert win.models.predictors.backend == "onnxruntime" and settings.value("model/backend") == "onnxruntime"
    win.close()

    win2 = MainWindow(settings)
    qtbot.addWidget(win2)
    assert win2.backend_actions["onnxruntime"].isChecked() and win2.models.predictors.backend == "onnxruntime"
    win2.close()

    # a saved runtime that is no longer installed falls back to auto
    monkeypatch.setattr(rt, "installed_runtimes", lambda: [])
    win3 = MainWindow(settings)
    qtbot.addWidget(win3)
    assert win3.backend_actions["auto"].isChecked() and win3.models.predictors.backend == "auto"
    win3.close()
