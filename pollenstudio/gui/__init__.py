"""gui layer (see ARCHITECTURE.md)."""

import sys


def _keep_none_alive() -> None:
    """Work around a PySide6 6.12.0 refcount bug on Python < 3.12.

    Every call of a void-returning Qt method (``setValue``, ``processEvents``, ...) drops
    one reference to ``None`` (measured: -1000 for 1000 ``QScrollBar.setValue`` calls), and
    some bool-returning paths drop references to ``True`` (-2,100 in 300 pans of the
    canvas). ``None`` starts with ~5,000 references, so after a minute of scrolling CPython
    aborts with "none_dealloc: deallocating None". From Python 3.12 these singletons are
    immortal and the bug is harmless. They are never freed legitimately, so giving them a
    huge reference count is safe. pyproject.toml excludes 6.12.0 on Python < 3.12; this
    guard is for environments that did not install through it (conda, system packages),
    and touches the interpreter only where the faulty release is actually present.
    """
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return
    from importlib import metadata

    versions = set()
    for dist in ("PySide6-Essentials", "PySide6"):  # metadata, so Qt-free modules stay Qt-free
        try:
            versions.add(metadata.version(dist))
        except metadata.PackageNotFoundError:
            pass
    if "6.12.0" not in versions:
        return
    import ctypes

    for singleton in (None, True, False):
        refcnt = ctypes.c_ssize_t.from_address(id(singleton))  # ob_refcnt is the first field
        if refcnt.value < (1 << 40):
            refcnt.value += 1 << 40


_keep_none_alive()
