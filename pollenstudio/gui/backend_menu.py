"""Model > Inference backend: which engine runs detection (PyTorch, ONNX Runtime, OpenVINO).

Remembered in the settings (``model/backend``). Runtimes that are not installed are shown
disabled with what to install. Edge maps and Grad-CAM always run on PyTorch.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup

LABELS = {
    "auto": "Automatic (GPU: PyTorch; CPU: fastest installed runtime)",
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime (CPU)",
    "openvino": "OpenVINO (CPU)",
}


def install_backend_menu(win) -> None:
    """Add the submenu to ``win.model_menu`` and apply the saved choice to ``win.models``."""
    from pollenstudio.engine.runtime import BACKENDS, backend_env_problem, default_backend, installed_runtimes

    have = set(installed_runtimes())
    problem = backend_env_problem()  # a misspelt $POLLENSTUDIO_BACKEND: said, and auto used
    if problem:
        win.statusBar().showMessage(f"{problem[0].upper()}{problem[1:]}; using Automatic", 30000)
    saved = str(win.settings.value("model/backend", default_backend(strict=False)))
    if saved not in BACKENDS or (saved not in ("auto", "torch") and saved not in have):
        saved = "auto"
    menu = win.model_menu.addMenu("Inference backend")
    menu.setStatusTip("What runs detection; the detections are the same, the speed differs")
    group = QActionGroup(menu)
    group.setExclusive(True)
    win.backend_actions = {}
    for name in BACKENDS:
        act = QAction(LABELS[name], menu)
        act.setCheckable(True)
        if name in ("onnxruntime", "openvino") and name not in have:
            act.setEnabled(False)
            act.setText(LABELS[name] + " - not installed")
            act.setStatusTip("Install the CPU runtimes: pip install 'pollenstudio[cpu-fast]'")
        act.triggered.connect(lambda _=False, b=name: set_backend(win, b))
        group.addAction(act)
        menu.addAction(act)
        win.backend_actions[name] = act
    win.backend_menu = menu
    set_backend(win, saved, save=False)


def set_backend(win, name: str, save: bool = True) -> None:
    cache = win.models.predictors
    win.backend_actions[name].setChecked(True)
    if cache.backend != name:
        cache.backend = name
        cache.clear()  # the next detection loads the model for the new backend
    if save:
        win.settings.setValue("model/backend", name)
