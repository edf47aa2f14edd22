"""A grain embedding network: EfficientNet-Lite0 (ImageNet-pretrained) + a projection head.

Why a second network beside HieraEdgeNet: the detector's features are trained to *find*
grains, not to tell taxa apart; naming a taxon from a dozen reviewed grains needs features
that separate taxa. An ImageNet-pretrained backbone fine-tuned on pollen taxa (the recipe
``scripts/train_pollen_embedding.py``, card ``models/POLLEN_EMBED_CARD.md``) does.

EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile CPUs): no squeeze-excitation,
ReLU6 activations, a fixed 32-channel stem and 1280-channel head; TensorFlow "same" padding
(stride-2 convolutions pad more at the bottom/right), as the weights were trained with it.
The parameter names follow the published state dict (``_conv_stem``, ``_blocks.N._expand_conv``
...) so a converted ImageNet file loads as is (``scripts/convert_effnet_lite0.py``).

``GrainEmbedder(x)`` with x ``(B, 3, S, S)`` float RGB in [0, 1] returns ``(B, dim)``
L2-normalised embeddings (``dim`` = 1280 without a projection head). Pure torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pollenstudio.core.errors import CheckpointError

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with
FORMAT = "pollenstudio-embedder"
FORMAT_VERSION = 1


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size (asymmetric for
    stride 2), as EfficientNet's weights expect."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        if sh == sw == 1:  # stride 1, odd kernel: "same" is symmetric, the convolution pads itself
            return F.conv2d(x, self.weight, self.bias, 1, (kh // 2, kw // 2), self.dilation, self.groups)
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, kxk depthwise, 1x1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The backbone; ``forward`` returns the pooled 1280-d features (before the ImageNet head)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)

    def stages(self) -> list[list[int]]:
        """Block indices of each of the seven stages (for freezing the early ones)."""
        out, i = [], 0
        for repeats, *_ in LITE0_STAGES:
            out.append(list(range(i, i + repeats)))
            i += repeats
        return out

    def feature_map(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


# Input normalisation: ImageNet's channel mean and std. TensorFlow's Lite reference scales to
# [-1, 1] instead; on POLLEN73S crops of the 12 held-out taxa the ImageNet statistics named
# more grains with the pretrained weights (nearest class mean, 5-shot, 128 px: 0.865 vs 0.835;
# 224 px: 0.885 vs 0.853), so the fine-tuning and every use keep them.
IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)


@dataclass
class EmbedderConfig:
    """What a stored embedder is: its input size, projection and the data it was tuned on."""

    size: int = 128  # crop side the network sees
    dim: int = 0  # projection output (0: the pooled 1280-d backbone features)
    name: str = "effnet-lite0"

    def validate(self) -> "EmbedderConfig":
        if not isinstance(self.size, int) or not 32 <= self.size <= 512 or self.size % 32:
            raise CheckpointError(f"embedder input size must be a multiple of 32 in 32..512, got {self.size!r}")
        if not isinstance(self.dim, int) or not 0 <= self.dim <= 4096:
            raise CheckpointError(f"embedder projection size must be 0..4096, got {self.dim!r}")
        return self


class GrainEmbedder(nn.Module):
    """Backbone + optional linear projection; unit-length embeddings."""

    def __init__(self, cfg: EmbedderConfig | None = None):
        super().__init__()
        self.cfg = (cfg or EmbedderConfig()).validate()
        self.backbone = EfficientNetLite0()
        self.proj = nn.Linear(1280, self.cfg.dim) if self.cfg.dim else None
        self.register_buffer("in_mean", torch.tensor(IN_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(IN_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return self.cfg.dim or 1280

    def backbone_only(self) -> "GrainEmbedder":
        """The same network without its projection (the pooled 1280-d features), sharing weights."""
        m = GrainEmbedder.__new__(GrainEmbedder)
        nn.Module.__init__(m)
        m.cfg = EmbedderConfig(self.cfg.size, 0, self.cfg.name)
        m.backbone, m.proj = self.backbone, None
        m.in_mean, m.in_std = self.in_mean, self.in_std
        return m

    def forward(self, x):
        """x (B, 3, S, S) RGB in [0, 1] -> (B, dim) unit vectors."""
        f = self.backbone((x - self.in_mean) / self.in_std)
        if self.proj is not None:
            f = self.proj(f)
        return F.normalize(f, dim=1)


def fuse_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode batch norm into the convolution before it (in place)."""
    w = conv.weight
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).detach())
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter(((b - bn.running_mean) * scale + bn.bias).detach())


def deploy_embedder(model: GrainEmbedder) -> GrainEmbedder:
    """An inference copy with every batch norm folded into its convolution (same outputs
    within float rounding, fewer passes over memory)."""
    import copy

    m = copy.deepcopy(model).eval()
    bb = m.backbone
    pairs = [(bb._conv_stem, "_bn0", bb), (bb._conv_head, "_bn1", bb)]
    for blk in bb._blocks:
        if blk.has_expand:
            pairs.append((blk._expand_conv, "_bn0", blk))
        pairs += [(blk._depthwise_conv, "_bn1", blk), (blk._project_conv, "_bn2", blk)]
    with torch.no_grad():
        for conv, name, owner in pairs:
            fuse_bn(conv, getattr(owner, name))
            setattr(owner, name, nn.Identity())
    return m


def save_embedder(path: str | os.PathLike, model: GrainEmbedder, meta: dict | None = None) -> Path:
    """Weights (float32) + config as safetensors, written atomically."""
    from safetensors.torch import save as st_save

    from pollenstudio.core.atomic import atomic_write

    tensors = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    md = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(asdict(model.cfg)),
          "meta": json.dumps(meta or {})}
    path = Path(path)
    data = st_save(tensors, metadata=md)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def load_embedder(path: str | os.PathLike, device="cpu") -> tuple[GrainEmbedder, dict]:
    """(model in eval mode, meta). Safe: safetensors only; a mismatching file is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"embedding model {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            md = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable embedding model ({e})") from e
    if md.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a PollenStudio embedding model")
    try:
        cfg = EmbedderConfig(**json.loads(md["config"])).validate()
        meta = json.loads(md.get("meta", "{}"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name}: its embedding configuration is damaged ({e})") from e
    model = GrainEmbedder(cfg)
    want = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if set(tensors) != want:
        raise CheckpointError(f"{path.name}: its weights do not match the embedding network "
                              f"({len(set(tensors) ^ want)} tensors differ)")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"{path.name}: the embedding model holds NaN or infinite weights")
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval(), meta


def load_for_inference(path: str | os.PathLike, device="cpu") -> tuple[GrainEmbedder, dict]:
    """:func:`load_embedder`, batch norms folded (:func:`deploy_embedder`)."""
    model, meta = load_embedder(path, device)
    return deploy_embedder(model).to(device), meta
