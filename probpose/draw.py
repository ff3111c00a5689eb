"""Drawing in numpy + OpenCV (rtmlib style): poses on a padded canvas, maps, credible regions.

Conventions (docs/inference.md):
- Everything is drawn on a canvas padded so that every activation window fits (the official visualiser's rule:
  the pad is how far a window extends past the image plus ``margin`` px, filled grey (80, 80, 80)). Canvas px =
  image px + ``offset``; keypoints outside the image land on the grey pad.
- Present keypoints (presence >= threshold) are filled dots and solid limbs in their side's colour (left orange,
  right blue, centre green); absent ones are hollow grey rings and dashed grey limbs.
- Activation windows are green rectangles, person boxes thin white ones.
- ProbPose-DH people (``PersonPose.is_dual``): the wide map's window is a dashed cyan rectangle and the canvas pads
  to fit it too (``pose_windows``); keypoints the merge took from the wide map get a cyan ring.
- All images are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from probpose.constants import SKELETON

__all__ = [
    "padded_canvas",
    "pose_windows",
    "draw_poses",
    "colorize_map",
    "warp_map_to_image",
    "warp_wide_map_to_image",
    "overlay_map",
    "draw_credible_region",
    "keypoint_color",
    "WINDOW_COLOR",
    "WIDE_COLOR",
    "BOX_COLOR",
    "ABSENT_COLOR",
    "PAD_FILL",
]

PAD_FILL = (80, 80, 80)
WINDOW_COLOR = (0, 200, 0)
WIDE_COLOR = (0, 220, 220)  # ProbPose-DH: the wide window (dashed) and rings on keypoints taken from the wide map
BOX_COLOR = (255, 255, 255)
ABSENT_COLOR = (170, 170, 170)
HIGHLIGHT_COLOR = (255, 0, 255)
_LEFT, _RIGHT, _CENTRE = (255, 140, 0), (0, 120, 255), (0, 200, 80)


def keypoint_color(k: int) -> tuple[int, int, int]:
    """COCO keypoint k's colour: nose green, left side (odd ids) orange, right side (even ids) blue."""
    if k == 0:
        return _CENTRE
    return _LEFT if k % 2 == 1 else _RIGHT


def _limb_color(a: int, b: int) -> tuple[int, int, int]:
    if a % 2 == b % 2 and a != 0 and b != 0:
        return keypoint_color(a)
    return _CENTRE


def padded_canvas(image: np.ndarray, windows, margin: int = 10,
                  fill: tuple[int, int, int] = PAD_FILL) -> tuple[np.ndarray, np.ndarray]:
    """Pad the image so that every window fits.

    Args:
        image: (H, W, 3) uint8. windows: (N, 4) xyxy image px (may be empty).
        margin: extra px on each side where a window sticks out.
    Returns:
        canvas (H', W', 3) uint8 (a new array), offset (2,) int: canvas px = image px + offset.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    win = np.asarray(windows, np.float64).reshape(-1, 4)
    if len(win) == 0:
        return img.copy(), np.zeros(2, np.int64)
    left = max(0.0, -win[:, 0].min())
    top = max(0.0, -win[:, 1].min())
    right = max(0.0, win[:, 2].max() - (w - 1))
    bottom = max(0.0, win[:, 3].max() - (h - 1))
    pads = [int(math.ceil(v)) + margin if v > 0 else 0 for v in (top, bottom, left, right)]
    canvas = cv2.copyMakeBorder(np.ascontiguousarray(img), *pads, cv2.BORDER_CONSTANT, value=tuple(fill))
    return canvas, np.array([pads[2], pads[0]], np.int64)


def pose_windows(people) -> np.ndarray:
    """(M, 4) xyxy image px of every window the canvas must fit: each person's activation window and, for
    ProbPose-DH people, its wide window. Pass it to ``padded_canvas`` to get ``draw_poses``' canvas and offset."""
    people = list(getattr(people, "people", people))
    wins = [p.window for p in people]
    wins += [p.wide_window for p in people if getattr(p, "wide_window", None) is not None]
    return np.asarray(wins, np.float64).reshape(-1, 4)


def _pt(xy, offset) -> tuple[int, int]:
    return int(round(float(xy[0]) + offset[0])), int(round(float(xy[1]) + offset[1]))


def _dashed_line(canvas, p0, p1, color, thickness: int, dash: int = 6, line_type: int = cv2.LINE_AA) -> None:
    x0, y0 = p0
    x1, y1 = p1
    length = math.hypot(x1 - x0, y1 - y0)
    n = max(1, int(length // dash))
    for i in range(0, n, 2):
        a, b = i / n, min(1.0, (i + 1) / n)
        cv2.line(canvas, (round(x0 + (x1 - x0) * a), round(y0 + (y1 - y0) * a)),
                 (round(x0 + (x1 - x0) * b), round(y0 + (y1 - y0) * b)), color, thickness, line_type)


def _rect(canvas, box, offset, color, thickness: int) -> None:
    cv2.rectangle(canvas, _pt(box[:2], offset), _pt(box[2:], offset), color, thickness, cv2.LINE_8)


def _dashed_rect(canvas, box, offset, color, thickness: int) -> None:
    (x0, y0), (x1, y1) = _pt(box[:2], offset), _pt(box[2:], offset)
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        _dashed_line(canvas, a, b, color, thickness, dash=8, line_type=cv2.LINE_8)


def draw_poses(image: np.ndarray, people, *, presence_threshold: float | None = None, show_windows: bool = True,
               show_boxes: bool = True, show_absent: bool = True, highlight: tuple[int, int] | None = None,
               radius: int | None = None, thickness: int | None = None, margin: int = 10,
               canvas: tuple[np.ndarray, np.ndarray] | None = None, show_wide_windows: bool = True,
               show_source: bool = True) -> np.ndarray:
    """Draw poses on a padded copy of the image.

    Args:
        image: (H, W, 3) uint8 RGB. people: list of ``inference.PersonPose`` (or a ``PoseResult``).
        presence_threshold: None uses each person's ``present``; a number re-thresholds ``presence``.
        show_windows / show_boxes: draw activation windows (green) / person boxes (white).
        show_absent: draw absent keypoints and limbs (grey, hollow / dashed).
        highlight: (person index, keypoint index) to ring in magenta.
        radius, thickness: sizes in px; default from the image size.
        canvas: (canvas, offset) from ``padded_canvas`` to draw on (e.g. with a map overlay) instead; build it from
            ``pose_windows(people)`` so that ProbPose-DH wide windows fit.
        show_wide_windows: ProbPose-DH: draw each wide window (dashed cyan).
        show_source: ProbPose-DH: ring (cyan) the keypoints the merge took from the wide map (``source == 1``).
    Returns:
        (H', W', 3) uint8 canvas; its offset is ``padded_canvas(image, pose_windows(people), margin)[1]`` (for
        ProbPose / heatmap people that is ``padded_canvas(image, [p.window ...], margin)[1]``, as before).
    """
    people = list(getattr(people, "people", people))
    if canvas is None:
        canvas_img, offset = padded_canvas(image, pose_windows(people), margin)
    else:
        canvas_img, offset = canvas[0].copy(), np.asarray(canvas[1])
    h, w = np.asarray(image).shape[:2]
    r = radius or max(2, int(round(max(h, w) / 160)))
    t = thickness or max(1, int(round(max(h, w) / 320)))
    for pi, p in enumerate(people):
        wide_window = getattr(p, "wide_window", None)
        if show_wide_windows and wide_window is not None:
            _dashed_rect(canvas_img, wide_window, offset, WIDE_COLOR, t)
        if show_windows:
            _rect(canvas_img, p.window, offset, WINDOW_COLOR, t)
        if show_boxes:
            _rect(canvas_img, p.box, offset, BOX_COLOR, 1)
        present = p.present if presence_threshold is None else p.presence >= presence_threshold
        kp = p.keypoints
        for a, b in SKELETON:
            if not (np.all(np.isfinite(kp[a])) and np.all(np.isfinite(kp[b]))):
                continue
            if present[a] and present[b]:
                cv2.line(canvas_img, _pt(kp[a], offset), _pt(kp[b], offset), _limb_color(a, b), t + 1, cv2.LINE_AA)
            elif show_absent:
                _dashed_line(canvas_img, _pt(kp[a], offset), _pt(kp[b], offset), ABSENT_COLOR, t)
        for k in range(len(kp)):
            if not np.all(np.isfinite(kp[k])):
                continue
            if present[k]:
                cv2.circle(canvas_img, _pt(kp[k], offset), r, keypoint_color(k), -1, cv2.LINE_AA)
                cv2.circle(canvas_img, _pt(kp[k], offset), r, (0, 0, 0), 1, cv2.LINE_AA)
            elif show_absent:
                cv2.circle(canvas_img, _pt(kp[k], offset), r, ABSENT_COLOR, max(1, t), cv2.LINE_AA)
            else:
                continue
            source = getattr(p, "source", None)
            if show_source and source is not None and source[k] == 1:
                cv2.circle(canvas_img, _pt(kp[k], offset), r + 2 + t, WIDE_COLOR, max(1, t), cv2.LINE_AA)
        if highlight is not None and highlight[0] == pi:
            cv2.circle(canvas_img, _pt(kp[highlight[1]], offset), 2 * r + 3, HIGHLIGHT_COLOR, t + 1, cv2.LINE_AA)
    return canvas_img


def colorize_map(m: np.ndarray, vmax: float | None = None, colormap: int = cv2.COLORMAP_INFERNO) -> np.ndarray:
    """(H, W) non-negative map -> (H, W, 3) uint8 RGB. Scaled by ``vmax`` (default: the map's max); NaN -> 0."""
    a = np.nan_to_num(np.asarray(m, np.float64), nan=0.0)
    if a.ndim != 2:
        raise ValueError(f"colorize_map takes one (H, W) map, got shape {a.shape}")
    top = float(a.max()) if vmax is None else float(vmax)
    u8 = np.zeros(a.shape, np.uint8) if top <= 0 else np.clip(np.rint(a / top * 255), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, colormap), cv2.COLOR_BGR2RGB)


def warp_map_to_image(m: np.ndarray, center, scale, image_size: tuple[int, int],
                      offset: Sequence[float] = (0, 0)) -> np.ndarray:
    """Resample a (64, 48) heatmap-grid map into image (or canvas) px by the inverse UDP affine.

    Heatmap px x_hm <-> image x = c_x - S_w/2 + x_hm * S_w / 47 (63 for y); canvas x = image x + offset.
    Args:
        m: (H_hm, W_hm) map. center, scale: (2,) the window. image_size: (w, h) of the output.
    Returns:
        (h, w) float32, bilinear, 0 outside the window.
    """
    a = np.asarray(m, np.float32)
    hm_h, hm_w = a.shape
    c = np.asarray(center, np.float64)
    s = np.asarray(scale, np.float64)
    kx, ky = (hm_w - 1) / s[0], (hm_h - 1) / s[1]
    ox, oy = float(offset[0]), float(offset[1])
    # output (canvas) px -> heatmap px
    mat = np.array([[kx, 0, (s[0] / 2 - c[0] - ox) * kx], [0, ky, (s[1] / 2 - c[1] - oy) * ky]], np.float64)
    return cv2.warpAffine(a, mat, (int(image_size[0]), int(image_size[1])),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def warp_wide_map_to_image(m: np.ndarray, wide_window, image_size: tuple[int, int],
                           offset: Sequence[float] = (0, 0)) -> np.ndarray:
    """Resample a ProbPose-DH wide map (or any map whose first / last pixel centres span ``wide_window``, e.g.
    ``PersonPose.wide_window`` = ``dual_codec.window_in_image``) into image (or canvas) px.

    The map is linear in its window: image x = x1 + x_map (x2 - x1) / 47, which is ``warp_map_to_image`` with
    center = window centre and scale = window size. Returns (h, w) float32, bilinear, 0 outside the window.
    """
    win = np.asarray(wide_window, np.float64)
    return warp_map_to_image(m, (win[:2] + win[2:]) / 2, win[2:] - win[:2], image_size, offset)


def overlay_map(canvas: np.ndarray, m: np.ndarray, alpha: float = 0.6, vmax: float | None = None) -> np.ndarray:
    """Blend a colorized map (same H, W as canvas) over the canvas where the map is > 0. Returns a new array."""
    a = np.asarray(m, np.float64)
    top = float(a.max()) if vmax is None else float(vmax)
    color = colorize_map(a, top).astype(np.float32)
    weight = alpha * np.clip(a / top, 0, 1)[..., None] if top > 0 else np.zeros(a.shape + (1,))
    weight = np.where(a[..., None] > 0, np.maximum(weight, 0.25 * alpha), 0.0)
    out = canvas.astype(np.float32) * (1 - weight) + color * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_credible_region(canvas: np.ndarray, outlines, offset: Sequence[float] = (0, 0),
                         color: tuple[int, int, int] = (255, 255, 0), alpha: float = 0.35,
                         thickness: int = 2) -> np.ndarray:
    """Fill (semi-transparent) and outline a credible region.

    Args:
        canvas: (H, W, 3) uint8. outlines: list of (M, 2) polygons in image px (``PersonPose.credible_region``'s
            ``outlines``, or an ``ImageRegion``). offset: canvas px = image px + offset.
    Returns:
        a new (H, W, 3) uint8 array.
    """
    polys = getattr(outlines, "outlines", outlines)
    out = canvas.copy()
    pts = [np.round(np.asarray(p, np.float64) + np.asarray(offset, np.float64)).astype(np.int32).reshape(-1, 1, 2)
           for p in polys if len(p)]
    if not pts:
        return out
    fill = out.copy()
    cv2.fillPoly(fill, pts, color)
    out = cv2.addWeighted(fill, alpha, out, 1 - alpha, 0)
    cv2.polylines(out, pts, True, color, thickness, cv2.LINE_AA)
    return out

