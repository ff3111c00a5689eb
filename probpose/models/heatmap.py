"""ViTPose-style heatmap baseline (mmpose 1.x td-hm_ViTPose-small_8xb64-210e_coco-256x192).

Same backbone as ProbPose; `head.deconv_layers` (2 x [ConvTranspose k4 s2 p1 no bias, BN, ReLU]) and
`head.final_layer` (1x1 conv -> K). Keys equal mmpose's, so ViTPose-S checkpoints in the mmpose layout load as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from probpose.constants import NUM_KEYPOINTS
from probpose.models.backbones import build_backbone
from probpose.models.probpose import check_input, init_head_weights, make_deconv_layers, run_deconv_layers
from probpose.models.vit import HeadConfigMixin, ViTConfig

__all__ = [
    "HeatmapConfig",
    "HeatmapHead",
    "HeatmapOutput",
    "HeatmapPose",
    "VITPOSE_S_CONFIG",
    "vitpose_s",
    "VITPOSE_T_CONFIG",
    "vitpose_t",
    "VITPOSE_TEST_CONFIG",
    "vitpose_test",
]


@dataclass(frozen=True)
class HeatmapConfig(HeadConfigMixin):
    """Architecture of the heatmap baseline."""

    backbone: ViTConfig = field(default_factory=ViTConfig)
    num_keypoints: int = NUM_KEYPOINTS
    deconv_channels: tuple[int, ...] = (256, 256)
    deconv_kernel: int = 4

    def __post_init__(self) -> None:
        self._normalize_fields()



@dataclass
class HeatmapOutput:
    heatmaps: torch.Tensor  # (N,K,64,48) raw heatmap head output (Gaussian-target regression, no activation)


class HeatmapHead(nn.Module):
    def __init__(self, config: HeatmapConfig) -> None:
        super().__init__()
        c = config.backbone.embed_dim
        self.deconv_layers = make_deconv_layers(c, config.deconv_channels, config.deconv_kernel)
        self.final_layer = nn.Conv2d(config.deconv_channels[-1] if config.deconv_channels else c,
                                     config.num_keypoints, 1)
        init_head_weights(self)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.final_layer(run_deconv_layers(self.deconv_layers, feats)).contiguous()


class HeatmapPose(nn.Module):
    """Top-down heatmap model: forward(x (N,3,256,192)) -> HeatmapOutput(heatmaps (N,K,64,48))."""

    kind = "heatmap"

    def __init__(self, config: HeatmapConfig | None = None) -> None:
        super().__init__()
        config = config or HeatmapConfig()
        self.config = config
        self.metadata: dict = {}
        self.backbone = build_backbone(config.backbone)
        self.head = HeatmapHead(config)

    def forward(self, x: torch.Tensor) -> HeatmapOutput:
        check_input(x, self.config.backbone.img_size, type(self).__name__)
        return HeatmapOutput(heatmaps=self.head(self.backbone(x)))


# ViTPose-S as in mmpose 1.x (same backbone as ProbPose-s; deconv 384->256->256, final 1x1 -> 17).
VITPOSE_S_CONFIG = HeatmapConfig(
    backbone=ViTConfig(embed_dim=384, depth=12, num_heads=12, ffn_dim=1536),
    deconv_channels=(256, 256),
)


def vitpose_s(**overrides) -> HeatmapPose:
    """ViTPose-S heatmap baseline (random init)."""
    return HeatmapPose(replace(VITPOSE_S_CONFIG, **overrides))


# Same backbone and deconv sizes as PROBPOSE_T_CONFIG.
VITPOSE_T_CONFIG = HeatmapConfig(
    backbone=ViTConfig(embed_dim=192, depth=6, num_heads=3, ffn_dim=768),
    deconv_channels=(128, 128),
)


def vitpose_t(**overrides) -> HeatmapPose:
    """Small heatmap baseline for CPU training."""
    return HeatmapPose(replace(VITPOSE_T_CONFIG, **overrides))


# Same sizes as PROBPOSE_TEST_CONFIG.
VITPOSE_TEST_CONFIG = HeatmapConfig(
    backbone=ViTConfig(embed_dim=32, depth=2, num_heads=2, ffn_dim=64),
    deconv_channels=(16, 16),
)


def vitpose_test(**overrides) -> HeatmapPose:
    """Tiny heatmap baseline for tests."""
    return HeatmapPose(replace(VITPOSE_TEST_CONFIG, **overrides))
