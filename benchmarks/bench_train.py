"""Training speed: crops per second of one full optimiser step (forward, all losses incl. the OKS-branch target
decode, backward, clipping, AdamW), and of the data pipeline (augmentation + codec targets).

    python benchmarks/bench_train.py                      # probpose_t / vitpose_t / the demo size, batch 8 and 32
    python benchmarks/bench_train.py --batch-sizes 16 --models demo --amp bf16 --threads 1

Uses the real COCO subset (../shared/data) when present, random crops otherwise. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import AugmentConfig, CocoPoseDataset  # noqa: E402
from training.train import (  # noqa: E402
    DataConfig,
    OptimConfig,
    TrainConfig,
    Trainer,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]

# name -> (kind, architecture dict); "demo" sizes are read from the shipped configs.
MODELS = {
    "probpose_t": ("probpose", {}),
    "vitpose_t": ("heatmap", {}),
}


def _models(names: list[str]) -> dict[str, tuple[str, dict]]:
    out = {}
    for n in names:
        if n == "demo":
            for cfg_name, label in (("probpose_demo.toml", "probpose_demo"), ("heatmap_demo.toml", "heatmap_demo")):
                path = REPO / "configs" / cfg_name
                if path.exists():
                    c = load_config(path)
                    out[label] = (c.kind, c.model)
        else:
            out[n] = MODELS[n]
    return out


def bench_step(kind: str, arch: dict, batch_size: int, steps: int, amp: str, data: DataConfig) -> float:
    """Crops per second of `Trainer.train_step` on real augmented batches (median of `steps` timed steps)."""
    cfg = TrainConfig(kind=kind, model=arch, data=data, augment=AugmentConfig(crop_prob=0.5, color_jitter=0.3),
                      optim=OptimConfig(lr=1e-4, warmup_iters=1), batch_size=batch_size, amp=amp,
                      out_dir="/tmp/bench_train", device="cpu", eval_interval=0, checkpoint_interval=0)
    trainer = Trainer(cfg, quiet=True)
    n = len(trainer.train_set)
    batch = torch.utils.data.default_collate([trainer.train_set[i % n] for i in range(batch_size)])
    trainer.train_step(batch)  # warm-up (allocator, oneDNN primitives)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - t)
    times.sort()
    return batch_size / times[len(times) // 2]


def bench_data(data: DataConfig, n: int = 64) -> float:
    ds = CocoPoseDataset(data.train_ann, data.train_images, AugmentConfig(crop_prob=0.5, color_jitter=0.3),
                         heatmap_targets=True)
    t = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["probpose_t", "vitpose_t", "demo"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting (median reported)")
    ap.add_argument("--amp", default="off", choices=["off", "bf16"],
                    help="CPU autocast; bf16 is ~1.4x faster on CPUs with native bf16 (avx512_bf16 / AMX)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DataConfig(num_workers=0, val_ann="")
    if not Path(data.train_ann).exists():
        print(f"real data not found at {data.train_ann}", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, amp {args.amp}\n")
    print(f"data pipeline (augment + probmap + heatmap targets): {bench_data(data):.0f} crops/s per process\n")
    print("| model | kind | params (M) | batch | crops/s |")
    print("|---|---|---|---|---|")
    for name, (kind, arch) in _models(args.models).items():
        from training.train import build_model

        params = sum(p.numel() for p in build_model(kind, arch).parameters()) / 1e6
        for bs in args.batch_sizes:
            cps = bench_step(kind, arch, bs, args.steps, args.amp, data)
            print(f"| {name} | {kind} | {params:.1f} | {bs} | {cps:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
