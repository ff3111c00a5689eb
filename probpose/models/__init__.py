"""Models: ViT backbone, ProbPose, ProbPose-DH (dual map) and the ViTPose-style heatmap baseline."""

from __future__ import annotations

from torch import nn

from probpose.models.dual import (
    DualProbPose,
    DualProbPoseConfig,
    DualProbPoseOutput,
    probpose_s_dh,
    probpose_t_dh,
    probpose_test_dh,
)
from probpose.models.heatmap import (
    HeatmapConfig,
    HeatmapOutput,
    HeatmapPose,
    vitpose_s,
    vitpose_t,
    vitpose_test,
)
from probpose.models.probpose import (
    ModelInputError,
    ProbPose,
    ProbPoseConfig,
    ProbPoseOutput,
    probpose_s,
    probpose_t,
    probpose_test,
    sparsemax,
)
from probpose.models.vit import VisionTransformer, ViTConfig

__all__ = [
    "DualProbPose",
    "DualProbPoseConfig",
    "DualProbPoseOutput",
    "HeatmapConfig",
    "HeatmapOutput",
    "HeatmapPose",
    "ModelInputError",
    "ProbPose",
    "ProbPoseConfig",
    "ProbPoseOutput",
    "ViTConfig",
    "VisionTransformer",
    "build_model",
    "config_from_dict",
    "probpose_s",
    "probpose_s_dh",
    "probpose_t",
    "probpose_t_dh",
    "probpose_test",
    "probpose_test_dh",
    "sparsemax",
    "vitpose_s",
    "vitpose_t",
    "vitpose_test",
]


ModelConfig = ProbPoseConfig | DualProbPoseConfig | HeatmapConfig


def build_model(config: ModelConfig) -> nn.Module:
    """ProbPoseConfig -> ProbPose, DualProbPoseConfig -> DualProbPose, HeatmapConfig -> HeatmapPose.

    Random init, train mode.
    """
    if isinstance(config, DualProbPoseConfig):
        return DualProbPose(config)
    if isinstance(config, ProbPoseConfig):
        return ProbPose(config)
    if isinstance(config, HeatmapConfig):
        return HeatmapPose(config)
    raise TypeError(f"build_model takes a ProbPose, DualProbPose or Heatmap config, got {type(config).__name__}")


def config_from_dict(kind: str, d: dict) -> ModelConfig:
    """Inverse of `config.to_dict()`; kind is the model's `kind`: "probpose", "probpose_dh" or "heatmap"."""
    if kind == "probpose_dh":
        return DualProbPoseConfig.from_dict(d)
    if kind == "probpose":
        return ProbPoseConfig.from_dict(d)
    if kind == "heatmap":
        return HeatmapConfig.from_dict(d)
    raise ValueError(f"unknown model kind {kind!r}; expected 'probpose', 'probpose_dh' or 'heatmap'")
