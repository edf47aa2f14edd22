"""`pollenstudio demo`: a demo project with N generated images (no true boxes) and the
default model active, reused while intact, never left half-made. The tiny test model
stands in for the shipped default (POLLENSTUDIO_MODELS points at a folder holding it)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from fixtures_models import TAXA, tiny_model_path  # noqa: F401

from pollenstudio.cli import main
from pollenstudio.engine import demo
from pollenstudio.core.errors import Cancelled, CheckpointError
from pollenstudio.core.progress import CancelToken
from pollenstudio.core.types import Box
from pollenstudio.project import Project


@pytest.fixture
def models_dir(tmp_path, tiny_model_path, monkeypatch):
    """A models folder where the tiny model is the installed default."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copyfile(tiny_model_path, d / "hieraedgenet-n.safetensors")
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(d))
    return d


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_demo_cli_creates_the_project_then_reuses_it_with_the_review_work(tmp_path, models_dir, capsys):
    target = tmp_path / "data" / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "pollenstudio", "demo", "--dir", str(target), "--n", "3", "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["created"] is True and out["images"] == 3 and out["model"] == "hieraedgenet-n"
    assert out["folder"] == str(target.resolve())
    assert _leftovers(target.parent) == ["demo"]  # no building folder left next to it

    with Project.open(target) as proj:
        assert proj.image_count() == 3 and proj.annotation_count() == 0  # the user finds the grains
        assert [r.path for r in proj.images()] == ["images/field_01.png", "images/field_02.png", "images/field_03.png"]
        assert [f.name for f in target.rglob("*.json")] == ["demo.json"]  # no file of true boxes
        mv = proj.active_model_version()
        assert mv is not None and mv.id == out["model_version_id"] and mv.name == "hieraedgenet-n"
        weights = proj.model_file(mv)
        # the model travels with the project: it still works after the installation moves
        assert weights.parent == target.resolve() / "models" and weights.read_bytes() == (
            models_dir / "hieraedgenet-n.safetensors").read_bytes()
        assert [c.name for c in proj.categories()] == list(TAXA)  # the model's taxa, hotkeys 1..n
        assert not proj.can_undo()  # the user's first Ctrl+Z does not take the demo apart
        rec = proj.images()[0]
        kept = proj.add_annotation(rec.id, Box(10, 10, 60, 60), proj.categories()[0].id)

    # the same pixels as `pollenstudio synth --seed 2026`, a seed the default model never saw
    from pollenstudio.engine.synthetic import SynthConfig, generate_dataset

    generate_dataset(tmp_path / "synth", 1, seed=demo.DEMO_SEED, cfg=SynthConfig(width=640, height=480))
    synth_png = (tmp_path / "synth" / "images" / "000000.png").read_bytes()
    assert synth_png == (target / "images" / "field_01.png").read_bytes()

    # second run: reused as it is, the review work kept, even with no model installed any more
    shutil.rmtree(models_dir)
    assert main(["demo", "--dir", str(target), "--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["created"] is False and again["images"] == 3 and again["model_version_id"] == out["model_version_id"]
    with Project.open(target) as proj:
        assert [a.id for a in proj.annotations(rec.id)] == [kept]

    # another size is asked for: say how, change nothing
    assert main(["demo", "--dir", str(target), "--n", "2"]) == 1
    assert "--fresh" in capsys.readouterr().err
    with Project.open(target) as proj:
        assert proj.image_count() == 3


def test_fresh_rebuilds_and_a_broken_demo_is_rebuilt(tmp_path, models_dir, capsys):
    target = tmp_path / "demo"
    assert main(["demo", "--dir", str(target), "--n", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(target.resolve())
    with Project.open(target) as proj:
        proj.add_annotation(proj.images()[0].id, Box(5, 5, 50, 50), proj.categories()[0].id)

    assert main(["demo", "--dir", str(target), "--n", "1", "--fresh", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] is True
    with Project.open(target) as proj:
        assert proj.image_count() == 1 and proj.annotation_count() == 0
    assert _leftovers(tmp_path) == ["demo", "models"]

    (target / "images" / "field_01.png").unlink()  # e.g. a cleaning tool removed an image
    assert "missing" in demo.check_demo(target)
    res = demo.create_demo(target, n=1)
    assert res.created and res.images == 1
    assert demo.check_demo(target) is None


def test_missing_or_broken_model_leaves_nothing_behind(tmp_path, models_dir, capsys, monkeypatch):
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(empty))
    parent = tmp_path / "userdata"
    assert main(["demo", "--dir", str(parent / "demo"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no default model" in err and "--model" in err
    assert not parent.exists()

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model at all" * 10)
    with pytest.raises(CheckpointError):
        demo.create_demo(parent / "demo", model=broken)
    assert not parent.exists()

    # --fresh with a broken model keeps the demo that was there
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(models_dir))
    good = demo.create_demo(parent / "demo", n=1)
    with pytest.raises(CheckpointError):
        demo.create_demo(parent / "demo", n=1, fresh=True, model=broken)
    assert demo.check_demo(good.folder) is None and _leftovers(parent) == ["demo"]


def test_cancel_while_building_leaves_nothing_and_foreign_folders_are_refused(tmp_path, models_dir):
    class CancelAfter(CancelToken):
        def update(self, done, total, message=""):
            super().update(done, total, message)
            self.seen.append(message)
            if message == "drawing image 2 of 3":
                self.cancel()

    token = CancelAfter()
    token.seen = []
    with pytest.raises(Cancelled):
        demo.create_demo(tmp_path / "demo", n=3, progress=token)
    assert token.seen == ["loading the model", "drawing image 1 of 3", "drawing image 2 of 3"]
    assert _leftovers(tmp_path) == ["models"]

    mine = tmp_path / "my-slides"
    mine.mkdir()
    (mine / "slide.png").write_bytes(b"x")
    with pytest.raises(Exception, match="not a PollenStudio demo"):
        demo.create_demo(mine, n=1, fresh=True)
    assert _leftovers(mine) == ["slide.png"]


def test_default_folder_is_per_user_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv(demo.ENV_DIR, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert demo.default_demo_dir() == tmp_path / "xdg" / "PollenStudio" / "demo"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert demo.default_demo_dir() == tmp_path / "local" / "PollenStudio" / "demo"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert demo.default_demo_dir().parts[-4:] == ("Library", "Application Support", "PollenStudio", "demo")
    monkeypatch.setenv(demo.ENV_DIR, str(tmp_path / "here"))
    assert demo.default_demo_dir() == tmp_path / "here"


def test_open_hands_the_demo_to_the_main_window(tmp_path, models_dir, monkeypatch):
    import pollenstudio.commands.gui as gui_cmd

    opened = []
    monkeypatch.setattr(gui_cmd, "run", lambda args: opened.append(args.project) or 0)
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--n", "1", "--open", "--quiet"]) == 0
    assert opened == [str((tmp_path / "demo").resolve())]


@pytest.mark.slow
def test_demo_with_the_shipped_model_finds_most_grains(tmp_path):
    """The real thing: the demo's own (shipped) model detects most of the grains the
    generator drew on the demo images (truth from the same synth seed)."""
    from pollenstudio.engine.detect_job import detect_project
    from pollenstudio.engine.paths import taxa_model_path
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.engine.synthetic import SynthConfig, generate_dataset

    taxa_model_path()  # the model ships in models/: its absence is a failure, not a skip
    res = demo.create_demo(tmp_path / "demo", n=2)
    with Project.open(res.folder) as proj:
        pred = Predictor.from_project(proj, device="cpu")
        assert pred.model_version_id == res.model_version_id  # the demo's active model, not a fallback
        summary = detect_project(proj, pred)
        assert summary.done == 2
        found = {r.path.rsplit("/", 1)[-1]: [a.box for a in proj.annotations(r.id)] for r in proj.images()}
    truth = json.loads(generate_dataset(tmp_path / "truth", 2, seed=demo.DEMO_SEED,
                                        cfg=SynthConfig(width=640, height=480)).read_text())
    hits = total = 0
    for im in truth["images"]:
        boxes = found[f"field_{im['id']:02d}.png"]
        for a in (a for a in truth["annotations"] if a["image_id"] == im["id"]):
            total += 1
            hits += any(Box.from_xywh(*a["bbox"]).iou(b) >= 0.5 for b in boxes)
    assert total and hits / total >= 0.8, f"{hits} of {total} grains found"

