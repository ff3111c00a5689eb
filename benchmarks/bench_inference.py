"""Inference speed: ms per person for network, decode and end to end; fp32 vs fast CPU paths; HF VitPose-S.

    python benchmarks/bench_inference.py [--repeats 5] [--model probpose_s] [--weights PATH] [--flip]

Targets on a 2-core CPU (issue "ProbPose core", item 9): end to end within 1.2x of the bare network time,
expected-OKS decode under 2 ms per person, faster than transformers' VitPose-S run beside it.
Rows: for each precision (fp32, bf16 autocast, int8 dynamic Linear quantisation) and batch (1, 8):
  network  = the batched forward (plus the mirrored pass with --flip) per person
  decode   = PosePredictor.predict (expected-OKS decode + mapping to the image) per person
  e2e      = set_image (load, warp, normalise, forward, cache) + predict, per person
  e2e/net  = the overhead ratio (target <= 1.2)
  max |dkp| / max |dp| = largest keypoint difference in image px / probability-map difference vs fp32
The HF row builds transformers' VitPoseForPoseEstimation with ViTPose-S sizes (random init; optional extra,
skipped with a message when transformers is missing) and times it on the same normalised crops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

SHARED = Path(os.environ.get("PROBPOSE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times) if repeats < 3 else statistics.median(times)


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

        return load_pretrained(weights), f"{weights}"
    from probpose.models import probpose as pp

    torch.manual_seed(0)
    return getattr(pp, name)().eval(), f"{name} random init"


def bench_hf_vitpose(x: torch.Tensor, repeats: int) -> float | None:
    """ms per crop of transformers' VitPose-S (random init) on crops x, or None when transformers is missing."""
    try:
        from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
    except ImportError as e:
        print(f"  [skip] transformers VitPose-S: transformers not importable ({e}); "
              "pip install transformers to compare (optional extra)")
        return None
    backbone = VitPoseBackboneConfig(image_size=[256, 192], patch_size=[16, 16], hidden_size=384,
                                     num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                                     out_indices=[12])
    cfg = VitPoseConfig(backbone_config=backbone, use_simple_decoder=False)
    torch.manual_seed(0)
    model = VitPoseForPoseEstimation(cfg).eval()
    n = x.shape[0]
    with torch.inference_mode():
        ms = _best_ms(lambda: model(pixel_values=x), repeats)
    return ms / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="probpose_s", help="factory in probpose.models.probpose")
    ap.add_argument("--weights", default=None, help="checkpoint to load instead of random init")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--flip", action="store_true", help="with flip test (doubles the network work)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, desc = build_model(args.model, args.weights)
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    print(f"model: {desc}; torch {torch.__version__}, {torch.get_num_threads()} threads; flip test "
          f"{'on' if args.flip else 'off'}; repeats {args.repeats}")
    image, all_boxes, img_desc = _image_and_boxes(max(batches))
    print(f"image: {img_desc} {image.shape[1]}x{image.shape[0]}")
    print(f"{'precision':9} {'batch':>5} {'network':>9} {'decode':>8} {'e2e':>8} {'e2e/net':>8} "
          f"{'max|dkp|px':>11} {'max|dp|':>9}   (ms per person)")
    ref: dict[int, tuple] = {}
    net_fp32: dict[int, float] = {}
    for precision in precisions:
        try:
            pred = PosePredictor(model, device="cpu", flip_test=args.flip, batch_size=max(batches),
                                 precision=precision)
        except Exception as e:  # a platform without bf16 / quantised kernels
            print(f"{precision:9} skipped: {e}")
            continue
        for b in batches:
            boxes = all_boxes[:b]
            pred.set_image(image, boxes)
            centers, scales = pred.outputs.centers, pred.outputs.scales
            crops = preprocess_crops(image, centers, scales)
            net = _best_ms(lambda: pred._forward_crops(crops), args.repeats) / b  # noqa: B023
            dec = _best_ms(lambda: pred.predict(), args.repeats) / b  # noqa: B023
            e2e = _best_ms(lambda: (pred.set_image(image, boxes), pred.predict()), args.repeats) / b  # noqa: B023
            res = pred.predict()
            kp = np.stack([p.keypoints for p in res.people])
            maps = pred.outputs.probmaps
            if precision == "fp32":
                ref[b] = (kp, maps)
                net_fp32[b] = net
                dkp = dp = 0.0
            elif b in ref:
                dkp = float(np.abs(kp - ref[b][0]).max())
                dp = float(np.abs(maps - ref[b][1]).max())
            else:
                dkp = dp = float("nan")
            speed = f"  ({net_fp32[b] / net:.2f}x fp32)" if precision != "fp32" and b in net_fp32 else ""
            print(f"{precision:9} {b:5d} {net:9.1f} {dec:8.2f} {e2e:8.1f} {e2e / net:8.2f} {dkp:11.3f} "
                  f"{dp:9.2e}{speed}")
    # Same-architecture comparison with transformers' VitPose-S (backbone + classic deconv decoder).
    b = max(batches)
    crops = preprocess_crops(image, *geometry.box_to_window(all_boxes[:b]))
    x = _normalise(crops, torch.device("cpu"))
    hf = bench_hf_vitpose(x, args.repeats)
    if hf is not None:
        from probpose.models.heatmap import vitpose_s

        ours_vp = vitpose_s().eval()
        with torch.inference_mode():
            ours_ms = _best_ms(lambda: ours_vp(x), args.repeats) / b
        best = min(v for v in [net_fp32.get(b, float("inf"))] if v == v)
        print(f"HF transformers VitPose-S fp32 batch {b}: {hf:.1f} ms/crop; our vitpose_s: {ours_ms:.1f} ms/crop "
              f"(ratio ours/HF {ours_ms / hf:.2f}); our {args.model} fp32 network {best:.1f} ms/crop "
              f"(ratio {best / hf:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
