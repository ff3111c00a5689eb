"""Boxes, activation windows and the UDP affine between image, input crop and heatmap (spec 3.5, 7.2).

Conventions (docs/architecture.md):
- Boxes are ``xyxy`` float image pixels; sizes are ``(width, height)``; points are ``(x, y)``.
- A window is ``center`` (2,) and ``scale`` (2,) = (S_w, S_h) in image pixels; it spans [c - S/2, c + S/2].
- Input pixels are UDP-exact: crop pixel u <-> image x = c_x - S_w/2 + u * S_w / 191 (255 for y), and heatmap
  x_hm = u * 47 / 191 (63 / 255 for y). The official code multiplies heatmap coordinates by 192/47 and later
  divides by 192; the image coordinates are identical to ours.

Batched inputs: points ``(..., K, 2)`` go with ``center``/``scale`` of shape (2,) or ``(..., 2)`` (one window per
leading index; the keypoint axis is broadcast).
"""

from __future__ import annotations

import cv2
import numpy as np

from probpose.constants import ASPECT_RATIO, HEATMAP_SIZE, INPUT_SIZE, WINDOW_PADDING
from probpose.errors import BoxError

__all__ = [
    "box_to_window",
    "fix_aspect_ratio",
    "window_xyxy",
    "udp_warp_matrix",
    "warp_image",
    "invert_affine",
    "apply_affine",
    "input_to_image",
    "image_to_input",
    "heatmap_to_image",
    "image_to_heatmap",
    "clip_box",
    "clip_box_official",
    "box_xywh_to_xyxy",
    "box_xyxy_to_xywh",
    "flip_points_horizontal",
]


def _as_boxes(box: np.ndarray, what: str = "box") -> np.ndarray:
    """Validate ``(..., 4)`` xyxy boxes: finite, x2 >= x1, y2 >= y1."""
    b = np.asarray(box, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise BoxError(f"{what} must have 4 values (x1, y1, x2, y2) in its last axis, got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise BoxError(f"{what} contains NaN or infinite values: {b.tolist()}")
    if np.any(b[..., 2] < b[..., 0]) or np.any(b[..., 3] < b[..., 1]):
        raise BoxError(f"{what} must be xyxy with x2 >= x1 and y2 >= y1, got {b.tolist()} "
                       "(is it xywh? convert it with box_xywh_to_xyxy)")
    return b


def _window_args(center, scale) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    if c.shape[-1:] != (2,) or s.shape[-1:] != (2,):
        raise ValueError(f"center and scale must end in 2 values, got {c.shape} and {s.shape}")
    return c, s


def _broadcast_window(points: np.ndarray, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # One window per leading index: (N,2) windows with (N,K,2) points get the keypoint axis inserted.
    if c.ndim > 1 and points.ndim == c.ndim + 1:
        c = c[..., None, :]
    if s.ndim > 1 and points.ndim == s.ndim + 1:
        s = s[..., None, :]
    return c, s


def box_to_window(box_xyxy, aspect_ratio: float = ASPECT_RATIO,
                  padding: float = WINDOW_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Activation window of a person box (mmpose TopdownAffine with ``input_padding``).

    Centre = box midpoint; scale = padding * (w, h), then the short side is enlarged so that w / h = aspect_ratio.

    Args:
        box_xyxy: (..., 4) image px.
    Returns:
        center (..., 2), scale (..., 2) = (S_w, S_h) in image px.
    Raises:
        BoxError: malformed box, or a box with zero width and zero height.
    """
    b = _as_boxes(box_xyxy)
    wh = b[..., 2:] - b[..., :2]
    if np.any((wh[..., 0] <= 0) & (wh[..., 1] <= 0)):
        raise BoxError(f"box has zero size: {b.tolist()}; a person box needs a positive width or height")
    center = (b[..., :2] + b[..., 2:]) / 2.0
    w = wh[..., 0] * padding
    h = wh[..., 1] * padding
    wide = w > aspect_ratio * h
    scale = np.stack([np.where(wide, w, h * aspect_ratio), np.where(wide, w / aspect_ratio, h)], axis=-1)
    return center, scale


def fix_aspect_ratio(box_xyxy, aspect_ratio: float = ASPECT_RATIO, padding: float = WINDOW_PADDING) -> np.ndarray:
    """The Ex-OKS activation window of a box (``fix_bbox_aspect_ratio``): enlarge the short side to w / h =
    aspect_ratio, then scale by ``padding`` about the centre.

    Args:
        box_xyxy: (..., 4) image px.
    Returns:
        (..., 4) xyxy image px; equal to ``window_xyxy(*box_to_window(box))``.
    """
    b = _as_boxes(box_xyxy)
    center = (b[..., :2] + b[..., 2:]) / 2.0
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    # Aspect first, padding second (the Ex-OKS order); both are scalings about the centre, so they commute.
    new_w = np.maximum(w, h * aspect_ratio) * padding
    new_h = np.maximum(h, w / aspect_ratio) * padding
    half = np.stack([new_w, new_h], axis=-1) / 2.0
    return np.concatenate([center - half, center + half], axis=-1)


def window_xyxy(center, scale) -> np.ndarray:
    """Window corners [c - S/2, c + S/2]. center, scale: (..., 2). Returns (..., 4) xyxy image px."""
    c, s = _window_args(center, scale)
    return np.concatenate([c - s / 2.0, c + s / 2.0], axis=-1)


def udp_warp_matrix(center, scale, rotation_deg: float = 0.0,
                    output_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """UDP affine, image px -> crop px (spec 3.5, ``get_udp_warp_matrix``).

    u = (191/S_w) * ( cos t (x - c_x) - sin t (y - c_y) + S_w/2 )
    v = (255/S_h) * ( sin t (x - c_x) + cos t (y - c_y) + S_h/2 )
    with 191 = out_w - 1 and 255 = out_h - 1.

    Args:
        center, scale: (2,) image px. rotation_deg: t in degrees. output_size: (w, h) of the crop.
    Returns:
        (2, 3) float64 matrix for ``cv2.warpAffine`` / ``apply_affine``.
    """
    c, s = _window_args(center, scale)
    if c.shape != (2,) or s.shape != (2,):
        raise ValueError("udp_warp_matrix takes one window: center and scale of shape (2,)")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise BoxError(f"window scale must be positive and finite, got {s.tolist()}")
    t = np.deg2rad(rotation_deg)
    cos, sin = np.cos(t), np.sin(t)
    kx = (output_size[0] - 1.0) / s[0]
    ky = (output_size[1] - 1.0) / s[1]
    return np.array([
        [kx * cos, -kx * sin, kx * (-cos * c[0] + sin * c[1] + s[0] / 2.0)],
        [ky * sin, ky * cos, ky * (-sin * c[0] - cos * c[1] + s[1] / 2.0)],
    ], dtype=np.float64)


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Resample an image into the crop: bilinear, constant border 0 (black), as the official pipeline.

    Args:
        image: (H, W) or (H, W, C), any dtype cv2 accepts (uint8 typical).
        matrix: (2, 3) image -> crop, e.g. from ``udp_warp_matrix``.
    Returns:
        (out_h, out_w[, C]) same dtype as ``image``.
    """
    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(matrix, dtype=np.float64),
                          (int(output_size[0]), int(output_size[1])),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 2, 3) affine (x' = A x + b  ->  x = A^-1 x' - A^-1 b). Returns (..., 2, 3)."""
    m = np.asarray(matrix, dtype=np.float64)
    a_inv = np.linalg.inv(m[..., :2])
    b = -np.einsum("...ij,...j->...i", a_inv, m[..., 2])
    return np.concatenate([a_inv, b[..., None]], axis=-1)


def apply_affine(points, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (..., 2); or (..., 2, 3) matrices to (..., P, 2) points. Returns (..., 2)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 2:
        return p @ m[:, :2].T + m[:, 2]
    return np.einsum("...ij,...pj->...pi", m[..., :2], p) + m[..., None, :, 2]


def _grid_to_image(xy, center, scale, size: tuple[int, int]) -> np.ndarray:
    """UDP: pixel u of a (w, h) grid spanning the window -> image x = c - S/2 + u * S / (w - 1) (same for y)."""
    p = np.asarray(xy, dtype=np.float64)
    c, s = _broadcast_window(p, *_window_args(center, scale))
    return c - s / 2.0 + p * s / (np.asarray(size, np.float64) - 1.0)


def _image_to_grid(xy, center, scale, size: tuple[int, int]) -> np.ndarray:
    """Inverse of ``_grid_to_image``."""
    p = np.asarray(xy, dtype=np.float64)
    c, s = _broadcast_window(p, *_window_args(center, scale))
    return (p - c + s / 2.0) * (np.asarray(size, np.float64) - 1.0) / s


def input_to_image(xy_input, center, scale, input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Crop px -> image px (rotation 0): x = c_x - S_w/2 + u * S_w / 191, y likewise with 255.

    Args:
        xy_input: (..., K, 2) or (..., 2). center, scale: (2,) or (..., 2), one window per leading index.
    Returns:
        Same shape as ``xy_input``, float64 image px.
    """
    return _grid_to_image(xy_input, center, scale, input_size)


def image_to_input(xy_image, center, scale, input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Image px -> crop px (rotation 0), the inverse of ``input_to_image``; equals ``udp_warp_matrix`` at t = 0."""
    return _image_to_grid(xy_image, center, scale, input_size)


def heatmap_to_image(xy_heatmap, center, scale, heatmap_size: tuple[int, int] = HEATMAP_SIZE) -> np.ndarray:
    """Heatmap px -> image px (rotation 0): x = c_x - S_w/2 + x_hm * S_w / 47, y likewise with 63.

    Args:
        xy_heatmap: (..., K, 2) or (..., 2). center, scale: (2,) or (..., 2).
    Returns:
        Same shape, float64 image px.
    """
    return _grid_to_image(xy_heatmap, center, scale, heatmap_size)


def image_to_heatmap(xy_image, center, scale, heatmap_size: tuple[int, int] = HEATMAP_SIZE) -> np.ndarray:
    """Image px -> heatmap px (rotation 0), the inverse of ``heatmap_to_image``."""
    return _image_to_grid(xy_image, center, scale, heatmap_size)


def clip_box(box_xyxy, image_size: tuple[int, int]) -> np.ndarray:
    """Clip xyxy boxes to [0, w-1] x [0, h-1] (the dataset's clipping, spec 5.1).

    Args:
        box_xyxy: (..., 4). image_size: (w, h).
    Returns:
        (..., 4) float64.
    Raises:
        BoxError: malformed box, or one lying entirely outside the image.
    """
    b = _as_boxes(box_xyxy)
    w, h = float(image_size[0]), float(image_size[1])
    outside = (b[..., 2] < 0) | (b[..., 3] < 0) | (b[..., 0] > w - 1) | (b[..., 1] > h - 1)
    if np.any(outside):
        raise BoxError(f"box {b.tolist()} lies entirely outside the {int(w)}x{int(h)} image; "
                       "check that it is xyxy in this image's pixels")
    out = b.copy()
    out[..., 0::2] = np.clip(b[..., 0::2], 0.0, w - 1)
    out[..., 1::2] = np.clip(b[..., 1::2], 0.0, h - 1)
    return out


def clip_box_official(box_xywh, image_size: tuple[int, int]) -> np.ndarray:
    """A COCO GT box as the official dataset parses it (``parse_data_info``): xywh -> xyxy clipped to the image.

    x1 = clip(x, 0, w-1), y1 = clip(y, 0, h-1), x2 = clip(x + bw, 0, w-1), y2 = clip(y + bh, 0, h-1). For GT
    boxes only (evaluation); typed, clicked and detector boxes are used unclipped. No error for a box outside
    the image: it comes back with zero width or height, and the official dataset then drops the instance
    (``_is_valid_instance``: w <= 0 or h <= 0), as the caller should.

    Args:
        box_xywh: (..., 4) [x, y, w, h] image px (COCO JSON). image_size: (w, h) of the image.
    Returns:
        (..., 4) float64 xyxy.
    """
    b = np.asarray(box_xywh, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise BoxError(f"box must have 4 values (x, y, w, h) in its last axis, got shape {b.shape}")
    w, h = float(image_size[0]), float(image_size[1])
    out = np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)  # x + w before clipping, as official
    out[..., 0::2] = np.clip(out[..., 0::2], 0.0, w - 1)
    out[..., 1::2] = np.clip(out[..., 1::2], 0.0, h - 1)
    return out


def box_xywh_to_xyxy(box_xywh) -> np.ndarray:
    """(..., 4) [x, y, w, h] (COCO JSON) -> [x1, y1, x2, y2]."""
    b = np.asarray(box_xywh, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)


def box_xyxy_to_xywh(box_xyxy) -> np.ndarray:
    """(..., 4) [x1, y1, x2, y2] -> [x, y, w, h]."""
    b = np.asarray(box_xyxy, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:4] - b[..., :2]], axis=-1)


def flip_points_horizontal(points, image_width: float) -> np.ndarray:
    """Mirror points (..., 2) in an image of the given width: x -> (w - 1) - x (mmpose RandomFlip).

    Keypoint channels are not re-indexed here; use ``codec.flip_keypoint_vectors`` / FLIP_INDICES for that.
    """
    p = np.array(points, dtype=np.float64)
    p[..., 0] = (image_width - 1.0) - p[..., 0]
    return p
