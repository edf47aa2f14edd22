"""Running the CLI in a subprocess from tests (``from cli_run import run_cli``; tests/ is on
the path as for ``fixtures_models``)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args, timeout: float = 300):
    """``python -m pollenstudio ARGS`` with one torch thread (tiny models are faster so on a
    shared machine); the CompletedProcess, output as text."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pollenstudio", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
