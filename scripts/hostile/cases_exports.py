"""Hostile CLI cases of issue 31 for exports (items 1, 3, 4, 5 and the export half of 14),
loaded by scripts/hostile_cli.py: ``build(w) -> (cases, check)``.

- I31-1: a YOLO export copies the images; the after-check rewrites every exported image in
  place and compares every original's sha256 (the issue's check).
- I31-3: a crafted project names /etc/passwd, a secret text file and another picture of the
  same size: none of them lands in a YOLO export; a stack with a replaced plane writes no
  plane images in a COCO --planes-as-images export; COCO has no image-copying option.
- I31-4: --planes-as-images never writes through a planted symlink, never replaces a file of
  the user's, replaces its own files on a second run, and on a full disk (a file-size limit
  in the after-check) leaves no truncated PNG.
- I31-5: taxon and sample names that start a formula are written as text in `export csv`,
  `export grains` and `report --out x.csv`.
- I31-14: one unreadable stack is skipped, named, and the YOLO folder stays consistent.
"""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

H, W = 64, 96
FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd"]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _img(path: Path, value: int, channels: int = 1, dtype="uint8", noise: int = 0, seed: int = 0) -> Path:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = (H, W) if not noise else (noise, noise)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if noise:
        img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    else:
        img = np.full(shape, value, np.dtype(dtype))
        cv2.circle(img, (w // 2, h // 2), min(w, h) // 4, (255 - value) if dtype == "uint8" else 1000, -1)
    assert cv2.imwrite(str(path), img)
    return path


def _reviewed(p, name: str = "Olea") -> None:
    from pollenstudio.core.types import Box

    cid = p.add_category(name)
    for r in p.images():
        p.add_annotation(r.id, Box(10, 10, 40, 40), cid, **({"plane": 1} if r.is_stack else {}))
        p.set_image_status(r.id, "reviewed")


def _stack(folder: Path, name: str, n: int = 3, noise: int = 0) -> list[Path]:
    return [_img(folder / f"{name}_z{k}.png", 30 + 40 * k, channels=3, noise=noise, seed=k) for k in range(n)]


def _has_word(*words):
    def expect(rc, out):
        missing = [w for w in words if w not in out]
        return f"output lacks {missing}" if missing else None
    return expect


def _rc(want: int, *words):
    def expect(rc, out):
        if rc != want:
            return f"exit status {rc}, expected {want}"
        return _has_word(*words)(rc, out)
    return expect


def build(w: Path):
    from pollenstudio.core.stack import stack_hash
    from pollenstudio.project import Project

    cases: list[tuple] = []
    problems: list[str] = []

    # ---------------------------------------------------------------- I31-1 copies, never links
    src = w / "originals"
    originals = [_img(src / "a.png", 40), _img(src / "b.tif", 90), _img(src / "c.jpg", 140), _img(src / "d.bmp", 200)]
    plain = w / "plain"
    with Project.create(plain) as p:
        p.add_images(originals)
        _reviewed(p)
    digests = {o: _sha(o) for o in originals}
    cases.append(("I31-1 YOLO export copies the images", ["export", str(plain), "--format", "yolo", "--out",
                                                          str(w / "y_plain"), "--json"], 120, _rc(0)))
    cases.append(("I31-1 YOLO export --no-images writes labels only", ["export", str(plain), "--format", "yolo",
                                                                        "--out", str(w / "y_labels"), "--no-images"],
                  120, _rc(0)))

    # ---------------------------------------------------------------- I31-3 only the registered picture
    crafted = w / "crafted"
    for name, v in (("a", 40), ("b", 90), ("c", 140), ("d", 200)):
        _img(w / "reg" / f"{name}.png", v)
    secret = w / "secret.txt"
    secret.write_text("api_key = do-not-leak\n")
    private = _img(w / "private" / "holiday.png", 220)  # a picture of the registered size
    with Project.create(crafted) as p:
        p.add_images(sorted((w / "reg").glob("*.png")))
        _reviewed(p)
        a, b, c, d = p.images()
        with p._tx() as conn:
            if Path("/etc/passwd").is_file():
                conn.execute("UPDATE images SET path = '/etc/passwd' WHERE id = ?", (a.id,))
            conn.execute("UPDATE images SET path = ? WHERE id = ?", (str(secret), b.id))
            conn.execute("UPDATE images SET path = ?, size_bytes = ? WHERE id = ?",
                         (str(private), private.stat().st_size, c.id))
    os.utime(private, (1_000_000, 1_000_000))  # dated before it was "registered"
    leaks = {_sha(secret), _sha(private)} | ({_sha(Path("/etc/passwd"))} if Path("/etc/passwd").is_file() else set())
    cases.append(("I31-3 YOLO export of a project naming /etc/passwd and secrets",
                  ["export", str(crafted), "--format", "yolo", "--out", str(w / "y_crafted")], 120,
                  _rc(0, "not exported", "secret.txt", "holiday.png", "skipped: 3")))
    cases.append(("I31-3 COCO export of the crafted project", ["export", str(crafted), "--format", "coco", "--out",
                                                              str(w / "crafted.json")], 120, _rc(0)))
    cases.append(("I31-3 COCO export has no --copy-images", ["export", str(crafted), "--format", "coco",
                                                             "--copy-images", "--out", str(w / "c2.json")], 60, _rc(2)))

    swapped = w / "swapped"
    files = _stack(w / "swapped_field", "f")
    with Project.create(swapped) as p:
        p.add_images([files])
        _reviewed(p)
    _img(files[1], 250, channels=3)  # another picture under the name of plane 2
    cases.append(("I31-3 COCO --planes-as-images of a stack with a replaced plane",
                  ["export", str(swapped), "--format", "coco", "--planes-as-images", "--out", str(w / "sw" / "c.json")],
                  120, _rc(0, "not exported", "not the picture")))
    cases.append(("I31-3 YOLO export of a stack with a replaced plane",
                  ["export", str(swapped), "--format", "yolo", "--out", str(w / "y_swapped")], 120,
                  _rc(0, "not exported", "skipped: 1")))

    # ---------------------------------------------------------------- I31-4 plane images, safely
    stacked = w / "stacked"
    with Project.create(stacked) as p:
        p.add_images([_stack(w / "field", "f")])
        _reviewed(p)
        (rec,) = p.images()
    plane_name = f"f_z0_{rec.id}_z01.png"
    victim = w / "victim.txt"
    victim.write_text("precious")
    (w / "pl_link" / "c_planes").mkdir(parents=True)
    os.symlink(victim, w / "pl_link" / "c_planes" / plane_name)
    (w / "pl_mine" / "c_planes").mkdir(parents=True)
    (w / "pl_mine" / "c_planes" / plane_name).write_bytes(b"the user's own file")
    planes = ["export", str(stacked), "--format", "coco", "--planes-as-images", "--out"]
    cases.append(("I31-4 planes-as-images through a planted symlink", [*planes, str(w / "pl_link" / "c.json")],
                  120, _rc(1, "not replaced")))
    cases.append(("I31-4 planes-as-images over a same-named file of the user's",
                  [*planes, str(w / "pl_mine" / "c.json")], 120, _rc(1, "already exist")))
    for k in (1, 2):
        cases.append((f"I31-4 planes-as-images run {k} (its own files replaced)",
                       [*planes, str(w / "pl_twice" / "c.json"), "--json"], 120, _rc(0, '"plane_images": 1')))

    # ---------------------------------------------------------------- I31-5 formula injection
    named = w / "named"
    _img(w / "named_src" / "a.png", 60)
    with Project.create(named) as p:
        p.add_images([w / "named_src" / "a.png"])
        from pollenstudio.core.types import Box

        (r,) = p.images()
        p.set_image_group(r.id, "=1+2")
        for k, name in enumerate(FORMULAS):
            p.add_annotation(r.id, Box(2 + 8 * k, 2, 8 + 8 * k, 8), p.add_category(name))
        p.set_image_status(r.id, "reviewed")
    csvs = {"csv": w / "f_counts.csv", "grains": w / "f_grains.csv", "report": w / "f_report.csv"}
    cases.append(("I31-5 export csv of formula-like taxa", ["export", str(named), "--format", "csv", "--out",
                                                           str(csvs["csv"])], 60, _rc(0)))
    cases.append(("I31-5 export grains of formula-like taxa and sample", ["export", str(named), "--format", "grains",
                                                                         "--out", str(csvs["grains"])], 60, _rc(0)))
    cases.append(("I31-5 report csv of formula-like taxa and sample", ["report", str(named), "--out",
                                                                      str(csvs["report"])], 120, _rc(0)))

    # ---------------------------------------------------------------- I31-14 one unreadable stack
    broken = w / "broken"
    bfiles = _stack(w / "broken_field", "g")
    good = _img(w / "broken_src" / "good.png", 70)
    with Project.create(broken) as p:
        p.add_images([bfiles, good])
        _reviewed(p)
        _img(bfiles[1], 3000, channels=1, dtype="uint16")  # mixed bit depth, registered as it is now
        st = [x for x in p.images() if x.is_stack][0]
        with p._tx() as conn:
            conn.execute("UPDATE images SET sha256 = ? WHERE id = ?", (stack_hash(bfiles), st.id))
    cases.append(("I31-14 YOLO export with one unreadable stack", ["export", str(broken), "--format", "yolo", "--out",
                                                                   str(w / "y_broken")], 120,
                  _rc(0, "not exported", "g_z0.png", "skipped: 1")))

    # ---------------------------------------------------------------- after-checks
    def check() -> list[str]:
        out = []
        # I31-1: copies, and the check: rewrite every exported image, originals unchanged
        exported = sorted((w / "y_plain" / "images").glob("*"))
        if len(exported) != len(originals):
            out.append(f"I31-1: {len(exported)} images exported, expected {len(originals)}")
        for f in exported:
            if f.stat().st_nlink != 1 or f.is_symlink() or any(os.path.samefile(f, o) for o in originals):
                out.append(f"I31-1: {f.name} is a link to an original")
        for f in exported:
            with open(f, "r+b") as fh:  # what a trainer's in-place resize / re-encode does
                fh.truncate(0)
                fh.write(b"rewritten by another tool")
        changed = [o.name for o, d in digests.items() if _sha(o) != d]
        if changed:
            out.append(f"I31-1: rewriting the exported images changed the originals {changed}")
        if (w / "y_labels" / "images").exists() and any((w / "y_labels" / "images").iterdir()):
            out.append("I31-1: --no-images wrote images")
        # I31-3
        got = [f for f in (w / "y_crafted").rglob("*") if f.is_file()]
        if leaks & {_sha(f) for f in got}:
            out.append("I31-3: a file the project merely named landed in the YOLO export")
        imgs = sorted(f.name for f in (w / "y_crafted" / "images").glob("*"))
        labels = sorted(f.name for f in (w / "y_crafted" / "labels").glob("*"))
        if imgs != ["d.png"] or labels != ["d.txt"]:
            out.append(f"I31-3: YOLO export of the crafted project holds images {imgs}, labels {labels}")
        if (w / "sw" / "c_planes").is_dir() and list((w / "sw" / "c_planes").glob("*.png")):
            out.append("I31-3: plane images written from a stack whose plane was replaced")
        if list((w / "y_swapped" / "images").glob("*")):
            out.append("I31-3: YOLO wrote an image of a stack whose plane was replaced")
        # I31-4
        if victim.read_bytes() != b"precious":
            out.append("I31-4: --planes-as-images wrote through a planted symlink")
        if (w / "pl_mine" / "c_planes" / plane_name).read_bytes() != b"the user's own file":
            out.append("I31-4: --planes-as-images replaced a file of the user's")
        twice = sorted(f.name for f in (w / "pl_twice" / "c_planes").glob("*.png"))
        if twice != [plane_name]:
            out.append(f"I31-4: after two runs the planes folder holds {twice}")
        out += _full_disk_check(w, stacked)
        # I31-5
        for what, path in csvs.items():
            if not path.is_file():
                out.append(f"I31-5: {what}: no CSV written")
                continue
            with open(path, newline="", encoding="utf-8") as f:
                cells = [c for row in csv.reader(f) for c in row]
            bad = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(c)]
            if bad:
                out.append(f"I31-5: {what}: cells a spreadsheet would run as formulas: {bad[:3]}")
            if not any(c == "'" + FORMULAS[0] for c in cells):
                out.append(f"I31-5: {what}: the taxon is not written as quoted text")
        # I31-14: a consistent folder, every label with its image
        y = w / "y_broken"
        imgs = sorted(f.stem for f in (y / "images").glob("*"))
        labels = sorted(f.stem for f in (y / "labels").glob("*.txt"))
        if imgs != ["good"] or labels != ["good"] or not (y / "classes.txt").is_file():
            out.append(f"I31-14: YOLO folder after an unreadable stack: images {imgs}, labels {labels}")
        return out + problems

    return cases, check


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _full_disk_check(w: Path, project: Path) -> list[str]:
    """I31-4 on a full disk: the export runs with a file-size limit that a plane PNG exceeds
    (EFBIG, as ENOSPC would come), so the write fails part-way: no truncated PNG, no temp
    file, no traceback, a message in words."""
    import resource

    from pollenstudio.project import Project

    big = w / "bigstack"
    with Project.create(big) as p:
        p.add_images([_stack(w / "bigfield", "f", noise=900)])  # ~2.4 MB of noise per PNG plane
        _reviewed(p)
    limit = 1 << 20

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), no signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, POLLENSTUDIO_DEBUG="1")
    res = subprocess.run([sys.executable, "-m", "pollenstudio", "export", str(big), "--format", "coco",
                          "--planes-as-images", "--out", str(w / "full" / "c.json")], capture_output=True, text=True,
                         timeout=120, env=env, preexec_fn=limited, stdin=subprocess.DEVNULL)
    text = res.stdout + res.stderr
    out = []
    if "Traceback" in text:
        out.append(f"I31-4 full disk: traceback: {text[-300:]}")
    if res.returncode != 1 or "cannot write" not in text:
        out.append(f"I31-4 full disk: rc {res.returncode}, expected 1 and a message in words: {text.strip()[-200:]}")
    folder = w / "full" / "c_planes"
    left = [f.name for f in folder.iterdir() if f.name != ".pollenstudio-export.json"] if folder.is_dir() else []
    if left:
        out.append(f"I31-4 full disk: left {left} (a truncated PNG or temp file)")
    if (w / "full" / "c.json").exists():
        out.append("I31-4 full disk: the COCO file was written although its plane images were not")
    return out
