"""CPU speed of the top-down path against this CPU's fp32 roofline, beside transformers' VitPose-S.

    python benchmarks/bench_inference.py [--rounds 5] [--people 8] [--model probpose_s] [--weights PATH]
                                         [--threads 2] [--flip] [--precisions auto,fp32,int8] [--no-hf]

Main table (one run, measured interleaved round by round so that a shared, noisy CPU affects all rows alike;
each row is the best of --rounds):
  GEMM peak     fp32 torch.mm 2048x2048x2048 on this CPU with --threads threads, 8 back to back (~1 s, as long as
                a network batch, so that both see the same share of a shared CPU), GFLOP/s
  ViT linears   fp32 F.linear at the ViT's own four linear shapes (qkv, proj, fc1, fc2; batch --people), all
                layers back to back: the rate the network's GEMMs can reach on this CPU (below the 2048^3 peak)
  roofline      official-architecture FLOPs per crop / GEMM peak (ms per crop)
  network       the model's forward on a batch of --people crops at precision "auto" (what PosePredictor runs)
  default path  PosePredictor(model) with its defaults (precision auto, batch 8) and flip off: set_image (warp,
                normalise, forward, collect) + predict (expected-OKS decode), ms per person
  HF VitPose-S  transformers' VitPoseForPoseEstimation with ViTPose-S sizes (random init, no Hub access)
  vitpose_s     our ViTPose-S heatmap model on the same crops
FLOPs come from torch.utils.flop_counter: "official" is the plain module path with all four scalar branches (the
architecture of the official checkpoint), "executed" the default path (no error branch). The counter does not
see the CPU attention kernel (SDPA), so both exclude the attention matmuls (given separately).
Precision table (--precisions): network ms per crop and the largest keypoint / map difference to fp32 of each
precision, on --weights or else the embedded trained demo model (realistic maps); bf16 runs only where the CPU
has native bf16 unless named explicitly (it is emulated, ~15x slower, on AVX2-only CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probpose import geometry  # noqa: E402
from probpose.image import load_image  # noqa: E402
from probpose.inference import PosePredictor, _normalise, preprocess_crops  # noqa: E402
from probpose.precision import autocast_dtype, cpu_features, resolve_precision  # noqa: E402

SHARED = Path(os.environ.get("PROBPOSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
GEMM_N = 2048
GEMM_REPS = 8  # back-to-back products per sample (~1 s, like one network batch of 8 crops)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _image_and_boxes(n: int):
    """A real COCO val photo with n GT boxes (repeated if it has fewer), else a synthetic image."""
    ann = SHARED / "coco_subset" / "annotations" / "person_keypoints_val2017.json"
    if ann.is_file():
        data = json.loads(ann.read_text())
        img_id = 5001
        name = next(i["file_name"] for i in data["images"] if i["id"] == img_id)
        boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == img_id and not a.get("iscrowd")]
        boxes = geometry.box_xywh_to_xyxy(np.array(boxes, np.float64))
        boxes = boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
        return load_image(SHARED / "coco_subset" / "val2017" / name), np.resize(boxes, (n, 4)), f"COCO val {img_id}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), np.tile([[100, 50, 300, 450]], (n, 1)), "random"


def build_model(name: str, weights: str | None):
    if weights:
        from probpose.weights import load_pretrained

        return load_pretrained(weights).eval(), f"{weights}"
    from probpose.models import probpose as pp

    torch.manual_seed(0)
    return getattr(pp, name)().eval(), f"{name} random init"


def count_flops(model: torch.nn.Module, x: torch.Tensor, official: bool) -> float:
    """FLOPs of one forward of x (batch 1) per torch.utils.flop_counter.

    official: the plain module path (autograd on: BN unfused) with the error branch, i.e. the official
    architecture; else the default inference path (inference_mode, no error branch)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    kw = {"with_error": True} if official and model.kind != "heatmap" else {}
    ctx = torch.enable_grad() if official else torch.inference_mode()
    with ctx, counter:
        model(x, **kw)
    return float(counter.get_total_flops())


def attention_flops(model: torch.nn.Module) -> float:
    """QK^T and AV matmul FLOPs per crop of a ViT backbone (0 for others)."""
    cfg = model.config.backbone
    if not hasattr(cfg, "num_heads"):
        return 0.0
    n = cfg.grid_size[0] * cfg.grid_size[1]
    return 2 * 2 * n * n * cfg.embed_dim * cfg.depth


def linear_shapes(model: torch.nn.Module, n: int) -> list[tuple[int, int, int, int]]:
    """(M, K, N, count) of the ViT's linear layers for a batch of n crops ([] for other backbones)."""
    cfg = model.config.backbone
    if not hasattr(cfg, "num_heads"):
        return []
    m, c, f, d = n * cfg.grid_size[0] * cfg.grid_size[1], cfg.embed_dim, cfg.ffn_dim, cfg.depth
    return [(m, c, 3 * c, d), (m, c, c, d), (m, c, f, d), (m, f, c, d)]  # qkv, proj, fc1, fc2


def hf_vitpose_s():
    """transformers' VitPose-S (random init) or None with a message when transformers is missing."""
    try:
        from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
    except ImportError as e:
        print(f"[skip] transformers VitPose-S: transformers not importable ({e}); pip install transformers")
        return None
    backbone = VitPoseBackboneConfig(image_size=[256, 192], patch_size=[16, 16], hidden_size=384,
                                     num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, out_indices=[12])
    torch.manual_seed(0)
    return VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, use_simple_decoder=False)).eval()


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main_table(args, model, desc: str) -> None:
    image, boxes, img_desc = _image_and_boxes(args.people)
    pred = PosePredictor(model, device="cpu", flip_test=args.flip)  # the defaults, flip as asked
    x = _normalise(preprocess_crops(image, *geometry.box_to_window(boxes)), torch.device("cpu"))
    n = x.shape[0]
    one = x[:1]
    official = count_flops(model, one, official=True)
    executed = count_flops(model, one, official=False)
    attn = attention_flops(model)
    hf = None if args.no_hf else hf_vitpose_s()
    from probpose.models.heatmap import vitpose_s

    torch.manual_seed(0)
    vp = vitpose_s().eval()
    vp_flops = count_flops(vp, one, official=True)
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    shapes = linear_shapes(model, n)
    operands = [(torch.randn(m, k), torch.randn(nn_, k), torch.randn(nn_)) for m, k, nn_, _ in shapes]
    shape_flops = sum(2 * m * k * nn_ * c for m, k, nn_, c in shapes)

    def vit_linears():  # the ViT's linear layers alone, as F.linear runs them in the network
        for (x_, w_, b_), (*_, c) in zip(operands, shapes, strict=True):
            for _ in range(c):
                torch.nn.functional.linear(x_, w_, b_)
    dtype = autocast_dtype(pred.precision)

    def network():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model(x)

    def default_path():
        pred.set_image(image, boxes)
        pred.predict()

    def hf_run():
        with torch.inference_mode():
            hf(pixel_values=x)

    def vp_run():
        with torch.inference_mode():
            vp(x)

    rows = {"gemm": [], "network": [], "default": [], "hf": [], "vitpose_s": [], "linears": []}
    with torch.inference_mode():
        torch.mm(a, b)
    network(), default_path(), vp_run()  # warm-up (also builds the folded weights)
    if hf is not None:
        hf_run()
    load_start = _load()
    for r in range(args.rounds):
        # Interleaved: every quantity is measured once per round, so load changes hit them alike.
        with torch.inference_mode():  # sustained: as long as a network batch, so both see the same contention
            rows["gemm"].append(2 * GEMM_N ** 3 * GEMM_REPS / _time(lambda: [torch.mm(a, b) for _ in range(GEMM_REPS)]))
        rows["network"].append(_time(network) / n)
        if shapes:
            with torch.inference_mode():
                rows["linears"].append(shape_flops / _time(vit_linears))
        rows["default"].append(_time(default_path) / n)
        if hf is not None:
            rows["hf"].append(_time(hf_run) / n)
        rows["vitpose_s"].append(_time(vp_run) / n)
        print(f"  round {r + 1}/{args.rounds}: GEMM {rows['gemm'][-1] / 1e9:.0f} GFLOP/s, network "
              f"{rows['network'][-1] * 1e3:.0f}, default path {rows['default'][-1] * 1e3:.0f}"
              + (f", HF {rows['hf'][-1] * 1e3:.0f}" if hf is not None else "") + " ms/crop", flush=True)
    peak = max(rows["gemm"])
    best = {k: min(v) * 1e3 for k, v in rows.items() if k not in ("gemm", "linears") and v}
    roof = official / peak * 1e3
    roof_exec = executed / peak * 1e3
    print()
    print(f"model: {desc}; image: {img_desc} {image.shape[1]}x{image.shape[0]}, {n} people; flip test "
          f"{'on' if args.flip else 'off'}; precision auto -> {pred.precision}")
    print(f"FLOPs per crop (torch.utils.flop_counter): official architecture {official / 1e9:.2f} GFLOP, executed by "
          f"the default path {executed / 1e9:.2f} GFLOP (no error branch), our ViTPose-S {vp_flops / 1e9:.2f}; "
          f"attention matmuls not counted by the CPU SDPA kernel: +{attn / 1e9:.2f} GFLOP each")
    print(f"load average (1/5/15 min) at start {load_start}, at end {_load()}; each row is the best of "
          f"{args.rounds} interleaved rounds")
    print()
    def row(label: str, ms: float) -> None:
        print(f"| {label:58} | {ms:8.1f} | {ms / roof:10.2f} |")

    print(f"| {'quantity':58} | {'ms/crop':>8} | {'x roofline':>10} |")
    print(f"|{'-' * 60}|{'-' * 9}:|{'-' * 11}:|")
    print(f"| {f'fp32 GEMM peak, GFLOP/s: 8 x torch.mm 2048^3, {torch.get_num_threads()} threads':58} | "
          f"{peak / 1e9:8.1f} | {'':>10} |")
    lin = max(rows["linears"], default=None)  # GEMM rate at the ViT's own linear shapes (None: not a ViT)
    if lin:
        print(f"| {f'fp32 GEMM at the ViT linear shapes (batch {n}), GFLOP/s':58} | {lin / 1e9:8.1f} | "
              f"{f'{lin / peak:.0%} of peak':>10} |")
    row(f"roofline: official {official / 1e9:.2f} GFLOP / peak", roof)
    row(f"(executed {executed / 1e9:.2f} GFLOP / peak)", roof_exec)
    row(f"network, batch {n}, {pred.precision}", best["network"])
    row("default path: PosePredictor defaults, flip off, per person", best["default"])
    if "hf" in best:
        row(f"HF transformers VitPose-S, fp32, batch {n}", best["hf"])
    row(f"our vitpose_s, batch {n}", best["vitpose_s"])
    print()
    flip = "on" if args.flip else "off"
    print(f"default path (flip {flip}) / roofline: {best['default'] / roof:.2f} (target <= 1.2)")
    if lin:
        roof_lin = official / lin * 1e3
        print(f"at the GEMM rate of the ViT's own linear shapes ({lin / 1e9:.0f} GFLOP/s) the official FLOPs take "
              f"{roof_lin:.1f} ms: default path / that = {best['default'] / roof_lin:.2f}")
    if "hf" in best:
        print(f"default path / HF VitPose-S network: {best['default'] / best['hf']:.2f}; our vitpose_s / HF VitPose-S: "
              f"{best['vitpose_s'] / best['hf']:.2f}")


def precision_table(args, model, desc: str) -> None:
    image, boxes, _ = _image_and_boxes(args.people)
    names = [p for p in args.precisions.split(",") if p]
    if "bf16" not in names and cpu_features().native_bf16:
        names.append("bf16")
    print()
    print(f"precisions on {desc} (max |dkp| / |dp|: keypoints in image px / maps vs fp32, flip off, "
          f"{len(boxes)} people)")
    print(f"| {'precision':16} | {'network ms/crop':>15} | {'vs fp32':>7} | {'max|dkp| px':>11} | {'max|dp|':>9} |")
    print(f"|{'-' * 18}|{'-' * 16}:|{'-' * 8}:|{'-' * 12}:|{'-' * 10}:|")
    ref = ref_ms = None
    for name in ["fp32"] + [p for p in names if p != "fp32"]:
        try:
            resolved = resolve_precision(name, "cpu")
            pred = PosePredictor(model, device="cpu", flip_test=False, precision=name)
        except ValueError as e:
            print(f"| {name:16} | skipped: {e} |")
            continue
        pred.set_image(image, boxes)
        crops = preprocess_crops(image, pred.outputs.centers, pred.outputs.scales)
        ms = min(_time(lambda: pred._forward_crops(crops)) for _ in range(args.rounds)) / len(boxes) * 1e3  # noqa: B023
        kp = np.stack([p.keypoints for p in pred.predict().people])
        maps = pred.outputs.probmaps
        if ref is None:
            ref, ref_ms = (kp, maps), ms
        dkp, dp = float(np.abs(kp - ref[0]).max()), float(np.abs(maps - ref[1]).max())
        label = name if resolved == name else f"{name} -> {resolved}"
        print(f"| {label:16} | {ms:15.1f} | {ref_ms / ms:6.2f}x | {dkp:11.3f} | {dp:9.2e} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--model", default="probpose_s", help="factory in probpose.models.probpose (random init)")
    ap.add_argument("--weights", default=None, help="checkpoint to load instead of random init")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flip", action="store_true", help="default path with flip test (doubles the network work)")
    ap.add_argument("--precisions", default="auto,fp32,int8",
                    help="precision table rows ('' to skip); bf16 is added where the CPU has native bf16")
    ap.add_argument("--no-hf", action="store_true", help="skip transformers' VitPose-S")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"command: {command_line()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {cpu_features().describe()}")
    print(f"precision auto on this CPU -> {resolve_precision('auto', 'cpu')}")
    model, desc = build_model(args.model, args.weights)
    main_table(args, model, desc)
    if args.precisions:
        if args.weights:
            pmodel, pdesc = model, desc
        else:
            from probpose.weights import load_pretrained

            pmodel, pdesc = load_pretrained(None).eval(), "the embedded trained demo model"
        precision_table(args, pmodel, pdesc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
