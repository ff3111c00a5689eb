"""Drawing: padded canvas geometry, pixels painted where expected (including the pad), map warping."""

from __future__ import annotations

import numpy as np
import pytest

from probpose import dual_codec, geometry
from probpose.draw import (
    ABSENT_COLOR,
    PAD_FILL,
    WIDE_COLOR,
    WINDOW_COLOR,
    colorize_map,
    draw_credible_region,
    draw_poses,
    keypoint_color,
    overlay_map,
    padded_canvas,
    pose_windows,
    warp_map_to_image,
    warp_wide_map_to_image,
)
from probpose.inference import PersonPose


def _person(keypoints, present, box=(10.0, 20.0, 50.0, 90.0)) -> PersonPose:
    box = np.asarray(box, np.float64)
    c, s = geometry.box_to_window(box)
    kp = np.asarray(keypoints, np.float64)
    n = len(kp)
    presence = np.where(present, 0.9, 0.1)
    return PersonPose(box=box, box_source="given", center=c, scale=s, window=geometry.window_xyxy(c, s),
                      keypoints=kp, presence=presence, present=np.asarray(present), visibility=presence,
                      oks=presence, keypoint_scores=presence, in_image=np.ones(n, bool),
                      probmaps=np.full((n, 64, 48), 1 / 3072, np.float32), score=0.5)


def test_padded_canvas_fits_windows():
    img = np.full((100, 80, 3), 200, np.uint8)
    canvas, off = padded_canvas(img, [[-30.5, 10, 50, 60], [0, 0, 100, 99]])
    # left: ceil(30.5) + 10 = 41; right: 100 - 79 = 21 + 10 = 31; top / bottom: none needed.
    np.testing.assert_array_equal(off, [41, 0])
    assert canvas.shape == (100, 41 + 80 + 31, 3)
    np.testing.assert_array_equal(canvas[:, 41:121], img)
    assert (canvas[:, :41] == PAD_FILL).all() and (canvas[:, 121:] == PAD_FILL).all()
    same, off0 = padded_canvas(img, np.zeros((0, 4)))
    np.testing.assert_array_equal(same, img) and np.testing.assert_array_equal(off0, [0, 0])


def test_keypoint_outside_the_image_is_painted_on_the_pad():
    img = np.full((100, 80, 3), 255, np.uint8)
    kp = np.full((17, 2), 40.0)
    kp[:, 1] = np.linspace(30, 80, 17)
    kp[9] = (-12.0, 50.0)  # left wrist outside the image, present
    kp[10] = (60.0, 50.0)  # right wrist inside, absent
    present = np.ones(17, bool)
    present[10] = False
    person = _person(kp, present, box=(0.0, 20.0, 50.0, 90.0))
    canvas = draw_poses(img, [person], show_windows=False, show_boxes=False, radius=3)
    _, off = padded_canvas(img, [person.window])
    assert off[0] > 12
    x, y = int(round(-12 + off[0])), int(round(50 + off[1]))
    np.testing.assert_array_equal(canvas[y, x], keypoint_color(9))  # filled dot on the grey pad
    x, y = int(round(60 + off[0])), int(round(50 + off[1]))
    ring = canvas[y - 3:y + 4, x - 3:x + 4].reshape(-1, 3)
    grey = (ring[:, 0] == ring[:, 1]) & (ring[:, 1] == ring[:, 2]) & (ring[:, 0] <= ABSENT_COLOR[0] + 20)
    assert grey.any()  # hollow grey ring (anti-aliased) for the absent keypoint
    assert not (ring == keypoint_color(10)).all(axis=1).any()
    # Re-thresholding at draw time: threshold 0.95 makes every keypoint absent -> no colour dots at all.
    none = draw_poses(img, [person], presence_threshold=0.95, show_windows=False, show_boxes=False, radius=3)
    x, y = int(round(-12 + off[0])), int(round(50 + off[1]))
    assert not (none[y, x] == keypoint_color(9)).all()


def test_windows_and_boxes_drawn():
    img = np.zeros((120, 100, 3), np.uint8)
    person = _person(np.full((17, 2), 30.0), np.ones(17, bool))
    canvas = draw_poses(img, [person], thickness=1)
    _, off = padded_canvas(img, [person.window])
    x1, y1 = np.round(person.window[:2] + off).astype(int)
    x2, y2 = np.round(person.window[2:] + off).astype(int)
    ymid = (y1 + y2) // 2
    assert (canvas[ymid, x1] == WINDOW_COLOR).all() and (canvas[ymid, x2] == WINDOW_COLOR).all()
    bx = int(round(person.box[0] + off[0]))
    assert (canvas[int(person.box[1] + off[1]) + 20, bx] > 200).all()  # white box edge
    plain = draw_poses(img, [person], show_windows=False, show_boxes=False)
    assert not (plain[ymid, x1] == WINDOW_COLOR).all()


def test_colorize_map():
    m = np.zeros((4, 5))
    m[1, 2] = 2.0
    m[3, 4] = 1.0
    rgb = colorize_map(m)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == rgb[2, 2]).all()  # equal values, equal colours
    assert rgb[1, 2].sum() > rgb[3, 4].sum() > rgb[0, 0].sum()  # inferno brightens with value
    assert (colorize_map(np.zeros((3, 3))) == colorize_map(np.zeros((3, 3)))[0, 0]).all()
    with pytest.raises(ValueError):
        colorize_map(np.zeros((2, 3, 4)))


def test_warp_map_to_image_is_the_inverse_udp():
    c, s = np.array([50.0, 60.0]), np.array([47.0, 63.0])  # 1 heatmap px = 1 image px
    m = np.zeros((64, 48), np.float32)
    m[10, 20] = 1.0  # heatmap (x=20, y=10) -> image (50 - 23.5 + 20, 60 - 31.5 + 10) = (46.5, 38.5)
    out = warp_map_to_image(m, c, s, (120, 120))
    ys, xs = np.nonzero(out > 0)
    assert xs.min() == 46 and xs.max() == 47 and ys.min() == 38 and ys.max() == 39
    np.testing.assert_allclose(out[38:40, 46:48], 0.25, atol=1e-6)  # bilinear split of a half-pixel shift
    shifted = warp_map_to_image(m, c, s, (120, 120), offset=(5, 7))
    np.testing.assert_allclose(shifted[45:47, 51:53], 0.25, atol=1e-6)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)


def test_overlay_and_credible_region_change_pixels():
    canvas = np.zeros((50, 50, 3), np.uint8)
    m = np.zeros((50, 50))
    m[10:20, 10:20] = 1.0
    over = overlay_map(canvas, m)
    assert over[15, 15].sum() > 0 and (over[40, 40] == 0).all()
    square = [np.array([[30.0, 30.0], [40.0, 30.0], [40.0, 40.0], [30.0, 40.0]])]
    drawn = draw_credible_region(canvas, square, offset=(2, 0), color=(255, 255, 0))
    assert drawn[35, 37].sum() > 0 and (drawn[5, 5] == 0).all()
    assert (canvas == 0).all()  # input untouched


def _dual_person(keypoints, source, box=(40.0, 20.0, 80.0, 100.0)) -> PersonPose:
    p = _person(keypoints, np.ones(len(keypoints), bool), box)
    p.source = np.asarray(source)
    p.expert_keypoints = p.wide_keypoints = p.keypoints
    p.wide_maps = p.probmaps.copy()
    p.wide_window = dual_codec.window_in_image(1.25, p.center, p.scale)
    p.map_paddings, p.map_spread = (1.0, 1.25), 2.0
    return p


def test_dual_person_draws_the_wide_window_and_wide_source_rings():
    # Box 40x80 -> window S = (75, 100) about (60, 60): x 22.5..97.5, y 10..110; wide window 239/191 and 319/255
    # of that: x 13.07..106.93, y -2.55..122.55, so the canvas pads ceil(2.55) + 10 = 13 px on top and
    # ceil(122.55 - 119) + 10 = 14 px at the bottom.
    img = np.zeros((120, 120, 3), np.uint8)
    kp = np.full((17, 2), 60.0)
    kp[9] = (16.0, 60.0)  # outside the activation window, inside the wide one
    source = np.zeros(17, np.int8)
    source[9] = 1
    person = _dual_person(kp, source)
    np.testing.assert_allclose(person.wide_window, [60 - 239 / 191 * 37.5, 60 - 319 / 255 * 50,
                                                    60 + 239 / 191 * 37.5, 60 + 319 / 255 * 50])
    assert person.is_dual
    canvas = draw_poses(img, [person], thickness=1, radius=3)
    np.testing.assert_array_equal(pose_windows([person]), [person.window, person.wide_window])
    _, off = padded_canvas(img, pose_windows([person]))
    np.testing.assert_array_equal(off, [0, 13])
    assert canvas.shape == (13 + 120 + 14, 120, 3)
    # Dashed cyan edges: about half of each edge's pixels are the exact colour.
    top = int(round(person.wide_window[1] + off[1]))
    x0, x1 = np.round(person.wide_window[[0, 2]]).astype(int)
    on = (canvas[top, x0:x1 + 1] == WIDE_COLOR).all(-1).mean()
    assert 0.3 < on < 0.8
    left = (canvas[20:120, x0] == WIDE_COLOR).all(-1).mean()
    assert 0.3 < left < 0.8
    # Cyan ring (radius 3 + 2 + 1) around the wide-map keypoint only.
    cx, cy = 16, 60 + off[1]
    ring = canvas[cy - 7:cy + 8, cx - 7:cx + 8].reshape(-1, 3)
    assert (ring == keypoint_color(9)).all(-1).any() and (np.abs(ring.astype(int) - WIDE_COLOR).sum(-1) < 60).any()
    no_ring = draw_poses(img, [person], thickness=1, radius=3, show_source=False, show_wide_windows=False)
    ring = no_ring[cy - 7:cy + 8, cx - 7:cx + 8].reshape(-1, 3)
    assert not (np.abs(ring.astype(int) - WIDE_COLOR).sum(-1) < 60).any()
    assert not (no_ring[top, x0:x1 + 1] == WIDE_COLOR).all(-1).any()


def test_warp_wide_map_to_image_uses_the_wide_window():
    c, s = np.array([60.0, 70.0]), np.array([191.0, 255.0])  # 1 input px = 1 image px
    win = dual_codec.window_in_image(1.25, c, s)  # input -24 .. 215 / -32 .. 287 -> image x -59.5 .. 179.5
    np.testing.assert_allclose(win, [60 - 95.5 - 24, 70 - 127.5 - 32, 60 - 95.5 + 215, 70 - 127.5 + 287])
    m = np.zeros((64, 48), np.float32)
    m[63, 47] = 1.0  # the last map pixel sits on the window's bottom-right corner
    out = warp_wide_map_to_image(m, win, (200, 240), offset=(0.5, 0.5))
    assert out[230, 180] == pytest.approx(1.0, abs=1e-5)  # image (179.5, 229.5) + offset 0.5
    m[...] = 0
    m[21, 15] = 1.0  # map px (15, 21) -> input (15*239/47 - 24, 21*319/63 - 32) = (52.28, 74.33)
    out = warp_wide_map_to_image(m, win, (200, 240))
    x, y = 60 - 95.5 + 15 * 239 / 47 - 24, 70 - 127.5 + 21 * 319 / 63 - 32
    yi, xi = np.unravel_index(np.argmax(out), out.shape)
    assert abs(xi - x) <= 0.5 and abs(yi - y) <= 0.5
    assert out[yi, xi] > 0.8  # <= 0.5 image px from the peak is <= 0.1 map px: bilinear value >= 0.81
