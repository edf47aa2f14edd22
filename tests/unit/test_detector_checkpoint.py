"""Checkpoints round-trip exactly, and unsafe or foreign files are refused without running them."""
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from pollenstudio.core.errors import CheckpointError
from pollenstudio.detector import ModelConfig, build_model, load_checkpoint, load_for_finetune, save_checkpoint




@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny("full", nc=2, class_names=["Betula", "Pinus"], imgsz=320)
    model = build_model(cfg).eval()
    with torch.no_grad():  # make the class layers distinguishable from a fresh init
        for layer in model.class_layers():
            layer.weight.add_(torch.randn_like(layer.weight))
            layer.bias.add_(torch.randn_like(layer.bias))
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.safetensors", model, cfg,
                           meta={"note": "test"}, training={"epochs": 3, "map50": 0.5})
    return path, model, cfg


def test_save_load_gives_identical_outputs_and_metadata(saved):
    path, model, cfg = saved
    loaded, cfg2, meta = load_checkpoint(path)
    assert cfg2 == cfg and meta["note"] == "test" and meta["training"]["epochs"] == 3
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)


def test_pickle_with_code_payload_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, write in [("evil.pt", lambda p: torch.save({"model": Payload()}, p)),
                        ("evil.pkl", lambda p: p.write_bytes(pickle.dumps(Payload())))]:
        p = tmp_path / name
        write(p)
        with pytest.raises(CheckpointError, match="pickle"):
            load_checkpoint(p)
        with pytest.raises(CheckpointError, match="pickle"):
            load_for_finetune(p, ["a"])
    assert not marker.exists()


def test_truncated_file_is_refused(saved, tmp_path):
    path = saved[0]
    data = path.read_bytes()
    for cut in (len(data) // 2, 20, 4, 0):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|damaged|empty"):
            load_checkpoint(bad)


def test_foreign_safetensors_and_random_bytes_are_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a PollenStudio"):
        load_checkpoint(other)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, this is not a model at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path):
    from safetensors import safe_open

    path = saved[0]
    with safe_open(str(path), "pt") as f:
        md = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(md["config"])
    cfg["edge"] = "none"  # the file's weights include HEM/SEF, the description says no edges
    bad = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(bad), metadata={**md, "config": json.dumps(cfg)})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(bad)


def test_finetune_keeps_everything_but_the_class_layers(saved):
    path, model, cfg = saved
    same, cfg_same, _ = load_for_finetune(path, ["Betula", "Pinus"])
    for (k, a), b in zip(model.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k

    new, cfg_new, meta = load_for_finetune(path, ["Quercus", "Betula", "Olea"])
    assert cfg_new.nc == 3 and meta["finetuned_from"]["class_names"] == ["Betula", "Pinus"]
    old_sd, new_sd = model.state_dict(), new.state_dict()
    class_keys = {k for k in new_sd if k.startswith("detect.cls.") and k.split(".")[3] == "2"}
    assert len(class_keys) == 6  # weight + bias of three levels
    for k in new_sd:
        if k not in class_keys:
            assert torch.equal(old_sd[k], new_sd[k]), k
    for old_l, new_l in zip(model.class_layers(), new.class_layers()):
        assert new_l.weight.shape[0] == 3
        assert torch.equal(new_l.weight[1], old_l.weight[0])  # Betula kept its classifier row
        assert not torch.equal(new_l.weight[0], old_l.weight[1])


def test_a_checkpoint_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A safetensors file starts with its header length (8 bytes, little-endian); about one
    checkpoint in 256 has 0x80 as its first byte, the pickle protocol marker."""
    import struct

    from pollenstudio.detector import ModelConfig, build_model
    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint

    cfg = ModelConfig.tiny("base", nc=1, class_names=["pollen"])
    model = build_model(cfg)
    for pad in range(0, 600):
        path = save_checkpoint(tmp_path / "m.safetensors", model, cfg, {"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        raise AssertionError("no padding gave a header length with low byte 0x80")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    _, cfg2, meta = load_checkpoint(path)
    assert cfg2.class_names == ["pollen"] and meta["pad"] == "x" * pad
