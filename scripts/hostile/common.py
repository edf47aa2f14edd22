"""Shared by the hostile case modules (scripts/hostile/cases_*.py; hostile_cli.py puts this
folder on sys.path before loading them)."""

from __future__ import annotations


def expect(rc_ok: bool, *words: str, absent: tuple[str, ...] = ("Traceback",)):
    """A case's ``expect(rc, output)``: ``rc_ok`` the command must succeed (rc 0), else refuse
    (rc != 0); every one of ``words`` must appear in its output and none of ``absent``."""

    def check(rc, out: str) -> str | None:
        if rc_ok and rc != 0:
            return f"expected success, got rc {rc}"
        if not rc_ok and rc == 0:
            return "expected a refusal, got rc 0"
        missing = [x for x in words if x not in out]
        if missing:
            return f"output lacks {missing}"
        shown = [x for x in absent if x in out]
        return f"output names {shown}" if shown else None

    return check
