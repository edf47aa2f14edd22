"""The demo project: generated micrographs with the shipped default model active.

The demo is a handful of synthetic 640x480 brightfield micrographs (``field_01.png``, ...
are the images of ``pollenstudio synth --seed 2026 --n 8`` in order; the default model was
trained on other seeds) WITHOUT their true boxes: the user detects, reviews, retrains and
exports as on real slides. It lives in a per-user data folder (``POLLENSTUDIO_DEMO_DIR`` or
``--dir`` overrides) and is reused while intact, so review work in it survives. It is built
in a temporary folder next to its final place and renamed at the end: a missing model, a
cancel or a crash leaves nothing half-made. The model file is copied into the project, so
the demo keeps working when the installation moves.

The welcome page calls :func:`demo_project_path` (in a worker) for "Open demo project";
``pollenstudio demo`` (``commands/demo.py``) is the command line over :func:`create_demo`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

DEMO_SEED = 2026  # never a training seed (the default model was trained on seeds 7 and 99)
DEMO_IMAGES = 8
DEMO_SIZE = (640, 480)
DEMO_DIFFICULTY = "default"
MARKER = "demo.json"  # written last into the project: marks a complete demo of ours
PROJECT_NAME = "PollenStudio demo"
ENV_DIR = "POLLENSTUDIO_DEMO_DIR"


@dataclass
class DemoResult:
    folder: Path
    created: bool  # False: an intact demo was reused
    images: int
    model_version_id: int | None
    model: str  # name of the active model version
    model_file: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["folder"] = str(self.folder)
        return d


def default_demo_dir() -> Path:
    """Where the demo project lives: ``$POLLENSTUDIO_DEMO_DIR``, else a per-user data folder
    (Linux ``$XDG_DATA_HOME`` or ``~/.local/share``, Windows ``%LOCALAPPDATA%``, macOS
    ``~/Library/Application Support``) + ``PollenStudio/demo``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "PollenStudio" / "demo"


def is_demo_project(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is the demo project (it holds our marker file). The app keeps the
    demo's taxa out of the user's own taxon list: opening the demo gave its six taxa the
    first digit keys of every later project."""
    return (Path(folder) / MARKER).is_file()


def _read_marker(folder: Path) -> dict | None:
    import json

    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_demo(folder: str | os.PathLike) -> str | None:
    """None when ``folder`` holds a complete demo whose images and active model file are
    all there; else why not, in words."""
    from pollenstudio.core.errors import PollenStudioError
    from pollenstudio.project import Project

    folder = Path(folder)
    marker = _read_marker(folder)
    if marker is None:
        return f"{folder} is not a finished demo project ({MARKER} missing or unreadable)"
    try:
        with Project.open(folder) as proj:
            n = proj.image_count()
            if n != marker.get("images"):
                return f"the demo should hold {marker.get('images')} images, it holds {n}"
            missing = proj.missing_images()
            if missing:
                return f"{len(missing)} demo images are missing (e.g. {missing[0].path})"
            mv = proj.active_model_version()
            if mv is None:
                return "the demo has no active model"
            f = proj.model_file(mv)
            if f is None or not f.is_file():
                return f"the demo's active model file is missing ({mv.file})"
    except PollenStudioError as exc:
        return str(exc)
    return None


def _existing_result(folder: Path) -> DemoResult:
    from pollenstudio.project import Project

    with Project.open(folder) as proj:
        mv = proj.active_model_version()
        return DemoResult(proj.folder, False, proj.image_count(), mv.id, mv.name, str(proj.model_file(mv)))


def _check_model(model) -> tuple[Path, object, dict]:
    """The model file to ship in the demo, loaded once with the safe loader so a broken file
    is refused before anything is written. -> (path, ModelConfig, meta)."""
    from pollenstudio.engine.models import resolve_model
    from pollenstudio.engine.paths import taxa_model_path

    # None: the shipped six-taxon model, whose taxa the generated demo images show (not the
    # grain model new projects use); CheckpointError saying what to do when none is installed
    path = taxa_model_path() if model is None else resolve_model(None, model).path
    from pollenstudio.detector.checkpoint import load_checkpoint

    _model, cfg, meta = load_checkpoint(path, device="cpu")
    return path, cfg, meta


class _Steps:
    """Maps one sub-job's progress (drawing, then adding images) onto one bar of 2n steps,
    in words a user follows ("drawing image 3 of 8"), instead of raw file names."""

    def __init__(self, progress, offset: int, total: int, verb: str):
        self.p, self.offset, self.total, self.verb = progress, offset, total, verb

    def update(self, done: int, total: int, message: str = "") -> None:
        done = min(done, total)
        self.p.update(self.offset + done, self.total, f"{self.verb} image {max(done, 1)} of {total}")

    @property
    def cancelled(self) -> bool:
        return self.p.cancelled

    def check(self) -> None:
        self.p.check()


def _build(tmp: Path, n: int, model_path: Path, cfg, meta: dict, progress) -> None:
    """Fill the empty folder ``tmp`` with the demo project (closed on return)."""
    import json
    import shutil
    import time

    from pollenstudio import __version__
    from pollenstudio.core.imageio import file_sha256
    from pollenstudio.engine.synthetic import SynthConfig, generate_dataset
    from pollenstudio.project import Project

    w, h = DEMO_SIZE
    synth = SynthConfig(width=w, height=h, difficulty=DEMO_DIFFICULTY)
    gen = generate_dataset(tmp, n, seed=DEMO_SEED, cfg=synth, progress=_Steps(progress, 0, 2 * n, "drawing"))
    gen.unlink()  # the true boxes: the user finds the grains, as on a real slide
    for i in range(n):  # names a reader can talk about ("field 3"), in synth's order
        (tmp / "images" / f"{i:06d}.png").rename(tmp / "images" / f"field_{i + 1:02d}.png")
    progress.check()
    models = tmp / "models"
    models.mkdir()
    weights = models / model_path.name
    shutil.copyfile(model_path, weights)
    proj = Project.create(tmp, name=PROJECT_NAME)
    try:
        proj.ensure_categories(cfg.class_names)  # hotkeys 1-9 follow the model's class order
        res = proj.add_folder(tmp / "images", progress=_Steps(progress, n, 2 * n, "adding"))
        if res.errors or len(res.added) != n:
            from pollenstudio.core.errors import ProjectError

            raise ProjectError(f"the demo images could not be added ({res.errors[:1] or res.duplicates[:1]})")
        training = meta.get("training") or {}
        metrics = training.get("metrics") if isinstance(training, dict) else None
        proj.add_model_version(
            model_path.stem, weights, metrics=metrics if isinstance(metrics, dict) else None,
            config=cfg.to_dict(), summary={"registered_by": "demo", "source": str(model_path)}, activate=True,
        )
        proj.clear_history()  # the user's first Ctrl+Z must not undo the demo's set-up
    finally:
        proj.close()
    marker = dict(
        seed=DEMO_SEED, images=n, size=list(DEMO_SIZE), difficulty=DEMO_DIFFICULTY,
        model=model_path.name, model_sha256=file_sha256(weights), app_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        note=f"field_NN.png = image NN-1 of: pollenstudio synth --seed {DEMO_SEED} --n {n} --size {w}x{h}",
    )
    (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty folder next to the demo (same disk, so the final rename is atomic),
    with the user's usual permissions (tempfile.mkdtemp would make it private)."""
    import uuid

    while True:
        p = parent / f"{prefix}{uuid.uuid4().hex[:10]}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def create_demo(folder: str | os.PathLike | None = None, n: int | None = None, model=None, fresh: bool = False,
                progress=None) -> DemoResult:
    """Prepare the demo project in ``folder`` (default :func:`default_demo_dir`).

    An intact demo already there is reused as it is (the user's review work kept) unless
    ``fresh``; ``n`` (default 8) then must match or be None. A broken demo of ours is
    rebuilt; any other non-empty folder is refused. ``model``: a checkpoint file, default
    the shipped default model (``CheckpointError`` with what to do when it is missing).
    Nothing is written before the model has loaded, and the project appears only complete.
    """
    from pollenstudio.core.errors import ProjectError
    from pollenstudio.core.progress import NullProgress

    progress = progress if progress is not None else NullProgress()
    target = Path(folder).expanduser() if folder is not None else default_demo_dir()
    if target.exists() and not target.is_dir():
        raise ProjectError(f"{target} is a file, not a folder; choose another demo folder")
    ours = target.is_dir() and _read_marker(target) is not None
    if target.is_dir() and not ours and any(target.iterdir()):
        raise ProjectError(
            f"{target} is not empty and not a PollenStudio demo; choose an empty or new folder for the demo"
        )
    if ours and not fresh and check_demo(target) is None:
        have = _read_marker(target).get("images")
        if n is not None and n != have:
            raise ProjectError(
                f"the demo in {target} has {have} images; add --fresh to rebuild it with {n} (its review work is lost)"
            )
        progress.update(1, 1, "demo ready")
        return _existing_result(target)

    n = DEMO_IMAGES if n is None else int(n)
    if n < 1:
        raise ProjectError(f"the demo needs at least one image, got {n}")
    progress.update(0, 2 * n, "loading the model")
    model_path, cfg, meta = _check_model(model)  # before anything is written
    progress.check()

    parent = target.parent.resolve()  # resolved: the project stores paths relative to itself
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(parent, f".{target.name}-building-")
    old = None
    try:
        _build(tmp, n, model_path, cfg, meta, progress)
        progress.check()
        final = parent / target.name
        if final.exists():
            # a broken demo, --fresh, or an empty folder: move it aside, swap, then delete
            old = _fresh_dir(parent, f".{target.name}-old-")
            os.replace(final, old / "demo")
        try:
            os.replace(tmp, final)
        except OSError:
            if check_demo(final) is not None:
                raise
            _remove(tmp)  # another window or process finished the same demo first: use that one
            return _existing_result(final)
    except BaseException:
        _remove(tmp)
        if old is not None and not (parent / target.name).exists() and (old / "demo").exists():
            os.replace(old / "demo", parent / target.name)  # put the previous one back
        raise
    finally:
        if old is not None:
            _remove(old)
    progress.update(2 * n, 2 * n, "demo ready")
    res = _existing_result(final)
    res.created = True
    return res


def demo_project_path(progress=None) -> Path:
    """GUI hook (welcome page, "Open demo project"): prepare the demo where the user's
    demo lives and return its project folder. Slow (seconds): call it in a worker."""
    return create_demo(progress=progress).folder
