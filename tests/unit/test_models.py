"""engine.models.resolve_model: the one answer to "which model does this reference mean",
and the predictor cache that keys on it."""

import os

import pytest

from pollenstudio.core.errors import CheckpointError, ProjectError
from pollenstudio.engine.models import DEFAULT_LABEL, resolve_model
from pollenstudio.project import Project


def _weights(path, content=b"weights"):
    """The resolver only finds files; nothing here loads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def project(tmp_path):
    proj = Project.create(tmp_path / "proj")
    yield proj
    proj.close()


@pytest.fixture
def default_model(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(folder))
    return _weights(folder / "default.safetensors")


def test_none_is_the_active_version(project, default_model):
    f = _weights(project.folder / "models" / "v2.safetensors")
    project.add_model_version("v1", _weights(project.folder / "models" / "v1.safetensors"))
    mv = project.add_model_version("v2 spring", f, activate=True)
    r = resolve_model(project, None)
    assert (r.path, r.version_id, r.label, r.kind) == (f, mv, "v2 spring", "active")
    assert resolve_model(project, "") == r


def test_none_without_an_active_version_is_the_shipped_default(project, default_model):
    project.add_model_version("v1", _weights(project.folder / "models" / "v1.safetensors"))  # not active
    r = resolve_model(project)
    assert (r.path, r.version_id, r.label, r.kind) == (default_model, None, DEFAULT_LABEL, "default")
    assert resolve_model(None).path == default_model  # no project: the default too


def test_none_without_any_model_says_what_to_do(project, tmp_path, monkeypatch):
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="no default model is installed"):
        resolve_model(project)


def test_a_version_id_as_int_or_digits(project, default_model):
    f = _weights(project.folder / "models" / "v1.safetensors")
    mv = project.add_model_version("v1", f)
    for ref in (mv, str(mv)):
        r = resolve_model(project, ref)
        assert (r.path, r.version_id, r.label, r.kind) == (f, mv, "v1", "version")


def test_an_unknown_version_id_is_a_project_error(project, default_model):
    with pytest.raises(ProjectError, match="model version 99 is not in the project"):
        resolve_model(project, 99)
    with pytest.raises(CheckpointError, match="needs a project"):
        resolve_model(None, 3)


def test_a_version_name(project, default_model):
    f = _weights(project.folder / "models" / "a.safetensors")
    mv = project.add_model_version("birch 2024", f)
    assert resolve_model(project, "birch 2024").version_id == mv
    project.add_model_version("birch 2024", _weights(project.folder / "models" / "b.safetensors"))
    with pytest.raises(ProjectError, match="2 model versions are named 'birch 2024'"):
        resolve_model(project, "birch 2024")


def test_a_file_path_names_the_version_that_holds_it(project, default_model, tmp_path):
    f = _weights(project.folder / "models" / "v1.safetensors")
    mv = project.add_model_version("v1", f)
    r = resolve_model(project, str(f))
    assert (r.path, r.version_id, r.label, r.kind) == (f, mv, "v1.safetensors", "file")
    outside = _weights(tmp_path / "elsewhere" / "lab.safetensors")
    r = resolve_model(project, outside)
    assert (r.path, r.version_id, r.kind) == (outside, None, "file")
    assert resolve_model(None, outside).path == outside


def test_a_missing_file_or_unknown_name_is_a_checkpoint_error(project, default_model, tmp_path):
    with pytest.raises(CheckpointError, match="model not found: .*nope.safetensors"):
        resolve_model(project, tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="model not found: no such version"):
        resolve_model(project, "no such version")


def test_an_active_version_whose_file_is_gone_is_named_never_the_default(project, default_model):
    f = _weights(project.folder / "models" / "lost.safetensors")
    mv = project.add_model_version("retrained", f, activate=True)
    f.unlink()
    with pytest.raises(CheckpointError, match=rf"active model version {mv} \(retrained\) is missing"):
        resolve_model(project)
    with pytest.raises(CheckpointError, match=rf"model version {mv} \(retrained\) is missing"):
        resolve_model(project, mv)


def test_the_key_changes_with_the_active_version_and_the_file(project, default_model):
    f1 = _weights(project.folder / "models" / "v1.safetensors")
    v1 = project.add_model_version("v1", f1, activate=True)
    k1 = resolve_model(project).key
    assert resolve_model(project).key == k1
    project.add_model_version("v2", _weights(project.folder / "models" / "v2.safetensors"), activate=True)
    assert resolve_model(project).key != k1
    project.set_active_model_version(v1)
    assert resolve_model(project).key == k1
    _weights(f1, b"other weights, longer")  # replaced in place
    assert resolve_model(project).key != k1


def test_the_predictor_cache_reloads_when_the_reference_means_another_model(project, default_model, monkeypatch):
    from pollenstudio.engine.predict import Predictor
    from pollenstudio.gui.model_jobs import PredictorCache

    loads = []

    def fake_from_project(project, model=None, **kwargs):
        loads.append(model)
        return object()

    monkeypatch.setattr(Predictor, "from_project", staticmethod(fake_from_project))
    f1 = _weights(project.folder / "models" / "v1.safetensors")
    v1 = project.add_model_version("v1", f1, activate=True)
    cache = PredictorCache()
    first = cache.get(project)
    assert cache.get(project) is first and len(loads) == 1
    assert loads[0].version_id == v1  # it loads what it keyed on: the resolver's answer
    v2 = project.add_model_version("v2", _weights(project.folder / "models" / "v2.safetensors"), activate=True)
    assert cache.get(project) is not first and loads[-1].version_id == v2
    project.set_active_model_version(v1)
    cache.get(project)
    _weights(f1, b"retrained in place, another size")
    os.utime(f1, ns=(1, 1))
    cache.get(project)
    assert [m.version_id for m in loads] == [v1, v2, v1, v1]
    project.set_active_model_version(None)
    assert cache.get(project) is not None and loads[-1].kind == "default"


def test_new_projects_default_to_the_grain_model_and_the_demo_keeps_the_taxa_model(tmp_path, monkeypatch):
    from pollenstudio.engine import demo
    from pollenstudio.engine.paths import default_model_path, taxa_model_path

    d = tmp_path / "models"
    d.mkdir()
    (d / "hieraedgenet-n.safetensors").write_bytes(b"six taxa")
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(d))
    assert default_model_path() == taxa_model_path() == d / "hieraedgenet-n.safetensors"
    (d / "pollen-grain-n.safetensors").write_bytes(b"grains")
    assert default_model_path() == d / "pollen-grain-n.safetensors"
    assert resolve_model(None).path == d / "pollen-grain-n.safetensors"
    assert taxa_model_path() == d / "hieraedgenet-n.safetensors"
    seen = []
    monkeypatch.setattr("pollenstudio.detector.checkpoint.load_checkpoint", lambda p, device="cpu": seen.append(p) or (None, None, {}))
    assert demo._check_model(None)[0] == d / "hieraedgenet-n.safetensors" and seen == [d / "hieraedgenet-n.safetensors"]


def test_a_training_starts_from_the_model_in_use_scratch_only_when_asked(project, default_model, tmp_path, monkeypatch):
    """Issue 28: a new project's training started from scratch although the project detects
    with the shipped (grain) model; `train_project`'s base is what `training_base` answers."""
    from pollenstudio.engine.models import SCRATCH, training_base

    r = training_base(project)  # a new project: the shipped default model, as detection uses it
    assert (r.path, r.kind, r.version_id) == (default_model, "default", None)
    assert r.as_base() == str(default_model)
    assert training_base(project, SCRATCH) is None and training_base(project, " Scratch ") is None
    f = _weights(project.folder / "models" / "v1.safetensors")
    mv = project.add_model_version("v1", f, activate=True)
    r = training_base(project, "")
    assert (r.kind, r.version_id, r.as_base()) == ("active", mv, mv)  # by id: the new version's parent
    assert training_base(project, str(f)).as_base() == str(f)
    f.unlink()  # the model in use is gone: said, never replaced by a new network
    with pytest.raises(CheckpointError, match="missing"):
        training_base(project)
    monkeypatch.setenv("POLLENSTUDIO_MODELS", str(tmp_path / "none"))
    with Project.create(tmp_path / "bare") as bare:  # nothing installed, nothing active: a new network
        assert training_base(bare) is None
