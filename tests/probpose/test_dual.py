"""ProbPose-DH: dual-map model layout, codec (windows, targets, merge rule, flips), losses."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from probpose.constants import FLIP_INDICES
from probpose.dual_codec import (
    bbox_mask,
    decode_dual,
    encode_dual,
    flip_dual_maps,
    input_to_map,
    map_to_image,
    map_to_input,
    map_window,
    window_in_image,
)
from probpose.errors import CheckpointError
from probpose.geometry import box_to_window, udp_warp_matrix, window_xyxy
from probpose.models.dual import DualProbPoseConfig, probpose_s_dh, probpose_test_dh
from probpose.models.probpose import probpose_s, probpose_test
from probpose.weights import load_into
from training.dual_losses import dual_losses, dual_oks_targets, oks_heatmap_loss_keypointwise


def _as_distribution(maps: np.ndarray) -> np.ndarray:
    return maps / maps.sum(axis=(-2, -1), keepdims=True)


# ------------------------------------------------------------------------------------------------ geometry


def test_map_windows_match_spec_9():
    inner = map_window(1.0)
    np.testing.assert_allclose(inner.tl, [0.0, 0.0])
    np.testing.assert_allclose(inner.scale, [191 / 47, 255 / 63])  # padding 1 = the UDP scale
    outer = map_window(1.25)
    np.testing.assert_allclose(outer.tl, [96 - 120, 128 - 160])  # centre - wh*pad/2
    np.testing.assert_allclose(outer.scale, [239 / 47, 319 / 63])
    xy = np.array([[-24.0, -32.0], [215.0, 287.0], [10.5, 3.25]])
    np.testing.assert_allclose(input_to_map(xy[:2], outer), [[0, 0], [47, 63]])
    np.testing.assert_allclose(map_to_input(input_to_map(xy, outer), outer), xy)
    center, scale = np.array([300.0, 200.0]), np.array([192.0, 256.0])  # 1 image px per input px (191 steps)
    np.testing.assert_allclose(window_in_image(1.0, center, scale), window_xyxy(center, scale))
    # The wide window reaches 24 / 32 input px beyond the crop on each side (scaled by S/191, S/255).
    np.testing.assert_allclose(window_in_image(1.25, center, scale),
                               [204 - 24 * 192 / 191, 72 - 32 * 256 / 255, 396 + 24 * 192 / 191, 328 + 32 * 256 / 255])
    np.testing.assert_allclose(map_to_image([[0.0, 0.0], [47.0, 63.0]], 1.25, center, scale),
                               window_in_image(1.25, center, scale).reshape(2, 2))


# ------------------------------------------------------------------------------------------------ targets / decoding


def test_wide_map_localises_keypoint_outside_activation_window():
    # Outside the crop (x < 0, x >= 192, y < 0) but inside the 1.25 wide window [-24, 216) x [-32, 288).
    kp = np.array([[-10.0, 100.0], [205.0, 40.0], [60.0, -20.0], [230.0, 100.0]])
    t = encode_dual(kp, np.ones(4))
    np.testing.assert_array_equal(t.presence, [True, True, True, False])  # 230 is past the wide window
    np.testing.assert_array_equal(t.wide_weights, [1, 1, 1, 0])
    d = decode_dual(_as_distribution(t.expert_maps), _as_distribution(t.wide_maps))
    # 1.5 input px = 0.3 wide-map px: the decoder's single Newton step is biased a few pixels from the map border.
    np.testing.assert_allclose(d.wide_keypoints[:3], kp[:3], atol=1.5)
    np.testing.assert_array_equal(d.source[:3], [1, 1, 1])
    np.testing.assert_allclose(d.keypoints[:3], kp[:3], atol=1.5)
    # The expert map cannot leave the crop: its best guess sits on the border.
    assert d.expert_keypoints[0, 0] == 0.0 and d.expert_keypoints[1, 0] == 191.0


def test_in_rect_splits_expert_and_wide_weights():
    kp = np.array([[50.0, 60.0], [70.0, 80.0], [-10.0, 5.0]])
    t = encode_dual(kp, np.array([1, 1, 0]), in_rect=np.array([True, False, True]))
    np.testing.assert_array_equal(t.wide_weights, [1, 1, 0])  # annotated & present
    np.testing.assert_array_equal(t.expert_weights, [1, 0, 0])  # ... & inside the crop-augmentation rectangle
    assert t.wide_maps[2].max() == 0 and t.expert_maps[2].max() == 0


def _maps_at(points: np.ndarray, padding: float) -> np.ndarray:
    return _as_distribution(encode_dual(points, np.ones(len(points)), padding, padding).expert_maps)


def test_merge_picks_expert_inside_and_wide_outside():
    expert_pts = np.array([[100.0, 120.0], [0.0, 100.0], [170.0, 120.0]])
    wide_pts = np.array([[103.0, 118.0], [-10.0, 100.0], [171.0, 121.0]])
    expert, wide = _maps_at(expert_pts, 1.0), _maps_at(wide_pts, 1.25)
    # No box: the expert window is the region.
    d = decode_dual(expert, wide)
    np.testing.assert_array_equal(d.source, [0, 1, 0])
    np.testing.assert_allclose(d.keypoints[0], expert_pts[0], atol=1.0)
    np.testing.assert_allclose(d.keypoints[1], wide_pts[1], atol=1.0)
    # With the person-box mask: the third wide point lies in the crop but right of the box -> wide map.
    mask = np.zeros((256, 192), dtype=bool)
    mask[30:220, 40:150] = True
    d = decode_dual(expert, wide, bbox_mask=mask)
    np.testing.assert_array_equal(d.source, [0, 1, 1])
    np.testing.assert_allclose(d.keypoints[2], wide_pts[2], atol=1.0)
    np.testing.assert_allclose(d.scores, np.where(d.source == 0, d.expert_scores, d.wide_scores))
    # Batched: one mask per crop, shared by its K keypoints.
    db = decode_dual(np.stack([expert, expert]), np.stack([wide, wide]), np.stack([mask, np.ones_like(mask)]))
    np.testing.assert_array_equal(db.source, [[0, 1, 1], [0, 1, 0]])


@pytest.mark.parametrize("box, image_size", [((40.3, 50.7, 140.2, 300.9), (200, 320)),
                                             ((-20.0, 10.0, 90.0, 150.0), (100, 140))])
def test_bbox_mask_matches_official_warped_raster(box, image_size):
    center, scale = box_to_window(np.array(box))
    ours = bbox_mask(box, center, scale, image_size)
    # Official recipe: clip, truncate, rasterise ones on [y0:y1, x0:x1], warp bilinearly into the crop.
    b = np.array(box)
    b[:2] = np.maximum(b[:2], 0)
    b[2:] = np.minimum(b[2:], image_size)
    x0, y0, x1, y1 = b.astype(int)
    raster = np.zeros(image_size[::-1], dtype=np.uint8)
    raster[y0:y1, x0:x1] = 1
    ref = cv2.warpAffine(raster, udp_warp_matrix(center, scale), (192, 256), flags=cv2.INTER_LINEAR) > 0
    assert ref.sum() > 1000
    assert (ours != ref).sum() <= 0.01 * ref.sum()


def test_flip_consistency_of_both_maps():
    rng = np.random.default_rng(0)
    kp = rng.uniform([-20, -30], [210, 280], size=(17, 2))
    t = encode_dual(kp, np.ones(17))
    flipped_kp = kp.copy()
    flipped_kp[:, 0] = 191.0 - kp[:, 0]  # mirror the crop ...
    flipped_kp = flipped_kp[list(FLIP_INDICES)]  # ... and swap left / right
    tf = encode_dual(flipped_kp, np.ones(17))
    expert, wide = flip_dual_maps(tf.expert_maps, tf.wide_maps)
    np.testing.assert_allclose(expert, t.expert_maps, atol=1e-6)
    np.testing.assert_allclose(wide, t.wide_maps, atol=1e-6)
    np.testing.assert_array_equal(tf.presence[list(FLIP_INDICES)], t.presence)


# ------------------------------------------------------------------------------------------------ model


def test_outputs_shapes_and_normalisations():
    x = torch.randn(2, 3, 256, 192)
    for norm in ("none", "sigmoid", "sparsemax"):
        torch.manual_seed(0)
        m = probpose_test_dh(normalize=norm).eval()
        with torch.no_grad():
            out = m(x, with_error=True)
        for name in ("expert_maps", "wide_maps", "expert_logits", "wide_logits"):
            assert getattr(out, name).shape == (2, 17, 64, 48)
        for name in ("presence", "presence_logits", "visibility", "oks", "error"):
            assert getattr(out, name).shape == (2, 17)
        if norm == "none":
            assert torch.equal(out.expert_maps, out.expert_logits) and torch.equal(out.wide_maps, out.wide_logits)
        elif norm == "sigmoid":
            torch.testing.assert_close(out.wide_maps, torch.sigmoid(out.wide_logits))
        else:
            torch.testing.assert_close(out.expert_maps.sum((-2, -1)), torch.ones(2, 17))
    assert not torch.equal(out.expert_logits, out.wide_logits)  # two separate branches


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="normalize"):
        DualProbPoseConfig(normalize="softmax")
    with pytest.raises(ValueError, match="in_padding"):
        DualProbPoseConfig(in_padding=1.5, out_padding=1.25)
    cfg = probpose_test_dh(out_padding=1.5).config
    assert DualProbPoseConfig.from_dict(cfg.to_dict()) == cfg


def test_strict_loading_of_dh_layout():
    dh, pp = probpose_s_dh().state_dict(), probpose_s().state_dict()
    extra = {k: tuple(v.shape) for k, v in dh.items() if k not in pp}
    assert set(pp) <= set(dh)  # backbone, expert branch and scalar branches keep ProbPose's names and shapes
    assert all(dh[k].shape == pp[k].shape for k in pp)
    bn = {f"head.second_head.0.{i}.{n}": (256,) for i in (1, 4) for n in ("weight", "bias", "running_mean",
                                                                          "running_var")}
    bn.update({f"head.second_head.0.{i}.num_batches_tracked": () for i in (1, 4)})
    assert extra == {"head.second_head.0.0.weight": (384, 256, 4, 4), "head.second_head.0.3.weight": (256, 256, 4, 4),
                     "head.second_head.2.weight": (17, 256, 1, 1), "head.second_head.2.bias": (17,), **bn}

    torch.manual_seed(1)
    src = probpose_test_dh().eval()
    dst = load_into(probpose_test_dh().eval(), src.state_dict())
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        torch.testing.assert_close(dst(x).wide_maps, src(x).wide_maps)
    with pytest.raises(CheckpointError, match=r"14 missing keys: head\.second_head\.0\.0\.weight"):
        load_into(probpose_test_dh(), probpose_test().state_dict())


# ------------------------------------------------------------------------------------------------ losses


def test_keypointwise_oks_loss_by_hand():
    p = torch.zeros(1, 1, 64, 48)
    p[0, 0, 30, 20] = 1.0
    # risk = sum p (1 - 0) = 1; Sobel of a delta peaks at Gx^2 = 2^2 = 4 beside it.
    loss = oks_heatmap_loss_keypointwise(p, torch.zeros_like(p), torch.ones(1, 1), smoothing_weight=0.05)
    assert loss.item() == pytest.approx(0.95 * 1 + 0.05 * 4)
    assert oks_heatmap_loss_keypointwise(p, torch.zeros_like(p), torch.zeros(1, 1)).item() == 0.0


def _batch():
    kp = np.stack([np.array([[-10.0, 100.0], [90.0, 120.0], [230.0, 40.0]] * 6)[:17]] * 2)
    ann = np.ones((2, 17))
    ann[1, 4] = 0
    t = encode_dual(kp, ann)
    tt = {k: torch.from_numpy(np.asarray(getattr(t, k), dtype=np.float32))
          for k in ("expert_maps", "wide_maps", "expert_weights", "wide_weights", "presence", "annotated")}
    return t, tt


def test_dual_losses_zero_map_terms_for_perfect_maps_and_oks_target_one():
    t, tt = _batch()
    perfect = SimpleNamespace(expert_maps=tt["expert_maps"], wide_maps=tt["wide_maps"],
                              presence=tt["presence"], visibility=torch.full((2, 17), 0.5),
                              oks=torch.ones(2, 17))
    losses = dual_losses(perfect, tt["expert_maps"], tt["wide_maps"], tt["expert_weights"], tt["wide_weights"],
                         tt["presence"], tt["annotated"], torch.ones(2, 17))
    assert losses.kpt.item() == 0.0 and losses.kpt2.item() == 0.0
    assert losses.visibility.item() == pytest.approx(np.log(2) * float((t.annotated & t.presence).mean()), rel=1e-5)
    mask = tt["annotated"] * tt["presence"]
    o = dual_oks_targets(tt["expert_maps"], tt["wide_maps"], tt["wide_maps"], mask)
    np.testing.assert_allclose(o.numpy(), mask.numpy(), atol=1e-3)  # prediction == GT -> OKS 1 where counted
    assert losses.oks.item() < 1e-6


def test_dual_losses_train_both_branches():
    _, tt = _batch()
    model = probpose_test_dh()
    out = model(torch.randn(2, 3, 256, 192))
    losses = dual_losses(out, tt["expert_maps"], tt["wide_maps"], tt["expert_weights"], tt["wide_weights"],
                         tt["presence"], tt["annotated"], torch.ones(2, 17))
    losses.total.backward()
    assert model.head.final_layer.weight.grad.abs().sum() > 0
    assert model.head.second_head[2].weight.grad.abs().sum() > 0
    assert model.backbone.patch_embed.projection.weight.grad.abs().sum() > 0
    assert set(losses.as_dict()) == {"loss_kpt", "loss_kpt2", "loss_presence", "loss_visibility", "loss_oks"}


def test_dh_checkpoint_round_trips_through_load_pretrained(tmp_path):
    from probpose.weights import infer_config, load_pretrained, save_safetensors

    torch.manual_seed(0)
    model = probpose_test_dh().eval()
    path = tmp_path / "dh.safetensors"
    save_safetensors(model, path, metadata={"note": "test"}, dtype=torch.float32)
    loaded = load_pretrained(path)
    assert loaded.kind == "probpose_dh" and isinstance(loaded.config, DualProbPoseConfig)
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.wide_maps, b.wide_maps) and torch.equal(a.presence, b.presence)
    # a ProbPose checkpoint must not be mistaken for DH, and kind="heatmap" on a DH file is refused
    with pytest.raises(CheckpointError, match="probpose_dh"):
        load_pretrained(path, kind="heatmap")
    sd = probpose_s_dh().state_dict()
    assert infer_config(sd).__class__ is DualProbPoseConfig
    assert infer_config(probpose_s().state_dict()).__class__.__name__ == "ProbPoseConfig"
