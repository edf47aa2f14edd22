"""Measuring helpers shared by the bench scripts (peak memory, the real slide's path, the report).

Imported as ``from _measure import ...``: ``python bench/x.py`` puts bench/ on sys.path.
"""

from __future__ import annotations

import resource
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the real whole-slide scan (never copied into the repo; see ../shared/data/README.md)
DEFAULT_SLIDE = ROOT.parent / "shared" / "data" / "slides" / "palynoslides_C.tif"


def peak_mb() -> float:
    """Peak resident size of this process so far, in MB (``ru_maxrss``; never goes down)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_status() -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak since the last ``reset_peak``) in MB from /proc/self/status."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) // 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def report(lines: list[str], out: Path | str | None) -> None:
    """Print the figures and, with ``out``, append them to that file (a blank line between runs)."""
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as f:
            f.write(text + "\n\n")
