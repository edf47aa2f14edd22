"""Issue 31, items 8, 9, 17, 18: a copy of an old project before it is upgraded, a full disk
said in words with nothing lost, no orphan files of killed trainings, one rule for names,
an unknown $POLLENSTUDIO_BACKEND refused, files written with ordinary permissions."""

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from pollenstudio.core.atomic import WriteError, atomic_write, write_text
from pollenstudio.core.errors import DamagedProjectError, InvalidNameError, ProjectError
from pollenstudio.core.types import Box
from pollenstudio.project import Project
from pollenstudio.project.schema import DB_NAME, MIGRATIONS, SCHEMA_VERSION
from pollenstudio.project.store import BACKUP_DIR

ROOT = Path(__file__).resolve().parents[2]


def _old_project(folder: Path, version: int) -> Path:
    """A project as PollenStudio of schema ``version`` left it (its migrations only)."""
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / DB_NAME)
    for sql in MIGRATIONS[:version]:
        conn.executescript(sql)
    conn.execute("INSERT INTO meta(key, value) VALUES ('app', 'pollenstudio-project')")
    conn.execute("INSERT INTO images(path, width, height, added) VALUES ('x.png', 10, 10, 0)")
    conn.execute("INSERT INTO categories(name, color) VALUES ('Pinus', '#ffffff')")
    conn.execute(
        "INSERT INTO annotations(image_id, x1, y1, x2, y2, category_id, score, source, status, created, updated) "
        "VALUES (1, 1, 1, 5, 5, 1, 0.3, 'model', 'proposed', 0, 0)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return folder / DB_NAME


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump()) + [f"user_version={conn.execute('PRAGMA user_version').fetchone()[0]}"]
    finally:
        conn.close()


# ------------------------------------------------------------------ item 8: copy, then upgrade
@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_an_old_project_is_copied_for_its_version_before_it_is_upgraded(tmp_path, version):
    """I31-8: the upgrade came first, then the backup: no copy the older version could read."""
    db = _old_project(tmp_path / "old", version)
    before = _dump(db)
    with Project.open(db.parent) as p:
        assert p.schema_version == SCHEMA_VERSION
        kept = db.parent / BACKUP_DIR / f"{DB_NAME}.schema{version}"
        assert p.upgraded_from == (version, kept)
        (ann,) = p.review_queue()
        assert ann.score == pytest.approx(0.3)
    assert kept.is_file()
    assert _dump(kept) == before  # exactly the project as the older version left it
    conn = sqlite3.connect(kept)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # a second upgrade of the same old version (the copy put back) keeps the first copy too
    restored = tmp_path / "again" / DB_NAME
    restored.parent.mkdir()
    restored.write_bytes(kept.read_bytes())
    with Project.open(restored.parent):
        pass
    assert (restored.parent / BACKUP_DIR / f"{DB_NAME}.schema{version}").is_file()


def test_a_current_project_gets_no_schema_copy(tmp_path):
    Project.create(tmp_path / "p").close()
    with Project.open(tmp_path / "p") as p:
        assert p.upgraded_from is None
    assert not list((tmp_path / "p" / BACKUP_DIR).glob("*.schema*"))


def test_no_upgrade_when_the_copy_cannot_be_kept(tmp_path, monkeypatch):
    """A full disk while keeping the copy: the project is left at its old schema, in words."""
    db = _old_project(tmp_path / "old", 2)
    before = _dump(db)
    real = os.replace

    def full(src, dst):
        if ".schema" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ProjectError) as err:
        Project.open(db.parent)
    msg = str(err.value)
    assert "disk is full" in msg and "nothing was changed" in msg and "schema 2" in msg
    monkeypatch.setattr(os, "replace", real)
    assert _dump(db) == before
    assert not [p for p in (db.parent / BACKUP_DIR).iterdir()]  # no half copy left


# ------------------------------------------------------------------ item 9: a full disk in words
def test_a_full_disk_while_opening_is_not_called_a_foreign_file(tmp_path, monkeypatch):
    """I31-9: "is not a PollenStudio project (disk I/O error)" invited giving up a healthy project."""
    Project.create(tmp_path / "p").close()
    db = tmp_path / "p" / DB_NAME
    real_connect = sqlite3.connect

    class _FullDisk:
        def execute(self, *a, **k):
            raise sqlite3.OperationalError("disk I/O error")

        def close(self):
            pass

    def connect(target, *a, **k):
        return _FullDisk() if "mode=ro" in str(target) else real_connect(target, *a, **k)

    import shutil

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    before = db.read_bytes()
    with pytest.raises(ProjectError) as err:
        Project.open(tmp_path / "p")
    msg = str(err.value)
    assert "disk is full" in msg and "not damaged" in msg
    assert "not a PollenStudio project" not in msg
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert db.read_bytes() == before
    Project.open(tmp_path / "p").close()


def test_a_full_disk_while_editing_says_so_and_loses_nothing_saved(tmp_path):
    """SQLITE_FULL (a real one: the file may not grow) is said as a full disk, not as damage."""
    p = Project.create(tmp_path / "p")
    cid = p.add_category("Olea")
    pages = p._conn.execute("PRAGMA page_count").fetchone()[0]
    p._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(ProjectError) as err:
        with p.importing():
            p.bulk_insert([], [{"image_id": 1, "box": Box(1, 1, 9, 9), "category_id": cid, "status": "added",
                                "source": "human"} for _ in range(20000)])
    assert "disk is full" in str(err.value) and "not saved" in str(err.value)
    assert not isinstance(err.value, DamagedProjectError) and not p._damaged
    p._conn.execute("PRAGMA max_page_count = 1073741823")
    assert p.add_category("Pinus") > cid  # not marked damaged: work goes on once there is space
    p.close()
    with Project.open(tmp_path / "p") as q:
        assert [c.name for c in q.categories()] == ["Olea", "Pinus"]


def _full_disk(monkeypatch, fail_from: int = 0):
    """Every file written from the ``fail_from``-th temporary file on meets a full disk: the
    temporary file's descriptor is /dev/full (the kernel's ENOSPC on write), and safetensors'
    own writer raises what it raises on a full disk (its I/O error, os error 28)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    import safetensors.torch
    from safetensors import SafetensorError

    real_mkstemp, real_save_file = tempfile.mkstemp, safetensors.torch.save_file
    state = {"n": 0, "full": False}

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        state["n"] += 1
        state["full"] = state["n"] > fail_from
        fd, name = real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)
        if not state["full"]:
            return fd, name
        os.close(fd)  # ``name`` stays an ordinary (empty) file; the data goes nowhere
        return os.open("/dev/full", os.O_WRONLY), name

    def save_file(tensors, filename, metadata=None):
        if state["full"]:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    return state


def test_a_model_file_on_a_full_disk_is_a_write_error_in_words(tmp_path, monkeypatch):
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    model = build_model(ModelConfig.tiny("base", nc=1, class_names=["Olea"], imgsz=64))
    out = save_checkpoint(tmp_path / "m.safetensors", model)
    good = out.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(WriteError, match="the disk is full"):
        save_checkpoint(out, model)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file
    load_checkpoint(out)


def _small_project(folder: Path, n: int = 8, size: int = 128) -> Project:
    from pollenstudio.engine.synthetic import SynthConfig, generate_image

    cfg = SynthConfig(width=size, height=size, difficulty="easy", taxa=("Poaceae",), n_grains=(2, 3),
                      grain_size=(22.0, 40.0))
    (folder / "images").mkdir(parents=True)
    items = []
    for i in range(n):
        img, objs = generate_image(i, cfg)
        path = folder / "images" / f"im{i}.png"
        cv2.imwrite(str(path), img[..., ::-1])
        items.append((path, objs))
    pr = Project.create(folder / "proj")
    pr.add_images([p for p, _ in items])
    cats = pr.ensure_categories(["Poaceae"])
    recs = {Path(r.path).name: r for r in pr.images()}
    with pr.batch("truth"):
        for path, objs in items:
            for o in objs:
                pr.add_annotation(recs[path.name].id, Box(*o["bbox"]), cats[o["name"]])
    return pr


def _cfg(**kw):
    from pollenstudio.engine.augment import AugmentConfig
    from pollenstudio.engine.train import TrainConfig

    base = dict(epochs=2, imgsz=128, batch=4, lr0=0.006, warmup_epochs=1, patience=0, device="cpu", threads=1,
                augment=AugmentConfig(mosaic=0.0, scale=0.2, translate=0.05))
    base.update(kw)
    return TrainConfig(**base)


def test_a_full_disk_while_training_keeps_the_last_epoch_and_resumes(tmp_path, monkeypatch):
    """I31-9: SafetensorError and a traceback ("this is a bug", rc 70); now: the disk is full,
    the project unchanged, the last finished epoch kept, --resume finishes the training."""
    import torch

    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.engine.train import train_project

    torch.set_num_threads(1)
    pr = _small_project(tmp_path)
    before = sorted((a.id, a.box) for a in pr.iter_annotations())
    state = _full_disk(monkeypatch, fail_from=2)  # epoch 0 writes best + last.ckpt; epoch 1 finds no space
    with pytest.raises(WriteError) as err:
        train_project(pr, _cfg(), model_cfg=ModelConfig.tiny("base"))
    msg = str(err.value)
    assert "the disk is full" in msg and "--resume" in msg and "unchanged" in msg
    assert state["n"] > 2
    run = pr.runs("train")[-1]
    assert run.status == "failed" and pr.model_versions() == []
    wd = pr.folder / run.params["work_dir"]
    assert sorted(p.name for p in wd.iterdir()) == ["best.safetensors", "last.ckpt"]  # no temp file
    assert sorted((a.id, a.box) for a in pr.iter_annotations()) == before
    monkeypatch.undo()  # space again
    res = train_project(pr, _cfg(), resume=True)
    assert res.result.epochs_run == 2 and len(pr.model_versions()) == 1
    pr.close()


def test_cli_train_on_a_full_disk_says_so_without_a_traceback(tmp_path, monkeypatch, capsys):
    from pollenstudio.cli import main

    _small_project(tmp_path, n=6).close()
    monkeypatch.delenv("POLLENSTUDIO_DEBUG", raising=False)
    _full_disk(monkeypatch)
    rc = main(["train", str(tmp_path / "proj"), "--tiny", "--stage", "detector", "--epochs", "1", "--imgsz", "128",
               "--batch", "4", "--device", "cpu", "--no-compare", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "the disk is full" in err and "bug" not in err and "Traceback" not in err


# ------------------------------------------------------------------ item 17: killed before the first checkpoint
def test_a_training_killed_before_its_first_state_leaves_no_orphan(tmp_path):
    """I31-17: SIGKILL between best.safetensors and the first last.ckpt left 12 MB for ever and
    --resume said there was nothing to resume."""
    from pollenstudio.engine.train import train_project

    _small_project(tmp_path, n=6).close()
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(1)
        import pollenstudio.engine.train as tr
        from pollenstudio.detector.config import ModelConfig
        from pollenstudio.engine.augment import AugmentConfig
        from pollenstudio.project import Project
        def killed(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)  # after best.safetensors, before the first last.ckpt
        tr.save_train_state = killed
        p = Project.open({str(tmp_path / "proj")!r})
        cfg = tr.TrainConfig(epochs=2, imgsz=128, batch=4, device="cpu", threads=1, patience=0,
                             augment=AugmentConfig(mosaic=0.0))
        tr.train_project(p, cfg, model_cfg=ModelConfig.tiny("base"))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == -signal.SIGKILL, res.stderr
    pr = Project.open(tmp_path / "proj")
    (run,) = pr.runs("train")
    assert run.status == "interrupted"
    wd = pr.folder / run.params["work_dir"]
    assert (wd / "best.safetensors").is_file() and not (wd / "last.ckpt").exists()  # what the kill leaves
    with pytest.raises(ProjectError) as err:
        train_project(pr, _cfg(), resume=True)
    msg = str(err.value)
    assert f"run {run.id}" in msg and "first epoch" in msg and "removed" in msg
    assert not wd.exists()
    with pytest.raises(ProjectError, match="no interrupted training"):  # true now, and nothing else removed
        train_project(pr, _cfg(), resume=True)
    assert (pr.folder / DB_NAME).is_file()
    pr.close()


def test_runs_that_can_be_resumed_or_are_running_keep_their_folders(tmp_path):
    from pollenstudio.engine.train import remove_unresumable_runs

    pr = Project.create(tmp_path / "p")
    runs = pr.folder / "models" / "runs"
    made = {}
    for name, status, files in (("train-a", "failed", ["best.safetensors", "last.ckpt"]),
                                ("train-b", "running", ["best.safetensors"]),
                                ("train-c", "interrupted", ["best.safetensors"]),
                                ("train-d", "cancelled", [])):
        (runs / name).mkdir(parents=True)
        for f in files:
            (runs / name / f).write_bytes(b"x" * 1000)
        rid = pr.start_run("train", {"work_dir": f"models/runs/{name}"})
        if status != "running":
            pr.finish_run(rid, status)
        made[name] = rid
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    rid = pr.start_run("train", {"work_dir": str(outside)})  # a crafted record never removes other folders
    pr.finish_run(rid, "failed")
    removed = remove_unresumable_runs(pr)
    assert sorted(r.id for r, _ in removed) == [made["train-c"], made["train-d"]]
    assert dict((r.id, size) for r, size in removed)[made["train-c"]] == 1000
    assert sorted(p.name for p in runs.iterdir()) == ["train-a", "train-b"]
    assert (outside / "keep.txt").read_text() == "mine"
    pr.close()


# ------------------------------------------------------------------ item 18: names, backend, permissions
BAD_NAMES = ["Ole\na", "v1\x1b[31mred", "Pinus\u202egnp", "Betula\u2066x", "tab\there", "\ud800"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_every_way_a_name_comes_in_refuses_control_and_direction_characters(tmp_path, bad):
    p = Project.create(tmp_path / "p")
    cid = p.add_category("Olea")
    mv = p.add_model_version("v1", None)
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((8, 8), np.uint8))
    p.add_images([img])
    attempts = {
        "add taxon": lambda: p.add_category(bad),
        "rename taxon": lambda: p.rename_category(cid, bad),
        "taxa of an import": lambda: p.ensure_categories([bad]),
        "new model version": lambda: p.add_model_version(bad, None),
        "rename model version": lambda: p.rename_model_version(mv, bad),
        "sample": lambda: p.set_images_group([1], bad),
        "sample of one image": lambda: p.set_image_group(1, bad),
    }
    for what, attempt in attempts.items():
        with pytest.raises(InvalidNameError):
            attempt()
            pytest.fail(f"{what} accepted {bad!r}")
    assert [c.name for c in p.categories()] == ["Olea"]
    assert [m.name for m in p.model_versions()] == ["v1"]
    assert p.image(1).group is None
    p.close()


def test_names_people_write_still_pass():
    from pollenstudio.core.names import check_name, clean_name

    for ok in ("Olea europaea", "Pinus (sylvestris type)", "Ranunculacées", "松属", "नागफनी", "Ole\u200da", "أولا"):
        assert check_name(f"  {ok} ") == ok
    with pytest.raises(InvalidNameError, match="U\\+202E"):
        check_name("x\u202ey", "model version name")
    assert clean_name("best\n\u202e\x1b.v2") == "best___.v2"


def test_a_coco_taxon_with_a_right_to_left_override_is_refused(tmp_path):
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.project.transfer import import_into

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 96), np.uint8))
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 64}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
           "categories": [{"id": 1, "name": "Pinus\u202egnp.exe"}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    p = Project.create(tmp_path / "p")
    with pytest.raises(PollenStudioError, match="U\\+202E"):
        import_into(p, tmp_path / "c.json")
    assert p.categories() == [] and p.annotation_count() == 0
    p.close()


def test_cli_refuses_a_bad_version_name_before_training(tmp_path, capsys):
    from pollenstudio.cli import main

    Project.create(tmp_path / "p").close()
    with pytest.raises(SystemExit) as ex:
        main(["train", str(tmp_path / "p"), "--tiny", "--name", "v2\x1b[2J"])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "model version name" in err and "control character" in err
    with Project.open(tmp_path / "p") as p:
        assert p.runs() == []


def test_an_unknown_backend_in_the_environment_is_refused_in_words(monkeypatch, tmp_path, capsys):
    from pollenstudio.cli import main
    from pollenstudio.engine.runtime import BACKENDS, BackendError, default_backend

    monkeypatch.setenv("POLLENSTUDIO_BACKEND", "bogus")
    with pytest.raises(BackendError) as err:
        default_backend()
    assert "POLLENSTUDIO_BACKEND" in str(err.value) and "'bogus'" in str(err.value)
    assert all(b in str(err.value) for b in BACKENDS)
    assert default_backend(strict=False) == "auto"  # the app: says so in its status bar, runs auto
    monkeypatch.setenv("POLLENSTUDIO_BACKEND", " OpenVINO ")
    assert default_backend() == "openvino"
    monkeypatch.setenv("POLLENSTUDIO_BACKEND", "bogus")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64), np.uint8))
    assert main(["detect", str(tmp_path), "--quiet"]) == 1
    assert "POLLENSTUDIO_BACKEND" in capsys.readouterr().err
    assert not (tmp_path / DB_NAME).exists()  # refused before anything was made


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_model_files_get_the_permissions_of_the_project_file(tmp_path, umask022):
    """I31-18: model files were 0600 (mkstemp's), the project file 0644."""
    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    Project.create(tmp_path / "p").close()
    project_mode = (tmp_path / "p" / DB_NAME).stat().st_mode & 0o777
    assert project_mode == umask022
    out = save_checkpoint(tmp_path / "p" / "models" / "v1.safetensors",
                          build_model(ModelConfig.tiny("base", nc=1, class_names=["Olea"], imgsz=64)))
    assert out.stat().st_mode & 0o777 == project_mode


def test_a_rewritten_file_keeps_its_own_permissions(tmp_path, umask022):
    f = tmp_path / "counts.csv"
    write_text(f, "a\n")
    assert f.stat().st_mode & 0o777 == umask022
    os.chmod(f, 0o640)  # the user made it private to the group
    with atomic_write(f) as fh:
        fh.write("b\n")
    assert f.read_text() == "b\n" and f.stat().st_mode & 0o777 == 0o640
