"""Models: ViT backbone, ProbPose, and the ViTPose-style heatmap baseline."""

from __future__ import annotations

from torch import nn

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
    "probpose_t",
    "probpose_test",
    "sparsemax",
    "vitpose_s",
    "vitpose_t",
    "vitpose_test",
]


def build_model(config: ProbPoseConfig | HeatmapConfig) -> nn.Module:
    """ProbPoseConfig -> ProbPose, HeatmapConfig -> HeatmapPose (random init, train mode)."""
    if isinstance(config, ProbPoseConfig):
        return ProbPose(config)
    if isinstance(config, HeatmapConfig):
        return HeatmapPose(config)
    raise TypeError(f"build_model takes a ProbPoseConfig or HeatmapConfig, got {type(config).__name__}")


def config_from_dict(kind: str, d: dict) -> ProbPoseConfig | HeatmapConfig:
    """Inverse of `config.to_dict()`; kind is "probpose" or "heatmap" (the model's `kind`)."""
    if kind == "probpose":
        return ProbPoseConfig.from_dict(d)
    if kind == "heatmap":
        return HeatmapConfig.from_dict(d)
    raise ValueError(f"unknown model kind {kind!r}; expected 'probpose' or 'heatmap'")
