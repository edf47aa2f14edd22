"""Issue 31, exports: nothing an export writes can damage the user's originals or carry
another file than the registered picture; plane images are written atomically and never
through a planted link; one unreadable stack does not abort a YOLO export; CSV cells that a
spreadsheet would run as formulas are written as text."""

import csv
import errno
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from pollenstudio.core.atomic import WriteError
from pollenstudio.core.csvsafe import safe_cell
from pollenstudio.core.types import Box
from pollenstudio.project import Project
from pollenstudio.project.coco import export_coco
from pollenstudio.project.export_files import MANIFEST
from pollenstudio.project.pollen_report import write_report
from pollenstudio.project.report import write_counts_csv, write_grains_csv
from pollenstudio.project.yolo import export_yolo

H, W = 48, 64


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _img(path: Path, value: int, ext_shape=(H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full(ext_shape, value, np.uint8)
    cv2.circle(img, (W // 2, H // 2), 9, 255 - value, -1)
    assert cv2.imwrite(str(path), img)
    return path


def _stack_files(folder: Path, name: str, n=3, base=20) -> list[Path]:
    files = []
    for k in range(n):
        f = folder / f"{name}_z{k}.png"
        _img(f, base + 30 * k, (H, W, 3))
        files.append(f)
    return files


def _reviewed(p: Project, cid: int) -> None:
    for r in p.images():
        p.add_annotation(r.id, Box(5, 5, 25, 25), cid, **({"plane": 1} if r.is_stack else {}))
        p.set_image_status(r.id, "reviewed")


@pytest.fixture
def proj(tmp_path):
    src = tmp_path / "slides"
    for name, v in (("a", 30), ("b", 90), ("c", 150)):
        _img(src / f"{name}.png", v)
    p = Project.create(tmp_path / "proj")
    p.add_images(sorted(src.glob("*.png")))
    _reviewed(p, p.add_category("Betula"))
    yield p
    p.close()


def _exported_files(out: Path) -> set[str]:
    return {f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file() and f.name != MANIFEST}


# ------------------------------------------------------------------ item 1: copies, never links
def test_yolo_export_copies_so_rewriting_an_exported_image_leaves_the_original(proj, tmp_path):
    originals = {proj.image_path(r): sha(proj.image_path(r)) for r in proj.images()}
    out = tmp_path / "yolo"
    s = export_yolo(proj, out)
    assert s["images"] == 3 and not s.get("skipped")
    exported = sorted((out / "images").iterdir())
    assert len(exported) == 3
    for f in exported:
        st = f.stat()
        assert st.st_nlink == 1, f"{f.name} is a hard link"
        assert not f.is_symlink()
        assert not any(os.path.samefile(f, o) for o in originals)
        assert sha(f) in originals.values()  # the same bytes as its original
    # a trainer that resizes / re-encodes in place: open for writing, truncate, write
    for f in exported:
        with open(f, "r+b") as fh:
            fh.truncate(0)
            fh.write(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    for o, digest in originals.items():
        assert sha(o) == digest, f"{o.name} changed when its exported copy was rewritten"


# ------------------------------------------------------------------ item 3: only the registered picture
def test_yolo_export_never_copies_a_file_that_is_not_the_registered_picture(proj, tmp_path):
    secret_text = tmp_path / "secret.txt"
    secret_text.write_text("root:x:0:0:secret\n")
    # a picture of the same pixel size, dated before the project registered "b": a size /
    # date check alone would not look at its content
    secret_png = _img(tmp_path / "elsewhere" / "private.png", 200)
    os.utime(secret_png, (1_000_000, 1_000_000))
    a, b, c = proj.images()
    with proj._tx() as conn:
        conn.execute("UPDATE images SET path = ? WHERE id = ?", (str(secret_text), a.id))
        conn.execute("UPDATE images SET path = ?, size_bytes = ? WHERE id = ?",
                     (str(secret_png), secret_png.stat().st_size, b.id))
    out = tmp_path / "yolo"
    s = export_yolo(proj, out)
    assert s["images"] == 1
    assert sorted(x["path"] for x in s["skipped"]) == sorted([str(secret_text), str(secret_png)])
    assert all(x["reason"] for x in s["skipped"])
    assert any("not the picture this project registered" in x["reason"] for x in s["skipped"])
    assert _exported_files(out) == {"classes.txt", "images/c.png", "labels/c.txt"}
    secrets = {sha(secret_text), sha(secret_png)}
    assert not secrets & {sha(f) for f in out.rglob("*") if f.is_file()}
    assert not [f for f in out.rglob("*.tmp")]


def test_yolo_export_skips_a_stack_whose_planes_are_not_the_registered_ones(tmp_path):
    files = _stack_files(tmp_path / "field", "f")
    with Project.create(tmp_path / "p") as p:
        p.add_images([files])
        _reviewed(p, p.add_category("Betula"))
        _img(files[1], 250, (H, W, 3))  # another picture under a plane's name
        s = export_yolo(p, tmp_path / "y")
        assert s["images"] == 0 and len(s["skipped"]) == 1
        assert _exported_files(tmp_path / "y") == {"classes.txt"}


def test_coco_planes_are_written_only_from_the_registered_stack(tmp_path):
    files = _stack_files(tmp_path / "field", "f")
    with Project.create(tmp_path / "p") as p:
        p.add_images([files])
        _reviewed(p, p.add_category("Betula"))
        _img(files[1], 250, (H, W, 3))
        s = export_coco(p, tmp_path / "c.json", planes_as_images=True)
        assert s["plane_images"] == 0 and len(s["skipped"]) == 1
        doc = json.loads((tmp_path / "c.json").read_text())
        # listed as the one stack image it is, with its grain, and no plane image of it
        assert [im.get("planes") for im in doc["images"]] == [3] and len(doc["annotations"]) == 1
        assert not [f for f in (tmp_path / "c_planes").glob("*.png")]


# ------------------------------------------------------------------ item 4: plane images written safely
@pytest.fixture
def stack_proj(tmp_path):
    files = _stack_files(tmp_path / "field", "f")
    p = Project.create(tmp_path / "p")
    p.add_images([files])
    _reviewed(p, p.add_category("Betula"))
    yield p
    p.close()


def _plane_file(p: Project, out: Path) -> Path:
    (rec,) = p.images()
    return out.parent / f"{out.stem}_planes" / f"f_z0_{rec.id}_z01.png"


def test_planes_as_images_never_writes_through_a_planted_symlink(stack_proj, tmp_path):
    out = tmp_path / "exp" / "c.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = _plane_file(stack_proj, out)
    link.parent.mkdir(parents=True)
    os.symlink(victim, link)
    with pytest.raises(WriteError, match="not replaced"):
        export_coco(stack_proj, out, planes_as_images=True)
    assert victim.read_text() == "precious" and link.is_symlink()
    assert not out.exists()


def test_planes_as_images_does_not_replace_a_file_of_the_users(stack_proj, tmp_path):
    out = tmp_path / "exp" / "c.json"
    mine = _plane_file(stack_proj, out)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own picture")
    with pytest.raises(WriteError, match="already exist"):
        export_coco(stack_proj, out, planes_as_images=True)
    assert mine.read_bytes() == b"my own picture"


def test_planes_as_images_replaces_its_own_files_and_clears_stale_ones(stack_proj, tmp_path):
    out = tmp_path / "exp" / "c.json"
    s = export_coco(stack_proj, out, planes_as_images=True)
    assert s["plane_images"] == 1 and _plane_file(stack_proj, out).is_file()
    (ann,) = stack_proj.annotations(stack_proj.images()[0].id)
    stack_proj.set_annotation_plane(ann.id, 2)
    s = export_coco(stack_proj, out, planes_as_images=True)  # our own files: no refusal
    folder = out.parent / "c_planes"
    assert s["plane_images"] == 1
    assert sorted(f.name for f in folder.iterdir() if f.name != MANIFEST) == [
        _plane_file(stack_proj, out).name.replace("_z01", "_z02")]
    export_coco(stack_proj, out, planes_as_images=True)  # and again


def test_planes_as_images_on_a_full_disk_leaves_no_truncated_png(stack_proj, tmp_path, monkeypatch):
    out = tmp_path / "exp" / "c.json"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match="No space left"):
        export_coco(stack_proj, out, planes_as_images=True)
    monkeypatch.undo()
    folder = out.parent / "c_planes"
    assert not [f for f in folder.iterdir() if f.name != MANIFEST]  # neither the PNG nor a temp file
    assert not out.exists()


# ------------------------------------------------------------------ item 14: one bad stack, not the export
def _unreadable_stack(p: Project, files: list[Path]) -> None:
    """A stack whose planes differ in bit depth, registered as it is now (a project from
    before the import refused such stacks)."""
    from pollenstudio.core.stack import stack_hash

    cv2.imwrite(str(files[1]), np.full((H, W), 3000, np.uint16))
    (rec,) = [r for r in p.images() if r.is_stack]
    with p._tx() as conn:
        conn.execute("UPDATE images SET sha256 = ?, size_bytes = ? WHERE id = ?",
                     (stack_hash(files), files[0].stat().st_size, rec.id))


def test_yolo_export_skips_an_unreadable_stack_and_a_missing_image(tmp_path):
    files = _stack_files(tmp_path / "field", "f")
    _img(tmp_path / "slides" / "good.png", 40)
    _img(tmp_path / "slides" / "gone.png", 80)
    with Project.create(tmp_path / "p") as p:
        p.add_images([files, tmp_path / "slides" / "good.png", tmp_path / "slides" / "gone.png"])
        _reviewed(p, p.add_category("Betula"))
        _unreadable_stack(p, files)
        (tmp_path / "slides" / "gone.png").unlink()
        out = tmp_path / "y"
        s = export_yolo(p, out)  # used to raise ImageReadError with a half-written folder
        assert s["images"] == 1 and s["annotations"] == 1
        assert sorted(Path(x["path"]).name for x in s["skipped"]) == ["f_z0.png", "gone.png"]
        assert [Path(m).name for m in s["missing_images"]] == ["gone.png"]
        # consistent: every label has its image, and the manifest lists what is there
        assert _exported_files(out) == {"classes.txt", "images/good.png", "labels/good.txt"}
        listed = json.loads((out / MANIFEST).read_text())["files"]
        assert set(listed) == _exported_files(out)
        # COCO and CSV go on as before
        assert export_coco(p, tmp_path / "c.json")["images"] == 3
        assert write_counts_csv(p, tmp_path / "c.csv")["grains"] == 3


def test_export_cli_names_what_it_skipped(tmp_path):
    import subprocess
    import sys

    _img(tmp_path / "slides" / "good.png", 40)
    _img(tmp_path / "slides" / "gone.png", 80)
    with Project.create(tmp_path / "p") as p:
        p.add_images(sorted((tmp_path / "slides").glob("*.png")))
        _reviewed(p, p.add_category("Betula"))
    (tmp_path / "slides" / "gone.png").unlink()
    res = subprocess.run([sys.executable, "-m", "pollenstudio", "export", str(tmp_path / "p"), "--format", "yolo",
                          "--out", str(tmp_path / "y")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "not exported" in res.stderr and "gone.png" in res.stderr and "skipped: 1" in res.stdout


# ------------------------------------------------------------------ item 5: formula injection in CSV
FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd"]


def test_safe_cell_quotes_formula_starts_and_keeps_numbers():
    for text in FORMULAS + ["\t=1+2", "\r=1+2", "\n=1"]:
        assert safe_cell(text) == "'" + text
    for value in ["Betula", "", "slide 3", "-1.5", "+2", "1e-3", "-.5", 3, -4.25, None]:
        assert safe_cell(value) == value
    assert safe_cell("-inf") == "'-inf" and safe_cell("- 1") == "'- 1"


@pytest.fixture
def hostile_names(tmp_path):
    _img(tmp_path / "s" / "a.png", 40)
    p = Project.create(tmp_path / "p")
    p.add_images([tmp_path / "s" / "a.png"])
    (rec,) = p.images()
    p.set_image_group(rec.id, "=1+2")
    for k, name in enumerate(FORMULAS):
        cid = p.add_category(name)
        p.add_annotation(rec.id, Box(2 + 6 * k, 2, 6 + 6 * k, 6), cid)
    p.set_image_status(rec.id, "reviewed")
    yield p
    p.close()


def _cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


@pytest.mark.parametrize("writer", ["counts", "grains", "report"])
def test_every_csv_writer_writes_formula_names_as_text(hostile_names, tmp_path, writer):
    out = tmp_path / f"{writer}.csv"
    if writer == "counts":
        write_counts_csv(hostile_names, out)
    elif writer == "grains":
        write_grains_csv(hostile_names, out)
    else:
        write_report(hostile_names, out, "csv")
    cells = _cells(out)
    raw = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    bad = [c for c in raw if not _is_number(c)]
    assert bad == [], f"{writer}: cells a spreadsheet would run: {bad}"
    for name in FORMULAS:
        assert "'" + name in cells
    if writer != "counts":  # the sample column
        assert "'=1+2" in cells


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_formula_names_stay_as_they_are_in_the_project(hostile_names):
    """Only the CSV cell is quoted: the store and COCO keep the taxon's own name."""
    assert sorted(c.name for c in hostile_names.categories()) == sorted(FORMULAS)
    conn = sqlite3.connect(hostile_names.db_path)
    assert conn.execute("SELECT group_name FROM images").fetchone()[0] == "=1+2"
    conn.close()
