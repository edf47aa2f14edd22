"""Which model a reference means: the one resolver every command, job and view uses.

A model reference (``ref``) is one of:

- ``None`` (or ``""``): the project's active model version, else the shipped default model;
- an int or a string of digits: that model version of the project;
- a path to an existing checkpoint file;
- the name of a model version of the project (when no such file exists).

:func:`resolve_model` answers with a :class:`ResolvedModel` (file, version id, label) or a
typed error from :mod:`pollenstudio.core.errors` saying what is wrong: an unknown version
(``ProjectError``), a missing file or no model at all (``CheckpointError``). It never
quietly falls back to another model: proposals record which model wrote them.

Also the thin routes the GUI takes to the detector's checkpoint and config code
(:func:`check_checkpoint`, :func:`scratch_model_config`), so gui never imports detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pollenstudio.core.errors import CheckpointError, ProjectError

DEFAULT_LABEL = "shipped default model"


@dataclass(frozen=True)
class ResolvedModel:
    """A model file and where it came from.

    kind: "active" (the project's active version), "default" (the shipped default model,
    no version active), "version" (a version asked for by id or name) or "file" (a path).
    version_id: the project's model version of that file (for "file": the version whose
    file it is, if any); None when it is not a version of the project.
    """

    path: Path
    version_id: int | None
    label: str  # version name, "shipped default model", or the file's name
    kind: str

    @property
    def key(self) -> tuple:
        """Changes when the reference means another model or its file is replaced: a
        cache of loaded models keys on it."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        return (str(self.path), stamp, self.version_id)

    def as_base(self):
        """This model as the ``base`` of ``engine.train.train_project``: a version of the
        project by id (so the new version records it as its parent), anything else by file."""
        return self.version_id if self.kind in ("active", "version") and self.version_id is not None else str(self.path)


def _is_id(ref) -> bool:
    return (isinstance(ref, int) and not isinstance(ref, bool)) or (isinstance(ref, str) and ref.isdigit())


def _version_file(project, mv, active: bool) -> Path:
    path = project.model_file(mv)
    if path is None or not path.is_file():
        raise CheckpointError(
            f"the weights file of {'the active ' if active else ''}model version {mv.id} ({mv.name}) is missing"
            + (f": {path}" if path is not None else "")
            + (". Activate another version (Model menu) or choose a model file." if active else "")
        )
    return path


def _version_of_file(project, path: Path) -> int | None:
    if project is None:
        return None
    resolved = path.resolve()
    for mv in project.model_versions():
        f = project.model_file(mv)
        if f is not None and f.resolve() == resolved:
            return mv.id
    return None


def resolve_model(project, ref=None) -> ResolvedModel:
    """The model ``ref`` means for ``project`` (which may be None: files and the default
    only). See the module docstring for the forms of ``ref``."""
    from pollenstudio.engine.paths import default_model_path

    if ref is None or ref == "":
        mv = project.active_model_version() if project is not None else None
        if mv is None:
            return ResolvedModel(default_model_path(), None, DEFAULT_LABEL, "default")
        return ResolvedModel(_version_file(project, mv, True), mv.id, mv.name, "active")
    if _is_id(ref):
        if project is None:
            raise CheckpointError(f"model version {ref} needs a project; outside one give a model file")
        mv = project.model_version(int(ref))  # ProjectError: not in the project
        return ResolvedModel(_version_file(project, mv, False), mv.id, mv.name, "version")
    path = Path(ref).expanduser()
    if path.is_file():
        return ResolvedModel(path, _version_of_file(project, path), path.name, "file")
    if project is not None and isinstance(ref, str):
        named = [mv for mv in project.model_versions() if mv.name == ref]
        if len(named) > 1:
            raise ProjectError(f"{len(named)} model versions are named {ref!r} "
                               f"(ids {', '.join(str(mv.id) for mv in named)}); give the version id")
        if named:
            mv = named[0]
            return ResolvedModel(_version_file(project, mv, False), mv.id, mv.name, "version")
    raise CheckpointError(
        f"model not found: {ref} is neither a model file"
        + (" nor a model version id or name of the project" if project is not None else "")
    )


def active_model(project) -> ResolvedModel | None:
    """What detection uses now, or None when there is none to use (no active version and
    no default installed, or the active version's file is gone: :func:`resolve_model`
    says which)."""
    try:
        return resolve_model(project, None)
    except CheckpointError:
        return None


SCRATCH = "scratch"  # the base reference that means a new network: train from scratch


def training_base(project, ref=None) -> ResolvedModel | None:
    """What a training of ``project`` starts from (``pollenstudio train --base``, the
    training dashboard). ``ref`` None or "": the model in use (:func:`resolve_model`: the
    active version, else the shipped default model, the grain model included), or None
    when there is none at all (no active version and no model installed); "scratch": None,
    a new network; anything else as :func:`resolve_model` reads it. An active version whose
    file is gone is an error (CheckpointError), never quietly replaced by a new network."""
    if isinstance(ref, str) and ref.strip().lower() == SCRATCH:
        return None
    if ref is None or ref == "":
        if project is None or project.active_model_version() is None:
            try:
                return resolve_model(project, None)
            except CheckpointError:  # no default model installed: nothing to start from
                return None
    return resolve_model(project, ref)


def check_class_names(names, source: str = "the model") -> None:
    """Every name a model gives its detections becomes a taxon of the project: check them all
    (the rule of :func:`pollenstudio.core.names.check_name`, and no spaces at either end)
    before a detection touches the project, so that a class name that cannot be a taxon
    stops it at once, not on the image where that class is first found (leaving half a run
    behind). CheckpointError names the class."""
    from pollenstudio.core.names import check_name

    for i, name in enumerate(names):
        try:
            clean = check_name(name, "taxon name")
        except ProjectError as exc:
            raise CheckpointError(f"{source}: its class {i + 1} cannot become a taxon of the project ({exc}); "
                                  "nothing was changed") from None
        if clean != name:
            raise CheckpointError(f"{source}: its class {i + 1} name {name!r} has spaces at either end, so it "
                                  "cannot become a taxon as it is; nothing was changed")


def file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def register_model_file(project, path, config: dict | None = None, registered_by: str = "detect") -> int:
    """The project's model version of the checkpoint file ``path``, registered (not
    activated) only when the project has none yet, so every proposal records which model
    wrote it. A version holding the same file (same path, and the same content when the
    version recorded its SHA-256) is reused: detecting again with the shipped default model
    adds no second identical version; other weights written over that path are a new one."""
    from pollenstudio.core.names import clean_name

    p = Path(path)
    digest = file_sha256(p)
    resolved = p.resolve()
    for mv in project.model_versions():
        f = project.model_file(mv)
        if f is None or f.resolve() != resolved:
            continue
        if (mv.summary or {}).get("sha256") in (None, digest):
            return mv.id
    name = project.unique_model_version_name(clean_name(p.stem, "model"))
    return project.add_model_version(name, p, config=config, summary={"registered_by": registered_by, "sha256": digest})


def check_checkpoint(path):
    """Load a checkpoint fully (safely: no code runs) to check that it works before it
    becomes a model version. Returns its ModelConfig."""
    from pollenstudio.detector.checkpoint import load_checkpoint

    _model, cfg, _meta = load_checkpoint(path, device="cpu")
    return cfg


def scratch_model_config(imgsz: int = 640, variant: str = "full", scale: str = "n", tiny: bool = False):
    """The architecture of a model trained from scratch: HieraEdgeNet ``variant`` at
    ``scale``; ``tiny`` = the milliseconds-fast model of the same design (tests, demos)."""
    from pollenstudio.detector.config import ModelConfig

    make = ModelConfig.tiny if tiny else ModelConfig.variant
    return make(variant, scale=scale, imgsz=imgsz)


__all__ = ["DEFAULT_LABEL", "SCRATCH", "ResolvedModel", "active_model", "check_checkpoint",
           "resolve_model", "scratch_model_config", "training_base", "check_class_names", "file_sha256",
           "register_model_file"]
