"""Run the hostile CLI cases of issue 17 and count tracebacks in the output.

    python scripts/hostile_cli.py [--keep DIR] [--only SUBSTRING] [--verbose]

Builds its own fixtures in a temporary folder (images, a project, malformed COCO/YOLO
files, broken and crafted model files, a corrupted project copy), runs each attack as
``python -m pollenstudio ...`` in a subprocess with POLLENSTUDIO_DEBUG=1 (so a bug would
show its traceback instead of the one-line "unexpected error" safety net), and prints one
line per case plus the total ``Traceback`` count over all output (the issue's check:
``grep -c Traceback`` = 0). Also checks a few after-effects: no half-made project (F7),
nothing written for a bad --images (F4), no temp files beside outputs, a planted symlink
never written through (F10). Exit status 0 when there is no traceback, no hang and no
failed after-effect check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def _img(path: Path, w: int, h: int, value: int) -> Path:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w), value, np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(w, h) // 4, 255 - value, -1)
    cv2.imwrite(str(path), img)
    return path


def _coco(path: Path, doc=None, raw: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps(doc), encoding="utf-8")
    return path


def _good_coco(**over) -> dict:
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 64}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
           "categories": [{"id": 1, "name": "Olea"}]}
    doc.update(over)
    return doc


def _models(w: Path) -> dict[str, Path]:
    """A valid tiny checkpoint and crafted variants of it."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    cfg = ModelConfig.tiny("full", nc=1, class_names=["Olea"], imgsz=128)
    good = save_checkpoint(w / "models" / "good.safetensors", build_model(cfg))
    with safe_open(str(good), framework="pt") as f:
        md = dict(f.metadata())
    tensors = load_file(str(good))
    out = {"good": good}

    def crafted(name: str, **changes):
        c = json.loads(md["config"])
        c.update(changes)
        m = dict(md, config=json.dumps(c))
        p = w / "models" / f"{name}.safetensors"
        save_file(tensors, str(p), metadata=m)
        out[name] = p

    crafted("depth5000", depth=5000.0)
    crafted("width_neg", width=-1.0)
    crafted("width_zero", width=0.0)
    crafted("width_nan", width=float("nan"))
    crafted("width_huge", width=1e6)
    crafted("kernel_huge", omni_kernel=100001)
    crafted("channels_huge", max_channels=10**9)
    crafted("nc_huge", nc=10**7, class_names=[])
    crafted("imgsz_neg", imgsz=-64)
    crafted("levels_str", sef_levels="abc")
    nan = {k: (v * float("nan") if v.is_floating_point() else v) for k, v in tensors.items()}
    save_file(nan, str(w / "models" / "nan_weights.safetensors"), metadata=md)
    out["nan_weights"] = w / "models" / "nan_weights.safetensors"
    (w / "models" / "garbage.safetensors").write_bytes(os.urandom(4096))
    out["garbage"] = w / "models" / "garbage.safetensors"
    (w / "models" / "truncated.safetensors").write_bytes(good.read_bytes()[:5000])
    out["truncated"] = w / "models" / "truncated.safetensors"
    import pickle

    (w / "models" / "pickle.safetensors").write_bytes(pickle.dumps({"a": 1}))
    out["pickle"] = w / "models" / "pickle.safetensors"
    return out


def _corrupt(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    n = len(data) // 4096
    for page in range(max(2, n // 3), max(3, 2 * n // 3)):
        data[page * 4096:(page + 1) * 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))


def build(w: Path) -> tuple[list[tuple[str, list[str], float]], dict]:
    """Fixtures and the list of (name, argv, timeout)."""
    from pollenstudio.core.types import Box
    from pollenstudio.project import Project

    imgs = w / "imgs"
    for i, name in enumerate(("a", "b", "c")):
        _img(imgs / f"{name}.png", 96, 64, 30 + 40 * i)
    proj = w / "proj"
    p = Project.create(proj)
    p.add_folder(imgs)
    cid = p.add_category("Olea")
    p.add_annotation(1, Box(10, 10, 40, 40), cid)
    p.add_annotation(2, Box(20, 20, 50, 50), cid)
    p.close()
    big = w / "damaged"
    p = Project.create(big)
    p.add_folder(imgs)
    cid = p.add_category("Olea")
    with p.importing():
        p.bulk_insert([], [{"image_id": 1 + k % 3, "box": Box(1, 1, 9 + k % 7, 9), "category_id": cid,
                            "status": "added", "source": "human"} for k in range(3000)])
    p.close()
    _corrupt(big / "project.pollen")

    c = w / "coco"
    c.mkdir()
    for name in ("a", "b"):
        shutil.copy(imgs / f"{name}.png", c / f"{name}.png")
    (c / "sub").mkdir(exist_ok=True)
    ann = lambda **kw: [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], **kw}]  # noqa: E731
    cocos = {
        "bbox_10e400": _coco(c / "bbox_huge.json", raw=json.dumps(_good_coco()).replace("[10, 10, 20, 20]", "[10, 10, 2" + "0" * 400 + ", 20]")),
        "width_1e300": _coco(c / "w1e300.json", _good_coco(images=[{"id": 1, "file_name": "zz.png", "width": 1e300, "height": 64}])),
        "nul_file_name": _coco(c / "nul.json", _good_coco(images=[{"id": 1, "file_name": "a\x00.png", "width": 9, "height": 9}])),
        "list_ann_id": _coco(c / "listid.json", _good_coco(annotations=[{"id": [1], "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}])),
        "list_image_id": _coco(c / "listimg.json", _good_coco(annotations=[{"id": 1, "image_id": [1], "category_id": 1, "bbox": [1, 1, 5, 5]}])),
        "nested": _coco(c / "nested.json", raw="[" * 200000 + "]" * 200000),
        "digits_5000": _coco(c / "digits.json", raw='{"images": [], "categories": [], "x": ' + "9" * 5000 + "}"),
        "dup_file": _coco(c / "dup.json", _good_coco(images=[{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}])),
        "score_1e9": _coco(c / "s1e9.json", _good_coco(annotations=ann(score=1e9))),
        "score_neg": _coco(c / "sneg.json", _good_coco(annotations=ann(score=-3))),
        "score_nan": _coco(c / "snan.json", raw=json.dumps(_good_coco(annotations=ann(score=float("nan"))))),
        "poly_outside": _coco(c / "poly.json", _good_coco(annotations=ann(segmentation=[[1, 1, 9000, 1, 9000, 9000]]))),
        "file_name_empty": _coco(c / "fnempty.json", _good_coco(images=[{"id": 1, "file_name": "", "width": 9, "height": 9}])),
        "file_name_dir": _coco(c / "fndir.json", _good_coco(images=[{"id": 1, "file_name": "sub", "width": 9, "height": 9}])),
        "taxon_object": _coco(c / "taxobj.json", _good_coco(categories=[{"id": 1, "name": {"a": 1}}])),
        "taxon_newline": _coco(c / "taxnl.json", _good_coco(categories=[{"id": 1, "name": "Ole\na"}])),
        "not_utf8": c / "latin1.json",
        "top_level_list": _coco(c / "list.json", raw="[1, 2, 3]"),
        "images_not_list": _coco(c / "imgsdict.json", _good_coco(images={"a": 1})),
        "cat_id_float": _coco(c / "catfloat.json", _good_coco(categories=[{"id": 1.5, "name": "x"}])),
        "empty_file": _coco(c / "empty.json", raw=""),
        "bbox_strings": _coco(c / "bboxstr.json", _good_coco(annotations=ann(bbox=["1", "2", "3", "4"]))),
        "bbox_inf": _coco(c / "bboxinf.json", raw=json.dumps(_good_coco(annotations=ann(bbox=[1, 1, float("inf"), 4])))),
    }
    (c / "latin1.json").write_bytes('{"images": [{"id": 1, "file_name": "\xe9.png"}]}'.encode("latin-1"))
    good_coco = _coco(c / "good.json", _good_coco())

    y = w / "yolo"
    yolos = {}
    for name, classes, label in (
        ("classes_latin1", "Ol\xe9a\n".encode("latin-1"), "0 0.5 0.5 0.2 0.2\n"),
        ("score_7_5", b"Olea\n", "0 0.5 0.5 0.2 0.2 7.5\n"),
        ("class_newline", b"Olea\x0bBetula\n", "0 0.5 0.5 0.2 0.2\n"),
        ("huge_class_index", b"Olea\n", "9" * 5000 + " 0.5 0.5 0.2 0.2\n"),
        ("nan_coords", b"Olea\n", "0 nan 0.5 0.2 0.2\n"),
        ("fifo_label", b"Olea\n", None),
    ):
        d = y / name
        _img(d / "images" / "x.png", 96, 64, 77)
        (d / "labels").mkdir(parents=True, exist_ok=True)
        (d / "classes.txt").write_bytes(classes)
        if label is None:
            os.mkfifo(d / "labels" / "x.txt")
        else:
            (d / "labels" / "x.txt").write_text(label)
        yolos[name] = d

    models = _models(w)
    (w / "outdir").mkdir()
    (w / "plant").mkdir()
    (w / "victim.txt").write_text("precious")
    os.symlink(w / "victim.txt", w / "plant" / "x.json.tmp")
    for k in ("detect_bad_model", "detect_crafted_model"):
        _img(w / k / "a.png", 96, 64, 50)
    os.mkfifo(w / "fifo.json")

    pc = lambda *a: [*a]  # noqa: E731
    cases: list[tuple[str, list[str], float]] = []
    for name, path in cocos.items():
        cases.append((f"F1/F2 coco {name}", pc("import", str(w / f"np_{name}"), str(path)), 120))
    for name, path in yolos.items():
        cases.append((f"F1/F2/F13 yolo {name}", pc("import", str(w / f"np_{name}"), str(path)), 60))
    cases += [
        ("F4 import --images no_such_dir", pc("import", str(w / "np_f4"), str(good_coco), "--images", str(w / "no_such_dir")), 120),
        ("F4 import --images ''", pc("import", str(w / "np_f4b"), str(good_coco), "--images", ""), 120),
        ("F13 import a FIFO as COCO", pc("import", str(w / "np_fifo"), str(w / "fifo.json")), 60),
        ("import source ''", pc("import", str(w / "np_empty"), ""), 60),
        ("import into /proc", pc("import", "/proc/pollen_x", str(good_coco)), 60),
        ("import into /sys", pc("import", "/sys/pollen_x", str(imgs)), 60),
        ("import project ''", pc("import", "", str(good_coco)), 60),
        ("import a file as project", pc("import", str(good_coco), str(imgs)), 60),
        ("import all-unreadable folder", pc("import", str(w / "np_unreadable"), str(w / "unreadable")), 60),
        ("F8 export --out /proc", pc("export", str(proj), "--format", "coco", "--out", "/proc/pollen.json"), 60),
        ("F8 export --out /sys (yolo)", pc("export", str(proj), "--format", "yolo", "--out", "/sys/pollen"), 60),
        ("F8 export csv --out /proc", pc("export", str(proj), "--format", "csv", "--out", "/proc/pollen.csv"), 60),
        ("F8 export --out existing dir", pc("export", str(proj), "--format", "coco", "--out", str(w / "outdir")), 60),
        ("F8 export --out ''", pc("export", str(proj), "--format", "csv", "--out", ""), 60),
        ("F8 export yolo --out a file", pc("export", str(proj), "--format", "yolo", "--out", str(good_coco)), 60),
        ("F10 export through planted symlink", pc("export", str(proj), "--format", "coco", "--out", str(w / "plant" / "x.json")), 60),
        ("F8 train --lr0 -1", pc("train", str(proj), "--lr0", "-1", "--tiny", "--epochs", "1"), 60),
        ("F8 train --lr0 nan", pc("train", str(proj), "--lr0", "nan", "--tiny", "--epochs", "1"), 60),
        ("F8 train --workers -3", pc("train", str(proj), "--workers", "-3", "--tiny", "--epochs", "1"), 60),
        ("F8 train --imgsz 100000", pc("train", str(proj), "--imgsz", "100000", "--tiny"), 60),
        ("F8 train --patience -1", pc("train", str(proj), "--patience", "-1", "--tiny"), 60),
        ("F8 detect --imgsz 33", pc("detect", str(proj), "--imgsz", "33"), 60),
        ("F8 detect --imgsz -64", pc("detect", str(proj), "--imgsz", "-64"), 60),
        ("F8 detect --imgsz 100000", pc("detect", str(proj), "--imgsz", "100000"), 60),
        ("detect --conf 2", pc("detect", str(proj), "--conf", "2"), 60),
        ("detect --conf nan", pc("detect", str(proj), "--conf", "nan"), 60),
        ("detect --batch 0", pc("detect", str(proj), "--batch", "0"), 60),
        ("detect --tile 3", pc("detect", str(proj), "--tile", "3"), 60),
        ("detect --device cuda:99", pc("detect", str(proj), "--device", "cuda:99"), 60),
        ("detect --device bogus", pc("detect", str(proj), "--device", "bogus"), 60),
        ("detect no such folder", pc("detect", str(w / "nothing_here")), 60),
        ("detect model version 99", pc("detect", str(proj), "--model", "99"), 60),
        ("F7 detect FOLDER --model garbage", pc("detect", str(w / "detect_bad_model"), "--model", str(models["garbage"])), 120),
        ("F7 detect FOLDER --model depth5000", pc("detect", str(w / "detect_crafted_model"), "--model", str(models["depth5000"])), 120),
        ("eval --batch 0", pc("eval", str(proj), "--batch", "0"), 60),
        ("relink no such folder", pc("relink", str(proj), str(w / "nope")), 60),
        ("relink search ''", pc("relink", str(proj), ""), 60),
        ("relink a non-project", pc("relink", str(imgs)), 60),
        ("report .docx", pc("report", str(proj), "--out", str(w / "r.docx")), 60),
        ("report into a folder", pc("report", str(proj), "--out", str(w)), 60),
        ("report --set target_sum=-3", pc("report", str(proj), "--set", "target_sum=-3"), 60),
        ("report --set nonsense", pc("report", str(proj), "--set", "x:y"), 60),
        ("report --role unknown taxon", pc("report", str(proj), "--role", "Nope=spore"), 60),
        ("report nothing to do", pc("report", str(proj)), 60),
        ("F11 report damaged", pc("report", str(big), "--out", str(w / "dmg.html")), 60),
        ("unknown command", pc("frobnicate"), 30),
        ("no such option", pc("export", str(proj), "--format", "pdf", "--out", "x"), 30),
        ("F11 export damaged", pc("export", str(big), "--format", "coco", "--out", str(w / "dmg.json")), 60),
        ("F11 import into damaged", pc("import", str(big), str(good_coco)), 60),
        ("F11 detect damaged", pc("detect", str(big)), 60),
        ("F11 train damaged", pc("train", str(big), "--tiny", "--epochs", "1"), 60),
        ("F11 relink damaged", pc("relink", str(big)), 60),
        ("not a project file", pc("export", str(good_coco), "--format", "coco", "--out", str(w / "x2.json")), 60),
    ]
    for name in models:
        if name == "good":
            continue
        cases.append((f"F6 detect --model {name}", pc("detect", str(proj), "--model", str(models[name])), 180))
    cases.append(("F6 eval --model depth5000", pc("eval", str(proj), "--model", str(models["depth5000"])), 180))
    cases.append(("F6 train --base width_nan", pc("train", str(proj), "--base", str(models["width_nan"]), "--epochs", "1"), 180))
    (w / "unreadable").mkdir()
    for k in range(3):
        (w / "unreadable" / f"bad{k}.png").write_bytes(b"not a png at all")
    facts = {"w": w, "proj": proj, "victim": w / "victim.txt"}
    return cases, facts


def after_checks(facts) -> list[str]:
    w = facts["w"]
    problems = []
    for k in ("detect_bad_model", "detect_crafted_model"):
        if (w / k / "project.pollen").exists():
            problems.append(f"F7: {k} left a half-made project")
    if (w / "np_f4").exists():
        problems.append("F4: a bad --images created a project")
    if facts["victim"].read_text() != "precious":
        problems.append("F10: the export wrote through the planted symlink")
    leftovers = [str(p) for p in w.rglob("*.tmp") if p.name != "x.json.tmp"]
    if leftovers:
        problems.append(f"temp files left: {leftovers[:5]}")
    if list((w / "outdir").iterdir()):
        problems.append("export into an existing folder left files there")
    return problems


def extra_case_modules():
    """The case modules in scripts/hostile/ (issue 31 onwards): each has
    ``build(w: Path) -> (cases, check)`` where a case is ``(name, argv, timeout)`` or
    ``(name, argv, timeout, expect)``, ``expect(rc, output) -> problem text or None`` (the refusal
    or safe result the case must give), and ``check() -> list[str]`` the after-effect problems."""
    import importlib.util

    mods = []
    folder = Path(__file__).resolve().parent / "hostile"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # their shared helpers: scripts/hostile/common.py
    for path in sorted(folder.glob("cases_*.py")):
        spec = importlib.util.spec_from_file_location(f"hostile_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="build the fixtures in this folder and keep them")
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--skip", action="append", default=[], help="skip cases whose name contains this (repeatable)")
    ap.add_argument("--verbose", action="store_true", help="print each case's output")
    args = ap.parse_args()
    w = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hostile_"))
    if w.exists() and any(w.iterdir()):
        shutil.rmtree(w)
    w.mkdir(parents=True, exist_ok=True)
    cases, facts = build(w)
    checks = []
    for mod in extra_case_modules():
        sub = w / mod.__name__.removeprefix("hostile_")
        sub.mkdir()
        more, check = mod.build(sub)
        cases += more
        checks.append((mod.__name__, {c[0] for c in more}, check))
    if args.only:
        cases = [c for c in cases if args.only in c[0]]
    cases = [c for c in cases if not any(k in c[0] for k in args.skip)]
    kept = {c[0] for c in cases}
    # a module's after-effect check means something only when all of its cases ran
    checks = [(name, check) for name, names, check in checks if names <= kept or print(
        f"(after-effect check of {name} skipped: --only/--skip left out some of its cases)")]
    env = dict(os.environ, POLLENSTUDIO_DEBUG="1", PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tracebacks = hangs = 0
    expect_problems: list[str] = []
    all_out = []
    t_all = time.time()
    for name, argv, timeout, *expect in cases:
        t0 = time.time()
        try:
            res = subprocess.run([sys.executable, "-m", "pollenstudio", *argv], capture_output=True, text=True,
                                 timeout=timeout, env=env, cwd=w, stdin=subprocess.DEVNULL)
            out, rc = res.stdout + res.stderr, res.returncode
        except subprocess.TimeoutExpired as exc:
            out = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")) \
                + ((exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or ""))
            rc, hangs = "TIMEOUT", hangs + 1
        n = out.count("Traceback")
        tracebacks += n
        all_out.append(out)
        last = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or [""]
        bad = expect[0](rc, out) if expect and rc != "TIMEOUT" else None
        if bad:
            expect_problems.append(f"{name}: {bad}")
        print(f"{'TRACEBACK ' if n else ''}{'UNSAFE ' if bad else ''}{name:45s} rc={rc} {time.time() - t0:5.1f}s  "
              f"{last[0][:110]}")
        if args.verbose or n or bad:
            print("    " + out.replace("\n", "\n    "))
    problems = after_checks(facts) + expect_problems
    for _, check in checks:
        problems += check()
    for p in problems:
        print("CHECK FAILED:", p)
    print(f"\n{len(cases)} cases in {time.time() - t_all:.0f} s; Traceback count: {tracebacks}; hangs: {hangs}; "
          f"after-effect problems: {len(problems)}")
    if not args.keep:
        shutil.rmtree(w, ignore_errors=True)
    return 0 if tracebacks == 0 and hangs == 0 and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
