"""ProbPose-DH through the trainer: dual-map targets on crop-augmented samples, learning, resume, export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from probpose.dual_codec import bbox_mask, input_to_map, map_window
from training.data import AugmentConfig
from training.dual_data import DualPoseDataset, sample_bbox_mask, sample_box
from training.train import DataConfig, OptimConfig, TrainConfig, Trainer, export_weights

TINY_ARCH = {"backbone": {"embed_dim": 32, "depth": 2, "num_heads": 2, "ffn_dim": 64},
             "deconv_channels": [16, 16], "branch_channels": 16}
NO_AUG = {"flip_prob": 0.0, "half_body_prob": 0.0, "shift_prob": 0.0, "scale_prob": 0.0, "rotate_prob": 0.0}


def _dh_config(coco_train, tmp_path, **kw) -> TrainConfig:
    images, ann = coco_train
    cfg = TrainConfig(
        kind="probpose_dh", model=TINY_ARCH,
        data=DataConfig(train_ann=str(ann), train_images=str(images), val_ann="", max_people=8, num_workers=0),
        augment=AugmentConfig(crop_prob=0.5, color_jitter=0.2),
        optim=OptimConfig(lr=1e-3, warmup_iters=2, layer_decay=0.8),
        epochs=3, batch_size=4, eval_interval=0, checkpoint_interval=0, log_interval=1,
        out_dir=str(tmp_path / "run"), device="cpu", seed=0)
    return dataclasses.replace(cfg, **kw)


def test_crop_augmented_dual_targets(coco_train):
    images, ann = coco_train
    ds = DualPoseDataset(ann, images, AugmentConfig(**NO_AUG, crop_prob=1.0), seed=3, max_people=90)
    wide, aw = map_window(1.25), map_window(1.0)
    n_wide_only = n_beyond = 0
    for i in range(len(ds)):
        s, item = ds.sample(i), ds[i]
        kp, annotated = s.keypoints, s.annotated
        in_aw = np.all((kp >= aw.tl) & (kp < aw.tl + aw.wh), axis=-1)
        xy = input_to_map(kp, wide)
        in_wide = (xy[:, 0] >= 0) & (xy[:, 0] < 48) & (xy[:, 1] >= 0) & (xy[:, 1] < 64)
        w_w, e_w = item["wide_weight"].numpy(), item["expert_weight"].numpy()
        pres = item["wide_presence"].numpy()
        assert not np.any(item["visible"].numpy()[~s.in_rect])  # blacked out = not visible
        np.testing.assert_array_equal(e_w, w_w * s.in_rect)  # 'in/all': expert also needs the keep rectangle
        for k in np.flatnonzero(annotated & ~in_aw & in_wide):  # outside the AW, inside the wide window
            assert w_w[k] == 1 and pres[k] == 1
            peak = np.unravel_index(item["wide_map"][k].argmax().item(), (64, 48))
            assert abs(peak[1] - xy[k, 0]) <= 1 and abs(peak[0] - xy[k, 1]) <= 1  # the wide map holds it
            n_wide_only += 1
        for k in np.flatnonzero(annotated & ~in_wide):
            assert pres[k] == 0 and w_w[k] == 0 and e_w[k] == 0
            n_beyond += 1
        if not s.rotation:  # the per-sample box mask is the official one
            ref = bbox_mask(sample_box(ds.people[i], s), s.center, s.scale, ds.people[i].image_size)
            np.testing.assert_array_equal(item["bbox_mask"].numpy(), ref)
    assert n_wide_only >= 3 and n_beyond >= 1, (n_wide_only, n_beyond)


def test_rotated_box_mask_matches_the_analytic_one_at_zero_angle(coco_train):
    images, ann = coco_train
    ds = DualPoseDataset(ann, images, AugmentConfig(**NO_AUG), max_people=3)
    s = ds.sample(1)
    person = ds.people[1]
    exact = sample_bbox_mask(sample_box(person, s), s, person.image_size)
    warped = sample_bbox_mask(sample_box(person, s), dataclasses.replace(s, rotation=1e-9), person.image_size)
    assert np.mean(exact != warped) < 0.01  # raster warp vs the analytic tent (boundary pixels only)
    turned = sample_bbox_mask(sample_box(person, s), dataclasses.replace(s, rotation=30.0), person.image_size)
    assert turned.any() and np.mean(turned != exact) > 0.01


def test_dh_steps_lower_the_loss_and_validate(coco_train, tmp_path):
    trainer = Trainer(_dh_config(coco_train, tmp_path, augment=AugmentConfig(enabled=False)), quiet=True)
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)])
    recs = [trainer.train_step(batch) for _ in range(6)]
    losses = [r["loss"] for r in recs]
    assert {"loss_kpt", "loss_kpt2", "loss_presence", "loss_visibility", "loss_oks"} <= set(recs[0])
    assert losses[-1] < 0.95 * losses[0] and losses[-1] < losses[-2], losses
    trainer.val_set = trainer.train_set
    metrics = trainer.evaluate()
    assert 0 <= metrics["kpt_oks"] <= 1 and 0 <= metrics["presence_err"] <= 1 and "loss_kpt2" in metrics


def test_dh_resume_and_export_roundtrip(coco_train, tmp_path):
    from probpose.weights import load_pretrained

    full = Trainer(_dh_config(coco_train, tmp_path / "a", max_steps=2), quiet=True)
    ref = [r["loss"] for r in full.fit() if "loss" in r]
    first = Trainer(_dh_config(coco_train, tmp_path / "b", max_steps=1), quiet=True)
    first.fit()
    ckpt = Path(first.out_dir) / "last.pt"
    resumed = Trainer(_dh_config(coco_train, tmp_path / "b", max_steps=2), resume=ckpt, quiet=True)
    tail = [r["loss"] for r in resumed.fit() if "loss" in r]
    assert len(ref) == 2 and tail == ref[1:]  # augmentation and drop-path on: RNG state matters
    out = export_weights(Path(full.out_dir) / "last.pt", tmp_path / "dh.safetensors")
    model = load_pretrained(out)
    assert model.kind == "probpose_dh" and model.metadata["kind"] == "probpose_dh"
    assert "skipped" in model.metadata["calibration"]
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.half().to(v.dtype) if v.is_floating_point() else v)
