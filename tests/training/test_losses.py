"""ProbPose losses (spec 4) against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.losses import (
    OKS_TARGET_AREA,
    heatmap_mse_loss,
    oks_heatmap_loss,
    oks_loss,
    oks_targets,
    presence_loss,
    sobel_gradient_sq,
    visibility_loss,
)


def _delta_3x3() -> torch.Tensor:
    p = torch.zeros(1, 1, 3, 3)
    p[0, 0, 1, 1] = 1.0
    return p


def test_sobel_of_a_delta_is_the_mirrored_kernel():
    # Cross-correlation of a centred delta: G(i, j) = k[2 - i, 2 - j]. Gx^2 + Gy^2 per pixel, by hand:
    # Gx = [[-1,0,1],[-2,0,2],[-1,0,1]], Gy = [[-1,-2,-1],[0,0,0],[1,2,1]].
    g = sobel_gradient_sq(_delta_3x3())[0, 0]
    expected = torch.tensor([[2.0, 4.0, 2.0], [4.0, 0.0, 4.0], [2.0, 4.0, 2.0]])
    torch.testing.assert_close(g, expected)


def test_oks_heatmap_loss_hand_value():
    # p = delta at the centre, T = 0.5 there: risk sum = 1 * (1 - 0.5) = 0.5; Sobel sum = 24 (see above).
    # L = (0.95 * 0.5 + 0.05 * 24) / 9 = 1.675 / 9.
    p = _delta_3x3()
    t = torch.zeros(1, 1, 3, 3)
    t[0, 0, 1, 1] = 0.5
    loss = oks_heatmap_loss(p, t, torch.ones(1, 1))
    assert float(loss) == pytest.approx(1.675 / 9, rel=1e-6)
    # A second keypoint with weight 0 contributes nothing but still counts in the mean (18 elements).
    p2, t2 = torch.cat([p, p], 1), torch.cat([t, t], 1)
    loss2 = oks_heatmap_loss(p2, t2, torch.tensor([[1.0, 0.0]]))
    assert float(loss2) == pytest.approx(1.675 / 18, rel=1e-6)
    assert float(oks_heatmap_loss(p, t, torch.zeros(1, 1))) == 0.0


def test_oks_heatmap_loss_risk_is_one_minus_expected_oks():
    # Without smoothing, sum over pixels of p (1 - T) = 1 - E_p[T] for a normalised p.
    torch.manual_seed(0)
    p = torch.rand(2, 3, 8, 6)
    p = p / p.sum(dim=(-2, -1), keepdim=True)
    t = torch.rand(2, 3, 8, 6)
    loss = oks_heatmap_loss(p, t, torch.ones(2, 3), smoothing_weight=0.0)
    expected = (1 - (p * t).sum(dim=(-2, -1))).mean() / 48
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_oks_heatmap_loss_rejects_targets_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        oks_heatmap_loss(_delta_3x3(), torch.full((1, 1, 3, 3), 1.5), torch.ones(1, 1))


def test_oks_heatmap_loss_gradient_flows_to_the_map():
    p = _delta_3x3().requires_grad_(True)
    oks_heatmap_loss(p, torch.zeros(1, 1, 3, 3), torch.ones(1, 1)).backward()
    assert p.grad is not None and torch.count_nonzero(p.grad) > 0


def test_presence_loss_hand_value():
    rho = torch.tensor([[0.8, 0.3, 0.5]])
    label = torch.tensor([[1.0, 0.0, 1.0]])
    annotated = torch.tensor([[1.0, 1.0, 0.0]])
    # (-ln 0.8 - ln 0.7 + 0) / 3; the unannotated one still counts in the denominator.
    expected = (-math.log(0.8) - math.log(0.7)) / 3
    assert float(presence_loss(rho, label, annotated)) == pytest.approx(expected, rel=1e-6)


def test_visibility_loss_class_balancing_hand_value():
    nu = torch.tensor([[0.9, 0.2, 0.6, 0.5]])
    visible = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    annotated = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # N_vis = 2, N_invis = 1 -> weights 1/2, 1/2, 1, 0 -> divided by the smallest (1/2): 1, 1, 2, 0.
    expected = (-math.log(0.9) - math.log(0.2) - 2 * math.log(0.4)) / 4
    assert float(visibility_loss(nu, visible, annotated)) == pytest.approx(expected, rel=1e-6)


def test_visibility_loss_single_class_batch():
    nu = torch.tensor([[0.9, 0.6]])
    visible = torch.tensor([[1.0, 1.0]])
    expected = (-math.log(0.9) - math.log(0.6)) / 2  # only visible ones: weight 1 each
    assert float(visibility_loss(nu, visible, torch.ones(1, 2))) == pytest.approx(expected, rel=1e-6)


def test_oks_targets_from_shifted_gaussians():
    from probpose.codec import encode_probmaps

    kp = np.full((17, 2), [96.0, 128.0])
    ann = np.ones(17, dtype=bool)
    gt = encode_probmaps(kp, ann).maps
    shift = 191.0 / 47.0  # one heatmap pixel in input px
    pred = encode_probmaps(kp + [shift, 0.0], ann).maps
    mask = torch.ones(1, 17)
    mask[0, 3] = 0
    o = oks_targets(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], mask)[0].numpy()
    sigmas = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
                       0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089])
    # A = 48 * 64 * 0.53; d = 191/47 px; o = exp(-d^2 / (2 A (2 sigma)^2)); shoulder: exp(-0.2032) = 0.816.
    expected = np.exp(-shift**2 / (2 * 1628.16 * (2 * sigmas) ** 2))
    expected[3] = 0.0
    assert OKS_TARGET_AREA == pytest.approx(1628.16)
    np.testing.assert_allclose(o, expected, atol=0.01)
    assert o[5] == pytest.approx(0.816, abs=0.01)


def test_oks_loss_hand_value():
    pred = torch.tensor([[0.5, 0.9, 0.2]])
    target = torch.tensor([[1.0, 0.6, 0.7]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # ((0.5 - 1)^2 + (0.9 - 0.6)^2 + 0) / 3 = (0.25 + 0.09) / 3
    assert float(oks_loss(pred, target, mask)) == pytest.approx(0.34 / 3, rel=1e-6)


def test_heatmap_mse_loss_hand_value():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    target[0, 1] = 3.0
    # keypoint 0: 4 pixels of error 1; keypoint 1 weighted 0 -> 4 / 8.
    assert float(heatmap_mse_loss(pred, target, torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.5)
    assert float(heatmap_mse_loss(pred, target, torch.tensor([[0.0, 1.0]]))) == pytest.approx(4 * 9 / 8)


def test_bce_losses_work_under_autocast():
    rho = torch.tensor([[0.8, 0.3]], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = presence_loss(rho, torch.tensor([[1.0, 0.0]]), torch.ones(1, 2))
    assert v.dtype == torch.float32 and math.isfinite(float(v))
