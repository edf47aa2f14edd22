"""Hostile CLI cases of issues 29 and 30, loaded by scripts/hostile_cli.py:
``build(w) -> (cases, check)``.

- I29: a single file where a folder of images goes (`import PROJECT FILE`, `detect FILE`):
  a TIFF with no image in it, a text file, a stack pattern given with one file, and a
  generated slide cut short; generated slides of no size or beyond any slide; every refusal
  in words, and no project left behind where the command would have created one.
- I30: server URLs with a project name PostgreSQL cannot hold, a server that is not there,
  and `detect --workers 0`.
"""

from __future__ import annotations

from common import expect

from pathlib import Path


def build(w: Path):
    import cv2
    import numpy as np

    cases: list[tuple] = []
    loose = w / "loose"
    loose.mkdir()
    empty_tif = loose / "scan.tif"
    empty_tif.write_bytes(b"II*\x00junk")  # a TIFF header and nothing after it
    (loose / "notes.txt").write_text("not an image")
    imgs = w / "imgs"
    imgs.mkdir()
    assert cv2.imwrite(str(imgs / "a.png"), np.full((64, 64, 3), 90, np.uint8))

    cases += [
        ("I29 import a TIFF holding no image", ["import", str(w / "p1"), str(empty_tif)], 60,
         expect(False, "scan.tif", "holding no image", "nothing imported")),
        ("I29 import a text file", ["import", str(w / "p2"), str(loose / "notes.txt")], 60,
         expect(False, "notes.txt", "an image file")),
        ("I29 detect a TIFF holding no image", ["detect", str(empty_tif)], 120,
         expect(False, "scan.tif", "holding no image")),
        ("I29 a stack pattern with one file", ["import", str(w / "p3"), str(imgs / "a.png"), "--stack-pattern",
                                               "*_z{z}.png"], 60, expect(False, "one file")),
        ("I29 a generated slide of no size", ["synth", "--out", str(w / "s0"), "--slide", "0x10"], 60,
         expect(False, "16..40000 pixels")),
        ("I29 a generated slide beyond any slide", ["synth", "--out", str(w / "s1"), "--slide", "99999999x9"], 60,
         expect(False, "16..40000 pixels")),
    ]

    # a pyramidal slide whose file was cut short (a copy interrupted): the header reads, its
    # tiles do not. Detection names the file and fails; the project keeps no half image.
    import tifffile

    cut = w / "cut"
    cut.mkdir()
    rng = np.random.default_rng(29)
    full = cv2.GaussianBlur(rng.integers(0, 255, (1500, 1800, 3), dtype=np.uint8), (5, 5), 2)
    whole = cut / "whole.tif"
    with tifffile.TiffWriter(whole, bigtiff=True) as tw:
        tw.write(full, subifds=1, tile=(256, 256), compression="jpeg", photometric="rgb")
        tw.write(full[::2, ::2], subfiletype=1, tile=(256, 256), compression="jpeg", photometric="rgb")
    data = whole.read_bytes()
    (cut / "field").mkdir()
    (cut / "field" / "half.tif").write_bytes(data[: len(data) // 2])
    whole.unlink()
    cases.append(("I29 detect a slide cut short", ["detect", str(cut / "field" / "half.tif")], 300,
                  expect(False, "half.tif")))

    cases += [
        ("I30 a project name PostgreSQL cannot hold", ["server", "pull", "postgresql://127.0.0.1:1/db?project=Bad-Name",
                                                       str(w / "pulled")], 60,
         expect(False, "cannot name a project on the server")),
        ("I30 a server that is not there", ["server", "list", "postgresql://127.0.0.1:1/db"], 60,
         expect(False, "127.0.0.1")),
        ("I30 detect with no worker", ["detect", str(imgs), "--workers", "0"], 60, expect(False, "at least 1")),
    ]

    def check() -> list[str]:
        problems = []
        for name in ("p1", "p2", "p3"):
            if (w / name / "project.pollen").exists():
                problems.append(f"I29: a refused import left a project in {name}")
        if (loose / "project.pollen").exists():
            problems.append("I29: detect of a TIFF holding no image left a project beside it")
        if (w / "pulled").exists() and any((w / "pulled").iterdir()):
            problems.append("I30: a refused pull wrote into its folder")
        if (imgs / "project.pollen").exists():
            problems.append("I30: detect --workers 0 created a project")
        return problems

    return cases, check
