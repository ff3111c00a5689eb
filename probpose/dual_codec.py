"""ProbPose-DH codec: targets of the expert / wide maps, per-map decoding, the official merge rule, flips.

Spec 9 (``DoubleProbMap``, ``DoubleProbMapHead._merge_predictions``). Each map covers a window of the input crop
scaled by its padding about the crop centre: tl = centre - wh*pad/2, and map px -> input px by
scale = (wh*pad - 1)/(heatmap - 1) (padding 1 is exactly the UDP scale of ``probpose.codec``). Coordinates are
UDP input px (docs/architecture.md); wide-map keypoints may lie outside the crop (negative or >= 192 / 256).
numpy throughout; see docs/dual.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probpose.codec import (
    _check_keypoints,
    decode_expected_oks,
    encode_probmaps,
    flip_maps,
    heatmap_to_input,
)
from probpose.constants import HEATMAP_SIZE, INPUT_SIZE
from probpose.geometry import input_to_image

__all__ = [
    "DEFAULT_SPREAD",
    "MapWindow",
    "map_window",
    "input_to_map",
    "map_to_input",
    "map_to_image",
    "window_in_image",
    "DualTarget",
    "encode_dual",
    "DualDecoded",
    "decode_map",
    "decode_dual",
    "bbox_mask",
    "flip_dual_maps",
    "flip_bbox_mask",
]

DEFAULT_SPREAD = 2.0  # the official DP head's codec: sigma=2 -> s = 2 heatmap px^2 for every keypoint


@dataclass(frozen=True)
class MapWindow:
    """The part of the input crop one map covers. tl, wh: (2,) input px (x, y); scale: (2,) input px per map px."""

    padding: float
    tl: np.ndarray
    wh: np.ndarray
    scale: np.ndarray


def map_window(padding: float, input_size: tuple[int, int] = INPUT_SIZE,
               heatmap_size: tuple[int, int] = HEATMAP_SIZE) -> MapWindow:
    """Window of a map with this padding (spec 9): wh = input*pad, tl = input/2 - wh/2, scale = (wh-1)/(hm-1)."""
    if padding <= 0:
        raise ValueError(f"padding must be > 0, got {padding}")
    size = np.asarray(input_size, dtype=np.float64)
    wh = size * padding
    return MapWindow(padding=float(padding), tl=size / 2.0 - wh / 2.0, wh=wh,
                     scale=(wh - 1.0) / (np.asarray(heatmap_size, dtype=np.float64) - 1.0))


def input_to_map(xy, window: MapWindow) -> np.ndarray:
    """UDP input px (..., 2) -> map px of `window` (..., 2), float64."""
    return (np.asarray(xy, dtype=np.float64) - window.tl) / window.scale


def map_to_input(xy_map, window: MapWindow) -> np.ndarray:
    """Map px of `window` (..., 2) -> UDP input px (..., 2): the exact inverse of ``input_to_map``."""
    return np.asarray(xy_map, dtype=np.float64) * window.scale + window.tl


def map_to_image(xy_map, padding: float, center, scale) -> np.ndarray:
    """Map px of the map with this padding (..., K, 2) -> image px, for the crop window (center, scale)."""
    return input_to_image(map_to_input(xy_map, map_window(padding)), center, scale)


def window_in_image(padding: float, center, scale) -> np.ndarray:
    """The window a map covers, in image px (..., 4) xyxy; padding 1 gives ``geometry.window_xyxy``."""
    win = map_window(padding)
    corners = np.stack([win.tl, win.tl + win.wh - 1.0])  # first / last pixel centres, as window_xyxy
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    tl = input_to_image(corners[0], c, s)
    br = input_to_image(corners[1], c, s)
    return np.concatenate([tl, br], axis=-1)


# --------------------------------------------------------------------------------------------------------------
# targets


@dataclass
class DualTarget:
    """Training targets of one person (or a batch, with leading dims).

    expert_maps / wide_maps: (..., K, 64, 48) float32 Gaussians exp(-d^2/(2s)) in each map's own window.
    expert_weights / wide_weights: (..., K) float32 loss weights of the 'in/all' split (spec 9):
        wide = annotated & presence; expert = wide & in_rect (the crop-augmentation flag).
    presence: (..., K) bool, the presence label, measured against the WIDE window (0 <= x_map < W, 0 <= y_map < H).
    annotated: (..., K) bool.
    """

    expert_maps: np.ndarray
    wide_maps: np.ndarray
    expert_weights: np.ndarray
    wide_weights: np.ndarray
    presence: np.ndarray
    annotated: np.ndarray


def _encode_in_window(kp: np.ndarray, annotated: np.ndarray, window: MapWindow, spreads) -> np.ndarray:
    # encode_probmaps works in padding-1 input px; feed it this window's map px expressed in those units.
    return encode_probmaps(heatmap_to_input(input_to_map(kp, window)), annotated, spreads).maps


def encode_dual(keypoints, annotated, in_padding: float = 1.0, out_padding: float = 1.25,
                spreads=DEFAULT_SPREAD, in_rect=None) -> DualTarget:
    """Targets of both maps (``DoubleProbMap.encode`` + the head's 'in/all' weight split).

    Args:
        keypoints: (..., K, 2) UDP input px (may lie outside the crop). annotated: (..., K) (>= 0.5 = annotated).
        in_padding, out_padding: the expert / wide window paddings. spreads: s (scalar or (K,)), default 2.
        in_rect: (..., K) bool, keypoint inside the crop-augmentation rectangle (``keypoints_in_image`` before it
            is and-ed with presence); None = all True (no crop augmentation).
    Returns:
        DualTarget.
    """
    kp, ann = _check_keypoints(keypoints, annotated)
    inner, outer = map_window(in_padding), map_window(out_padding)
    expert = _encode_in_window(kp, ann, inner, spreads)
    wide = _encode_in_window(kp, ann, outer, spreads)
    w, h = HEATMAP_SIZE
    xy = input_to_map(kp, outer)
    # Official `in_image`: wide-map px compared with the map size (not size - 1).
    presence = (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
    rect = np.ones_like(ann) if in_rect is None else np.asarray(in_rect, dtype=bool)
    annotated_in = ann & presence
    return DualTarget(expert_maps=expert, wide_maps=wide,
                      expert_weights=(annotated_in & rect).astype(np.float32),
                      wide_weights=annotated_in.astype(np.float32), presence=presence, annotated=ann)


# --------------------------------------------------------------------------------------------------------------
# decoding and the merge rule


@dataclass
class DualDecoded:
    """Merged keypoints of one or more crops, plus each map's own decode (for display).

    keypoints: (..., K, 2) UDP input px, from the map `source` names (wide-map ones may lie outside the crop).
    scores: (..., K) that map's value at its integer arg-max of E (as ``decode_expected_oks``).
    source: (..., K) int8, 0 = expert map, 1 = wide map.
    expert_keypoints / wide_keypoints: (..., K, 2) input px; expert_scores / wide_scores: (..., K).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    expert_keypoints: np.ndarray
    wide_keypoints: np.ndarray
    expert_scores: np.ndarray
    wide_scores: np.ndarray


def decode_map(maps, padding: float, spreads=DEFAULT_SPREAD) -> tuple[np.ndarray, np.ndarray]:
    """Expected-OKS decode of one kind of map, mapped back with its window.

    Args:
        maps: (..., K, 64, 48). padding: the window the maps cover.
    Returns:
        keypoints (..., K, 2) UDP input px, scores (..., K) (map value at the integer arg-max of E).
    """
    d = decode_expected_oks(maps, spreads)
    return map_to_input(d.heatmap_xy, map_window(padding)), d.scores


def _inside_mask(xy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Official lookup: truncate the input-px point to a pixel; outside the crop counts as outside."""
    h, w = mask.shape[-2:]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
    xi = np.where(inside, xy[..., 0], 0).astype(np.int64)
    yi = np.where(inside, xy[..., 1], 0).astype(np.int64)
    m = mask.reshape(*mask.shape[:-2], h * w)[..., None, :]  # (..., 1, H*W): one mask for all K
    lead = np.broadcast_shapes(m.shape[:-1], xi.shape)
    vals = np.take_along_axis(np.broadcast_to(m, (*lead, h * w)), (yi * w + xi)[..., None], axis=-1)[..., 0]
    return inside & (vals > 0)


def decode_dual(expert_maps, wide_maps, bbox_mask=None, in_padding: float = 1.0, out_padding: float = 1.25,
                spreads=DEFAULT_SPREAD) -> DualDecoded:
    """Decode both maps with expected-OKS maximisation and merge per keypoint (spec 9 ``_merge_predictions``).

    Merge rule: if the wide-map keypoint lies inside `bbox_mask` (the person box warped into the crop, see
    ``bbox_mask``), the expert map's location and score are used; otherwise the wide map's. Without a mask (ours)
    the expert window is the region: a wide-map keypoint inside the expert map's window takes the expert map.

    Args:
        expert_maps, wide_maps: (..., K, 64, 48) (flip-averaged if flip test is used).
        bbox_mask: (256, 192) or (..., 256, 192) bool/0-1, one mask per crop (leading dims = the maps' before K).
        in_padding, out_padding: the windows the maps were trained on (model.config). spreads: decode kernel s.
    Returns:
        DualDecoded.
    """
    e_xy, e_scores = decode_map(expert_maps, in_padding, spreads)
    w_xy, w_scores = decode_map(wide_maps, out_padding, spreads)
    if bbox_mask is None:
        inner = map_window(in_padding)
        lo, hi = inner.tl, inner.tl + inner.wh
        use_expert = np.all((w_xy >= lo) & (w_xy < hi), axis=-1)
    else:
        use_expert = _inside_mask(w_xy, np.asarray(bbox_mask))
    return DualDecoded(keypoints=np.where(use_expert[..., None], e_xy, w_xy),
                       scores=np.where(use_expert, e_scores, w_scores),
                       source=np.where(use_expert, 0, 1).astype(np.int8),
                       expert_keypoints=e_xy, wide_keypoints=w_xy, expert_scores=e_scores, wide_scores=w_scores)


def bbox_mask(box_xyxy, center, scale, image_size: tuple[int, int] | None = None,
              input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """The official ``bbox_mask`` of TopdownAffine, computed analytically (rotation 0).

    Official: the person box, clipped to the image and truncated to int (x0, y0, x1, y1), is rasterised as ones on
    [y0:y1, x0:x1] of an image-sized uint8 mask and warped into the crop bilinearly. Here each crop pixel's image
    point gets the bilinear value of that raster (a separable tent) and counts when it rounds to 1 (>= 0.5).
    cv2's 1/32-px coordinate quantisation can flip single boundary pixels.

    Args:
        box_xyxy: (4,) image px. center, scale: (2,) the crop window. image_size: (w, h) to clip to, or None.
    Returns:
        (256, 192) bool.
    """
    b = np.asarray(box_xyxy, dtype=np.float64).copy()
    b[:2] = np.maximum(b[:2], 0)
    if image_size is not None:
        b[2:] = np.minimum(b[2:], image_size)
    x0, y0, x1, y1 = b.astype(np.int64)
    w, h = input_size
    u = np.stack([np.arange(w, dtype=np.float64), np.zeros(w)], axis=-1)
    v = np.stack([np.zeros(h), np.arange(h, dtype=np.float64)], axis=-1)
    x = input_to_image(u, center, scale, input_size)[:, 0]
    y = input_to_image(v, center, scale, input_size)[:, 1]

    def tent(t, a, c):  # bilinear value of ones on integer pixels a..c-1
        return np.clip(np.minimum(t - a + 1.0, c - t), 0.0, 1.0) if c > a else np.zeros_like(t)

    return tent(y, y0, y1)[:, None] * tent(x, x0, x1)[None, :] >= 0.5


# --------------------------------------------------------------------------------------------------------------
# flip test


def flip_dual_maps(expert_maps, wide_maps) -> tuple[np.ndarray, np.ndarray]:
    """Un-flip both maps of a mirrored pass. Both windows are centred on the crop, so column j <-> W-1-j is exact
    for any padding and ``codec.flip_maps`` serves both. Returns (expert (..., K, H, W), wide (..., K, H, W))."""
    return flip_maps(expert_maps), flip_maps(wide_maps)


def flip_bbox_mask(mask) -> np.ndarray:
    """Mirror a (..., 256, 192) crop mask along the width."""
    return np.asarray(mask)[..., ::-1]
