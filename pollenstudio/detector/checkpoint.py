"""Safe checkpoints: a safetensors file = weights + JSON metadata. Loading never runs code.

A PyTorch pickle (``torch.save``) can execute arbitrary code when unpickled, so such files
are refused before anything reads them; a user who has one from a trusted source must
convert it elsewhere. Metadata keys (all strings, JSON where structured):
format = "pollenstudio-detector", format_version, config (ModelConfig dict), class_names,
imgsz, training (summary dict), meta (free dict).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pollenstudio.core.atomic import write_bytes
from pollenstudio.core.errors import CheckpointError, ModelMismatchError

from .config import ModelConfig
from .model import HieraEdgeNet, build_model

FORMAT = "pollenstudio-detector"
FORMAT_VERSION = 1
EXTRA = "extra."  # tensors of stages beside the detector (e.g. a taxon classifier), opaque here


def _jsonable(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{what} cannot be stored in a checkpoint (not JSON-serialisable): {e}") from e


def save_checkpoint(
    path: str | os.PathLike,
    model: HieraEdgeNet,
    cfg: ModelConfig | None = None,
    meta: dict | None = None,
    training: dict | None = None,
    extra: tuple[dict[str, torch.Tensor], dict] | None = None,
) -> Path:
    """Write ``model`` (training form) to ``path`` atomically. ``training``: summary of the run
    (epochs, metrics ...); ``meta``: anything else JSON-serialisable. ``extra``: (tensors,
    description) of a stage stored with the detector in the same file (a taxon classifier):
    tensors under ``extra.``, the description as JSON; :func:`read_extra` reads them back,
    the detector loaders ignore them."""
    from safetensors.torch import save

    if getattr(model, "deployed", False):
        raise CheckpointError("this is a fused deploy-form model; save the training-form model instead")
    cfg = cfg or model.cfg
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    if extra is not None:
        tensors.update({EXTRA + k: v.detach().to("cpu").contiguous().clone() for k, v in extra[0].items()})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": _jsonable(cfg.to_dict(), "the model config"),
        "class_names": _jsonable(list(cfg.class_names), "the class names"),
        "imgsz": str(int(cfg.imgsz)),
        "training": _jsonable(training or {}, "the training summary"),
        "meta": _jsonable(meta or {}, "the metadata"),
    }
    if extra is not None:
        metadata["extra"] = _jsonable(extra[1], "the extra stage's description")
    path = Path(path)
    # core.atomic: complete or not at all, the permissions of any other file (not mkstemp's
    # 0600), and a full disk said in words (WriteError) with the previous file untouched
    write_bytes(path, save(tensors, metadata=metadata))
    return path


def _sniff(path: Path) -> None:
    """Refuse files that are not safetensors before any parser sees them."""
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return  # a safetensors header (its length may well start with 0x80, like a pickle)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path.name} is a PyTorch pickle file. Pickle files can run arbitrary code when opened, "
            "so PollenStudio only opens .safetensors checkpoints it wrote itself. Convert the model in a "
            "trusted environment, or use a PollenStudio checkpoint."
        )
    if len(head) < 9:
        raise CheckpointError(f"{path.name} is empty or truncated; it is not a usable model file")
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > size - 8:
        if n > size - 8 and head[8:9] == b"{":
            raise CheckpointError(f"{path.name} is truncated (incomplete download or copy?); copy it again")
        raise CheckpointError(f"{path.name} is not a PollenStudio model file (unknown format)")


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """Read and validate a checkpoint without building a model: (cfg, tensors, meta)."""
    from safetensors import safe_open

    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(EXTRA)}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path.name} is damaged or truncated and cannot be read ({e})") from e
    if md.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a PollenStudio detector checkpoint "
            f"(format {md.get('format')!r}); it cannot be used here"
        )
    try:
        version = int(md.get("format_version", "0"))
    except ValueError:
        version = -1
    if version < 1 or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path.name} has checkpoint format version {md.get('format_version')!r}; this PollenStudio "
            f"reads version {FORMAT_VERSION}. Update PollenStudio to open it."
        )
    try:
        cfg = ModelConfig.from_dict(json.loads(md["config"]))
        meta = dict(json.loads(md.get("meta", "{}")))
        meta["training"] = json.loads(md.get("training", "{}"))
        meta["format_version"] = version
    except (KeyError, ValueError, TypeError, OverflowError, RecursionError, ModelMismatchError) as e:
        raise CheckpointError(f"{path.name} has a damaged model description: {e}") from e
    _check_tensors(path.name, cfg, tensors)
    return cfg, tensors, meta


def read_extra(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The extra stage stored beside the detector (see ``save_checkpoint``): (tensors without
    the ``extra.`` prefix, description); ({}, {}) for a file without one."""
    from safetensors import safe_open

    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            tensors = {k[len(EXTRA):]: f.get_tensor(k) for k in f.keys() if k.startswith(EXTRA)}
        desc = json.loads(md.get("extra", "{}"))
    except Exception as e:
        raise CheckpointError(f"{path.name} is damaged or truncated and cannot be read ({e})") from e
    if md.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a PollenStudio detector checkpoint")
    return tensors, dict(desc) if isinstance(desc, dict) else {}


def _check_tensors(name: str, cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Weights must fit the described model (checked on the meta device: no memory is
    allocated for a model the file cannot fill) and be finite (NaN weights, e.g. from a
    diverged training run, would silently find nothing)."""
    with torch.device("meta"):
        expected = build_model(cfg).state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{name}: the weights do not match the model description ({detail})")
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{name}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}); "
                              "the training that wrote this file diverged, so it cannot detect anything")


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor], name: str, skip: set[str] = frozenset()) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors) - skip)
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected if k in tensors and k not in skip and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{name}: the weights do not match the model description ({detail})")
    model.load_state_dict({k: v for k, v in tensors.items() if k not in skip}, strict=not skip)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[HieraEdgeNet, ModelConfig, dict]:
    """-> (model in eval mode on ``device``, cfg, meta). meta is the saved free dict plus
    'training' (summary) and 'format_version'. Raises CheckpointError for unsafe, truncated,
    foreign or inconsistent files."""
    cfg, tensors, meta = read_checkpoint(path)
    model = build_model(cfg)
    _load_into(model, tensors, Path(path).name)
    return model.to(device).eval(), cfg, meta


def load_for_finetune(
    path: str | os.PathLike, class_names: list[str], device: str | torch.device = "cpu"
) -> tuple[HieraEdgeNet, ModelConfig, dict]:
    """Start training on ``class_names`` from a checkpoint.

    Same class list -> every weight kept. Different list -> everything but the final
    class-prediction convs is kept; those are freshly initialised, then the rows of taxa
    present in both lists (matched by name) are copied over so known taxa keep their
    classifier. A one-class model (the grain model) grown to other taxa gives every new
    taxon its one class row. meta['finetuned_from'] records the parent's class names.
    """
    cfg, tensors, meta = read_checkpoint(path)
    name = Path(path).name
    if list(class_names) == list(cfg.class_names):
        model = build_model(cfg)
        _load_into(model, tensors, name)
        return model.to(device).train(), cfg, meta
    try:
        new_cfg = cfg.with_classes(list(class_names))
    except ModelMismatchError as e:
        raise CheckpointError(f"cannot fine-tune {name} on these classes: {e}") from e
    model = build_model(new_cfg)
    sd_names = {id(p): k for k, p in model.state_dict(keep_vars=True).items()}
    skip = set()
    for layer in model.class_layers():
        skip |= {sd_names[id(layer.weight)], sd_names[id(layer.bias)]}
    _load_into(model, tensors, name, skip)
    old_index = {c: i for i, c in enumerate(cfg.class_names)}
    pairs = [(j, old_index[c]) for j, c in enumerate(new_cfg.class_names) if c in old_index]
    if len(cfg.class_names) == 1 and not pairs:
        # growing a one-class grain model into taxa: every taxon starts from the grain class,
        # so the grown model finds grains from its first step and only learns to tell them apart
        pairs = [(j, 0) for j in range(len(new_cfg.class_names))]
    if pairs:
        new_i = torch.tensor([p[0] for p in pairs])
        old_i = torch.tensor([p[1] for p in pairs])
        with torch.no_grad():
            for layer in model.class_layers():
                wk, bk = sd_names[id(layer.weight)], sd_names[id(layer.bias)]
                layer.weight[new_i] = tensors[wk][old_i].to(layer.weight.dtype)
                layer.bias[new_i] = tensors[bk][old_i].to(layer.bias.dtype)
    meta["finetuned_from"] = {"class_names": list(cfg.class_names)}
    return model.to(device).train(), new_cfg, meta
