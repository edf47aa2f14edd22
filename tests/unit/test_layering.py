"""The non-GUI layers never import Qt: the same engine must run headless on a server."""

import subprocess
import sys
import textwrap

LAYERS = ["pollenstudio.core", "pollenstudio.detector", "pollenstudio.project", "pollenstudio.engine"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_non_gui_layers_do_not_import_qt():
    res = _run(
        f"""
        import importlib, pkgutil, sys
        for layer in {LAYERS!r}:
            pkg = importlib.import_module(layer)
            for info in pkgutil.walk_packages(pkg.__path__, layer + "."):
                importlib.import_module(info.name)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6"))
        print("QT", bad)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "QT []" in res.stdout, res.stdout


def test_non_gui_layers_work_with_qt_blocked():
    """Simulate a server without Qt: any attempt to import it fails loudly."""
    res = _run(
        f"""
        import importlib, pkgutil, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6"):
                    raise ImportError("Qt is blocked in this test: " + name)
                return None
        sys.meta_path.insert(0, Block())
        for layer in {LAYERS!r}:
            pkg = importlib.import_module(layer)
            for info in pkgutil.walk_packages(pkg.__path__, layer + "."):
                importlib.import_module(info.name)
        print("OK")
        """
    )
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


def test_core_imports_nothing_else_from_the_package():
    res = _run(
        """
        import sys, importlib, pkgutil
        import pollenstudio.core as core
        for info in pkgutil.walk_packages(core.__path__, "pollenstudio.core."):
            importlib.import_module(info.name)
        others = sorted(m for m in sys.modules if m.startswith("pollenstudio.") and not m.startswith("pollenstudio.core"))
        print("OTHERS", others)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "OTHERS []" in res.stdout, res.stdout


def test_project_layer_does_not_import_torch():
    res = _run(
        """
        import sys, importlib, pkgutil
        import pollenstudio.project as project
        for info in pkgutil.walk_packages(project.__path__, "pollenstudio.project."):
            importlib.import_module(info.name)
        print("TORCH", "torch" in sys.modules)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "TORCH False" in res.stdout, res.stdout
