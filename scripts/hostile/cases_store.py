"""Hostile CLI cases of issue 31 for the project store and what training leaves (items 8, 17,
18), loaded by scripts/hostile_cli.py: ``build(w) -> (cases, check)``.

- I31-8: projects of older schemas (2 and 4) opened by a command are upgraded only after a
  copy the older version opens was kept (``.pollen-backups/project.pollen.schemaN``, the
  project exactly as it was); where no copy can be kept (``.pollen-backups`` is a file),
  the project is not upgraded and the command refuses in words.
- I31-17: a training killed (SIGKILL) after its first best.safetensors and before its first
  last.ckpt: ``train --resume`` says there is nothing to resume from and removes the orphan;
  a new training removes it too (and its model file gets the project file's permissions,
  I31-18).
- I31-18: ``train --name`` with a line break, an ANSI escape or a right-to-left override, and
  COCO / YOLO taxon names with U+202E or an escape: refused in words, nothing created.

A full disk (I31-9) cannot be made here without root; tests/unit/test_data_safety_store.py
simulates it (ENOSPC from /dev/full, SQLITE_FULL, safetensors' I/O error).
"""

from __future__ import annotations

from common import expect as shared_expect

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump()) + [f"user_version={conn.execute('PRAGMA user_version').fetchone()[0]}"]
    finally:
        conn.close()


def _old_project(folder: Path, version: int) -> Path:
    """A project as the PollenStudio of schema ``version`` left it, with one reviewed grain."""
    import cv2
    import numpy as np

    from pollenstudio.project.schema import DB_NAME, MIGRATIONS

    folder.mkdir(parents=True)
    img = np.full((48, 64), 40, np.uint8)
    img[10:30, 10:30] = 200
    cv2.imwrite(str(folder / "x.png"), img)
    conn = sqlite3.connect(folder / DB_NAME)
    for sql in MIGRATIONS[:version]:
        conn.executescript(sql)
    conn.execute("INSERT INTO meta(key, value) VALUES ('app', 'pollenstudio-project')")
    conn.execute("INSERT INTO images(path, width, height, added, status) VALUES ('x.png', 64, 48, 0, 'reviewed')")
    conn.execute("INSERT INTO categories(name, color) VALUES ('Pinus', '#ffffff')")
    conn.execute(
        "INSERT INTO annotations(image_id, x1, y1, x2, y2, category_id, score, source, status, created, updated) "
        "VALUES (1, 10, 10, 30, 30, 1, NULL, 'human', 'added', 0, 0)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return folder / DB_NAME


def _reviewed_project(folder: Path, n: int = 6):
    import cv2

    from pollenstudio.core.types import Box
    from pollenstudio.engine.synthetic import SynthConfig, generate_image
    from pollenstudio.project import Project

    cfg = SynthConfig(width=128, height=128, difficulty="easy", taxa=("Poaceae",), n_grains=(2, 3),
                      grain_size=(22.0, 40.0))
    (folder / "images").mkdir(parents=True)
    items = []
    for i in range(n):
        img, objs = generate_image(i, cfg)
        path = folder / "images" / f"im{i}.png"
        cv2.imwrite(str(path), img[..., ::-1])
        items.append((path, objs))
    with Project.create(folder / "proj") as pr:
        pr.add_images([p for p, _ in items])
        cats = pr.ensure_categories(["Poaceae"])
        recs = {Path(r.path).name: r for r in pr.images()}
        with pr.batch("truth"):
            for path, objs in items:
                for o in objs:
                    pr.add_annotation(recs[path.name].id, Box(*o["bbox"]), cats[o["name"]])
    return folder / "proj"


_KILLED = """
import os, signal, sys, torch
torch.set_num_threads(1)
import pollenstudio.engine.train as tr
from pollenstudio.detector.config import ModelConfig
from pollenstudio.engine.augment import AugmentConfig
from pollenstudio.project import Project
def killed(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # after best.safetensors, before the first last.ckpt
tr.save_train_state = killed
p = Project.open(sys.argv[1])
cfg = tr.TrainConfig(epochs=2, imgsz=128, batch=4, device="cpu", threads=1, patience=0,
                     augment=AugmentConfig(mosaic=0.0))
tr.train_project(p, cfg, model_cfg=ModelConfig.tiny("base"))
"""


def _killed_training(proj: Path) -> Path:
    """Run a training that is SIGKILLed before its first last.ckpt; returns its orphan folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED), str(proj)], capture_output=True,
                         text=True, timeout=600, env=env)
    if res.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the training to be killed ended otherwise (rc {res.returncode}): {res.stderr[-500:]}")
    conn = sqlite3.connect(proj / "project.pollen")
    (wd,) = conn.execute("SELECT params FROM runs WHERE kind = 'train' ORDER BY id DESC LIMIT 1").fetchone()
    conn.close()
    folder = proj / json.loads(wd)["work_dir"]
    if not (folder / "best.safetensors").is_file() or (folder / "last.ckpt").exists():
        raise RuntimeError(f"the killed training left {sorted(p.name for p in folder.iterdir())}")
    return folder


def build(w: Path):
    from pollenstudio.project.schema import DB_NAME, SCHEMA_VERSION

    ran: set[str] = set()
    facts: dict = {}
    cases: list[tuple] = []

    def expect(name: str, rc_ok: bool, *words: str, absent: tuple[str, ...] = ("Traceback", "this is a bug")):
        check = shared_expect(rc_ok, *words, absent=absent)  # scripts/hostile/common.py

        def tracked(rc, out: str) -> str | None:
            ran.add(name)  # the after-effect checks look only at cases that ran
            return check(rc, out)

        return tracked

    def case(name, argv, timeout, rc_ok, *words):
        cases.append((name, [str(a) for a in argv], timeout, expect(name, rc_ok, *words)))

    # ---------------------------------------------------------------- I31-8 copy, then upgrade
    for v, argv_of in ((2, lambda p: ["export", p, "--format", "csv", "--out", w / "old2.csv"]),
                       (4, lambda p: ["export", p, "--format", "coco", "--out", w / "old4.json", "--all"])):
        db = _old_project(w / f"old{v}", v)
        facts[f"old{v}"] = (db, _dump(db))
        case(f"I31-8 a schema-{v} project is copied before the upgrade", argv_of(db.parent), 120, True)
    db = _old_project(w / "old3_nocopy", 3)
    (db.parent / ".pollen-backups").write_text("a file where the backup folder goes")
    facts["nocopy"] = (db, db.read_bytes())
    case("I31-8 no upgrade without the copy", ["export", db.parent, "--format", "csv", "--out", w / "old3.csv"], 120,
         False, "schema 3", "could not be kept", "nothing was changed")

    # ---------------------------------------------------------------- I31-17 killed before the first state
    resume_proj = _reviewed_project(w / "killed_resume")
    facts["resume_orphan"] = _killed_training(resume_proj)
    case("I31-17 --resume after a kill before the first epoch", ["train", resume_proj, "--resume", "--quiet"], 300,
         False, "first epoch", "nothing to resume", "removed")
    new_proj = _reviewed_project(w / "killed_new")
    facts["new_orphan"] = _killed_training(new_proj)
    facts["new_proj"] = new_proj
    case("I31-17 a new training after a kill leaves no orphan",
         ["train", new_proj, "--tiny", "--stage", "detector", "--epochs", "1", "--imgsz", "128", "--batch", "4",
          "--device", "cpu", "--no-compare", "--quiet"], 600, True)

    # ---------------------------------------------------------------- I31-18 names
    names_proj = _old_project(w / "names", SCHEMA_VERSION).parent  # a current project with one reviewed grain
    facts["names_proj"] = names_proj
    for label, bad in (("a line break", "v2\nnext"), ("an ANSI escape", "v2\x1b[2J\x1b[31m"),
                       ("a right-to-left override", "v2\u202efdp.exe")):
        case(f"I31-18 train --name with {label}", ["train", names_proj, "--tiny", "--epochs", "1", "--name", bad],
             120, False, "model version name")
    coco_dir = w / "coco_bidi"
    coco_dir.mkdir()
    import shutil

    shutil.copy(names_proj / "x.png", coco_dir / "a.png")
    for label, taxon in (("U+202E", "Pinus\u202egnp.exe"), ("an ANSI escape", "Pinus\x1b[8m")):
        doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
               "categories": [{"id": 1, "name": taxon}]}
        src = coco_dir / f"{label.replace(' ', '_').replace('+', '')}.json"
        src.write_text(json.dumps(doc), encoding="utf-8")
        target = w / f"np_coco_{src.stem}"
        facts.setdefault("no_project", []).append((f"I31-18 COCO taxon with {label}", target))
        case(f"I31-18 COCO taxon with {label}", ["import", target, src], 120, False,
             "U+202E" if "202E" in label else "control character")
    yolo = w / "yolo_bidi"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    shutil.copy(names_proj / "x.png", yolo / "images" / "a.png")
    (yolo / "classes.txt").write_text("Olea\nPinus\u202egnp\n", encoding="utf-8")
    (yolo / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    facts["no_project"].append(("I31-18 YOLO class with U+202E", w / "np_yolo_bidi"))
    case("I31-18 YOLO class with U+202E", ["import", w / "np_yolo_bidi", yolo], 120, False, "U+202E")

    def check() -> list[str]:
        from pollenstudio.project import Project

        problems = []
        for v in (2, 4):
            name = f"I31-8 a schema-{v} project is copied before the upgrade"
            if name not in ran:
                continue
            db, before = facts[f"old{v}"]
            kept = db.parent / ".pollen-backups" / f"{DB_NAME}.schema{v}"
            if not kept.is_file():
                problems.append(f"{name}: no copy {kept}")
            elif _dump(kept) != before:
                problems.append(f"{name}: the copy is not the project as it was")
            if _dump(db)[-1] != f"user_version={SCHEMA_VERSION}":
                problems.append(f"{name}: the project was not upgraded")
        if "I31-8 no upgrade without the copy" in ran:
            db, before = facts["nocopy"]
            conn = sqlite3.connect(db)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.close()
            if version != 3:
                problems.append(f"I31-8 no upgrade without the copy: upgraded to schema {version} all the same")
        if "I31-17 --resume after a kill before the first epoch" in ran and facts["resume_orphan"].exists():
            problems.append(f"I31-17 --resume: the orphan {facts['resume_orphan']} is still there")
        new = "I31-17 a new training after a kill leaves no orphan"
        if new in ran:
            if facts["new_orphan"].exists():
                problems.append(f"{new}: the orphan {facts['new_orphan']} is still there")
            proj = facts["new_proj"]
            models = sorted((proj / "models").glob("*.safetensors"))
            mode = (proj / DB_NAME).stat().st_mode & 0o777
            if not models:
                problems.append(f"{new}: no model file registered")
            for m in models:
                if m.stat().st_mode & 0o777 != mode:
                    problems.append(f"I31-18 {m.name} has mode {m.stat().st_mode & 0o777:o}, the project file {mode:o}")
            leftovers = [p.name for p in (proj / "models" / "runs").glob("*")] if (proj / "models" / "runs").exists() else []
            if leftovers:
                problems.append(f"{new}: run folders left: {leftovers}")
        if any(n.startswith("I31-18 train --name") for n in ran):
            with Project.open(facts["names_proj"]) as p:
                if p.runs() or p.model_versions():
                    problems.append("I31-18 train --name: a refused name still started a training")
        for name, target in facts["no_project"]:
            if name in ran and (target / DB_NAME).exists():
                problems.append(f"{name}: a project was created in {target}")
        return problems

    return cases, check
