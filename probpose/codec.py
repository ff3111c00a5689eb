"""ProbPose codec: probability-map targets, expected-OKS decoding, the heatmap baseline, credible regions.

numpy throughout (rtmlib style); the torch twins used in training / on GPU end in ``_torch``.
Spec sections 3 (ProbMap codec, UDP), 4.4 (ArgMax-DARK decoding of the OKS target), 8 (coverage
calibration), 10 (flip test). See docs/codec.md for the conventions and what each "score" means.

Coordinates:
- heatmap px: column / row on the 64 x 48 grid (x_hm in [0, 47], y_hm in [0, 63]).
- input px (UDP-exact): u = x_hm * 191 / 47, v = y_hm * 255 / 63. ``geometry.input_to_image`` maps to the image.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from probpose.constants import COCO_SIGMAS, FLIP_INDICES, HEATMAP_SIZE, INPUT_SIZE, WINDOW_PADDING
from probpose.errors import AnnotationError

__all__ = [
    "keypoint_spreads",
    "ProbMapTarget",
    "encode_probmaps",
    "encode_probmaps_torch",
    "expected_oks_maps",
    "expected_oks_maps_torch",
    "Decoded",
    "decode_expected_oks",
    "decode_expected_oks_torch",
    "decode_argmax",
    "decode_argmax_dark",
    "heatmap_to_input",
    "input_to_heatmap",
    "HeatmapTarget",
    "encode_heatmaps",
    "decode_heatmaps",
    "flip_maps",
    "flip_maps_torch",
    "flip_keypoint_vectors",
    "CredibleRegion",
    "credible_region",
    "credible_level",
    "credible_levels",
    "region_outline",
]

_HM_W, _HM_H = HEATMAP_SIZE  # 48, 64
_IN_W, _IN_H = INPUT_SIZE  # 192, 256
# UDP: input px = heatmap px * (in - 1) / (hm - 1).
_UDP_SCALE = np.array([(_IN_W - 1) / (_HM_W - 1), (_IN_H - 1) / (_HM_H - 1)], dtype=np.float64)

SPREAD_MIN, SPREAD_MAX = 0.55, 3.0


# --------------------------------------------------------------------------------------------------------------
# spreads and coordinate scaling


def keypoint_spreads(sigmas: np.ndarray = COCO_SIGMAS, sigma: float | None = None) -> np.ndarray:
    """Per-keypoint spread s_k (spec 3.1), a variance in heatmap px^2 used by the target and the decode kernel.

    s_k = clip(2 * (2 sigma_k)^2 * sqrt((64/1.25) * (48/1.25)), 0.55, 3.0). A positive ``sigma`` overrides every
    s_k with that constant (the official ``sigma`` argument; -1 / None / <= 0 mean "per keypoint").

    Returns:
        (K,) float64.
    """
    sig = np.asarray(sigmas, dtype=np.float64)
    if sigma is not None and sigma > 0:
        return np.full(sig.shape, float(sigma))
    area = math.sqrt((_HM_H / WINDOW_PADDING) * (_HM_W / WINDOW_PADDING))
    return np.clip(2.0 * (2.0 * sig) ** 2 * area, SPREAD_MIN, SPREAD_MAX)


def _spreads_for(num_keypoints: int, spreads) -> np.ndarray:
    s = keypoint_spreads() if spreads is None else np.asarray(spreads, dtype=np.float64).reshape(-1)
    if s.shape == (1,):
        s = np.full(num_keypoints, s[0])
    if s.shape != (num_keypoints,):
        raise ValueError(f"need {num_keypoints} spreads (one per keypoint map), got {s.shape[0]}")
    if not np.all(s > 0):
        raise ValueError(f"spreads must be positive, got {s.tolist()}")
    return s


def heatmap_to_input(xy) -> np.ndarray:
    """Heatmap px -> UDP input px: (x * 191/47, y * 255/63). xy: (..., 2). Returns float64 (..., 2)."""
    return np.asarray(xy, dtype=np.float64) * _UDP_SCALE


def input_to_heatmap(xy) -> np.ndarray:
    """UDP input px -> heatmap px: (x * 47/191, y * 63/255). xy: (..., 2). Returns float64 (..., 2)."""
    return np.asarray(xy, dtype=np.float64) / _UDP_SCALE


def _check_maps(maps: np.ndarray, name: str = "probmaps") -> np.ndarray:
    m = np.asarray(maps)
    if m.ndim < 3:
        raise ValueError(f"{name} must be (..., K, H, W), got shape {m.shape}")
    return m


# --------------------------------------------------------------------------------------------------------------
# ProbPose target


@dataclass
class ProbMapTarget:
    """Training target of one person (or a batch, with leading dims).

    maps: (..., K, 64, 48) float32, T_k = exp(-d^2 / (2 s_k)), peak <= 1, not normalised; zeros if unannotated.
    weights: (..., K) float32, 1 iff annotated and the float64 map has any value > 0.
    in_window: (..., K) bool, the presence label: 0 <= x < 192 and 0 <= y < 256 in input px.
    heatmap_keypoints: (..., K, 2) float64, the keypoints in heatmap px.
    """

    maps: np.ndarray
    weights: np.ndarray
    in_window: np.ndarray
    heatmap_keypoints: np.ndarray


def _check_keypoints(keypoints, annotated) -> tuple[np.ndarray, np.ndarray]:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-1] != 2:
        raise AnnotationError(f"keypoints must be (K, 2) input-crop pixels, got shape {kp.shape}")
    ann = np.asarray(annotated)
    if ann.shape != kp.shape[:-1]:
        raise AnnotationError(f"annotated must have shape {kp.shape[:-1]} (one flag per keypoint), got {ann.shape}")
    ann = ann.astype(np.float64) >= 0.5  # mmpose: keypoints_visible >= 0.5 marks a labelled keypoint
    if not np.all(np.isfinite(kp[ann])):
        raise AnnotationError("an annotated keypoint has a NaN or infinite coordinate; mark it unannotated")
    return kp, ann


def encode_probmaps(keypoints, annotated, spreads=None) -> ProbMapTarget:
    """ProbMap target (spec 3.2, ``generate_probmaps``), vectorised.

    Args:
        keypoints: (..., K, 2) UDP input px (after the crop affine).
        annotated: (..., K) COCO v >= 1 (bool or the visibility values; >= 0.5 counts as annotated).
        spreads: (K,) s_k, default ``keypoint_spreads()``.
    Returns:
        ProbMapTarget.
    """
    kp, ann = _check_keypoints(keypoints, annotated)
    s = _spreads_for(kp.shape[-2], spreads)
    hm = np.where(ann[..., None], kp, 0.0) / _UDP_SCALE
    dx2 = (np.arange(_HM_W, dtype=np.float64) - hm[..., 0:1]) ** 2  # (..., K, 48)
    dy2 = (np.arange(_HM_H, dtype=np.float64) - hm[..., 1:2]) ** 2  # (..., K, 64)
    two_s = 2.0 * s[:, None]
    # Separable: 17 * (64 + 48) exps instead of 17 * 3072.
    maps = np.exp(-dy2 / two_s)[..., :, None] * np.exp(-dx2 / two_s)[..., None, :]
    maps = np.where(ann[..., None, None], maps, 0.0).astype(np.float32)
    # The float64 map's maximum sits at the nearest pixel; it is > 0 unless exp underflows (~sqrt(1490 s) px out).
    nearest = dx2.min(axis=-1) + dy2.min(axis=-1)
    weights = (ann & (np.exp(-nearest / (2.0 * s)) > 0)).astype(np.float32)
    in_window = (kp[..., 0] >= 0) & (kp[..., 0] < _IN_W) & (kp[..., 1] >= 0) & (kp[..., 1] < _IN_H)
    return ProbMapTarget(maps=maps, weights=weights, in_window=in_window,
                         heatmap_keypoints=kp / _UDP_SCALE)


def encode_probmaps_torch(keypoints, annotated, spreads=None):
    """Torch twin of ``encode_probmaps`` for on-device targets.

    Args:
        keypoints: (..., K, 2) tensor, UDP input px. annotated: (..., K) tensor (>= 0.5 = annotated).
    Returns:
        (maps (..., K, 64, 48) float32, weights (..., K) float32, in_window (..., K) bool), on keypoints' device.
    """
    import torch

    kp = keypoints.to(torch.float64)
    ann = annotated.to(torch.float64) >= 0.5
    s = torch.as_tensor(_spreads_for(kp.shape[-2], spreads), dtype=torch.float64, device=kp.device)
    scale = torch.as_tensor(_UDP_SCALE, dtype=torch.float64, device=kp.device)
    hm = torch.where(ann[..., None], kp, torch.zeros_like(kp)) / scale
    xs = torch.arange(_HM_W, dtype=torch.float64, device=kp.device)
    ys = torch.arange(_HM_H, dtype=torch.float64, device=kp.device)
    dx2 = (xs - hm[..., 0:1]) ** 2
    dy2 = (ys - hm[..., 1:2]) ** 2
    two_s = 2.0 * s[:, None]
    maps = torch.exp(-dy2 / two_s)[..., :, None] * torch.exp(-dx2 / two_s)[..., None, :]
    maps = (maps * ann[..., None, None]).to(torch.float32)
    nearest = dx2.amin(dim=-1) + dy2.amin(dim=-1)
    weights = (ann & (torch.exp(-nearest / (2.0 * s)) > 0)).to(torch.float32)
    in_window = (kp[..., 0] >= 0) & (kp[..., 0] < _IN_W) & (kp[..., 1] >= 0) & (kp[..., 1] < _IN_H)
    return maps, weights, in_window


# --------------------------------------------------------------------------------------------------------------
# expected-OKS maps: separable Gaussian with 'reflect' boundary as two matrix products


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric index (scipy.ndimage 'reflect': ... c b a | a b c ...), any distance."""
    m = np.mod(idx, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _kernel_1d(spread: float) -> np.ndarray:
    """1-D factor of the normalised 2-D kernel exp(-(a^2+b^2)/(2 s)), radius ceil(3 s)."""
    r = int(math.ceil(3.0 * spread))
    a = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(a**2) / (2.0 * spread))
    return g / g.sum()  # outer(g, g) then sums to 1, the official 2-D normalisation


def _band_matrix(n: int, spread: float) -> np.ndarray:
    """(n, n) matrix B with (B @ v)[i] = sum_a g[a] v[reflect(i + a)]: 1-D convolution with the boundary folded in."""
    g = _kernel_1d(spread)
    r = (g.size - 1) // 2
    rows = np.repeat(np.arange(n), g.size)
    cols = _reflect_index(rows + np.tile(np.arange(-r, r + 1), n), n)
    out = np.zeros((n, n), dtype=np.float64)
    np.add.at(out, (rows, cols), np.tile(g, n))
    return out


@functools.lru_cache(maxsize=32)
def _band_matrices(spreads: tuple[float, ...], height: int, width: int,
                   dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    """Cached (K, H, H) row operators and (K, W, W) transposed column operators (read-only)."""
    rows = np.stack([_band_matrix(height, s) for s in spreads]).astype(dtype)
    cols_t = np.stack([_band_matrix(width, s).T for s in spreads]).astype(dtype)
    rows.flags.writeable = False
    cols_t.flags.writeable = False
    return rows, cols_t


def expected_oks_maps(probmaps, spreads=None) -> np.ndarray:
    """E_k = p_k convolved with the normalised Gaussian G_k (spec 3.3 steps 1-2), 'reflect' boundary.

    Equal to ``scipy.ndimage.convolve(p_k, G_k, mode='reflect')`` per map, computed as B_y @ p_k @ B_x^T with
    cached banded matrices that fold in the boundary.

    Args:
        probmaps: (..., K, H, W). spreads: (K,) s_k, default ``keypoint_spreads()``.
    Returns:
        (..., K, H, W) float32 for float32 (or smaller) input, as scipy returns it; float64 for float64 input.
        (float32 halves the time; the official decoder also convolves float32 maps.)
    """
    p = _check_maps(probmaps)
    dtype = np.result_type(p.dtype, np.float32)
    p = p.astype(dtype, copy=False)
    k, h, w = p.shape[-3:]
    s = _spreads_for(k, spreads)
    rows, cols_t = _band_matrices(tuple(float(v) for v in s), h, w, dtype.name)
    return rows @ p @ cols_t


@functools.lru_cache(maxsize=16)
def _expected_oks_matrices_torch(spreads: tuple[float, ...], height: int, width: int, device, dtype):
    import torch

    rows, cols_t = _band_matrices(spreads, height, width)
    # Copies: the cached numpy arrays are read-only.
    return (torch.from_numpy(rows.copy()).to(device=device, dtype=dtype),
            torch.from_numpy(cols_t.copy()).to(device=device, dtype=dtype))


def expected_oks_maps_torch(probmaps, spreads=None):
    """Torch twin of ``expected_oks_maps``. probmaps: (..., K, H, W) tensor; computed in its dtype and device."""
    k, h, w = probmaps.shape[-3:]
    s = _spreads_for(k, spreads)
    rows, cols_t = _expected_oks_matrices_torch(tuple(float(v) for v in s), h, w, probmaps.device, probmaps.dtype)
    return rows @ probmaps @ cols_t


# --------------------------------------------------------------------------------------------------------------
# decoding


@dataclass
class Decoded:
    """Decoded keypoints of one or more crops (numpy, or torch tensors from the ``_torch`` decoders).

    keypoints: (..., K, 2) UDP input px (``geometry.input_to_image`` maps them to the image).
    scores: (..., K) the decoder's score (see each decoder; docs/codec.md).
    heatmap_xy: (..., K, 2) the same locations in heatmap px.
    """

    keypoints: Any
    scores: Any
    heatmap_xy: Any


def _argmax_2d(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First row-major arg-max of each (H, W) map. Returns x (...,), y (...,) int64 and the max (...,)."""
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w)
    idx = np.argmax(flat, axis=-1)
    vals = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    return idx % w, idx // w, vals


def _gather(maps: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w)
    return np.take_along_axis(flat, (y * w + x)[..., None], axis=-1)[..., 0]


def decode_expected_oks(probmaps, spreads=None) -> Decoded:
    """Expected-OKS maximisation (spec 3.3): argmax of E = p * G, one separable Newton step inside the border.

    The sub-pixel step uses E's central differences (no cross term), a zero second derivative becomes 1e-6, and
    the shift is not clamped. On the border the integer location is kept.

    Args:
        probmaps: (..., K, 64, 48) probability maps (flip-averaged if flip test is used).
    Returns:
        Decoded; ``scores`` = raw p at the integer arg-max of E (the official ``keypoints_conf``).
    """
    p = _check_maps(probmaps)
    e = expected_oks_maps(p, spreads)
    h, w = e.shape[-2:]
    x0, y0, _ = _argmax_2d(e)
    inside = (x0 > 0) & (x0 < w - 1) & (y0 > 0) & (y0 < h - 1)
    xm, xp = np.clip(x0 - 1, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    ym, yp = np.clip(y0 - 1, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    def at(yy, xx):
        return _gather(e, yy, xx).astype(np.float64)

    c = at(y0, x0)
    ex_p, ex_m, ey_p, ey_m = at(y0, xp), at(y0, xm), at(yp, x0), at(ym, x0)
    dxx = ex_p + ex_m - 2.0 * c
    dyy = ey_p + ey_m - 2.0 * c
    dxx = np.where(dxx == 0, 1e-6, dxx)
    dyy = np.where(dyy == 0, 1e-6, dyy)
    x = x0 - np.where(inside, 0.5 * (ex_p - ex_m) / dxx, 0.0)
    y = y0 - np.where(inside, 0.5 * (ey_p - ey_m) / dyy, 0.0)
    xy = np.stack([x, y], axis=-1).astype(np.float64)
    scores = _gather(np.asarray(p, dtype=np.float64), y0, x0)
    return Decoded(keypoints=heatmap_to_input(xy), scores=scores, heatmap_xy=xy)


def decode_expected_oks_torch(probmaps, spreads=None) -> Decoded:
    """Torch twin of ``decode_expected_oks`` (batched, device-agnostic). Returns Decoded of tensors."""
    import torch

    p = probmaps
    e = expected_oks_maps_torch(p, spreads)
    h, w = e.shape[-2:]
    flat = e.flatten(-2)
    idx = torch.argmax(flat, dim=-1)  # first maximal value, like np.argmax
    x0, y0 = idx % w, torch.div(idx, w, rounding_mode="floor")

    def at(yy, xx):
        return torch.gather(flat, -1, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

    inside = (x0 > 0) & (x0 < w - 1) & (y0 > 0) & (y0 < h - 1)
    xm, xp = (x0 - 1).clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    ym, yp = (y0 - 1).clamp(0, h - 1), (y0 + 1).clamp(0, h - 1)
    c = at(y0, x0)
    ex_p, ex_m, ey_p, ey_m = at(y0, xp), at(y0, xm), at(yp, x0), at(ym, x0)
    dxx = ex_p + ex_m - 2.0 * c
    dyy = ey_p + ey_m - 2.0 * c
    dxx = torch.where(dxx == 0, torch.full_like(dxx, 1e-6), dxx)
    dyy = torch.where(dyy == 0, torch.full_like(dyy, 1e-6), dyy)
    zero = torch.zeros_like(c)
    x = x0.to(e.dtype) - torch.where(inside, 0.5 * (ex_p - ex_m) / dxx, zero)
    y = y0.to(e.dtype) - torch.where(inside, 0.5 * (ey_p - ey_m) / dyy, zero)
    xy = torch.stack([x, y], dim=-1)
    scores = torch.gather(p.flatten(-2), -1, idx.unsqueeze(-1)).squeeze(-1)
    scale = torch.as_tensor(_UDP_SCALE, dtype=xy.dtype, device=xy.device)
    return Decoded(keypoints=xy * scale, scores=scores, heatmap_xy=xy)


def decode_argmax(probmaps) -> Decoded:
    """Plain integer arg-max (first in row-major order), no refinement. scores = the map maximum.

    Args:
        probmaps: (..., K, H, W).
    """
    m = _check_maps(probmaps)
    x0, y0, vals = _argmax_2d(m)
    xy = np.stack([x0, y0], axis=-1).astype(np.float64)
    return Decoded(keypoints=heatmap_to_input(xy), scores=vals.astype(np.float64), heatmap_xy=xy)


@functools.lru_cache(maxsize=8)
def _blur_matrix(n: int, kernel: int) -> np.ndarray:
    """(n, n) banded matrix of cv2's 1-D Gaussian (sigma from the kernel size) with zero padding outside."""
    g = cv2.getGaussianKernel(kernel, 0).reshape(-1)
    r = (kernel - 1) // 2
    out = np.zeros((n, n))
    for a in range(-r, r + 1):
        out += np.eye(n, k=a) * g[a + r]
    out.flags.writeable = False
    return out


def _blur_maps(maps: np.ndarray, kernel: int) -> np.ndarray:
    """mmpose ``gaussian_blur``: zero-pad by (k-1)/2, cv2.GaussianBlur (sigma from k), crop, rescale to each map's
    original maximum. With a pad equal to the kernel radius the crop never sees cv2's border rule, so this is a
    zero-padded separable convolution: two banded matrix products. maps: (N, H, W) with positive maxima."""
    n, h, w = maps.shape
    out = _blur_matrix(h, kernel) @ maps.astype(np.float64) @ _blur_matrix(w, kernel).T
    origin = maps.reshape(n, -1).max(axis=1)
    now = out.reshape(n, -1).max(axis=1)
    return out * (origin / now)[:, None, None]


def _refine_dark_udp(maps: np.ndarray, x0: np.ndarray, y0: np.ndarray, kernel: int) -> np.ndarray:
    """DARK-UDP (mmpose ``refine_keypoints_dark_udp``): blur, log of clip(1e-3, 50), 'edge'-padded finite
    differences, a full 2x2 Newton step with pinv(H + eps I). maps: (N, H, W). Returns refined xy (N, 2)."""
    hm = np.log(np.clip(_blur_maps(maps, kernel), 1e-3, 50.0))
    pad = np.pad(hm, ((0, 0), (1, 1), (1, 1)), mode="edge")
    n = np.arange(maps.shape[0])
    cx, cy = x0 + 1, y0 + 1
    i_ = pad[n, cy, cx]
    ix1, ix1_ = pad[n, cy, cx + 1], pad[n, cy, cx - 1]
    iy1, iy1_ = pad[n, cy + 1, cx], pad[n, cy - 1, cx]
    ix1y1, ix1_y1_ = pad[n, cy + 1, cx + 1], pad[n, cy - 1, cx - 1]
    grad = np.stack([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], axis=-1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + 2 * i_ - ix1_ - iy1_ + ix1_y1_)
    hess = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)
    hess_inv = np.linalg.pinv(hess + np.finfo(np.float32).eps * np.eye(2))
    step = np.einsum("nij,nj->ni", hess_inv, grad)
    return np.stack([x0, y0], axis=-1) - step


def _decode_dark(maps: np.ndarray, blur_kernel: int) -> Decoded:
    m = _check_maps(maps)
    lead = m.shape[:-2]
    flat = m.reshape(-1, *m.shape[-2:])
    x0, y0, vals = _argmax_2d(flat)
    xy = np.full((flat.shape[0], 2), -1.0)  # mmpose marks maps with max <= 0 as (-1, -1), unrefined
    ok = vals > 0
    if np.any(ok):
        xy[ok] = _refine_dark_udp(flat[ok], x0[ok], y0[ok], blur_kernel)
    xy = xy.reshape(*lead, 2)
    return Decoded(keypoints=heatmap_to_input(xy), scores=vals.reshape(lead).astype(np.float64), heatmap_xy=xy)


def decode_argmax_dark(maps, blur_kernel: int = 11) -> Decoded:
    """``ArgMaxProbMap`` decoding (spec 3.4): integer arg-max then DARK-UDP refinement. Used to build the OKS-branch
    target (spec 4.4) from the GT target and the current prediction.

    Args:
        maps: (..., K, H, W). blur_kernel: odd Gaussian kernel size (11: cv2 sigma 2).
    Returns:
        Decoded; scores = the map maximum. Maps whose maximum is <= 0 decode to heatmap (-1, -1) (mmpose's marker).
    """
    return _decode_dark(maps, blur_kernel)


# --------------------------------------------------------------------------------------------------------------
# heatmap baseline (ViTPose-style, mmpose UDPHeatmap)


@dataclass
class HeatmapTarget:
    """Baseline target. maps: (..., K, 64, 48) float32 unnormalised Gaussians (peak <= 1); weights: (..., K) f32."""

    maps: np.ndarray
    weights: np.ndarray


def encode_heatmaps(keypoints, annotated, sigma: float = 2.0) -> HeatmapTarget:
    """UDP Gaussian heatmaps (mmpose ``generate_udp_gaussian_heatmaps``), vectorised.

    exp(-((j - x)^2 + (i - y)^2) / (2 sigma^2)) at the UDP heatmap position (x, y), truncated to the
    (2r+1)^2 patch around the rounded keypoint (r = int(3 sigma)). Weight 0 when unannotated or when that patch
    lies entirely outside the map (the keypoint is more than ~3 sigma outside).

    Args:
        keypoints: (..., K, 2) UDP input px. annotated: (..., K). sigma: heatmap px.
    """
    kp, ann = _check_keypoints(keypoints, annotated)
    hm = np.where(ann[..., None], kp, 0.0) / _UDP_SCALE
    r = int(3 * sigma)
    mu = np.trunc(hm + 0.5)  # mmpose: (kpt + 0.5).astype(int64), i.e. truncation toward zero
    left, top = mu[..., 0] - r, mu[..., 1] - r
    right, bottom = mu[..., 0] + r + 1, mu[..., 1] + r + 1
    valid = ann & ~((left >= _HM_W) | (top >= _HM_H) | (right < 0) | (bottom < 0))
    xs = np.arange(_HM_W, dtype=np.float64)
    ys = np.arange(_HM_H, dtype=np.float64)
    in_x = (xs >= left[..., None]) & (xs < right[..., None])
    in_y = (ys >= top[..., None]) & (ys < bottom[..., None])
    gx = np.where(in_x, np.exp(-((xs - hm[..., 0:1]) ** 2) / (2 * sigma**2)), 0.0)
    gy = np.where(in_y, np.exp(-((ys - hm[..., 1:2]) ** 2) / (2 * sigma**2)), 0.0)
    maps = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]
    return HeatmapTarget(maps=maps.astype(np.float32), weights=valid.astype(np.float32))


def decode_heatmaps(heatmaps, blur_kernel: int = 11) -> Decoded:
    """Baseline decoding (mmpose UDPHeatmap, as for ViTPose): arg-max + DARK-UDP. scores = the heatmap maximum.

    Args:
        heatmaps: (..., K, 64, 48) raw head output.
    """
    return _decode_dark(heatmaps, blur_kernel)


# --------------------------------------------------------------------------------------------------------------
# flip test (spec 10)


def flip_maps(maps) -> np.ndarray:
    """Mirror maps (..., K, H, W) along W and swap left/right channels (FLIP_INDICES). UDP needs no shift."""
    m = _check_maps(maps, "maps")
    return m[..., list(FLIP_INDICES), :, ::-1]


def flip_maps_torch(maps):
    """Torch twin of ``flip_maps``."""
    import torch

    idx = torch.as_tensor(FLIP_INDICES, device=maps.device)
    return maps.index_select(-3, idx).flip(-1)


def flip_keypoint_vectors(values):
    """Re-index per-keypoint values (..., K) of a flipped pass (presence, visibility, OKS) by FLIP_INDICES.
    Works for numpy arrays and torch tensors."""
    return values[..., list(FLIP_INDICES)]


# --------------------------------------------------------------------------------------------------------------
# credible regions and coverage calibration (spec 8)


@dataclass
class CredibleRegion:
    """Highest-probability region of one map.

    mask: (H, W) bool; area: pixels in it; threshold: the smallest map value included;
    mass: the share of the map's total mass it holds (>= the requested mass).
    """

    mask: np.ndarray
    area: int
    threshold: float
    mass: float


def _as_distribution(probmap) -> np.ndarray:
    p = np.asarray(probmap, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"expected one (H, W) map, got shape {p.shape}")
    p = np.where(np.isfinite(p), np.maximum(p, 0.0), 0.0)
    total = p.sum()
    if total <= 0:
        raise ValueError("the map has no positive mass; a credible region is undefined")
    return p / total


def credible_region(probmap, mass: float = 0.9) -> CredibleRegion:
    """Smallest set of pixels holding at least ``mass`` of the map (negative values count as 0; the map is
    normalised to sum 1). Pixels are taken in decreasing value; ties go to the earlier pixel in row-major order.

    Args:
        probmap: (H, W). mass: in (0, 1].
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    p = _as_distribution(probmap)
    flat = p.ravel()
    order = np.argsort(-flat, kind="stable")
    cum = np.cumsum(flat[order])
    support = int(np.count_nonzero(flat))
    n = min(int(np.searchsorted(cum, mass, side="left")) + 1, support)
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:n]] = True
    return CredibleRegion(mask=mask.reshape(p.shape), area=n, threshold=float(flat[order[n - 1]]),
                          mass=float(cum[n - 1]))


def credible_level(probmap, xy_heatmap) -> float:
    """Coverage-calibration quantity (spec 8): the total mass of all pixels whose value is >= the value at the
    (rounded, clipped) pixel ``xy_heatmap``; i.e. the smallest credible mass whose region contains that pixel.

    A calibrated map has P(level <= q) = q for the ground truth. A pixel outside the support gets 1.0.

    Args:
        probmap: (H, W). xy_heatmap: (2,) heatmap px (x, y).
    """
    p = _as_distribution(probmap)
    h, w = p.shape
    x = int(np.clip(np.rint(xy_heatmap[0]), 0, w - 1))
    y = int(np.clip(np.rint(xy_heatmap[1]), 0, h - 1))
    return float(p[p >= p[y, x]].sum())


def credible_levels(probmaps, xy_heatmap) -> np.ndarray:
    """Vectorised ``credible_level`` for many maps: probmaps (..., H, W), xy_heatmap (..., 2). Returns (...,)."""
    p = np.asarray(probmaps, dtype=np.float64)
    h, w = p.shape[-2:]
    p = np.where(np.isfinite(p), np.maximum(p, 0.0), 0.0).reshape(-1, h * w)
    xy = np.asarray(xy_heatmap, dtype=np.float64).reshape(-1, 2)
    if xy.shape[0] != p.shape[0]:
        raise ValueError(f"need one point per map: {p.shape[0]} maps, {xy.shape[0]} points")
    x = np.clip(np.rint(xy[:, 0]), 0, w - 1).astype(np.int64)
    y = np.clip(np.rint(xy[:, 1]), 0, h - 1).astype(np.int64)
    at = p[np.arange(p.shape[0]), y * w + x]
    total = p.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(p >= at[:, None], p, 0.0).sum(axis=1) / total
    return level.reshape(np.asarray(probmaps).shape[:-2])


def region_outline(mask) -> list[np.ndarray]:
    """Outer outlines of a boolean mask (``cv2.findContours``, external contours), as (M, 2) float64 (x, y)
    polygons through the centres of the boundary pixels, in heatmap px (map them with
    ``geometry.heatmap_to_image``). A single pixel gives a one-point polygon."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool).astype(np.uint8))
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float64) for c in contours]
