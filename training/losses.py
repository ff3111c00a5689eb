"""ProbPose training losses (spec 4) and the heatmap baseline's MSE.

Total ProbPose loss = oks_heatmap_loss + presence_loss + visibility_loss + oks_loss (each weight 1; the error
branch is frozen, so its loss is omitted). All losses are computed in float32, also under autocast.
Shapes: B batch, K = 17 keypoints, H x W = 64 x 48.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from probpose.constants import COCO_SIGMAS

__all__ = [
    "oks_heatmap_loss",
    "presence_loss",
    "visibility_loss",
    "oks_loss",
    "oks_targets",
    "heatmap_mse_loss",
    "OKS_TARGET_AREA",
    "SMOOTHING_WEIGHT",
]

SMOOTHING_WEIGHT = 0.05  # official OKSHeatmapLoss(smoothing_weight=0.05)
OKS_TARGET_AREA = 48 * 64 * 0.53  # 1628.16: the fake-bbox area of the official OKS-branch target (spec 4.4)

_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
_SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


def sobel_gradient_sq(maps: torch.Tensor) -> torch.Tensor:
    """Gx^2 + Gy^2 of zero-padded 'same' Sobel cross-correlations, per map. maps (..., H, W) -> (..., H, W)."""
    shape = maps.shape
    x = maps.reshape(-1, 1, shape[-2], shape[-1])
    k = torch.stack([_SOBEL_X, _SOBEL_Y])[:, None].to(dtype=x.dtype, device=x.device)  # (2,1,3,3)
    g = F.conv2d(x, k, padding=1)
    return (g * g).sum(dim=1).reshape(shape)


def oks_heatmap_loss(probmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                     smoothing_weight: float = SMOOTHING_WEIGHT) -> torch.Tensor:
    """Expected-OKS risk plus Sobel smoothness (OKSHeatmapLoss, per_pixel, oks_type 'minus'; spec 4.1).

    L = mean_{b,k,i,j} m_bk [ (1 - smoothing) p (1 - T) + smoothing (Gx^2 + Gy^2) ], a plain mean over all
    B*K*H*W elements, masked ones included.

    Args:
        probmaps: (B,K,H,W) predicted maps p (each sums to 1). target: (B,K,H,W) T in [0,1].
        weights: (B,K) keypoint weights m.
    Returns:
        () scalar.
    """
    p = probmaps.float()
    t = target.float()
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ValueError("oks_heatmap_loss: target maps must lie in [0, 1]")
    per_pixel = (1.0 - smoothing_weight) * p * (1.0 - t) + smoothing_weight * sobel_gradient_sq(p)
    return (per_pixel * weights.float()[..., None, None]).mean()


def _bce(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Plain BCE on probabilities, log clamped at -100 like torch's BCELoss; autocast off (BCE is unsafe in fp16).
    with torch.autocast(device_type=prob.device.type, enabled=False):
        return F.binary_cross_entropy(prob.float().clamp(0, 1), target.float(), reduction="none")


def presence_loss(presence: torch.Tensor, in_window: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Presence BCE (spec 4.2): mean over B*K of annotated * BCE(rho, in_window).

    Args:
        presence: (B,K) sigmoid probabilities rho. in_window: (B,K) 0/1 label. annotated: (B,K) 0/1 weight.
    Returns:
        () scalar.
    """
    return (_bce(presence, in_window) * annotated.float()).mean()


def visibility_loss(visibility: torch.Tensor, visible: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """Class-balanced visibility BCE (spec 4.3).

    Among annotated keypoints (inside or outside the AW) visible ones weigh 1/N_vis and invisible ones 1/N_invis
    (batch counts + 1e-10); the weights are divided by the smallest positive weight, so the majority class gets 1
    and the minority N_major/N_minor. L = mean over B*K of w * BCE(nu, visible).

    Args:
        visibility: (B,K) sigmoid probabilities. visible: (B,K) 0/1 (COCO v == 2). annotated: (B,K) 0/1.
    Returns:
        () scalar.
    """
    a = annotated.float()
    vis = visible.float() * a
    invis = (1.0 - visible.float()) * a
    w = vis / (vis.sum() + 1e-10) + invis / (invis.sum() + 1e-10)
    positive = w[w > 0]
    if positive.numel():
        w = w / positive.min()
    return (_bce(visibility, visible) * w).mean()


def oks_targets(pred_maps: torch.Tensor, gt_maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Target of the OKS branch (spec 4.4): o = exp(-d^2 / (2 A (2 sigma_k)^2)), A = 1628.16, with d the distance in
    input px between the DARK-UDP decodes (ArgMaxProbMap) of the prediction and of the GT map; 0 where ~mask.

    Args:
        pred_maps, gt_maps: (B,K,H,W). mask: (B,K) annotated and in-window.
    Returns:
        (B,K) float32 on pred_maps' device, no gradient.
    """
    from probpose.codec import decode_argmax_dark

    pred_xy = np.asarray(decode_argmax_dark(pred_maps.detach().float().cpu().numpy()).keypoints)
    gt_xy = np.nan_to_num(np.asarray(decode_argmax_dark(gt_maps.detach().float().cpu().numpy()).keypoints))
    d2 = ((pred_xy - gt_xy) ** 2).sum(-1)
    o = np.exp(-d2 / (2.0 * OKS_TARGET_AREA * (2.0 * COCO_SIGMAS) ** 2))
    o = torch.as_tensor(o, dtype=torch.float32, device=pred_maps.device)
    return o * mask.float()


def oks_loss(oks_pred: torch.Tensor, target_oks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OKS self-assessment MSE (spec 4.4): mean over B*K of (m * o_hat - m * o)^2.

    Args:
        oks_pred: (B,K) sigmoid output o_hat. target_oks: (B,K) from `oks_targets`. mask: (B,K) annotated & in-AW.
    Returns:
        () scalar.
    """
    m = mask.float()
    return ((oks_pred.float() * m - target_oks.float() * m) ** 2).mean()


def heatmap_mse_loss(heatmaps: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
    """Heatmap baseline loss (mmpose KeypointMSELoss, use_target_weight): mean over B*K*H*W of w * (h - T)^2.

    Args:
        heatmaps, target: (B,K,H,W). target_weight: (B,K).
    Returns:
        () scalar.
    """
    err = (heatmaps.float() - target.float()) ** 2
    return (err * target_weight.float()[..., None, None]).mean()
