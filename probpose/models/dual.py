"""ProbPose-DH: ViT backbone + two probability-map branches (expert / wide window) + the four scalar branches.

Layout and names follow the official ``DoubleProbMapHead`` (spec 9, ``mmpose/models/heads/hybrid_heads/DP_head.py``):
``head.deconv_layers`` / ``head.final_layer`` make the expert ("in") map, ``head.second_head`` =
Sequential(deconv, conv (Identity), final, normalize (Identity/Sigmoid)) makes the wide ("out") map, so its keys are
``head.second_head.0.<i>.*`` and ``head.second_head.2.{weight,bias}``; the scalar branches are ProbPose's
(``head.{probability,visibility,oks,error}_layers``). The maps are NOT sparsemax-normalised by default: the official
head applies an optional sigmoid only (``normalize='none'``, its default). See docs/dual.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from probpose.constants import NUM_KEYPOINTS
from probpose.models.backbones import build_backbone
from probpose.models.probpose import (
    PROBPOSE_S_CONFIG,
    PROBPOSE_T_CONFIG,
    PROBPOSE_TEST_CONFIG,
    ScalarBranchesMixin,
    check_input,
    check_scalar_head_config,
    init_head_weights,
    make_deconv_layers,
    run_deconv_layers,
    sparsemax,
)
from probpose.models.vit import HeadConfigMixin, ViTConfig

__all__ = [
    "MAP_NORMALIZATIONS",
    "DualProbPoseConfig",
    "DualProbPoseOutput",
    "DualProbPoseHead",
    "DualProbPose",
    "PROBPOSE_S_DH_CONFIG",
    "probpose_s_dh",
    "PROBPOSE_T_DH_CONFIG",
    "probpose_t_dh",
    "PROBPOSE_TEST_DH_CONFIG",
    "probpose_test_dh",
]

# 'none' and 'sigmoid' are the official DP head's `normalize=False/True`; 'sparsemax' (ProbPose's) is ours.
MAP_NORMALIZATIONS = ("none", "sigmoid", "sparsemax")


@dataclass(frozen=True)
class DualProbPoseConfig(HeadConfigMixin):
    """Architecture of a ProbPose-DH model (and the window geometry of its two maps, which the codec needs).

    in_padding / out_padding: the expert / wide map spans the input crop scaled by this factor about its centre
    (official head defaults 1.0 and 1.25). spread: the constant target variance s (heatmap px^2) of the official
    head's default codec (``sigma=2``). temperature is used only by ``normalize='sparsemax'``.
    """

    backbone: ViTConfig = field(default_factory=ViTConfig)
    num_keypoints: int = NUM_KEYPOINTS
    deconv_channels: tuple[int, ...] = (256, 256)
    deconv_kernel: int = 4
    branch_channels: int | None = None
    normalize: str = "none"
    temperature: float = 0.5
    in_padding: float = 1.0
    out_padding: float = 1.25
    spread: float = 2.0
    freeze_error: bool = True

    def __post_init__(self) -> None:
        self._normalize_fields()
        check_scalar_head_config(self)
        if self.normalize not in MAP_NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {MAP_NORMALIZATIONS}, got {self.normalize!r}")
        if not 0 < self.in_padding <= self.out_padding:
            raise ValueError(f"need 0 < in_padding <= out_padding (the wide map must cover the expert map), got "
                             f"{self.in_padding} and {self.out_padding}")
        if self.spread <= 0:
            raise ValueError(f"spread must be > 0, got {self.spread}")

    @property
    def scalar_channels(self) -> int:
        return self.branch_channels or self.backbone.embed_dim


@dataclass
class DualProbPoseOutput:
    """Network outputs for N crops, K keypoints, maps H x W = 64 x 48.

    Both maps live on the same grid but over different windows of the crop (config in/out_padding); decode them
    with ``probpose.dual_codec.decode_dual``.
    """

    expert_maps: torch.Tensor  # (N,K,H,W) expert ("in") map after `normalize` (raw logits for 'none')
    wide_maps: torch.Tensor  # (N,K,H,W) wide ("out") map after `normalize`
    expert_logits: torch.Tensor  # (N,K,H,W) final 1x1 conv output of the expert branch
    wide_logits: torch.Tensor  # (N,K,H,W) final 1x1 conv output of the wide branch
    presence: torch.Tensor  # (N,K) sigmoid: P(keypoint inside the WIDE window)
    presence_logits: torch.Tensor  # (N,K)
    visibility: torch.Tensor  # (N,K) sigmoid
    oks: torch.Tensor  # (N,K) sigmoid, predicted OKS
    error: torch.Tensor | None = None  # (N,K) ReLU, frozen by default; None unless computed (see ProbPoseOutput)


class DualProbPoseHead(ScalarBranchesMixin, nn.Module):
    """Two map branches on the (non-detached) features, four scalar branches on the detached features."""

    def __init__(self, config: DualProbPoseConfig) -> None:
        super().__init__()
        c = config.backbone.embed_dim
        k = config.num_keypoints
        out_c = config.deconv_channels[-1] if config.deconv_channels else c
        self.config = config
        # Expert map: the official first branch's attribute names (conv_layers / normalize_layer hold no weights).
        self.deconv_layers = make_deconv_layers(c, config.deconv_channels, config.deconv_kernel)
        self.conv_layers = nn.Identity()
        self.final_layer = nn.Conv2d(out_c, k, 1)
        self.normalize_layer = nn.Sigmoid() if config.normalize == "sigmoid" else nn.Identity()
        # Wide map: Sequential(deconv, conv, final, normalize) as the official `second_head`.
        self.second_head = nn.Sequential(
            make_deconv_layers(c, config.deconv_channels, config.deconv_kernel), nn.Identity(),
            nn.Conv2d(out_c, k, 1), nn.Sigmoid() if config.normalize == "sigmoid" else nn.Identity())
        self._add_scalar_branches(config)
        init_head_weights(self)
        if config.freeze_error:
            self._freeze_error_branch()

    def _normalize(self, logits: torch.Tensor, layer: nn.Module, temperature: float) -> torch.Tensor:
        if self.config.normalize != "sparsemax":
            return layer(logits)
        n, k, h, w = logits.shape
        return sparsemax(logits.reshape(n, k, h * w) / temperature, dim=-1).clamp(0, 1).reshape(n, k, h, w)

    def forward(self, feats: torch.Tensor, temperature: float, with_error: bool | None = None) -> DualProbPoseOutput:
        expert_logits = self.final_layer(self.conv_layers(run_deconv_layers(self.deconv_layers, feats))).contiguous()
        deconv, conv, final, norm = self.second_head
        wide_logits = final(conv(run_deconv_layers(deconv, feats))).contiguous()
        return DualProbPoseOutput(
            expert_maps=self._normalize(expert_logits, self.normalize_layer, temperature),
            wide_maps=self._normalize(wide_logits, norm, temperature),
            expert_logits=expert_logits, wide_logits=wide_logits, **self._scalar_outputs(feats, with_error))


class DualProbPose(nn.Module):
    """ProbPose-DH: forward(x (N,3,256,192) ImageNet-normalised RGB) -> DualProbPoseOutput."""

    kind = "probpose_dh"

    def __init__(self, config: DualProbPoseConfig | None = None) -> None:
        super().__init__()
        config = config or DualProbPoseConfig()
        self.config = config
        self.temperature = float(config.temperature)
        self.metadata: dict = {}
        self.backbone = build_backbone(config.backbone)
        self.head = DualProbPoseHead(config)

    def forward(self, x: torch.Tensor, with_error: bool | None = None) -> DualProbPoseOutput:
        """with_error: compute the frozen error branch (None: in training mode only; `error` is None otherwise)."""
        check_input(x, self.config.backbone.img_size, type(self).__name__)
        return self.head(self.backbone(x), self.temperature, with_error)


def _dual_from(cfg) -> DualProbPoseConfig:
    # Same backbone / deconv / branch widths as the single-map model of that size.
    return DualProbPoseConfig(backbone=cfg.backbone, num_keypoints=cfg.num_keypoints,
                              deconv_channels=cfg.deconv_channels, deconv_kernel=cfg.deconv_kernel,
                              branch_channels=cfg.branch_channels, freeze_error=cfg.freeze_error)


# ProbPose-s-DH (the paper's second row): ViT-S, two 2x(256) deconv branches; no official config or weights.
PROBPOSE_S_DH_CONFIG = _dual_from(PROBPOSE_S_CONFIG)


def probpose_s_dh(**overrides) -> DualProbPose:
    """ProbPose-s-DH architecture (random init); `overrides` replace DualProbPoseConfig fields."""
    return DualProbPose(replace(PROBPOSE_S_DH_CONFIG, **overrides))


# Demo size for CPU training, the backbone of probpose_t().
PROBPOSE_T_DH_CONFIG = _dual_from(PROBPOSE_T_CONFIG)


def probpose_t_dh(**overrides) -> DualProbPose:
    """Small ProbPose-DH for CPU training."""
    return DualProbPose(replace(PROBPOSE_T_DH_CONFIG, **overrides))


# Tiny model for unit tests.
PROBPOSE_TEST_DH_CONFIG = _dual_from(PROBPOSE_TEST_CONFIG)


def probpose_test_dh(**overrides) -> DualProbPose:
    """Tiny ProbPose-DH for tests."""
    return DualProbPose(replace(PROBPOSE_TEST_DH_CONFIG, **overrides))
