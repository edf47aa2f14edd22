"""Hostile CLI cases of issue 31 for detection, counting and training (items 10, 11, 12, 15,
16), loaded by scripts/hostile_cli.py: ``build(w) -> (cases, check)``.

- I31-10: a model whose class name holds a line break (or an ANSI escape, or spaces at
  either end) is refused before the project is touched; the after-check reads the project
  database: no model version, taxon, proposal or run added (and a folder target leaves no
  half-made project).
- I31-11: `detect` without an active model, three times, and twice with the same model file:
  one model version per model file; the after-check counts the version rows.
- I31-12: finite but absurd count settings (air volume 1e-320 m3, 1e308 spores per tablet
  ...) and `--set nosample:...` are refused in words, naming the samples; nothing is stored,
  no report is written; sensible settings give a report with finite concentrations.
- I31-15: `detect` exits 3 when some images failed (the summary says how many), 1 when all
  did, 0 when none did.
- I31-16: `train --stage classifier` (and both) with only "unidentified" / "pollen" grains
  is refused before training ("name some grains first"); nothing registered or written.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

H, W = 64, 96


def _img(path: Path, value: int) -> Path:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((H, W), value, np.uint8)
    cv2.circle(img, (W // 2, H // 2), H // 4, 255 - value, -1)
    assert cv2.imwrite(str(path), img)
    return path


def _model(path: Path, class_names, seed: int = 0) -> Path:
    import torch

    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    torch.manual_seed(seed)
    cfg = ModelConfig.tiny("full", nc=len(class_names), class_names=list(class_names), imgsz=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, build_model(cfg), cfg, {"grain_size_px": [20.0, 60.0]})


def _rows(project: Path) -> dict:
    """What a detection or training may write, read straight from the project file."""
    conn = sqlite3.connect(f"file:{project / 'project.pollen'}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("annotations", "categories", "model_versions", "runs", "samples")}
    finally:
        conn.close()


def _expect(rc_want, *words, absent=()):
    def expect(rc, out):
        if rc != rc_want:
            return f"exit status {rc}, expected {rc_want}"
        missing = [w for w in words if w not in out]
        if missing:
            return f"output lacks {missing}"
        there = [w for w in absent if w in out]
        return f"output has {there}" if there else None
    return expect


def build(w: Path):
    from pollenstudio.core.types import Box
    from pollenstudio.project import Project

    cases: list[tuple] = []
    cpu = ["--device", "cpu", "--backend", "torch"]

    # ---------------------------------------------------------------- I31-10 all or nothing
    p10 = w / "p10"
    with Project.create(p10) as p:
        p.add_images([_img(w / "img10" / f"{n}.png", v) for n, v in (("a", 40), ("b", 90), ("c", 140))])
        p.add_annotation(1, Box(5, 5, 25, 25), p.add_category("Olea"))  # a person's grain
    before10 = _rows(p10)
    bad = {"newline": ["Olea", "Bad\nname"], "ansi": ["Olea", "Ole\x1b[31ma"], "spaces": ["Olea", " Betula "]}
    for key, names in bad.items():
        m = _model(w / "models" / f"class_{key}.safetensors", names)
        cases.append((f"I31-10 detect with a model whose class name has {key}",
                      ["detect", str(p10), "--model", str(m), "--conf", "0.0", *cpu], 180,
                      _expect(1, "class 2", "nothing was changed", absent=("Traceback",))))
    folder10 = w / "folder10"
    _img(folder10 / "x.png", 60)
    cases.append(("I31-10 detect FOLDER with a model whose class name has a newline",
                  ["detect", str(folder10), "--model", str(w / "models" / "class_newline.safetensors"), *cpu], 180,
                  _expect(1, "class 2")))

    # ---------------------------------------------------------------- I31-11 one version per file
    p11 = w / "p11"
    with Project.create(p11) as p:
        p.add_images([_img(w / "img11" / f"{n}.png", v) for n, v in (("a", 50), ("b", 120))])
    for k in (1, 2, 3):
        cases.append((f"I31-11 detect without an active model, run {k}", ["detect", str(p11), "--quiet", *cpu], 300,
                      _expect(0)))
    tiny11 = _model(w / "models" / "tiny11.safetensors", ["Olea"])
    for k in (1, 2):
        cases.append((f"I31-11 detect --model the same file, run {k}",
                      ["detect", str(p11), "--model", str(tiny11), "--quiet", *cpu], 180, _expect(0)))

    # ---------------------------------------------------------------- I31-12 count settings
    p12 = w / "p12"
    for sample, v in (("slide-1", 40), ("slide-2", 90)):
        _img(w / "img12" / sample / "f.png", v)
    with Project.create(p12) as p:
        p.add_folder(w / "img12")  # one sample per subfolder
        ids = p.ensure_categories(["Betula", "Lycopodium"])
        p.set_taxon_role(ids["Lycopodium"], "marker")
        for r in p.images():
            for k in range(4):
                p.add_annotation(r.id, Box(2 + 20 * k, 2, 18 + 20 * k, 18), ids["Betula"])
            p.add_annotation(r.id, Box(2, 40, 18, 56), ids["Lycopodium"])
    with Project.open(p12) as p:
        samples12 = sorted({r.group for r in p.images()} - {None})
    assert samples12 == ["slide-1", "slide-2"], samples12
    absurd = ["air_volume_m3=1e-320", "air_volume_m3=1e300", "marker_per_tablet=1e308", "marker_tablets=1e-300",
              "quantity=1e-320", "marker_per_tablet_sd=1e308"]
    for setting in absurd:
        cases.append((f"I31-12 report --set slide-1:{setting}", ["report", str(p12), "--set", f"slide-1:{setting}"],
                      60, _expect(1, setting.split("=")[0], "must be from", absent=("inf", "nan"))))
    cases.append(("I31-12 report --set air volume 1e-320 with --out", ["report", str(p12), "--set",
                                                                       "air_volume_m3=1e-320", "--out",
                                                                       str(w / "r12_absurd.html")],
                  60, _expect(1, "air volume")))
    cases.append(("I31-12 report --set nosample:target_sum=5", ["report", str(p12), "--set", "nosample:target_sum=5"],
                  60, _expect(1, "'nosample'", *samples12)))
    cases.append(("I31-12 report --set good and unknown sample together",
                  ["report", str(p12), "--set", "slide-1:target_sum=400", "--set", "slide-9:target_sum=5"],
                  60, _expect(1, "'slide-9'")))
    ok_csv = w / "r12_ok.csv"
    cases.append(("I31-12 report with sensible marker settings (control)",
                  ["report", str(p12), "--set", "slide-1:marker_tablets=1", "--set", "slide-1:marker_per_tablet=18583",
                   "--set", "slide-1:quantity=1.0", "--out", str(ok_csv)], 60, _expect(0)))

    # ---------------------------------------------------------------- I31-15 partial failure
    tiny = _model(w / "models" / "tiny15.safetensors", ["Olea"])
    some, none_ = w / "folder15_some", w / "folder15_none"
    for i in range(2):
        _img(some / f"field_{i}.png", 40 + 50 * i)
    for folder, values in ((some, (200,)), (none_, (180, 210))):
        for k, v in enumerate(values):
            data = _img(w / "src15" / f"{folder.name}_{k}.png", v).read_bytes()
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"zz_cut_{k}.png").write_bytes(data[: len(data) // 3])  # header fine, pixels cut
    cases.append(("I31-15 detect with some images unreadable", ["detect", str(some), "--model", str(tiny), *cpu], 180,
                  _expect(3, "2/3 images", "1 of 3 image(s) failed", "zz_cut_0.png")))
    cases.append(("I31-15 detect with every image unreadable", ["detect", str(none_), "--model", str(tiny), *cpu], 180,
                  _expect(1, "2 of 2 image(s) failed")))
    p15 = w / "p15"
    with Project.create(p15) as p:
        p.add_images([_img(w / "img15" / f"{n}.png", v) for n, v in (("a", 50), ("b", 120))])
    (w / "img15" / "b.png").unlink()  # moved away since
    cases.append(("I31-15 detect with one image file missing", ["detect", str(p15), "--model", str(tiny), "--json",
                                                               *cpu], 180, _expect(3, '"done": 1')))
    ok15 = w / "folder15_ok"
    _img(ok15 / "field.png", 70)
    cases.append(("I31-15 detect, every image fine (control)", ["detect", str(ok15), "--model", str(tiny), "--quiet",
                                                                *cpu], 180, _expect(0)))

    # ---------------------------------------------------------------- I31-16 classifier needs names
    grain = _model(w / "models" / "grain16.safetensors", ["pollen"])
    p16 = {}
    for name in ("pollen", "unidentified"):
        folder = w / f"p16_{name}"
        with Project.create(folder) as p:
            p.add_images([_img(w / f"img16_{name}" / f"{k}.png", 40 + 30 * k) for k in range(4)])
            cid = p.add_category(name)
            for r in p.images():
                p.add_annotation(r.id, Box(30, 14, 66, 50), cid)
                p.set_image_status(r.id, "reviewed")
        p16[name] = folder
        for stage in ("classifier", "both"):
            cases.append((f"I31-16 train --stage {stage} with only {name} grains",
                          ["train", str(folder), "--stage", stage, "--base", str(grain), "--device", "cpu",
                           "--epochs", "1"], 300, _expect(1, "name some grains first", absent=("Traceback",))))
    before16 = {k: _rows(v) for k, v in p16.items()}

    def check() -> list[str]:
        problems = []
        after = _rows(p10)
        for table in ("categories", "model_versions", "annotations", "samples"):
            if after[table] != before10[table]:
                problems.append(f"I31-10: the refused detections changed {table} of the project")
        if after["runs"] != before10["runs"]:
            problems.append(f"I31-10: refused detections left runs: {after['runs'][len(before10['runs']):]}")
        if (folder10 / "project.pollen").exists():
            problems.append("I31-10: a refused detect FOLDER left a project behind")
        rows11 = _rows(p11)
        files = {str(Path(json.loads(r[2]).get("model", "")).resolve()) for r in rows11["runs"] if r[1] == "detect"}
        if len(rows11["model_versions"]) != len(files):  # one version per model file detect ran with
            problems.append(f"I31-11: {len(rows11['model_versions'])} model versions after {len(rows11['runs'])} "
                            f"detections with {len(files)} model file(s): {[r[1] for r in rows11['model_versions']]}")
        s12 = _rows(p12)["samples"]
        stored = {name: json.loads(settings) for name, settings in s12}
        if set(stored) - {"slide-1"} or any(k not in ("marker_tablets", "marker_per_tablet", "quantity")
                                            for k in stored.get("slide-1", {})):
            problems.append(f"I31-12: refused settings were stored: {stored}")
        if (w / "r12_absurd.html").exists():
            problems.append("I31-12: a report was written with refused settings")
        if ok_csv.exists():
            text = ok_csv.read_text(encoding="utf-8-sig").lower()
            if re.search(r"\b(inf|nan)\b", text):
                problems.append("I31-12: the sensible report holds inf or nan")
        for name, folder in p16.items():
            now = _rows(folder)
            if now["model_versions"] != before16[name]["model_versions"] or now["runs"] != before16[name]["runs"]:
                problems.append(f"I31-16: a refused classifier training of {name} grains registered or ran something")
            if any((folder / "models").rglob("*.safetensors")) if (folder / "models").exists() else False:
                problems.append(f"I31-16: a refused training of {name} grains wrote model files")
        return problems

    return cases, check
