"""Layering: checked statically by import-linter (the contracts in pyproject.toml, imports
inside functions included) and by a grimp cycle search, and backed at run time: the
non-GUI layers never import Qt (the same engine must run headless on a server)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS = ["pollenstudio.core", "pollenstudio.detector", "pollenstudio.project", "pollenstudio.engine"]


def _run(code: str, cwd=None) -> subprocess.CompletedProcess:
    # the package of this checkout first, as in the other tests (an editable install may point elsewhere)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_import_contracts_are_kept():
    """`lint-imports` over the whole package: layers, Qt only in gui, gui reaches detector
    and torch only through engine, no torch in project/core, no cycle between siblings."""
    pytest.importorskip("importlinter")
    res = _run(
        """
        import sys
        from importlinter.cli import lint_imports
        sys.exit(lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True))
        """,
        cwd=ROOT,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "0 broken" in out and "BROKEN" not in out, out


def test_no_import_cycle_between_modules():
    """No group of modules that import each other round (statically, with grimp)."""
    pytest.importorskip("grimp")
    res = _run("import runpy, sys; sys.argv = ['import_cycles']; runpy.run_path('scripts/import_cycles.py', "
               "run_name='__main__')", cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 import cycle(s)" in res.stdout, res.stdout


def test_the_contracts_catch_a_violation(tmp_path):
    """The check is not vacuous: a copy of the package with gui importing commands fails."""
    pytest.importorskip("importlinter")
    import shutil

    shutil.copytree(ROOT / "pollenstudio", tmp_path / "pollenstudio", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "pollenstudio" / "gui" / "welcome.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _bad():\n    from pollenstudio.commands import demo  # noqa: F401\n")
    res = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert res.returncode != 0
    assert "pollenstudio.gui.welcome -> pollenstudio.commands.demo" in res.stdout, res.stdout


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
