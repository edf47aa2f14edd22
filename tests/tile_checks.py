"""Checks on planned tiles shared by the blank-tile tests (``from tile_checks import ...``;
tests/ is on the path as for ``fixtures_models``)."""

from __future__ import annotations


def grain_pixels_in_skipped_tiles(objs, tiles, blank) -> int:
    """Grain mask pixels lying in skipped tiles (a blank-tile rule must keep this at 0).
    ``objs``: the generator's objects with their masks (``return_masks=True``); ``tiles``:
    ``plan_tiles``; ``blank``: one flag per tile, True where the tile is skipped."""
    lost = 0
    for o in objs:
        x1, y1 = int(o["bbox"][0]), int(o["bbox"][1])
        m = o["mask"]
        for t, b in zip(tiles, blank):
            if not b:
                continue
            mx0, my0 = max(t.x0 - x1, 0), max(t.y0 - y1, 0)
            mx1, my1 = min(t.x1 - x1, m.shape[1]), min(t.y1 - y1, m.shape[0])
            if mx1 > mx0 and my1 > my0:
                lost += int(m[my0:my1, mx0:mx1].sum())
    return lost
