"""Issue 17: model configs bounded before any module is built (F6), NaN weights, images
replaced under the same name (F15), detect's half-made (F7) and half-registered (F14)
projects, honest detect summaries, interrupted runs, usage errors."""

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from pollenstudio.cli import main
from pollenstudio.core.errors import CheckpointError, ImageReadError, ImportFormatError, ModelMismatchError
from pollenstudio.core.types import Box, Detection
from pollenstudio.project import Project


def _img(path, w=96, h=64, value=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w), value, np.uint8)
    cv2.circle(img, (w // 2, h // 2), 12, 255 - value, -1)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A randomly initialised tiny checkpoint: loads in milliseconds, detects whatever."""
    from pollenstudio.detector.checkpoint import save_checkpoint
    from pollenstudio.detector.config import ModelConfig
    from pollenstudio.detector.model import build_model

    cfg = ModelConfig.tiny("full", nc=1, class_names=["Olea"], imgsz=128)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", build_model(cfg))


def _crafted(src, dst, tensors=None, **changes):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        md = dict(f.metadata())
    cfg = json.loads(md["config"])
    cfg.update(changes)
    md["config"] = json.dumps(cfg)
    save_file(tensors if tensors is not None else load_file(str(src)), str(dst), metadata=md)
    return dst


# ------------------------------------------------------------------------- F6
@pytest.mark.parametrize("changes", [
    {"depth": 5000.0}, {"width": -1.0}, {"width": 0.0}, {"width": float("nan")}, {"width": 1e6},
    {"omni_kernel": 100001}, {"max_channels": 10**9}, {"imgsz": -64}, {"reg_max": 0}, {"cspokm_e": float("inf")},
    {"nc": 10**7, "class_names": []}, {"sef_levels": "abc"}, {"cspokm_levels": [float("nan")]}, {"depth": "deep"},
    {"nc": True}, {"class_names": {"a": 1}},
])
def test_absurd_model_configs_are_refused_in_words(changes):
    from pollenstudio.detector.config import ModelConfig

    d = ModelConfig.tiny("full", nc=1).to_dict()
    d.update(changes)
    t0 = time.perf_counter()
    with pytest.raises(ModelMismatchError):
        ModelConfig.from_dict(d)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("changes", [{"depth": 5000.0}, {"width": float("nan")}, {"omni_kernel": 100001},
                                     {"width": 2.0, "max_channels": 2048}])
def test_crafted_checkpoints_are_refused_before_building(tiny_ckpt, tmp_path, changes):
    """F6: a tiny file whose config says depth=5000 ran > 100 s at ~6 GB. Configs within the
    bounds but not matching the file's weights are found on the meta device."""
    from pollenstudio.detector.checkpoint import load_checkpoint

    bad = _crafted(tiny_ckpt, tmp_path / "bad.safetensors", **changes)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    assert time.perf_counter() - t0 < 10.0


def test_nan_weights_are_refused(tiny_ckpt, tmp_path):
    """Smaller: all-NaN weights gave 0 proposals without a warning."""
    from safetensors.torch import load_file

    from pollenstudio.detector.checkpoint import load_checkpoint

    tensors = {k: (v * float("nan") if v.is_floating_point() else v) for k, v in load_file(str(tiny_ckpt)).items()}
    bad = _crafted(tiny_ckpt, tmp_path / "nan.safetensors", tensors=tensors)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(bad)


# ------------------------------------------------------------------------- F15
def test_an_image_replaced_under_the_same_name_is_not_used(tmp_path):
    """F15: another picture under the same name was used without a hash check."""
    p = Project.create(tmp_path / "p")
    _img(tmp_path / "p" / "a.png", 96, 64, 40)
    _img(tmp_path / "p" / "b.png", 96, 64, 60)
    _img(tmp_path / "p" / "c.png", 96, 64, 80)
    p.add_folder(tmp_path / "p")
    assert [p.file_problem(r) for r in p.images()] == [None, None, None]
    time.sleep(0.2)  # the replacement is newer than the registration
    _img(tmp_path / "p" / "a.png", 96, 64, 99)  # same size, other content
    _img(tmp_path / "p" / "b.png", 50, 50, 60)  # other size
    (tmp_path / "p" / "c.png").unlink()
    a, b, c = (p.file_problem(r) for r in p.images())
    assert "content changed" in a
    assert "50x50" in b
    assert "relink" in c
    p.close()


class _FakePredictor:
    """Just what detect_project needs: fixed detections per input."""

    source, model_version_id, conf, iou, max_det, tile, overlap, imgsz, batch = "fake", None, 0.25, 0.7, 300, "off", 0, 128, 1
    device_description = "cpu"
    timings: dict = {}

    def __init__(self, dets):
        self.dets = dets
        self.seen = []

    def reset_timings(self):
        pass

    def iter_predict(self, paths, progress, names=None):
        from types import SimpleNamespace

        for i, path in enumerate(paths):
            self.seen.append(str(path))
            yield SimpleNamespace(index=i, error=None, detections=list(self.dets))


def test_detect_skips_changed_files_and_counts_only_written_proposals(tmp_path):
    """F15 in the job, and the summary that said "0 proposals (Olea 63, ...)"."""
    from pollenstudio.engine.detect_job import detect_project

    p = Project.create(tmp_path / "p")
    for n in "abc":
        _img(tmp_path / "p" / f"{n}.png", 96, 64, 40 + ord(n))
    p.add_folder(tmp_path / "p")
    cid = p.add_category("Olea")
    for image_id in (1, 2):  # a person already decided the grain the model finds
        p.add_annotation(image_id, Box(10, 10, 30, 30), cid)
    (tmp_path / "p" / "c.png").unlink()
    pred = _FakePredictor([Detection(Box(10, 10, 30, 30), 0, "Olea", 0.9)])
    s = detect_project(p, pred)
    assert s.proposals == 0 and s.skipped == 2
    assert s.per_taxon == {}  # nothing was proposed
    assert [path for path, _ in s.failed] == ["c.png"] and len(pred.seen) == 2
    p.close()


# ------------------------------------------------------------------------- runs
def test_runs_of_killed_processes_are_marked_interrupted(tmp_path):
    """Smaller: killed runs stayed "running" for ever."""
    p = Project.create(tmp_path / "p")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rid = p.start_run("detect", {})
    mine = p.start_run("train", {})
    with p._tx() as conn:
        owner = json.loads(conn.execute("SELECT summary FROM runs WHERE id = ?", (rid,)).fetchone()[0])
        owner["pid"] = dead.pid
        conn.execute("UPDATE runs SET summary = ? WHERE id = ?", (json.dumps(owner), rid))
    p.close()
    with Project.open(tmp_path / "p") as p:
        assert p.run(rid).status == "interrupted"
        assert p.run(mine).status == "running"  # this process is alive


# ------------------------------------------------------------------------- detect CLI
def test_detect_with_a_bad_model_leaves_no_half_made_project(tmp_path, tiny_ckpt, capsys):
    """F7: `detect FOLDER --model bad.safetensors` left a project.pollen behind."""
    _img(tmp_path / "f" / "a.png")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x07" * 4096)
    crafted = _crafted(tiny_ckpt, tmp_path / "deep.safetensors", depth=5000.0)
    for model in (tmp_path / "garbage.safetensors", crafted):
        assert main(["detect", str(tmp_path / "f"), "--model", str(model), "--quiet"]) == 1
        assert not (tmp_path / "f" / "project.pollen").exists()
        assert "error:" in capsys.readouterr().err


def test_detect_after_a_kill_registers_the_remaining_images(tmp_path, tiny_ckpt, capsys):
    """F14: killed after creating the project, before registering every image: a rerun said
    "0/0 images" and did nothing."""
    from pollenstudio.commands.detect import _ADDING

    folder = tmp_path / "f"
    for n in "abc":
        _img(folder / f"{n}.png", 96, 64, 30 + ord(n))
    p = Project.create(folder)  # what the killed run left: the marker and one image
    p.set_meta(_ADDING, str(folder.resolve()))
    p.add_images([folder / "a.png"])
    p.close()
    assert main(["detect", str(folder), "--model", str(tiny_ckpt), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 3 and out["done"] == 3
    with Project.open(folder) as p:
        assert p.image_count() == 3 and p.get_meta(_ADDING) is None


@pytest.mark.parametrize("bad", [["--batch", "0"], ["--tile", "3"], ["--conf", "2"], ["--iou", "0"],
                                 ["--imgsz", "33"], ["--imgsz", "100000"]])
def test_detect_usage_errors_exit_2(tmp_path, bad, capsys):
    """Smaller: usage errors in detect exited 1 (and --imgsz 100000 tried 27.9 GiB)."""
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(tmp_path), *bad])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--lr0", "-1"], ["--lr0", "nan"], ["--workers", "-3"], ["--patience", "-1"]])
def test_train_usage_errors_exit_2(tmp_path, bad, capsys):
    """F8: these gave tracebacks."""
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), *bad])
    assert exc.value.code == 2


# ------------------------------------------------------------------------- images
def test_an_import_of_only_unreadable_files_is_an_error(tmp_path):
    """Smaller: it exited 0 (and left an empty project)."""
    from pollenstudio.project.transfer import import_to_folder

    (tmp_path / "src").mkdir()
    for k in range(2):
        (tmp_path / "src" / f"x{k}.png").write_bytes(b"not an image")
    with pytest.raises(ImportFormatError, match="none of the 2"):
        import_to_folder(tmp_path / "p", tmp_path / "src")
    assert not (tmp_path / "p").exists()


def test_a_multi_page_tiff_stack_is_refused_in_words(tmp_path):
    """Smaller: a multi-page TIFF silently used page 1."""
    import tifffile

    from pollenstudio.core.imageio import image_info, read_image

    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as w:
        for k in range(3):
            w.write(np.full((32, 32), k, np.uint8))
    for fn in (image_info, read_image):
        with pytest.raises(ImageReadError, match="stack of 3"):
            fn(path)
