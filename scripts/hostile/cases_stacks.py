"""Hostile CLI cases of issue 31 for focal stacks coming in (items 2, 6, 7, 13 and the import
half of 14), loaded by scripts/hostile_cli.py: ``build(w) -> (cases, check)``.

- I31-2: two fields kept as plane files named alike (0z.png, 1z.png ...) are moved and their
  folders renamed; relink restores each to its own pixels and keeps its content hash; a field
  whose planes changed is refused in words; importing the moved folder again finds the lost
  stacks instead of calling them duplicates or adding them twice.
- I31-6: COCO plane_files of different sizes, a plane listed twice, a 10,000-entry list, and
  the folder import of the same mixed sizes: refused in words, nothing created.
- I31-7: `--stack-pattern ''` and a pattern that groups nothing: refused, nothing imported.
- I31-13: `eval` on `synth --planes` output and on a COCO export of plane-file stacks works.
- I31-14: plane files of mixed bit depth or channels are refused at import (folder and COCO);
  a float32 TIFF stack (3 planes: one page of 3 samples) imports with its 3 planes.
"""

from __future__ import annotations

from common import expect

import json
import os
from pathlib import Path

H, W = 48, 64


def _field(folder: Path, base: int, n: int = 3, name: str = "{k}z.png", dtype="uint8", channels: int = 1) -> list[Path]:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        img = np.full((H, W) if channels == 1 else (H, W, channels), base + k, np.dtype(dtype))
        img[5:15, 5 + 7 * k:12 + 7 * k] = 200 - base
        assert cv2.imwrite(str(folder / name.format(k=k)), img)
        out.append(folder / name.format(k=k))
    return out


def _expect(rc_ok: bool, *words: str, absent: tuple[str, ...] = ("Traceback", "core.stack", "FocalStack")):
    """rc_ok: the command must succeed (rc 0), else refuse (rc != 0); ``words`` must appear;
    no traceback and no internal code named (scripts/hostile/common.py)."""
    return expect(rc_ok, *words, absent=absent)


def _pixels(p, rec) -> list[int]:
    return [int(p.read_plane(rec, k)[0, 0]) for k in range(rec.planes)]


def build(w: Path):
    import numpy as np
    import tifffile

    from pollenstudio.core.types import Box
    from pollenstudio.project import Project
    from pollenstudio.project.coco import export_coco

    cases: list[tuple] = []
    facts: dict = {}

    # ---------------------------------------------------------------- I31-2 relink by content
    def two_fields(name: str, pattern: str = "{z}z.png"):
        src = w / name / "slide"
        _field(src / "fieldA", 10)
        _field(src / "fieldB", 100)
        proj = w / name / "proj"
        with Project.create(proj) as p:
            p.add_folder(src, stack_pattern=pattern)
            truth = {r.id: (_pixels(p, r), r.sha256) for r in p.images()}
        return src, proj, truth

    src, proj, truth = two_fields("swap")
    archive = w / "swap" / "archive"
    archive.mkdir()
    os.rename(src / "fieldA", src / "x2")  # renamed so that B now sorts first
    os.rename(src / "fieldB", src / "x1")
    os.rename(src, archive / "slide")
    facts["swap"] = (proj, truth)
    cases.append(("I31-2 relink of two moved plane-file fields named alike", ["relink", str(proj), str(archive)],
                  120, _expect(True, "found 2: 2 by content", "still missing 0")))

    src, proj, truth = two_fields("changed")
    moved = w / "changed" / "moved"
    os.rename(src, moved)
    _field(moved / "fieldA", 60)  # same names and size, other pixels
    _field(moved / "fieldB", 60)
    facts["changed"] = (proj, {r: t for r, t in truth.items()})
    with Project.open(proj) as p:
        facts["changed_rows"] = [(r.path, r.plane_files, r.sha256) for r in p.images()]
    cases.append(("I31-2 relink refuses a stack whose planes changed", ["relink", str(proj), str(moved)], 120,
                  _expect(True, "still missing 2", "content of all its planes")))

    src, proj, truth = two_fields("reimport")
    moved = w / "reimport" / "moved"
    os.rename(src, moved)
    facts["reimport"] = (proj, truth)
    cases.append(("I31-2 importing a moved stack folder again", ["import", str(proj), str(moved), "--stack-pattern",
                                                                 "{z}z.png", "--json"], 120,
                  _expect(True, '"relinked": 2', '"images_added": 0')))

    # ---------------------------------------------------------------- I31-6 one rule for every import path
    def coco_stack(name: str, planes: list[str]) -> Path:
        doc = {"images": [{"id": 1, "file_name": planes[0], "width": W, "height": H, "planes": len(planes),
                           "plane_files": planes}],
               "categories": [{"id": 1, "name": "Olea"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 30, 20, 15]}]}
        f = w / "coco6" / f"{name}.json"
        f.write_text(json.dumps(doc))
        return f

    import cv2

    _field(w / "coco6" / "sizes", 10, n=2)
    cv2.imwrite(str(w / "coco6" / "sizes" / "2z.png"), np.zeros((H - 8, W - 4), np.uint8))
    _field(w / "coco6" / "ok", 10, n=2)
    _field(w / "coco6" / "depth", 10, n=2)
    cv2.imwrite(str(w / "coco6" / "depth" / "2z.png"), np.full((H, W), 4000, np.uint16))
    _field(w / "coco6" / "chan", 10, n=2)
    cv2.imwrite(str(w / "coco6" / "chan" / "2z.png"), np.full((H, W, 3), 40, np.uint8))
    refused = []

    def refuse(name: str, argv: list[str], *words: str) -> None:
        target = w / "refused" / "".join(ch if ch.isalnum() else "_" for ch in name)
        refused.append(target)
        cases.append((name, ["import", str(target), *argv], 120, _expect(False, *words)))

    refuse("I31-6 COCO plane_files of different sizes",
           [str(coco_stack("sizes", [f"sizes/{k}z.png" for k in range(3)]))], "same size")
    refuse("I31-6 COCO plane list with a plane twice",
           [str(coco_stack("twice", ["ok/0z.png", "ok/0z.png", "ok/1z.png"]))], "listed twice")
    refuse("I31-6 COCO plane list of 10,000 entries",
           [str(coco_stack("huge", [f"ok/{k}z.png" for k in range(10_000)]))], "at most 1000")
    refuse("I31-6 folder import of planes of different sizes",
           [str(w / "coco6" / "sizes"), "--stack-pattern", "{z}z.png"], "same size")

    # ---------------------------------------------------------------- I31-7 patterns that group nothing
    _field(w / "pat" / "f1", 10)
    _field(w / "pat" / "f2", 100)
    refuse("I31-7 --stack-pattern ''", [str(w / "pat"), "--stack-pattern", ""], "{z}")
    refuse("I31-7 stack pattern that matches nothing", [str(w / "pat"), "--stack-pattern", "*_z{z}.png"],
           "groups no plane files", "nothing imported")
    existing = w / "pat_existing"
    with Project.create(existing) as p:
        p.add_folder(w / "pat" / "f1", stack_pattern="{z}z.png")
    cases.append(("I31-7 stack pattern that matches nothing, existing project",
                  ["import", str(existing), str(w / "pat"), "--stack-pattern", "{z}.png"], 120,
                  _expect(False, "groups no plane files")))

    # ---------------------------------------------------------------- I31-13 eval on stacks
    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model
    from pollenstudio.engine.synthetic import SynthConfig
    from pollenstudio.engine.synthetic.stack import generate_stack_dataset

    synth = generate_stack_dataset(w / "synth", 2, 3, seed=3, cfg=SynthConfig(width=160, height=128))
    names = [c["name"] for c in json.loads(synth.read_text())["categories"]]
    model = save_checkpoint(w / "tiny.safetensors",
                            build_model(ModelConfig.tiny("base", nc=len(names), class_names=names, imgsz=128)))
    cases.append(("I31-13 eval on synth --planes output", ["eval", str(synth), "--model", str(model), "--json",
                                                           "--device", "cpu"], 180, _expect(True, "map50")))
    planes_proj = w / "eval_planes"
    with Project.create(planes_proj) as p:
        p.add_images([_field(w / "eval_field", 30)])
        cid = p.add_category(names[0])
        (rec,) = p.images()
        p.add_annotation(rec.id, Box(20, 10, 50, 40), cid, plane=1)
        p.set_image_status(rec.id, "reviewed")
        export_coco(p, w / "eval_planes.json")
    cases.append(("I31-13 eval on a COCO file of plane-file stacks",
                  ["eval", str(w / "eval_planes.json"), "--model", str(model), "--json", "--device", "cpu"], 180,
                  _expect(True, "map50")))

    # ---------------------------------------------------------------- I31-14 mixed planes, float TIFF
    refuse("I31-14 folder import of planes of mixed bit depth",
           [str(w / "coco6" / "depth"), "--stack-pattern", "{z}z.png"], "same bit depth")
    refuse("I31-14 COCO plane_files of mixed channels",
           [str(coco_stack("chan", [f"chan/{k}z.png" for k in range(3)]))], "colour channels")
    ftif = w / "float" / "stack.tif"
    ftif.parent.mkdir()
    tifffile.imwrite(ftif, np.stack([np.full((H, W), 100.0 * (k + 1), np.float32) for k in range(3)]),
                     metadata={"axes": "ZYX"})
    float_proj = w / "float_proj"
    cases.append(("I31-14 float32 TIFF stack of 3 planes", ["import", str(float_proj), str(ftif.parent), "--json"],
                  120, _expect(True, '"stacks": 1', '"planes": 3')))

    def check() -> list[str]:
        problems = []
        for key in ("swap", "reimport"):
            proj, truth = facts[key]
            with Project.open(proj) as p:
                recs = p.images()
                if len(recs) != 2:
                    problems.append(f"I31-2 {key}: {len(recs)} images, expected 2")
                for r in recs:
                    if r.id not in truth:
                        continue
                    try:
                        got = (_pixels(p, r), r.sha256)
                    except Exception as exc:  # noqa: BLE001 - reported as a problem
                        problems.append(f"I31-2 {key}: image {r.id} unreadable after relink ({exc})")
                        continue
                    if got != truth[r.id]:
                        problems.append(f"I31-2 {key}: image {r.id} shows {got[0]} (hash kept: "
                                        f"{got[1] == truth[r.id][1]}), its own pixels are {truth[r.id][0]}")
                    if p.missing_images():
                        problems.append(f"I31-2 {key}: still missing {[m.path for m in p.missing_images()]}")
        proj, _ = facts["changed"]
        with Project.open(proj) as p:
            now = [(r.path, r.plane_files, r.sha256) for r in p.images()]
        if now != facts["changed_rows"]:
            problems.append("I31-2 changed: the refused stacks' records were modified")
        for target in refused:
            if target.exists():
                problems.append(f"I31-6/7/14: a refused import left {target}")
        with Project.open(existing) as p:
            if len(p.images()) != 1:
                problems.append(f"I31-7: the existing project has {len(p.images())} images after a refused import")
        if (float_proj / "project.pollen").exists():
            with Project.open(float_proj) as p:
                (r,) = p.images()
                vals = [int(p.read_plane(r, k)[0, 0]) for k in range(r.planes)]
                if r.planes != 3 or abs(vals[0] * 3 - vals[2]) > 6:
                    problems.append(f"I31-14: the float stack reads as {r.planes} planes {vals} (one scale expected)")
        else:
            problems.append("I31-14: the float TIFF stack was not imported")
        return problems

    return cases, check
