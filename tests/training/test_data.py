"""COCO loading, augmentation (flip, half-body, crop augmentation) and the dataset's tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from probpose.constants import FLIP_INDICES
from probpose.errors import AnnotationError
from probpose.geometry import box_to_window, image_to_input
from training.data import AugmentConfig, CocoPoseDataset, load_coco_people, make_sample

NO_AUG = dict(flip_prob=0.0, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)


def _kpts(points: dict[int, tuple[float, float, int]]) -> list[float]:
    out = [0.0] * 51
    for k, (x, y, v) in points.items():
        out[3 * k:3 * k + 3] = [x, y, v]
    return out


@pytest.fixture()
def tiny_coco(tmp_path):
    """A 200x100 image with one person; plus entries that the loader must drop."""
    img = np.full((100, 200, 3), 128, np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg")
    person = _kpts({0: (60.0, 20.0, 2), 1: (62.0, 18.0, 1), 5: (50.0, 40.0, 2), 6: (70.0, 40.0, 2)})
    anns = [
        {"id": 1, "image_id": 1, "bbox": [40, 10, 40, 60], "keypoints": person, "num_keypoints": 4, "iscrowd": 0},
        {"id": 2, "image_id": 1, "bbox": [0, 0, 10, 10], "keypoints": person, "num_keypoints": 4, "iscrowd": 1},
        {"id": 3, "image_id": 1, "bbox": [0, 0, 10, 10], "keypoints": [0] * 51, "num_keypoints": 0},
        {"id": 4, "image_id": 1, "bbox": [0, 0, 0, 10], "keypoints": person, "num_keypoints": 4},
        {"id": 5, "image_id": 2, "bbox": [0, 0, 10, 10], "keypoints": person, "num_keypoints": 4},
    ]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
                       {"id": 2, "file_name": "missing.jpg", "width": 50, "height": 50}],
            "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, tmp_path


def test_load_filters_crowd_empty_degenerate_and_missing(tiny_coco):
    ann, root = tiny_coco
    with pytest.warns(UserWarning, match="1 image file"):
        people = load_coco_people(ann, root)
    assert [p.ann_id for p in people] == [1]
    np.testing.assert_allclose(people[0].box, [40, 10, 80, 70])
    assert people[0].keypoints.shape == (17, 3)


def test_load_rejects_malformed_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_coco_people(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(AnnotationError, match="'images' and 'annotations'"):
        load_coco_people(bad, tmp_path)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}],
                               "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5],
                                                "keypoints": [1, 1, 2], "num_keypoints": 1}]}))
    with pytest.raises(AnnotationError, match="3 keypoint values"):
        load_coco_people(bad, tmp_path)
    with pytest.raises(AnnotationError, match="not found"):
        load_coco_people(tmp_path / "nope.json", tmp_path)


def test_real_subset_counts(coco_train, coco_val):
    assert len(load_coco_people(coco_train[1], coco_train[0])) == 282
    assert len(load_coco_people(coco_val[1], coco_val[0])) == 468


def test_test_pipeline_is_the_plain_udp_crop(tiny_coco):
    ann, root = tiny_coco
    with pytest.warns(UserWarning):
        ds = CocoPoseDataset(ann, root)
    s = ds.sample(0)
    center, scale = box_to_window(np.array([40.0, 10.0, 80.0, 70.0]))
    np.testing.assert_allclose(s.center, center)
    np.testing.assert_allclose(s.scale, scale)
    person = ds.people[0]
    expected = image_to_input(person.keypoints[:, :2], center, scale)
    ann_mask = person.keypoints[:, 2] > 0
    np.testing.assert_allclose(s.keypoints[ann_mask], expected[ann_mask], atol=1e-9)
    assert not s.flipped and not s.cropped and s.rotation == 0.0


def test_flip_mirrors_and_swaps_left_right(tiny_coco):
    ann, root = tiny_coco
    with pytest.warns(UserWarning):
        person = load_coco_people(ann, root)[0]
    image = np.asarray(Image.open(root / "a.jpg").convert("RGB"))
    cfg = AugmentConfig(**{**NO_AUG, "flip_prob": 1.0})
    s = make_sample(image, person, cfg, np.random.default_rng(0))
    assert s.flipped
    # Flipped box: x -> 199 - x, so [40, 80] -> [119, 159].
    center, scale = box_to_window(np.array([119.0, 10.0, 159.0, 70.0]))
    np.testing.assert_allclose(s.center, center)
    flipped = person.keypoints.copy()
    flipped[:, 0] = 199.0 - flipped[:, 0]
    flipped = flipped[list(FLIP_INDICES)]
    expected = image_to_input(flipped[:, :2], center, scale)
    # Left shoulder (5) now holds the mirrored right shoulder (6): x = 199 - 70 = 129.
    assert flipped[5, 0] == 129.0
    np.testing.assert_allclose(s.keypoints[s.annotated], expected[s.annotated], atol=1e-9)
    # Visibility follows the swap: the left eye (1, v=1) becomes the right eye (2).
    assert s.annotated[2] and not s.visible[2] and not s.annotated[1]


def test_half_body_shrinks_the_box_to_one_half(coco_train):
    images, ann = coco_train
    ds = CocoPoseDataset(ann, images, AugmentConfig(**{**NO_AUG, "half_body_prob": 1.0}), preload=False)
    idx = next(i for i, p in enumerate(ds.people) if (p.keypoints[:, 2] > 0).sum() >= 15)
    s = ds.sample(idx)
    assert s.scale[1] < box_to_window(ds.people[idx].box)[1][1]


def test_crop_augmentation_produces_out_of_window_keypoints_with_right_labels(coco_train):
    images, ann = coco_train
    cfg = AugmentConfig(**{**NO_AUG, "crop_prob": 1.0})
    ds = CocoPoseDataset(ann, images, cfg, seed=3)
    plain = CocoPoseDataset(ann, images, AugmentConfig(enabled=False))
    n_out = n_out_plain = n_ann = 0
    for i in range(0, len(ds), 3):
        s = ds.sample(i)
        item = ds[i]
        assert s.cropped and s.crop_rect is not None
        person = ds.people[i]
        kp = person.keypoints
        rect = s.crop_rect
        # The keep rectangle lies in the 1.25x context box and covers 70-90% of it per axis.
        c = (person.box[:2] + person.box[2:]) / 2
        half = (person.box[2:] - person.box[:2]) * 1.25 / 2
        ctx_size = np.minimum(c + half, np.array(person.image_size) - 1) - np.maximum(c - half, 0)
        size = rect[2:] - rect[:2]
        assert np.all(size >= np.floor(0.7 * ctx_size)) and np.all(size <= 0.9 * ctx_size + 1e-9)
        inside = (kp[:, 0] >= rect[0]) & (kp[:, 0] < rect[2]) & (kp[:, 1] >= rect[1]) & (kp[:, 1] < rect[3])
        ann_mask = kp[:, 2] > 0
        # Blacked-out keypoints stay annotated but are no longer visible.
        np.testing.assert_array_equal(s.annotated, ann_mask)
        assert not np.any(s.visible[ann_mask & ~inside])
        np.testing.assert_array_equal(s.visible, (kp[:, 2] == 2) & inside)
        np.testing.assert_array_equal(s.in_rect[ann_mask], inside[ann_mask])
        # The AW is built from the person box intersected with the rectangle.
        inter = np.concatenate([np.maximum(person.box[:2], rect[:2]), np.minimum(person.box[2:], rect[2:])])
        np.testing.assert_allclose(s.center, box_to_window(inter)[0])
        # Presence label = keypoint inside the crop; the target weight follows the codec.
        geo_in = (s.keypoints[:, 0] >= 0) & (s.keypoints[:, 0] < 192) & (s.keypoints[:, 1] >= 0) \
            & (s.keypoints[:, 1] < 256)
        np.testing.assert_array_equal(item["in_window"].numpy()[ann_mask] > 0, geo_in[ann_mask])
        assert torch.all(item["target_weight"][~torch.from_numpy(ann_mask)] == 0)
        n_out += int((ann_mask & ~geo_in).sum())
        n_ann += int(ann_mask.sum())
        ps = plain.sample(i)
        n_out_plain += int((ps.annotated & ~((ps.keypoints[:, 0] >= 0) & (ps.keypoints[:, 0] < 192)
                                            & (ps.keypoints[:, 1] >= 0) & (ps.keypoints[:, 1] < 256))).sum())
    # Crop augmentation really pushes annotated keypoints out of the window (about 3x the plain pipeline:
    # outside the rectangle but inside the 1.25x padding stays in the window, as in the official transform).
    assert n_out >= 0.02 * n_ann
    assert n_out >= 2 * max(n_out_plain, 1), (n_out, n_out_plain)


def test_crop_augmentation_blacks_out_pixels_outside_the_rectangle(coco_train):
    images, ann = coco_train
    ds = CocoPoseDataset(ann, images, AugmentConfig(**{**NO_AUG, "crop_prob": 1.0}), seed=1)
    s = ds.sample(0)
    # Map every crop pixel back to the image and check the ones well outside the rectangle are black.
    from probpose.geometry import input_to_image

    v, u = np.mgrid[0:256, 0:192]
    xy = input_to_image(np.stack([u, v], -1).reshape(-1, 2).astype(float), s.center, s.scale).reshape(256, 192, 2)
    r = s.crop_rect
    outside = (xy[..., 0] < r[0] - 2) | (xy[..., 0] > r[2] + 2) | (xy[..., 1] < r[1] - 2) | (xy[..., 1] > r[3] + 2)
    assert outside.any()
    assert s.image[outside].max() == 0
    assert s.image[~outside].max() > 0


def test_dataset_item_shapes_and_determinism(coco_train):
    images, ann = coco_train
    cfg = AugmentConfig(crop_prob=0.5, color_jitter=0.3)
    ds = CocoPoseDataset(ann, images, cfg, seed=7, heatmap_targets=True, max_people=6)
    a = ds[2]
    shapes = {k: tuple(v.shape) for k, v in a.items()}
    assert shapes["image"] == (3, 256, 192) and shapes["probmap"] == (17, 64, 48)
    assert shapes["heatmap"] == (17, 64, 48) and shapes["target_weight"] == (17,)
    for k in ("in_window", "annotated", "visible", "heatmap_weight"):
        assert shapes[k] == (17,)
    assert shapes["keypoints_input"] == (17, 2)
    assert a["image"].dtype == torch.float32 and abs(float(a["image"].mean())) < 3
    assert float(a["probmap"].max()) <= 1.0
    b = ds[2]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    ds.set_epoch(1)
    c = ds[2]
    assert not torch.equal(a["image"], c["image"])
    ds2 = CocoPoseDataset(ann, images, cfg, seed=7, heatmap_targets=True, max_people=6)
    ds2.set_epoch(1)
    torch.testing.assert_close(ds2[2]["keypoints_input"], c["keypoints_input"])


def test_color_jitter_keeps_black_pixels_black(coco_train):
    images, ann = coco_train
    cfg = AugmentConfig(**{**NO_AUG, "crop_prob": 1.0, "color_jitter": 0.5})
    ds = CocoPoseDataset(ann, images, cfg, seed=2, max_people=8)
    plain_cfg = AugmentConfig(**{**NO_AUG, "crop_prob": 1.0})
    plain = CocoPoseDataset(ann, images, plain_cfg, seed=2, max_people=8)
    for i in range(4):
        s, p = ds.sample(i), plain.sample(i)
        black = ~p.image.any(-1)
        assert s.image[black].max() == 0
        assert not np.array_equal(s.image[~black], p.image[~black])
