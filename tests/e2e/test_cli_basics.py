import os
import subprocess
import sys

import pytest

from pollenstudio import __version__


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pollenstudio", *args], capture_output=True, text=True, timeout=120, env=env)


def test_version_and_help_without_display():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    res = _cli("--version", env=env)
    assert res.returncode == 0, res.stderr
    assert __version__ in res.stdout
    res = _cli("--help", env=env)
    assert res.returncode == 0, res.stderr
    assert "usage: pollenstudio" in res.stdout


def test_help_does_not_import_torch_or_qt():
    code = "import sys; from pollenstudio.cli import build_parser; build_parser(); print(sorted(m for m in ('torch','PySide6') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("buffering", ["block", "unbuffered"])
def test_a_closed_pipe_ends_quietly(tmp_path, buffering):
    """`pollenstudio synth ... --json | true` must not print a traceback.

    The reader closes its end before the command writes anything, so the write (or, with
    block-buffered stdout, the flush) always meets a closed pipe: without the handler in
    ``cli.main`` this prints a traceback (unbuffered) or Python's "Exception ignored ...
    BrokenPipeError" at exit (block-buffered, the usual case for a pipe)."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if buffering == "unbuffered":
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pollenstudio", "synth", "--out", str(tmp_path / "s"), "--n", "2",
         "--size", "96x96", "--json", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    proc.stdout.close()  # the reader goes away before the JSON is written out
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert proc.returncode == 141, (proc.returncode, err)  # 128 + SIGPIPE, as Unix tools end
    assert (tmp_path / "s" / "annotations.json").is_file()  # the work itself was done
