"""The top-down pipeline on real COCO val photos with GT boxes (tiny random models), the cache and flip test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probpose import geometry
from probpose.constants import FLIP_INDICES, PIXEL_MEAN, PIXEL_STD, RESCORE_PRESENCE_THRESHOLD
from probpose.errors import BoxError
from probpose.image import load_image
from probpose.inference import PosePredictor, PoseResult, predict_image

IMAGE_IDS = (885, 5001)  # 3 people, one cut by the right border; 13 people


def _gt_boxes(data: dict, image_id: int) -> np.ndarray:
    b = [a["bbox"] for a in data["annotations"] if a["image_id"] == image_id and not a.get("iscrowd")]
    return geometry.box_xywh_to_xyxy(np.array(b, np.float64))


@pytest.fixture(scope="module")
def val_cases(coco_val):
    folder, ann_file = coco_val
    data = json.loads(ann_file.read_text())
    names = {i["id"]: i["file_name"] for i in data["images"]}
    return [(load_image(folder / names[i]), _gt_boxes(data, i)) for i in IMAGE_IDS]


class CountingModel(torch.nn.Module):
    """Wraps a model and counts forward calls and crops seen."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.kind, self.config, self.metadata = model.kind, model.config, {"name": "counting"}
        self.temperature = getattr(model, "temperature", 1.0)
        self.calls, self.crops = 0, 0

    def forward(self, x):
        self.calls += 1
        self.crops += x.shape[0]
        return self.inner(x)


def _sparsemax_np(z: np.ndarray) -> np.ndarray:
    """Hand sparsemax of one vector: tau from the sorted prefix sums (Martins & Astudillo 2016, alg. 1)."""
    zs = np.sort(z)[::-1]
    cum = np.cumsum(zs)
    k = np.arange(1, z.size + 1)
    kstar = k[1 + k * zs > cum].max()
    tau = (cum[kstar - 1] - 1) / kstar
    return np.maximum(z - tau, 0)


def test_pipeline_on_real_images_with_gt_boxes(val_cases, tiny_probpose):
    predictor = PosePredictor(tiny_probpose, device="cpu", batch_size=4)
    for image, boxes in val_cases:
        h, w = image.shape[:2]
        out = predictor.set_image(image, boxes, clip_boxes=True)  # GT boxes: the official dataset clips them
        n = len(boxes)
        assert out.probmaps.shape == (n, 17, 64, 48) and out.presence.shape == (n, 17)
        assert out.logits.shape == out.logits_flipped.shape == (n, 17, 64, 48)
        np.testing.assert_allclose(out.probmaps.sum((-1, -2)), 1.0, atol=1e-4)
        result = predictor.predict()
        assert isinstance(result, PoseResult) and len(result.people) == n and result.image_size == (w, h)
        for box, person in zip(boxes, result.people, strict=True):
            c, s = geometry.box_to_window(geometry.clip_box(box, (w, h)))
            np.testing.assert_allclose(person.center, c)
            np.testing.assert_allclose(person.scale, s)
            np.testing.assert_allclose(person.window, geometry.window_xyxy(c, s))
            assert person.keypoints.shape == (17, 2) and person.probmaps.shape == (17, 64, 48)
            # Decoded keypoints stay inside the window up to the sub-pixel step (< 1 heatmap px).
            tol = s / np.array([47.0, 63.0])
            assert np.all(person.keypoints >= person.window[:2] - tol)
            assert np.all(person.keypoints <= person.window[2:] + tol)
            inside = ((person.keypoints[:, 0] >= 0) & (person.keypoints[:, 0] < w)
                      & (person.keypoints[:, 1] >= 0) & (person.keypoints[:, 1] < h))
            np.testing.assert_array_equal(person.in_image, inside)
            np.testing.assert_array_equal(person.present, person.presence >= 0.3)
            sel = person.presence > RESCORE_PRESENCE_THRESHOLD
            assert person.score == pytest.approx(person.oks[sel].mean() if sel.any() else 0.0)


def test_redecoding_does_not_run_the_network(val_cases, tiny_probpose):
    image, boxes = val_cases[1]
    model = CountingModel(tiny_probpose)
    predictor = PosePredictor(model, device="cpu", batch_size=8)
    predictor.set_image(image, boxes)
    assert model.calls == 2 and model.crops == 2 * len(boxes)  # 13 people: batches of 8 + 5, each x2 for flip
    a = predictor.predict(presence_threshold=0.3)
    b = predictor.predict(presence_threshold=0.9, decoder="argmax")
    c = predictor.predict(temperature=1.0)
    assert model.calls == 2
    assert a.decoder == "expected_oks" and b.decoder == "argmax" and b.presence_threshold == 0.9
    assert c.temperature == 1.0 and a.temperature == pytest.approx(tiny_probpose.temperature)
    assert all(not p.present.any() or (p.presence[p.present] >= 0.9).all() for p in b.people)


def test_flip_test_is_the_mean_of_two_manual_passes(val_cases, tiny_probpose):
    image, boxes = val_cases[0]
    predictor = PosePredictor(tiny_probpose, device="cpu")
    out = predictor.set_image(image, boxes[:2], clip_boxes=True)
    crops = []
    for box in boxes[:2]:
        c, s = geometry.box_to_window(geometry.clip_box(box, image.shape[1::-1]))
        crops.append(geometry.warp_image(image, geometry.udp_warp_matrix(c, s)))
    x = (np.stack(crops).astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        plain, mirrored = tiny_probpose(x), tiny_probpose(x.flip(-1))
    idx = list(FLIP_INDICES)
    back = mirrored.probmaps.numpy()[:, idx, :, ::-1]
    np.testing.assert_allclose(out.probmaps, (plain.probmaps.numpy() + back) / 2, atol=1e-5)
    np.testing.assert_allclose(out.logits_flipped, mirrored.logits.numpy()[:, idx, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(out.presence, (plain.presence.numpy() + mirrored.presence.numpy()[:, idx]) / 2,
                               atol=1e-6)
    np.testing.assert_allclose(out.oks, (plain.oks.numpy() + mirrored.oks.numpy()[:, idx]) / 2, atol=1e-6)
    # Temperature re-decoding: mean of the two sparsemaxes, checked against a hand sparsemax.
    t = 0.8
    maps = predictor.probmaps_at(t)
    z, zf = out.logits[1, 5].ravel() / t, out.logits_flipped[1, 5].ravel() / t
    expected = (_sparsemax_np(z.astype(np.float64)) + _sparsemax_np(zf.astype(np.float64))) / 2
    np.testing.assert_allclose(maps[1, 5].ravel(), expected, atol=1e-5)
    # Without flip test the maps are the plain pass.
    single = PosePredictor(tiny_probpose, device="cpu", flip_test=False).set_image(image, boxes[:2], clip_boxes=True)
    np.testing.assert_allclose(single.probmaps, plain.probmaps.numpy(), atol=1e-6)
    assert single.logits_flipped is None


def test_box_partly_outside_the_image(tiny_probpose):
    image = np.full((120, 100, 3), 90, np.uint8)
    predictor = PosePredictor(tiny_probpose, device="cpu")
    predictor.set_image(image, [[-60.0, 10.0, 40.0, 110.0]])
    person = predictor.predict().people[0]
    np.testing.assert_allclose(person.box, [-60, 10, 40, 110])  # used as given, as inference_topdown does
    np.testing.assert_allclose(person.center, [-10, 60])
    assert person.window[0] < -60  # the window extends past the image
    left = person.keypoints[:, 0] < 0
    np.testing.assert_array_equal(person.in_image[left], False)
    # Force a keypoint outside: a map with all its mass at the window's left column.
    predictor.outputs.probmaps[0, 3] = 0
    predictor.outputs.probmaps[0, 3, 30, 0] = 1
    moved = predictor.predict().people[0]
    assert moved.keypoints[3, 0] == pytest.approx(person.window[0]) and not moved.in_image[3]


def _official_window(box_xyxy) -> tuple[np.ndarray, np.ndarray]:
    """mmpose by hand: bbox_xyxy2cs(padding=1.25), then TopdownAffine's fix to w / h = 192 / 256."""
    x1, y1, x2, y2 = box_xyxy
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    w, h = (w, w / 0.75) if w > h * 0.75 else (h * 0.75, h)
    return center, np.array([w, h])


# Boxes sticking out of a 100x120 image on each side, and one touching the right/bottom border (x2 = w, y2 = h).
OUTSIDE_BOXES = {"left": [-30.0, 20.0, 50.0, 100.0], "top": [10.0, -40.0, 80.0, 90.0],
                 "right": [30.0, 20.0, 140.0, 100.0], "bottom": [10.0, 30.0, 80.0, 170.0],
                 "border": [10.0, 10.0, 100.0, 120.0]}


@pytest.mark.parametrize("side", list(OUTSIDE_BOXES))
def test_boxes_sticking_out_use_the_raw_box_like_inference_topdown(tiny_probpose, side):
    box = np.array(OUTSIDE_BOXES[side])
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)
    # fp32: the reference below runs without autocast ("auto" is bf16 on CPUs with native bf16)
    predictor = PosePredictor(tiny_probpose, device="cpu", flip_test=False, precision="fp32")
    out = predictor.set_image(image, [box], box_source="typed")
    c, s = _official_window(box)
    np.testing.assert_allclose(out.centers[0], c, atol=1e-9)
    np.testing.assert_allclose(out.scales[0], s, atol=1e-9)
    np.testing.assert_array_equal(out.boxes[0], box)
    # Keypoints: the official pipeline run by hand on that window (UDP warp, normalise, forward, decode, back).
    crop = geometry.warp_image(image, geometry.udp_warp_matrix(c, s))
    x = torch.from_numpy((crop[None].astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).permute(0, 3, 1, 2)
    with torch.no_grad():
        maps = tiny_probpose(x.contiguous()).probmaps.numpy()
    from probpose import codec

    expected = geometry.input_to_image(codec.decode_expected_oks(maps).keypoints[0], c, s)
    np.testing.assert_allclose(predictor.predict().people[0].keypoints, expected, atol=1e-3)
    # GT evaluation clips instead (the official dataset rule), which moves this window.
    clipped = predictor.set_image(image, [box], clip_boxes=True)
    official_gt = geometry.clip_box_official(geometry.box_xyxy_to_xywh(box), (100, 120))
    np.testing.assert_allclose(clipped.boxes[0], official_gt)
    cc, sc = _official_window(official_gt)
    np.testing.assert_allclose(clipped.centers[0], cc, atol=1e-9)
    np.testing.assert_allclose(clipped.scales[0], sc, atol=1e-9)
    assert not np.allclose(np.r_[cc, sc], np.r_[c, s])


@pytest.mark.parametrize("box,match", [
    ([200, 10, 300, 50], r"entirely outside the 100x120 image"),
    ([-50, -50, -10, -10], r"entirely outside"),
    ([10, 10, 10, 50], "empty"),
    ([float("nan"), 0, 10, 10], "NaN"),
    ([0, 0, 10], r"\(N, 4\)"),
])
def test_bad_boxes_raise_and_keep_the_cache(tiny_probpose, box, match):
    image = np.zeros((120, 100, 3), np.uint8)
    predictor = PosePredictor(tiny_probpose, device="cpu")
    before = predictor.set_image(image, [[10, 10, 50, 100]])
    with pytest.raises(BoxError, match=match):
        predictor.set_image(image, [box])
    assert predictor.outputs is before


def test_grayscale_rgba_and_detector_inputs(tiny_probpose):
    predictor = PosePredictor(tiny_probpose, device="cpu")
    gray = np.tile(np.arange(80, dtype=np.uint8), (60, 1))
    predictor.set_image(gray, [[5, 5, 60, 55]])
    assert predictor.image.shape == (60, 80, 3)
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., 3] = 255
    predictor.set_image(rgba, [[5, 5, 60, 55]], box_source="gt")
    assert predictor.predict().people[0].box_source == "gt"
    out = predictor.set_image(gray, detector="whole")
    assert out.box_sources == ["whole"]
    np.testing.assert_allclose(out.boxes[0], [0, 0, 80, 60])  # official whole-image box [0, 0, w, h]
    assert predictor.set_image(gray, np.zeros((0, 4))).num_people == 0
    assert predictor.predict().people == []


def test_to_json_is_plain_json(val_cases, tiny_probpose, tiny_heatmap):
    image, boxes = val_cases[0]
    for model in (tiny_probpose, tiny_heatmap):
        result = predict_image(image, model, boxes, device="cpu")
        d = json.loads(json.dumps(result.to_json(), allow_nan=False))
        assert len(d["keypoint_names"]) == 17 and len(d["people"]) == len(boxes)
        p = d["people"][0]
        assert len(p["keypoints"]) == 17 and len(p["keypoints"][0]) == 2 and len(p["window"]) == 4
        for key in ("presence", "visibility", "oks", "in_image", "present"):
            assert len(p[key]) == 17
        assert d["decoder"] in ("expected_oks", "dark_udp") and d["presence_threshold"] == 0.3


def test_heatmap_baseline_rules(val_cases, tiny_heatmap):
    image, boxes = val_cases[0]
    predictor = PosePredictor(tiny_heatmap, device="cpu")
    out = predictor.set_image(image, boxes)
    assert out.logits is None and np.isnan(out.visibility).all() and np.isnan(out.oks).all()
    np.testing.assert_allclose(out.presence, np.clip(out.probmaps.max(axis=(-1, -2)), 0, 1))
    result = predictor.predict()
    assert result.decoder == "dark_udp" and result.temperature is None
    for person in result.people:
        sel = person.keypoint_scores > 0.2
        assert person.score == pytest.approx(person.keypoint_scores[sel].mean() if sel.any() else 0.0)
    with pytest.raises(ValueError, match="ProbPose"):
        predictor.predict(temperature=1.0)


def test_credible_region_and_expected_oks_map(val_cases, tiny_probpose):
    image, boxes = val_cases[0]
    predictor = PosePredictor(tiny_probpose, device="cpu")
    predictor.set_image(image, boxes[:1])
    person = predictor.predict().people[0]
    region = person.credible_region(5, 0.5)
    assert region.mask.shape == (64, 48) and region.mass >= 0.5 and region.area_heatmap == region.mask.sum()
    px = person.scale[0] / 47 * person.scale[1] / 63
    assert region.area_image == pytest.approx(region.area_heatmap * px)
    for poly in region.outlines:  # outlines are image px inside the window
        assert np.all(poly >= person.window[:2] - 1e-6) and np.all(poly <= person.window[2:] + 1e-6)
    e = person.expected_oks_map(5)
    assert e.shape == (64, 48) and e.sum() == pytest.approx(person.probmaps[5].sum(), rel=0.05)


def test_fast_paths_and_errors(val_cases, tiny_probpose):
    image, boxes = val_cases[0]
    ref = PosePredictor(tiny_probpose, device="cpu").set_image(image, boxes)
    for precision in ("bf16", "int8"):
        fast = PosePredictor(tiny_probpose, device="cpu", precision=precision).set_image(image, boxes)
        assert np.abs(fast.presence - ref.presence).max() < 0.05
    with pytest.raises(ValueError, match="precision"):
        PosePredictor(tiny_probpose, precision="fp8")
    with pytest.raises(TypeError, match="ProbPose or HeatmapPose"):
        PosePredictor(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="set_image"):
        PosePredictor(tiny_probpose, device="cpu").predict()
    with pytest.raises(ValueError, match="decoder"):
        p = PosePredictor(tiny_probpose, device="cpu")
        p.set_image(image, boxes[:1])
        p.predict(decoder="soft")


# ----------------------------------------------------------------------------------------------- ProbPose-DH


@pytest.fixture(scope="module")
def tiny_dh():
    from probpose.models.dual import probpose_test_dh

    torch.manual_seed(0)
    return probpose_test_dh().eval()


def test_dual_pipeline_on_real_image_with_gt_boxes(val_cases, tiny_dh):
    from probpose import dual_codec

    image, boxes = val_cases[0]
    h, w = image.shape[:2]
    model = CountingModel(tiny_dh)
    predictor = PosePredictor(model, device="cpu", batch_size=8)
    out = predictor.set_image(image, boxes)
    n = len(boxes)
    assert model.calls == 1 and model.crops == 2 * n  # plain + mirrored crops in one batch
    assert out.kind == "probpose_dh" and out.is_dual and out.map_normalization == "none"
    assert out.expert_maps.shape == out.wide_maps.shape == (n, 17, 64, 48) and out.probmaps is out.expert_maps
    assert out.wide_logits.shape == out.wide_logits_flipped.shape == (n, 17, 64, 48)
    assert out.bbox_masks.shape == (n, 256, 192) and out.bbox_masks.dtype == bool
    for i in range(n):
        np.testing.assert_array_equal(out.bbox_masks[i], dual_codec.bbox_mask(out.boxes[i], out.centers[i],
                                                                              out.scales[i], (w, h)))
    results = [predictor.predict(), predictor.predict(decoder="argmax"), predictor.predict(presence_threshold=0.9)]
    assert model.calls == 1  # re-decoding never runs the network
    for result in results:
        assert result.kind == "probpose_dh" and result.temperature is None and len(result.people) == n
        for p in result.people:
            c, s = p.center, p.scale
            # Wide window, hand-derived: input px -24 .. 215 (x), -32 .. 287 (y) through the UDP scale S / (in - 1).
            np.testing.assert_allclose(p.wide_window[2:] - p.wide_window[:2], [239 / 191 * s[0], 319 / 255 * s[1]])
            np.testing.assert_allclose((p.wide_window[:2] + p.wide_window[2:]) / 2, c)
            assert np.all(p.wide_window[:2] < p.window[:2]) and np.all(p.wide_window[2:] > p.window[2:])
            assert p.source.shape == (17,) and set(np.unique(p.source)) <= {0, 1}
            assert p.wide_maps.shape == p.probmaps.shape == (17, 64, 48)
            np.testing.assert_allclose(p.keypoints, np.where(p.source[:, None] == 0, p.expert_keypoints,
                                                             p.wide_keypoints))
            tol = p.wide_window[2:] - p.wide_window[:2]
            assert np.all(p.wide_keypoints >= p.wide_window[:2] - tol / 47)
            assert np.all(p.wide_keypoints <= p.wide_window[2:] + tol / 47)
            assert np.all(p.expert_keypoints >= p.window[:2] - s / 47)
            assert np.all(p.expert_keypoints <= p.window[2:] + s / 47)
            sel = p.presence > RESCORE_PRESENCE_THRESHOLD
            assert p.score == pytest.approx(p.oks[sel].mean() if sel.any() else 0.0)
    d = json.loads(json.dumps(results[0].to_json(), allow_nan=False))
    person = d["people"][0]
    assert len(person["source"]) == 17 and len(person["wide_window"]) == 4 and len(person["wide_keypoints"]) == 17
    with pytest.raises(ValueError, match="not applicable"):
        predictor.predict(temperature=0.7)
    assert model.calls == 1


def test_dual_flip_test_averages_both_maps(val_cases, tiny_dh):
    from probpose.codec import flip_maps

    image, boxes = val_cases[0]
    out = PosePredictor(tiny_dh, device="cpu").set_image(image, boxes[:2])
    crops = [geometry.warp_image(image, geometry.udp_warp_matrix(c, s)) for c, s in zip(out.centers, out.scales, strict=True)]
    x = (np.stack(crops).astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        plain, mirrored = tiny_dh(x), tiny_dh(x.flip(-1))
    for mine, a, b in ((out.expert_maps, plain.expert_maps, mirrored.expert_maps),
                       (out.wide_maps, plain.wide_maps, mirrored.wide_maps)):
        np.testing.assert_allclose(mine, (a.numpy() + flip_maps(b.numpy())) / 2, atol=1e-5)
    idx = list(FLIP_INDICES)
    np.testing.assert_allclose(out.presence, (plain.presence.numpy() + mirrored.presence.numpy()[:, idx]) / 2,
                               atol=1e-6)
    np.testing.assert_allclose(out.wide_logits_flipped, flip_maps(mirrored.wide_logits.numpy()), atol=1e-5)


def _one_hot(x: int, y: int) -> np.ndarray:
    m = np.zeros((64, 48), np.float32)
    m[y, x] = 1.0
    return m


def test_dual_merge_takes_the_wide_map_outside_the_box(tiny_dh):
    from probpose.draw import WIDE_COLOR, draw_poses, padded_canvas, pose_windows

    # Box 80x160 -> 3:4 window 120x160 -> x1.25: S = (150, 200) about (100, 120); window x 25..175, y 20..220.
    image = np.full((240, 200, 3), 90, np.uint8)
    predictor = PosePredictor(tiny_dh, device="cpu")
    out = predictor.set_image(image, [[60.0, 40.0, 140.0, 200.0]])
    np.testing.assert_allclose(out.centers[0], [100, 120])
    np.testing.assert_allclose(out.scales[0], [150, 200])
    out.expert_maps[0] = 0.0  # probmaps is the same array
    out.wide_maps[0] = 0.0
    # Wide map px -> input px: x * 239/47 - 24, y * 319/63 - 32; input -> image: 25 + u * 150/191, 20 + v * 200/255.
    out.wide_maps[0, 9] = _one_hot(4, 32)  # input (-3.66, 130.03): left of the crop -> wide map
    out.expert_maps[0, 9] = _one_hot(24, 32)
    out.wide_maps[0, 0] = _one_hot(24, 20)  # input (98.04, 69.27): in the crop and on the box -> expert map
    out.expert_maps[0, 0] = _one_hot(10, 12)  # heatmap px (10, 12) -> image (25 + 10*150/47, 20 + 12*200/63)
    out.wide_maps[0, 5] = _one_hot(10, 20)  # input (26.85, 69.27): in the crop but left of the box (u < 44.6)
    # One-hot maps >= 4 px from the border (E is symmetric there): both decoders give the pixel itself.
    for decoder in ("expected_oks", "argmax"):
        p = predictor.predict(decoder=decoder).people[0]
        wrist = (25 + (4 * 239 / 47 - 24) * 150 / 191, 20 + (32 * 319 / 63 - 32) * 200 / 255)
        np.testing.assert_allclose(p.keypoints[9], wrist, atol=1e-9)
        assert p.source[9] == 1 and p.keypoints[9, 0] < p.window[0] and p.keypoints[9, 0] > p.wide_window[0]
        np.testing.assert_allclose(p.keypoints[0], (25 + 10 * 150 / 47, 20 + 12 * 200 / 63), atol=1e-9)
        np.testing.assert_allclose(p.wide_keypoints[0], (25 + (24 * 239 / 47 - 24) * 150 / 191,
                                                         20 + (20 * 319 / 63 - 32) * 200 / 255), atol=1e-9)
        assert p.source[0] == 0
        assert p.source[5] == 1 and p.window[0] < p.keypoints[5, 0] < p.box[0]
        np.testing.assert_allclose(p.keypoints[5, 0], 25 + (10 * 239 / 47 - 24) * 150 / 191, atol=1e-9)
    # Raw maps are clipped at 0 and normalised before a credible region: mass 0.6 / 0.4 on two pixels.
    out.wide_maps[0, 9] = -0.1
    out.wide_maps[0, 9, 32, 4], out.wide_maps[0, 9, 32, 5] = 0.6, 0.4
    p = predictor.predict().people[0]
    region = p.credible_region(9, 0.5, which="wide")
    assert region.area_heatmap == 1 and region.mass == pytest.approx(0.6)
    np.testing.assert_allclose(region.outlines[0][0], wrist, atol=1e-9)
    assert region.area_image == pytest.approx((239 / 47 * 150 / 191) * (319 / 63 * 200 / 255))
    assert p.map_distribution(9, "wide").sum() == pytest.approx(1.0)
    assert p.expected_oks_map(9, "wide").shape == (64, 48)
    # Drawing: the canvas pads for the wide window (it reaches y = 120 - 125.1 < 0, the activation window does not).
    canvas = draw_poses(image, [p], thickness=1)
    pad, off = padded_canvas(image, pose_windows([p]))
    assert canvas.shape == pad.shape and off[1] > 0 and padded_canvas(image, [p.window])[1][1] == 0
    assert (canvas == WIDE_COLOR).all(axis=-1).sum() > 100


def test_dual_sparsemax_retemperature(val_cases, tiny_dh):
    from probpose.models.dual import probpose_test_dh

    image, boxes = val_cases[0]
    torch.manual_seed(0)
    model = CountingModel(probpose_test_dh(normalize="sparsemax").eval())
    predictor = PosePredictor(model, device="cpu")
    out = predictor.set_image(image, boxes[:1])
    np.testing.assert_allclose(out.wide_maps.sum((-1, -2)), 1.0, atol=1e-4)
    t = 0.8
    expert, wide = predictor.dual_maps_at(t)
    z, zf = out.wide_logits[0, 4].ravel() / t, out.wide_logits_flipped[0, 4].ravel() / t
    expected = (_sparsemax_np(z.astype(np.float64)) + _sparsemax_np(zf.astype(np.float64))) / 2
    np.testing.assert_allclose(wide[0, 4].ravel(), expected, atol=1e-5)
    assert predictor.probmaps_at(t) is expert
    result = predictor.predict(temperature=t)
    assert result.temperature == t and model.calls == 1
    np.testing.assert_allclose(result.people[0].wide_maps, wide[0])
