"""Backbone dispatch: a model config's `backbone` is a ViTConfig (official ViT path) or a MobileNetThinConfig."""

from __future__ import annotations

from torch import nn

from probpose.models.mobilenet_thin import MobileNetThinBackbone, MobileNetThinConfig
from probpose.models.vit import VisionTransformer, ViTConfig

__all__ = ["BackboneConfig", "build_backbone", "backbone_config_from_dict"]

BackboneConfig = ViTConfig | MobileNetThinConfig


def backbone_config_from_dict(d: dict) -> BackboneConfig:
    """Inverse of `to_dict()`: a dict with arch="mobilenet_thin" is a MobileNetThinConfig, anything else a ViTConfig
    (ViT configs saved before other backbones existed carry no "arch")."""
    if d.get("arch") == "mobilenet_thin":
        return MobileNetThinConfig.from_dict(d)
    return ViTConfig.from_dict(d)


def build_backbone(config: BackboneConfig) -> nn.Module:
    """ViTConfig -> VisionTransformer, MobileNetThinConfig -> MobileNetThinBackbone; both return (N, C, Hp, Wp)."""
    if isinstance(config, MobileNetThinConfig):
        return MobileNetThinBackbone(config)
    if isinstance(config, ViTConfig):
        return VisionTransformer(config)
    raise TypeError(f"unknown backbone config {type(config).__name__}")
