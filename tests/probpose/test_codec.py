"""Codec: spreads, targets, expected-OKS decoding, the heatmap baseline, flips, credible regions, torch twins.

Expected numbers come from the spec's table (3.1) or from the closed-form formulas evaluated by hand here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probpose import codec
from probpose.constants import FLIP_INDICES
from probpose.errors import AnnotationError

UDP = np.array([191 / 47, 255 / 63])
YS, XS = np.mgrid[0:64, 0:48]


def _hm_to_in(x, y):
    return np.array([x, y], dtype=np.float64) * UDP


def _gaussian_probmap(x, y, sigma):
    p = np.exp(-((XS - x) ** 2 + (YS - y) ** 2) / (2 * sigma**2))
    return p / p.sum()


def _random_probmaps(rng, shape):
    # Sparse, peaked maps like sparsemax output: a few blobs, exact zeros elsewhere, each map summing to 1.
    p = np.zeros((*shape, 64, 48))
    for idx in np.ndindex(*shape):
        for _ in range(3):
            x, y = rng.uniform(2, 45), rng.uniform(2, 61)
            p[idx] += rng.uniform(0.2, 1) * np.exp(-((XS - x) ** 2 + (YS - y) ** 2) / (2 * rng.uniform(0.8, 3) ** 2))
        p[idx] = np.maximum(p[idx] - 0.05 * p[idx].max(), 0)
        p[idx] /= p[idx].sum()
    return p


# ---------------------------------------------------------------------------------------------------- spreads


def test_keypoint_spreads_match_the_spec_table():
    s = codec.keypoint_spreads()
    table = [0.55, 0.55, 0.55, 0.55, 0.55, 2.2138, 2.2138, 1.8389, 1.8389, 1.3636, 1.3636,
             3.0, 3.0, 2.6849, 2.6849, 2.8098, 2.8098]
    np.testing.assert_allclose(s, table, atol=1e-4)
    radii = [2, 2, 2, 2, 2, 7, 7, 6, 6, 5, 5, 9, 9, 9, 9, 9, 9]
    assert [(codec._kernel_1d(v).size - 1) // 2 for v in s] == radii
    np.testing.assert_allclose(codec.keypoint_spreads(sigma=2.0), np.full(17, 2.0))
    np.testing.assert_allclose(codec.keypoint_spreads(sigma=-1), s)


# ---------------------------------------------------------------------------------------------------- target


def test_probmap_target_values_at_hand_checked_pixels():
    kp = np.zeros((17, 2))
    kp[0] = _hm_to_in(10, 20)  # nose, s = 0.55
    kp[11] = _hm_to_in(13.5, 40)  # left hip, s = 3
    ann = np.zeros(17, bool)
    ann[[0, 11]] = True
    t = codec.encode_probmaps(kp, ann)
    assert t.maps.shape == (17, 64, 48) and t.maps.dtype == np.float32
    assert t.maps[0].max() == t.maps[0, 20, 10] == pytest.approx(1.0)
    assert t.maps[0, 20, 11] == pytest.approx(math.exp(-1 / 1.1), rel=1e-6)
    assert t.maps[0, 21, 12] == pytest.approx(math.exp(-5 / 1.1), rel=1e-6)
    assert t.maps[11, 40, 13] == pytest.approx(math.exp(-0.25 / 6), rel=1e-6)
    assert t.maps[11, 43, 17] == pytest.approx(math.exp(-(3.5**2 + 9) / 6), rel=1e-6)
    np.testing.assert_allclose(t.heatmap_keypoints[0], [10, 20], atol=1e-12)
    # Unannotated: zero map, weight 0.
    assert t.maps[1].max() == 0 and t.weights[1] == 0
    np.testing.assert_array_equal(t.weights[[0, 11]], [1, 1])


def test_weights_far_and_just_outside_the_window():
    kp = np.tile(_hm_to_in(20, 30), (17, 1))
    ann = np.ones(17, bool)
    # s = 3 (hips): exp underflows in float64 beyond sqrt(745.1 * 6) ~ 66.9 heatmap px.
    kp[11] = _hm_to_in(-70, 30)  # 70 px left of column 0
    kp[12] = _hm_to_in(-60, 30)  # 60 px: tiny but positive in float64
    kp[13] = _hm_to_in(-1, 30)  # just outside
    # s = 0.55 (nose): limit ~ sqrt(745.1 * 1.1) ~ 28.6 px.
    kp[0] = _hm_to_in(20, 63 + 30)
    kp[1] = _hm_to_in(20, 63 + 27)
    t = codec.encode_probmaps(kp, ann)
    assert t.weights[11] == 0 and t.weights[12] == 1 and t.weights[13] == 1
    assert t.weights[0] == 0 and t.weights[1] == 1
    assert t.maps[12].max() == 0  # float32 underflow, weight kept (only the smoothness term acts)
    # Just outside: the tail peaks on the border pixel nearest the keypoint, exp(-1 / 6) there.
    assert t.maps[13, 30, 0] == t.maps[13].max() == pytest.approx(math.exp(-1 / (2 * 2.6849)), rel=1e-6)
    assert not t.in_window[13]


def test_in_window_flags_at_the_edges():
    xs = [0.0, 191.999, 192.0, -1e-9, 100.0, 100.0, 100.0]
    ys = [0.0, 255.999, 100.0, 100.0, 256.0, -0.5, 255.0]
    kp = np.tile([100.0, 100.0], (17, 1))
    kp[: len(xs), 0], kp[: len(xs), 1] = xs, ys
    t = codec.encode_probmaps(kp, np.zeros(17))  # in_window does not depend on annotation
    np.testing.assert_array_equal(t.in_window[: len(xs)], [True, True, False, False, False, False, True])
    assert t.weights.sum() == 0 and t.maps.max() == 0


def test_encode_probmaps_batched_and_validation():
    rng = np.random.default_rng(0)
    kp = rng.uniform(-20, 200, size=(3, 17, 2))
    ann = rng.random((3, 17)) > 0.3
    t = codec.encode_probmaps(kp, ann)
    assert t.maps.shape == (3, 17, 64, 48) and t.weights.shape == (3, 17)
    for n in range(3):
        np.testing.assert_array_equal(codec.encode_probmaps(kp[n], ann[n]).maps, t.maps[n])
    with pytest.raises(AnnotationError):
        codec.encode_probmaps(np.zeros((17, 3)), np.ones(17))
    with pytest.raises(AnnotationError):
        codec.encode_probmaps(np.full((17, 2), np.nan), np.ones(17))
    with pytest.raises(AnnotationError):
        codec.encode_probmaps(np.zeros((17, 2)), np.ones(16))


def test_encode_probmaps_torch_matches_numpy():
    rng = np.random.default_rng(1)
    kp = rng.uniform(-300, 400, size=(2, 17, 2))
    ann = rng.random((2, 17)) > 0.3
    t = codec.encode_probmaps(kp, ann)
    maps, weights, in_window = codec.encode_probmaps_torch(torch.from_numpy(kp), torch.from_numpy(ann))
    np.testing.assert_allclose(maps.numpy(), t.maps, atol=1e-7)
    np.testing.assert_array_equal(weights.numpy(), t.weights)
    np.testing.assert_array_equal(in_window.numpy(), t.in_window)


# ---------------------------------------------------------------------------------------------------- expected OKS


def _direct_reflect_convolution(p, spread):
    """2-D loop over kernel offsets with explicit half-sample-symmetric padding (numpy 'symmetric')."""
    r = math.ceil(3 * spread)
    a = np.arange(-r, r + 1)
    kernel = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * spread))
    kernel /= kernel.sum()
    padded = np.pad(p, r, mode="symmetric")
    h, w = p.shape
    out = np.zeros_like(p)
    for i in range(2 * r + 1):
        for j in range(2 * r + 1):
            out += kernel[i, j] * padded[i:i + h, j:j + w]
    return out


def test_expected_oks_maps_equal_a_direct_reflect_convolution():
    rng = np.random.default_rng(2)
    spreads = [0.55, 3.0, 1.3636]
    p = rng.random((3, 64, 48))
    e = codec.expected_oks_maps(p, spreads)
    for k, s in enumerate(spreads):
        np.testing.assert_allclose(e[k], _direct_reflect_convolution(p[k], s), atol=1e-13)
    # Maps smaller than the kernel (several reflections) still agree.
    q = rng.random((2, 7, 5))
    e = codec.expected_oks_maps(q, [3.0, 0.55])
    np.testing.assert_allclose(e[0], _direct_reflect_convolution(q[0], 3.0), atol=1e-13)
    # float32 in, float32 out (as scipy returns it).
    assert codec.expected_oks_maps(p.astype(np.float32), spreads).dtype == np.float32


def test_expected_oks_maps_equal_scipy_reflect():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    p = rng.random((2, 17, 64, 48))
    e = codec.expected_oks_maps(p)
    for k, s in enumerate(codec.keypoint_spreads()):
        r = math.ceil(3 * s)
        a = np.arange(-r, r + 1)
        kernel = np.exp(-(a[:, None] ** 2 + a[None, :] ** 2) / (2 * s))
        kernel /= kernel.sum()
        np.testing.assert_allclose(e[1, k], ndimage.convolve(p[1, k], kernel, mode="reflect"), atol=1e-13)


# ---------------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("x, y", [(20.0, 30.0), (20.25, 30.5), (7.6, 50.3), (33.9, 12.1), (40.5, 5.75)])
def test_decode_expected_oks_recovers_subpixel_keypoints(x, y):
    p = np.stack([_gaussian_probmap(x, y, 1.5)] * 17)
    d = codec.decode_expected_oks(p)
    assert d.keypoints.shape == (17, 2) and d.scores.shape == (17,)
    np.testing.assert_allclose(d.heatmap_xy, np.tile([x, y], (17, 1)), atol=0.1)
    np.testing.assert_allclose(d.keypoints, d.heatmap_xy * UDP, atol=1e-12)
    # Score = raw p at the integer arg-max (the Gaussian's nearest pixel).
    np.testing.assert_allclose(d.scores, p[0, int(round(y)), int(round(x))])


def test_decode_expected_oks_keeps_the_integer_location_on_the_border():
    p = np.zeros((17, 64, 48))
    p[:, 30, 0], p[:, 31, 0] = 0.6, 0.4  # arg-max on the left border column
    d = codec.decode_expected_oks(p)
    np.testing.assert_array_equal(d.heatmap_xy, np.tile([0.0, 30.0], (17, 1)))
    np.testing.assert_allclose(d.scores, 0.6)
    # The same pattern inside the map gets a sub-pixel step towards row 31.
    q = np.zeros((17, 64, 48))
    q[:, 30, 10], q[:, 31, 10] = 0.6, 0.4
    dq = codec.decode_expected_oks(q)
    assert np.all((dq.heatmap_xy[:, 1] > 30.0) & (dq.heatmap_xy[:, 1] < 30.5))
    np.testing.assert_allclose(dq.heatmap_xy[:, 0], 10.0, atol=1e-9)


def test_decode_argmax_takes_the_first_maximum_and_the_max_as_score():
    p = np.full((2, 17, 64, 48), 1 / 3072)
    p[1, 3, 5, 7] = 0.5
    d = codec.decode_argmax(p)
    np.testing.assert_array_equal(d.heatmap_xy[0, 0], [0, 0])  # ties: first in row-major order
    np.testing.assert_array_equal(d.heatmap_xy[1, 3], [7, 5])
    assert d.scores[1, 3] == 0.5
    np.testing.assert_allclose(d.keypoints[1, 3], [7 * 191 / 47, 5 * 255 / 63])


def test_argmax_dark_and_heatmap_baseline_recover_encoded_keypoints():
    rng = np.random.default_rng(4)
    # Away from the border (the zero-padded blur biases DARK within a few px of it).
    hm = np.column_stack([rng.uniform(8, 40, 17), rng.uniform(8, 56, 17)])
    kp = hm * UDP
    # ArgMaxProbMap on the ProbPose target (the OKS-branch target of spec 4.4).
    d = codec.decode_argmax_dark(codec.encode_probmaps(kp, np.ones(17)).maps)
    np.testing.assert_allclose(d.keypoints, kp, atol=0.05)
    # Baseline: UDP Gaussian heatmap, arg-max + DARK-UDP.
    t = codec.encode_heatmaps(kp, np.ones(17))
    d = codec.decode_heatmaps(t.maps)
    np.testing.assert_allclose(d.keypoints, kp, atol=0.05)
    np.testing.assert_allclose(d.scores, t.maps.reshape(17, -1).max(1))
    # A map with no positive value keeps mmpose's (-1, -1) marker.
    z = codec.decode_heatmaps(-np.ones((1, 64, 48), np.float32))
    np.testing.assert_array_equal(z.heatmap_xy, [[-1, -1]])


def test_heatmap_target_truncation_and_weights():
    sigma = 2.0
    kp = np.tile(_hm_to_in(20, 30), (17, 1))
    kp[1] = _hm_to_in(-3, 30)  # 3 px outside: patch [-8, 5) still overlaps the map
    kp[2] = _hm_to_in(-9, 30)  # patch [-15, -2) entirely outside -> weight 0
    ann = np.ones(17, bool)
    ann[3] = False
    t = codec.encode_heatmaps(kp, ann, sigma=sigma)
    assert t.maps[0, 30, 20] == pytest.approx(1.0)
    assert t.maps[0, 30, 26] == pytest.approx(math.exp(-36 / 8), rel=1e-6)  # 3 sigma: still in the patch
    assert t.maps[0, 30, 27] == 0  # beyond the (2r+1)^2 patch, r = 6
    assert t.maps[1, 30, 0] == pytest.approx(math.exp(-9 / 8), rel=1e-6)
    assert t.maps[1, 30, 4] == pytest.approx(math.exp(-49 / 8), rel=1e-6)
    assert t.maps[1, 30, 5] == 0
    np.testing.assert_array_equal(t.weights[:4], [1, 1, 0, 0])
    assert t.maps[2].max() == 0 and t.maps[3].max() == 0


# ---------------------------------------------------------------------------------------------------- torch twins


def test_torch_twins_match_numpy():
    rng = np.random.default_rng(5)
    p = _random_probmaps(rng, (2, 17))
    e = codec.expected_oks_maps(p)
    np.testing.assert_allclose(codec.expected_oks_maps_torch(torch.from_numpy(p)).numpy(), e, atol=1e-12)
    d = codec.decode_expected_oks(p)
    dt = codec.decode_expected_oks_torch(torch.from_numpy(p))
    np.testing.assert_allclose(dt.heatmap_xy.numpy(), d.heatmap_xy, atol=1e-9)
    np.testing.assert_allclose(dt.keypoints.numpy(), d.keypoints, atol=1e-9)
    np.testing.assert_allclose(dt.scores.numpy(), d.scores, atol=1e-12)
    d32 = codec.decode_expected_oks_torch(torch.from_numpy(p.astype(np.float32)))
    np.testing.assert_allclose(d32.keypoints.numpy(), d.keypoints, atol=1e-3)
    np.testing.assert_array_equal(codec.flip_maps_torch(torch.from_numpy(p)).numpy(), codec.flip_maps(p))


# ---------------------------------------------------------------------------------------------------- flips


def test_flip_maps_is_an_involution_and_matches_flipped_keypoints():
    rng = np.random.default_rng(6)
    p = rng.random((2, 17, 64, 48))
    np.testing.assert_array_equal(codec.flip_maps(codec.flip_maps(p)), p)
    # UDP: mirroring the crop (u -> 191 - u) and swapping left/right gives exactly the flipped target.
    kp = np.column_stack([rng.uniform(0, 191, 17), rng.uniform(0, 255, 17)])
    ann = rng.random(17) > 0.2
    flipped_kp = np.column_stack([191 - kp[:, 0], kp[:, 1]])[list(FLIP_INDICES)]
    t = codec.encode_probmaps(flipped_kp, ann[list(FLIP_INDICES)])
    np.testing.assert_allclose(codec.flip_maps(codec.encode_probmaps(kp, ann).maps), t.maps, atol=1e-6)
    v = np.arange(17.0)
    np.testing.assert_array_equal(codec.flip_keypoint_vectors(v)[:3], [0, 2, 1])
    np.testing.assert_array_equal(codec.flip_keypoint_vectors(codec.flip_keypoint_vectors(v)), v)


# ---------------------------------------------------------------------------------------------------- credible regions


def test_credible_region_hand_example():
    p = np.zeros((64, 48))
    p[5, 5], p[6, 6], p[7, 7] = 0.5, 0.3, 0.2
    r = codec.credible_region(p, 0.6)
    assert r.area == 2 and r.mass == pytest.approx(0.8) and r.threshold == pytest.approx(0.3)
    assert r.mask[5, 5] and r.mask[6, 6] and not r.mask[7, 7] and r.mask.sum() == 2
    assert codec.credible_region(p, 0.5).area == 1
    assert codec.credible_region(p, 1.0).area == 3  # never beyond the support
    assert codec.credible_level(p, (6, 6)) == pytest.approx(0.8)
    assert codec.credible_level(p, (5.3, 4.8)) == pytest.approx(0.5)  # rounds to pixel (5, 5)
    assert codec.credible_level(p, (0, 0)) == pytest.approx(1.0)  # outside the support
    assert codec.credible_level(p, (100, -7)) == pytest.approx(1.0)  # clipped to (47, 0)


def test_credible_region_properties_on_random_maps():
    rng = np.random.default_rng(7)
    p = _random_probmaps(rng, (1,))[0]
    areas = []
    for m in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        r = codec.credible_region(p, m)
        assert r.mass >= m and r.area == r.mask.sum()
        assert p[r.mask].min() >= p[~r.mask].max()  # the top pixels, so the smallest such set
        assert p[r.mask].sum() == pytest.approx(r.mass)
        areas.append(r.area)
    assert areas == sorted(areas) and areas[0] < areas[-1]
    one_hot = np.zeros((64, 48))
    one_hot[10, 20] = 1.0
    r = codec.credible_region(one_hot, 0.9)
    assert r.area == 1 and r.mask[10, 20] and r.mass == 1.0
    # Level of the arg-max pixel = the maximum's share; level <= m puts the pixel inside the m-region.
    y, x = np.unravel_index(np.argmax(p), p.shape)
    assert codec.credible_level(p, (x, y)) == pytest.approx(p.max() / p.sum())
    for _ in range(20):
        q = (rng.integers(0, 48), rng.integers(0, 64))
        level = codec.credible_level(p, q)
        if level < 1:
            assert codec.credible_region(p, level).mask[q[1], q[0]]
    with pytest.raises(ValueError):
        codec.credible_region(p, 0.0)


def test_credible_levels_vectorised_equals_the_loop():
    rng = np.random.default_rng(8)
    p = _random_probmaps(rng, (2, 3))
    xy = rng.uniform(-5, 60, size=(2, 3, 2))
    levels = codec.credible_levels(p, xy)
    assert levels.shape == (2, 3)
    for idx in np.ndindex(2, 3):
        assert levels[idx] == pytest.approx(codec.credible_level(p[idx], xy[idx]))


def test_region_outline_polygons_in_pixel_centres():
    mask = np.zeros((64, 48), bool)
    mask[10:21, 5:16] = True
    mask[40, 30] = True
    polys = codec.region_outline(mask)
    assert len(polys) == 2
    boxes = sorted((p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()) for p in polys)
    assert boxes == [(5, 10, 15, 20), (30, 40, 30, 40)]
    assert codec.region_outline(np.zeros((64, 48), bool)) == []


def test_dark_blur_equals_the_zero_padded_cv2_recipe():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(9)
    maps = rng.random((4, 64, 48)).astype(np.float32)
    ours = codec._blur_maps(maps, 11)
    for k in range(4):
        ref = cv2.GaussianBlur(np.pad(maps[k], 5), (11, 11), 0)[5:-5, 5:-5]
        ref = ref * (maps[k].max() / ref.max())
        np.testing.assert_allclose(ours[k], ref, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_twins_on_cuda_match_numpy():
    rng = np.random.default_rng(10)
    p = _random_probmaps(rng, (2, 17))
    d = codec.decode_expected_oks(p)
    dt = codec.decode_expected_oks_torch(torch.from_numpy(p).cuda())
    assert dt.keypoints.device.type == "cuda"
    np.testing.assert_allclose(dt.keypoints.cpu().numpy(), d.keypoints, atol=1e-6)
    kp = rng.uniform(-50, 250, size=(2, 17, 2))
    maps, _, _ = codec.encode_probmaps_torch(torch.from_numpy(kp).cuda(), torch.ones(2, 17, device="cuda"))
    np.testing.assert_allclose(maps.cpu().numpy(), codec.encode_probmaps(kp, np.ones((2, 17))).maps, atol=1e-6)
