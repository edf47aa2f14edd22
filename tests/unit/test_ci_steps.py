"""CI runs what the default suite skips (issue 31 item 19): the CPU fast path's tests (Auto
picks OpenVINO / ONNX Runtime whenever they are installed, yet their tests skip without them)
and the hostile CLI list."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# how a test says it needs the cpu-fast extra: importorskip / installed() of one of its modules
_NEEDS_CPU_FAST = re.compile(r"""(importorskip|installed)\(\s*["'](onnx|onnxruntime|onnxscript|openvino|nncf)["']""")


def _steps() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _cpu_fast_tests() -> list[str]:
    out = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        if _NEEDS_CPU_FAST.search(f.read_text(encoding="utf-8")):
            out.append(f.relative_to(ROOT).as_posix())
    return out


def test_ci_runs_the_cpu_fast_tests_with_the_extra_installed():
    steps = _steps()
    needing = _cpu_fast_tests()
    assert "tests/unit/test_backends.py" in needing and "tests/e2e/test_export_model_cli.py" in needing
    readme_suite = steps.index("python -m pytest")
    install = next(i for i, s in enumerate(steps) if "pip install" in s and "cpu-fast" in s)
    assert install > readme_suite  # the README's command runs first, as a user without the extra
    runs = [s for s in steps[install + 1:] if s.startswith("python -m pytest")]
    assert runs, "no pytest step after installing the cpu-fast extra"
    listed = " ".join(runs).split()
    missing = [t for t in needing if t not in listed]
    assert not missing, f".ci/run does not run these cpu-fast tests with the extra installed: {missing}"


def test_ci_runs_the_hostile_cli_list_last():
    steps = _steps()
    assert steps[-1] == "python scripts/hostile_cli.py"
    assert (ROOT / "scripts" / "hostile_cli.py").is_file()
