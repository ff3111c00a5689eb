"""ProbPose-DH training losses (spec 9, ``DoubleProbMapHead.loss``), built from the single-map losses.

Total = loss_kpt (expert map) + loss_kpt2 (wide map) + presence + visibility + OKS, each weight 1 (the error
branch is frozen, as in ``training.losses``). The official head's default map loss is ``KeypointMSELoss``
(use_target_weight) on the un-normalised maps; ``map_loss='oks'`` gives OKSHeatmapLoss in its default
(keypoint-wise) reduction for sparsemax maps. Shapes: B batch, K keypoints, H x W = 64 x 48.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from probpose.constants import COCO_SIGMAS
from probpose.dual_codec import DEFAULT_SPREAD, decode_dual, decode_map
from training.losses import (
    OKS_TARGET_AREA,
    SMOOTHING_WEIGHT,
    heatmap_mse_loss,
    oks_loss,
    presence_loss,
    sobel_gradient_sq,
)

__all__ = [
    "MAP_LOSSES",
    "DualLosses",
    "oks_heatmap_loss_keypointwise",
    "dual_oks_targets",
    "dual_losses",
]

MAP_LOSSES = ("mse", "oks")


def oks_heatmap_loss_keypointwise(maps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                                  smoothing_weight: float = SMOOTHING_WEIGHT) -> torch.Tensor:
    """OKSHeatmapLoss in its default reduction (neither per_pixel nor per_keypoint):

    L = mean_{b,k} [ (1 - s) sum_ij m p (1 - T) + s max_ij (m (Gx^2 + Gy^2)) ], m = weights (B,K) per map.

    Args:
        maps: (B,K,H,W) predicted maps. target: (B,K,H,W) in [0,1]. weights: (B,K).
    Returns:
        () scalar.
    """
    p = maps.float()
    t = target.float()
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ValueError("oks_heatmap_loss_keypointwise: target maps must lie in [0, 1]")
    m = weights.float()[..., None, None]
    risk = (p * (1.0 - t) * m).sum(dim=(-2, -1))
    grad = (sobel_gradient_sq(p) * m).flatten(-2).amax(dim=-1)
    return ((1.0 - smoothing_weight) * risk + smoothing_weight * grad).mean()


def dual_oks_targets(expert_maps: torch.Tensor, wide_maps: torch.Tensor, wide_target: torch.Tensor,
                     mask: torch.Tensor, bbox_mask=None, in_padding: float = 1.0, out_padding: float = 1.25,
                     spreads=DEFAULT_SPREAD) -> torch.Tensor:
    """Target of the OKS branch: o = exp(-d^2 / (2 A (2 sigma_k)^2)), A = 1628.16 (spec 4.4), d in input px between
    the merged prediction (``decode_dual``) and the GT decoded from the wide target; 0 where ~mask.

    Args:
        expert_maps, wide_maps, wide_target: (B,K,H,W). mask: (B,K) annotated & present (wide window).
        bbox_mask: (B,256,192) or None (expert-window merge). in/out_padding, spreads: the codec's.
    Returns:
        (B,K) float32 on expert_maps' device, no gradient.
    """
    def np_(t):
        return t.detach().float().cpu().numpy()

    bm = None if bbox_mask is None else np.asarray(np_(bbox_mask) if torch.is_tensor(bbox_mask) else bbox_mask)
    pred = decode_dual(np_(expert_maps), np_(wide_maps), bm, in_padding, out_padding, spreads).keypoints
    gt, _ = decode_map(np_(wide_target), out_padding, spreads)  # the GT point from the wide target (official)
    d2 = ((pred - np.nan_to_num(gt)) ** 2).sum(-1)
    o = np.exp(-d2 / (2.0 * OKS_TARGET_AREA * (2.0 * COCO_SIGMAS[: d2.shape[-1]]) ** 2))
    return torch.as_tensor(o, dtype=torch.float32, device=expert_maps.device) * mask.float()


@dataclass
class DualLosses:
    """The logged loss terms (each a () tensor); ``total`` is their sum."""

    kpt: torch.Tensor
    kpt2: torch.Tensor
    presence: torch.Tensor
    visibility: torch.Tensor
    oks: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.kpt + self.kpt2 + self.presence + self.visibility + self.oks

    def as_dict(self) -> dict[str, float]:
        return {"loss_kpt": self.kpt.item(), "loss_kpt2": self.kpt2.item(),
                "loss_presence": self.presence.item(), "loss_visibility": self.visibility.item(),
                "loss_oks": self.oks.item()}


def dual_losses(out, expert_target: torch.Tensor, wide_target: torch.Tensor, expert_weights: torch.Tensor,
                wide_weights: torch.Tensor, presence: torch.Tensor, annotated: torch.Tensor,
                visible: torch.Tensor, bbox_mask=None, map_loss: str = "mse", in_padding: float = 1.0,
                out_padding: float = 1.25, spreads=DEFAULT_SPREAD,
                smoothing_weight: float = SMOOTHING_WEIGHT) -> DualLosses:
    """All ProbPose-DH losses for one batch.

    Args:
        out: DualProbPoseOutput. expert_target, wide_target: (B,K,H,W) from ``encode_dual``.
        expert_weights, wide_weights: (B,K) the 'in/all' split. presence: (B,K) 0/1 label (wide window).
        annotated: (B,K) 0/1. visible: (B,K) 0/1 (COCO v == 2). bbox_mask: (B,256,192) or None.
        map_loss: 'mse' (official head default) or 'oks'.
    Returns:
        DualLosses.
    """
    if map_loss == "mse":
        kpt = heatmap_mse_loss(out.expert_maps, expert_target, expert_weights)
        kpt2 = heatmap_mse_loss(out.wide_maps, wide_target, wide_weights)
    elif map_loss == "oks":
        kpt = oks_heatmap_loss_keypointwise(out.expert_maps, expert_target, expert_weights, smoothing_weight)
        kpt2 = oks_heatmap_loss_keypointwise(out.wide_maps, wide_target, wide_weights, smoothing_weight)
    else:
        raise ValueError(f"map_loss must be one of {MAP_LOSSES}, got {map_loss!r}")
    annotated_in = annotated.float() * presence.float()
    # presence_loss is the plain weighted BCE mean; the DP head uses it for visibility too (no class balancing).
    pres = presence_loss(out.presence, presence, annotated)
    vis = presence_loss(out.visibility, visible, annotated_in)
    target_oks = dual_oks_targets(out.expert_maps, out.wide_maps, wide_target, annotated_in, bbox_mask,
                                  in_padding, out_padding, spreads)
    return DualLosses(kpt=kpt, kpt2=kpt2, presence=pres, visibility=vis,
                      oks=oks_loss(out.oks, target_oks, annotated_in))
