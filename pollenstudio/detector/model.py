"""HieraEdgeNet: YOLO11-style backbone + PAN neck + Detect head, with optional edge priors
(HEM + SEF) and CSPOKM, all chosen by :class:`ModelConfig` (see HIERAEDGENET.md's table).

``model(x)``: x (B, 3, H, W) float in [0, 1], H and W multiples of 32 -> list of 3 raw
tensors (B, 4*reg_max + nc, H/s, W/s) for strides ``model.strides`` = (8, 16, 32).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pollenstudio.core.errors import ModelMismatchError

from .blocks import C2PSA, SPPF, C3k2, Conv
from .config import ModelConfig
from .edge import HEM, SEF
from .head import Detect
from .omnikernel import CSPOKM

STRIDES = (8, 16, 32)


class EdgePyramid(NamedTuple):
    """magnitudes: raw Sobel |Gx|+|Gy| of the P2 features at strides 4, 8, 16, 32,
    each (B, C_P2, H/s, W/s); features: EP3, EP4, EP5 (after the 1x1 Conv-BN-SiLU)."""

    magnitudes: list[torch.Tensor]
    features: list[torch.Tensor]


class HieraEdgeNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.nc, self.reg_max = cfg.nc, cfg.reg_max
        self.class_names = list(cfg.class_names)
        self.strides = STRIDES
        ch, n = cfg.ch, cfg.n
        edge = cfg.edge == "sobel"
        sef = set(cfg.sef_levels) if edge else set()
        oks = set(cfg.cspokm_levels) if cfg.cspokm else set()
        c_p2, c3, c4, c5 = ch(256), ch(512), ch(512), ch(1024)
        c_e = (ch(128), ch(256), ch(512))

        # backbone
        self.stem = nn.Sequential(Conv(3, ch(64), 3, 2), Conv(ch(64), ch(128), 3, 2))
        self.p2 = C3k2(ch(128), c_p2, n(2), False, 0.25)
        self.hem = HEM(c_p2, c_e) if edge else None
        self.down3 = Conv(c_p2, ch(256), 3, 2)
        self.stage3 = C3k2(ch(256), c3, n(2), False, 0.25)
        self.sef3 = SEF(c_e[0], c3) if 3 in sef else None
        self.down4 = Conv(c3, c4, 3, 2)
        self.stage4 = C3k2(c4, c4, n(2), True)
        self.sef4 = SEF(c_e[1], c4) if 4 in sef else None
        self.down5 = Conv(c4, c5, 3, 2)
        self.stage5 = C3k2(c5, c5, n(2), True)
        self.sef5 = SEF(c_e[2], c5) if 5 in sef else None
        self.sppf = SPPF(c5, c5, 5)
        self.c2psa = C2PSA(c5, n(2))

        # PAN neck
        h3, h4, h5 = ch(256), ch(512), ch(1024)
        self.top4 = C3k2(c5 + c4, h4, n(2), False)
        self.top3 = C3k2(h4 + c3, h3, n(2), False)
        self.ok3 = CSPOKM(h3, cfg.cspokm_e, cfg.omni_kernel) if 3 in oks else None
        self.down_n4 = Conv(h3, h3, 3, 2)
        self.bottom4 = C3k2(h3 + h4, h4, n(2), False)
        self.ok4 = CSPOKM(h4, cfg.cspokm_e, cfg.omni_kernel) if 4 in oks else None
        self.down_n5 = Conv(h4, h4, 3, 2)
        self.bottom5 = C3k2(h4 + c5, h5, n(2), True)
        self.ok5 = CSPOKM(h5, cfg.cspokm_e, cfg.omni_kernel) if 5 in oks else None

        self.detect = Detect(cfg.nc, (h3, h4, h5), self.strides, cfg.reg_max)

    # ----------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelMismatchError(f"the detector expects images shaped (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise ModelMismatchError(
                f"image size {x.shape[3]}x{x.shape[2]} is not a multiple of 32; letterbox or pad it first"
            )

    @staticmethod
    def _maybe(m: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        return x if m is None else m(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Raw outputs and the three head inputs [feat_P3, feat_P4, feat_P5] (for Grad-CAM:
        take gradients of a score with respect to these)."""
        self._check_input(x)
        p2 = self.p2(self.stem(x))
        ep = self.hem(p2) if self.hem is not None else [None, None, None]

        p3 = self.stage3(self.down3(p2))
        if self.sef3 is not None:
            p3 = self.sef3(ep[0], p3)
        p4 = self.stage4(self.down4(p3))
        if self.sef4 is not None:
            p4 = self.sef4(ep[1], p4)
        p5 = self.stage5(self.down5(p4))
        if self.sef5 is not None:
            p5 = self.sef5(ep[2], p5)
        p5 = self.c2psa(self.sppf(p5))

        t4 = self.top4(torch.cat((F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4), 1))
        n3 = self.top3(torch.cat((F.interpolate(t4, scale_factor=2.0, mode="nearest"), p3), 1))
        n3 = self._maybe(self.ok3, n3)
        n4 = self._maybe(self.ok4, self.bottom4(torch.cat((self.down_n4(n3), t4), 1)))
        n5 = self._maybe(self.ok5, self.bottom5(torch.cat((self.down_n5(n4), p5), 1)))
        feats = [n3, n4, n5]
        return self.detect(feats), feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_with_features(x)[0]

    def edge_pyramid(self, x: torch.Tensor) -> EdgePyramid:
        """The edge maps for an image batch x (B, 3, H, W): what the GUI shows as edge attention."""
        if self.hem is None:
            raise ModelMismatchError("this model was built without edge priors (edge='none'); it has no edge maps")
        self._check_input(x)
        mags = self.hem.magnitudes(self.p2(self.stem(x)))
        return EdgePyramid(mags, self.hem.features(mags))

    def class_layers(self) -> list[nn.Conv2d]:
        return self.detect.class_layers()


def build_model(cfg: ModelConfig) -> HieraEdgeNet:
    """A freshly initialised detector for ``cfg``."""
    return HieraEdgeNet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
