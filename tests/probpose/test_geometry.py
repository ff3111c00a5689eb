"""Boxes, windows and the UDP affine (spec 3.5, 7.2). Expected values are derived by hand from the formulas."""

from __future__ import annotations

import numpy as np
import pytest

from probpose import codec, geometry
from probpose.errors import BoxError


def test_box_to_window_tall_and_wide_boxes():
    # Tall: w=100, h=400 -> padded (125, 500); 125 < 0.75 * 500 so the width grows to 375.
    c, s = geometry.box_to_window([10, 20, 110, 420])
    np.testing.assert_allclose(c, [60, 220])
    np.testing.assert_allclose(s, [375, 500])
    # Wide: w=400, h=100 -> padded (500, 125); the height grows to 500 / 0.75.
    c, s = geometry.box_to_window([0, 0, 400, 100])
    np.testing.assert_allclose(c, [200, 50])
    np.testing.assert_allclose(s, [500, 500 / 0.75])
    # Batched boxes give one window each.
    c, s = geometry.box_to_window(np.array([[10, 20, 110, 420], [0, 0, 400, 100]]))
    assert c.shape == (2, 2) and s.shape == (2, 2)
    np.testing.assert_allclose(s[1], [500, 500 / 0.75])


def test_fix_aspect_ratio_equals_window_of_box_to_window():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, size=(50, 2))
    wh = rng.uniform(1, 300, size=(50, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    aw = geometry.fix_aspect_ratio(boxes)
    np.testing.assert_allclose(aw, geometry.window_xyxy(*geometry.box_to_window(boxes)), atol=1e-9)
    aw_wh = aw[:, 2:] - aw[:, :2]
    np.testing.assert_allclose(aw_wh[:, 0] / aw_wh[:, 1], 0.75)
    # The window contains the box.
    assert np.all(aw[:, :2] <= boxes[:, :2]) and np.all(aw[:, 2:] >= boxes[:, 2:])


def test_bad_boxes_raise_box_error():
    with pytest.raises(BoxError):
        geometry.box_to_window([10, 10, 5, 20])  # x2 < x1
    with pytest.raises(BoxError):
        geometry.box_to_window([10, 10, 10, 10])  # empty
    with pytest.raises(BoxError):
        geometry.box_to_window([0, 0, np.nan, 10])
    with pytest.raises(BoxError):
        geometry.clip_box([700, 10, 800, 20], (640, 480))  # entirely right of the image


def test_udp_matrix_maps_window_corners_to_crop_corners():
    c, s = np.array([300.0, 200.0]), np.array([150.0, 200.0])
    m = geometry.udp_warp_matrix(c, s)
    corners = np.array([c - s / 2, c + s / 2, c])
    np.testing.assert_allclose(geometry.apply_affine(corners, m), [[0, 0], [191, 255], [95.5, 127.5]], atol=1e-9)
    # With rotation the centre stays at the crop centre; a point d px below the centre goes left by
    # 191 * d / S_w at +90 degrees: u = (191/S_w) * (-sin(90) * d + S_w/2).
    mr = geometry.udp_warp_matrix(c, s, rotation_deg=90.0)
    pts = geometry.apply_affine(np.array([c, c + [0, 30]]), mr)
    np.testing.assert_allclose(pts, [[95.5, 127.5], [95.5 - 191 * 30 / 150, 127.5]], atol=1e-9)


def test_image_input_heatmap_round_trips():
    rng = np.random.default_rng(1)
    c, s = np.array([321.7, 188.2]), np.array([141.0, 188.0])
    pts = rng.uniform(-100, 600, size=(17, 2))
    inp = geometry.image_to_input(pts, c, s)
    np.testing.assert_allclose(geometry.input_to_image(inp, c, s), pts, atol=1e-9)
    np.testing.assert_allclose(inp, geometry.apply_affine(pts, geometry.udp_warp_matrix(c, s)), atol=1e-9)
    hm = geometry.image_to_heatmap(pts, c, s)
    np.testing.assert_allclose(geometry.heatmap_to_image(hm, c, s), pts, atol=1e-9)
    # Heatmap px = input px * 47/191 (x), 63/255 (y): the codec's scaling and the geometry agree.
    np.testing.assert_allclose(codec.input_to_heatmap(inp), hm, atol=1e-9)
    np.testing.assert_allclose(geometry.heatmap_to_image(codec.input_to_heatmap(inp), c, s), pts, atol=1e-9)
    # The official route (x_hm * 192/47, then / 192 * S_w + c - S_w/2) gives the same image coordinates.
    official = (hm * [192 / 47, 256 / 63]) / [192, 256] * s + c - s / 2
    np.testing.assert_allclose(official, pts, atol=1e-9)


def test_batched_windows_broadcast_over_keypoints():
    rng = np.random.default_rng(2)
    centers = rng.uniform(100, 300, size=(3, 2))
    scales = rng.uniform(50, 200, size=(3, 2))
    pts = rng.uniform(0, 191, size=(3, 17, 2))
    out = geometry.input_to_image(pts, centers, scales)
    for n in range(3):
        np.testing.assert_allclose(out[n], geometry.input_to_image(pts[n], centers[n], scales[n]))


def test_invert_affine_and_batched_apply():
    m = geometry.udp_warp_matrix([120.0, 90.0], [60.0, 80.0], rotation_deg=25.0)
    pts = np.array([[1.0, 2.0], [150.0, -3.0], [120.0, 90.0]])
    back = geometry.apply_affine(geometry.apply_affine(pts, m), geometry.invert_affine(m))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    ms = np.stack([m, geometry.invert_affine(m)])
    out = geometry.apply_affine(np.stack([pts, pts]), ms)
    np.testing.assert_allclose(out[1], geometry.apply_affine(pts, geometry.invert_affine(m)))


def test_warp_image_puts_a_marked_pixel_where_the_matrix_says():
    # S = (191, 255) makes the warp a pure translation: u = x - c_x + 95.5, v = y - c_y + 127.5.
    img = np.zeros((400, 300, 3), np.uint8)
    img[60, 50] = (255, 128, 7)
    c, s = np.array([100.5, 150.5]), np.array([191.0, 255.0])
    crop = geometry.warp_image(img, geometry.udp_warp_matrix(c, s))
    assert crop.shape == (256, 192, 3) and crop.dtype == np.uint8
    u, v = geometry.apply_affine(np.array([50.0, 60.0]), geometry.udp_warp_matrix(c, s))
    assert (u, v) == (45.0, 37.0)
    np.testing.assert_array_equal(crop[37, 45], [255, 128, 7])
    assert crop.sum() == 255 + 128 + 7


def test_warp_image_samples_a_ramp_at_input_to_image():
    # Bilinear sampling is exact on a linear ramp, so crop[v, u] = x of input_to_image((u, v)).
    h, w = 300, 400
    ramp = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    c, s = np.array([210.3, 140.9]), np.array([150.0, 200.0])
    crop = geometry.warp_image(ramp, geometry.udp_warp_matrix(c, s))
    uv = np.array([[0, 0], [191, 255], [37, 101], [150, 20]], dtype=np.float64)
    expected = geometry.input_to_image(uv, c, s)[:, 0]
    np.testing.assert_allclose(crop[uv[:, 1].astype(int), uv[:, 0].astype(int)], expected, atol=2e-2)
    # Outside the image the border is 0.
    far = geometry.warp_image(ramp, geometry.udp_warp_matrix([-500.0, -500.0], [150.0, 200.0]))
    assert np.all(far == 0)


def test_boxes_clip_convert_and_flip():
    np.testing.assert_allclose(geometry.clip_box([-5, 10, 700, 470], (640, 480)), [0, 10, 639, 470])
    xywh = np.array([[10, 20, 30, 40]], dtype=float)
    np.testing.assert_allclose(geometry.box_xywh_to_xyxy(xywh), [[10, 20, 40, 60]])
    np.testing.assert_allclose(geometry.box_xyxy_to_xywh(geometry.box_xywh_to_xyxy(xywh)), xywh)
    pts = np.array([[0.0, 5.0], [99.0, 7.0], [30.5, 1.0]])
    np.testing.assert_allclose(geometry.flip_points_horizontal(pts, 100), [[99, 5], [0, 7], [68.5, 1]])
    np.testing.assert_allclose(geometry.flip_points_horizontal(geometry.flip_points_horizontal(pts, 100), 100), pts)


def test_clip_box_official_is_parse_data_info():
    # mmpose parse_data_info: x1 = clip(x, 0, w-1), y1 = clip(y, 0, h-1), x2 = clip(x+w, 0, w-1), y2 = clip(y+h, ...)
    boxes = np.array([[-5.0, 10.0, 705.0, 460.0], [100.0, 50.0, 20.5, 30.25], [700.0, 10.0, 30.0, 20.0]])
    out = geometry.clip_box_official(boxes, (640, 480))
    np.testing.assert_allclose(out, [[0, 10, 639, 470], [100, 50, 120.5, 80.25], [639, 10, 639, 30]])
    # same as clipping the xyxy box, for boxes overlapping the image; an outside one comes back zero-width
    np.testing.assert_allclose(out[:2], geometry.clip_box(geometry.box_xywh_to_xyxy(boxes[:2]), (640, 480)))
    assert out[2, 2] - out[2, 0] == 0
    with pytest.raises(BoxError, match="4 values"):
        geometry.clip_box_official([1, 2, 3], (640, 480))
