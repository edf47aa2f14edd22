"""detector layer: HieraEdgeNet in pure PyTorch (see HIERAEDGENET.md and CONTEXT.md).

Knows tensors, never the project store or Qt.
"""
from .checkpoint import load_checkpoint, load_for_finetune, read_checkpoint, save_checkpoint
from .config import ModelConfig
from .deploy import deploy_model
from .head import decode
from .loss import DetectionLoss
from .model import EdgePyramid, HieraEdgeNet, build_model, count_parameters
from .postprocess import Predictions, postprocess

__all__ = [
    "ModelConfig",
    "HieraEdgeNet",
    "EdgePyramid",
    "build_model",
    "count_parameters",
    "DetectionLoss",
    "decode",
    "postprocess",
    "Predictions",
    "save_checkpoint",
    "load_checkpoint",
    "load_for_finetune",
    "read_checkpoint",
    "deploy_model",
]
