"""Trainer: config loading, optimiser groups, schedule, learning on real data, exact resume, DDP with gloo."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import AugmentConfig
from training.train import (
    DataConfig,
    OptimConfig,
    TrainConfig,
    Trainer,
    add_parser,
    build_model,
    load_config,
    lr_factor,
    param_groups,
)

REPO = Path(__file__).resolve().parents[2]
TINY_ARCH = {"backbone": {"embed_dim": 32, "depth": 2, "num_heads": 2, "ffn_dim": 64},
             "deconv_channels": [16, 16], "branch_channels": 16}


def _tiny_config(coco_train, tmp_path, **kw) -> TrainConfig:
    images, ann = coco_train
    heatmap = kw.get("kind") == "heatmap"
    arch = {k: v for k, v in TINY_ARCH.items() if not (heatmap and k == "branch_channels")}
    cfg = TrainConfig(
        model=arch, data=DataConfig(train_ann=str(ann), train_images=str(images), val_ann="", max_people=12,
                                    num_workers=0),
        augment=AugmentConfig(crop_prob=0.5, color_jitter=0.2),
        optim=OptimConfig(lr=1e-3, warmup_iters=2, layer_decay=0.8),
        epochs=3, batch_size=4, eval_interval=0, checkpoint_interval=0, log_interval=1,
        out_dir=str(tmp_path / "run"), device="cpu", seed=0, amp="off", threads=1)
    return dataclasses.replace(cfg, **kw)


def test_load_config_reads_every_shipped_toml():
    from training import cached

    for path in sorted((REPO / "configs").glob("*.toml")):
        if "_mbt" in path.stem:  # the embedded models' configs, for `python -m training.cached` (frozen trunk)
            cfg = cached.load_config(path)
            model = cached.build_mbt_model(cfg.kind, cfg.model)
        else:
            cfg = load_config(path)
            model = build_model(cfg.kind, cfg.model)
        assert cfg.kind in ("probpose", "probpose_dh", "heatmap")
        assert model.kind == cfg.kind


def test_load_config_rejects_unknown_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('kind = "probpose"\n[optim]\nlearning_rate = 1.0\n')
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(p)
    p.write_text('kind = "segmentation"\n')
    with pytest.raises(ValueError, match="kind"):
        load_config(p)


def test_param_groups_layer_decay_and_no_decay():
    model = build_model("probpose", TINY_ARCH)  # depth 2 -> ids 0 (embeddings), 1, 2 (blocks), 3 (the rest)
    groups = param_groups(model, weight_decay=0.1, layer_decay=0.8)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["backbone.patch_embed.projection.weight"]["lr_scale"] == pytest.approx(0.8 ** 3)
    assert by_name["backbone.pos_embed"]["lr_scale"] == pytest.approx(0.8 ** 3)
    assert by_name["backbone.layers.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.8 ** 2)
    assert by_name["backbone.layers.1.ffn.layers.1.weight"]["lr_scale"] == pytest.approx(0.8)
    assert by_name["backbone.ln1.weight"]["lr_scale"] == 1.0
    assert by_name["head.final_layer.weight"]["lr_scale"] == 1.0
    assert by_name["head.final_layer.weight"]["weight_decay"] == 0.1
    for name in ("backbone.pos_embed", "head.final_layer.bias", "backbone.layers.0.ln1.weight",
                 "head.deconv_layers.1.weight"):
        assert by_name[name]["weight_decay"] == 0.0, name
    # The frozen error branch is left out.
    assert not any(n.startswith("head.error_layers") for n in by_name)
    n_trainable = sum(1 for _, p in model.named_parameters() if p.requires_grad)
    assert len(by_name) == n_trainable


def test_lr_factor_warmup_and_milestones():
    opt = OptimConfig(warmup_iters=10, warmup_factor=0.001, milestones=(2, 3), gamma=0.1)
    assert lr_factor(0, 100, opt) == pytest.approx(0.001)
    assert lr_factor(5, 100, opt) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 100, opt) == 1.0
    assert lr_factor(199, 100, opt) == 1.0
    assert lr_factor(200, 100, opt) == pytest.approx(0.1)
    assert lr_factor(350, 100, opt) == pytest.approx(0.01)


@pytest.mark.parametrize("kind", ["probpose", "heatmap"])
def test_a_few_steps_on_real_data_lower_the_loss(coco_train, tmp_path, kind):
    cfg = _tiny_config(coco_train, tmp_path, kind=kind, augment=AugmentConfig(enabled=False))
    trainer = Trainer(cfg, quiet=True)
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(8)])
    losses = [trainer.train_step(batch)["loss"] for _ in range(15)]
    # The heatmap MSE starts near mean(T^2) (outputs ~0 at init) and falls more slowly than the ProbPose sum.
    factor = 0.8 if kind == "probpose" else 0.95
    assert sum(losses[-3:]) / 3 < factor * losses[0], losses


def test_bf16_autocast_step_is_finite_and_losses_stay_float32(coco_train, tmp_path):
    from training.train import compute_losses

    cfg = _tiny_config(coco_train, tmp_path, amp="bf16", augment=AugmentConfig(enabled=False))
    trainer = Trainer(cfg, quiet=True)
    assert trainer.amp_dtype == torch.bfloat16
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = compute_losses("probpose", trainer.model(batch["image"]), batch)
    assert all(v.dtype == torch.float32 for v in losses.values())
    rec = trainer.train_step(batch)
    assert all(np.isfinite(v) for v in rec.values())


def test_resume_reproduces_the_next_losses(coco_train, tmp_path):
    # 12 people, batch 4: 3 steps per epoch. Stop mid-epoch at step 2, then compare steps 3-4 (across the epoch
    # boundary) with an uninterrupted run. Drop-path and augmentation are on, so RNG state matters.
    full = Trainer(_tiny_config(coco_train, tmp_path / "a", max_steps=4), quiet=True)
    ref = [r["loss"] for r in full.fit() if "loss" in r]
    assert len(ref) == 4
    first = Trainer(_tiny_config(coco_train, tmp_path / "b", max_steps=2), quiet=True)
    first.fit()
    ckpt = Path(first.out_dir) / "last.pt"
    assert ckpt.exists()
    resumed = Trainer(_tiny_config(coco_train, tmp_path / "b", max_steps=4), resume=ckpt, quiet=True)
    assert resumed.step == 2 and resumed.epoch == 0
    tail = [r["loss"] for r in resumed.fit() if "loss" in r]
    assert tail == ref[2:]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_refuses_a_checkpoint_of_the_other_kind(coco_train, tmp_path):
    from probpose.errors import CheckpointError

    t = Trainer(_tiny_config(coco_train, tmp_path, max_steps=1), quiet=True)
    t.fit()
    with pytest.raises(CheckpointError, match="heatmap"):
        Trainer(_tiny_config(coco_train, tmp_path, kind="heatmap"), resume=Path(t.out_dir) / "last.pt")
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(_tiny_config(coco_train, tmp_path), resume=tmp_path / "missing.pt")


def test_train_cli_parses_overrides():
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--config", "c.toml", "--epochs", "3", "--device", "cpu",
                              "--resume", "r.pt", "--out", "o"])
    assert args.command == "train" and args.epochs == 3 and args.device == "cpu" and args.resume == "r.pt"
    assert callable(args.func)


_DDP_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    sys.path.insert(0, {repo!r})
    from training.train import TrainConfig, Trainer
    cfg = TrainConfig.from_dict(json.loads({cfg!r}))
    t = Trainer(cfg, quiet=True)
    t.fit()
    h = hashlib.sha256()
    for v in t.model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    out = os.path.join({tmp!r}, "rank%s.txt" % os.environ["RANK"])
    with open(out, "w") as f:
        f.write(h.hexdigest() + " " + str(t.step) + " " + str(len(t.sampler)))
    torch.distributed.destroy_process_group()
""")


@pytest.mark.slow
def test_ddp_two_gloo_processes(coco_train, tmp_path):
    cfg = _tiny_config(coco_train, tmp_path, max_steps=2, checkpoint_interval=1)
    script = tmp_path / "ddp.py"
    import json

    script.write_text(_DDP_SCRIPT.format(repo=str(REPO), cfg=json.dumps(cfg.to_dict()), tmp=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = (tmp_path / "rank0.txt").read_text().split()
    r1 = (tmp_path / "rank1.txt").read_text().split()
    assert r0[0] == r1[0]  # identical weights on both ranks after 2 synchronised steps
    assert r0[1] == r1[1] == "2"
    assert r0[2] == r1[2] == "6"  # each rank sees half of the 12 people
    run = tmp_path / "run"
    assert (run / "last.pt").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # only rank 0 writes


def test_init_from_warm_starts_probpose_from_a_heatmap_checkpoint(coco_train, tmp_path):
    hm = Trainer(_tiny_config(coco_train, tmp_path / "hm", kind="heatmap", max_steps=1), quiet=True)
    hm.fit()
    cfg = _tiny_config(coco_train, tmp_path / "pp", init_from=str(Path(hm.out_dir) / "last.pt"))
    pp = Trainer(cfg, quiet=True)
    src = hm.model.state_dict()
    dst = pp.model.state_dict()
    for k in ("backbone.pos_embed", "backbone.layers.1.attn.qkv.weight", "head.deconv_layers.0.weight",
              "head.final_layer.weight"):
        torch.testing.assert_close(dst[k], src[k])
    assert "head.probability_layers" in pp.init_report  # the scalar branches stay freshly initialised


def test_apply_calibration_is_exact_temperature_scaling(tiny_probpose):
    import copy

    from probpose.models.probpose import sparsemax
    from training.train import apply_calibration

    model = copy.deepcopy(tiny_probpose)
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)
        apply_calibration(model, 0.8, 2.5)
        after = model(x)
    assert model.config.temperature == 0.8 and model.temperature == 0.8
    torch.testing.assert_close(after.presence, torch.sigmoid(before.presence_logits / 2.5))
    expected = sparsemax(before.logits.flatten(2) / 0.8, dim=-1).reshape(before.logits.shape)
    torch.testing.assert_close(after.probmaps, expected)
    torch.testing.assert_close(after.visibility, before.visibility)


def test_export_with_calibration_roundtrips_through_load_pretrained(coco_train, tmp_path):
    import json

    from probpose.weights import load_pretrained
    from training.train import export_weights

    images, ann = coco_train
    data = json.loads(Path(ann).read_text())
    keep = {im["id"] for im in data["images"][:3]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    small = tmp_path / "small.json"
    small.write_text(json.dumps(data))
    t = Trainer(_tiny_config(coco_train, tmp_path, max_steps=1), quiet=True)
    t.fit()
    out = export_weights(Path(t.out_dir) / "last.pt", tmp_path / "m.safetensors",
                         calibrate_split=(str(images), str(small)), metadata={"data": "test"},
                         work_dir=tmp_path / "cal")
    model = load_pretrained(out)
    cal = model.metadata["calibration"]
    assert cal["map_temperature"] > 0 and cal["presence_temperature"] > 0 and cal["n_map"] > 0
    assert model.temperature == pytest.approx(cal["map_temperature"])
    assert model.metadata["steps"] == 1 and model.metadata["data"] == "test"
    w = t.model.state_dict()["backbone.layers.0.attn.qkv.weight"]
    torch.testing.assert_close(model.state_dict()["backbone.layers.0.attn.qkv.weight"], w, atol=1e-3, rtol=1e-3)
