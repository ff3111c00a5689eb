"""`python -m probpose predict IMAGE [IMAGE ...]`: poses for images, as JSON and / or drawings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from probpose.boxes import parse_boxes
from probpose.constants import DEFAULT_PRESENCE_THRESHOLD
from probpose.errors import ProbPoseError

__all__ = ["add_parser", "run", "parse_boxes"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `predict` sub-command (sets ``func=run``)."""
    p = subparsers.add_parser("predict", help="estimate poses in images",
                              description="Top-down ProbPose on images: boxes given or detected, JSON / drawing out.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--boxes", help='person boxes xyxy image px, "x1,y1,x2,y2;x1,y1,x2,y2" (same for every image)')
    p.add_argument("--boxes-json", type=Path,
                   help="JSON: a list of xyxy boxes for all images, or {image file name: [[x1,y1,x2,y2], ...]}")
    p.add_argument("--detector", default="auto", choices=["auto", "hog", "whole", "rtdetr"],
                   help="how to find people when no boxes are given (default auto: RT-DETR when its weights are "
                        "cached or the Hub can be used, else HOG; never the whole image silently)")
    p.add_argument("--weights", default=None, help="checkpoint path / Hub id (default: embedded demo weights)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a pickled .pth that needs globals the safe unpickler refuses (runs code from the "
                        "file: only for files you trust; mmengine / mmcv checkpoints never need it)")
    p.add_argument("--decoder", default="expected_oks", choices=["expected_oks", "argmax"])
    p.add_argument("--threshold", type=float, default=DEFAULT_PRESENCE_THRESHOLD, help="presence threshold")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test (2x faster)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                   help="network arithmetic (default auto: bf16 on CUDA and on CPUs with native bf16, "
                        "AVX512-BF16 / AMX; fp32 elsewhere)")
    p.add_argument("--json", type=Path, help="write all results to this JSON file")
    p.add_argument("--viz", type=Path, help="drawing: a .png/.jpg file (one image) or a directory")
    p.set_defaults(func=run)
    return p


def _boxes_for(args, image_path: str, json_boxes):
    if args.boxes:
        return parse_boxes(args.boxes)
    if json_boxes is None:
        return None
    if isinstance(json_boxes, dict):
        for key in (image_path, Path(image_path).name):
            if key in json_boxes:
                return np.asarray(json_boxes[key], np.float64).reshape(-1, 4)
        return None  # not listed: detect
    return np.asarray(json_boxes, np.float64).reshape(-1, 4)


def _viz_path(viz: Path, image_path: str, many: bool) -> Path:
    if many or viz.is_dir() or not viz.suffix:
        viz.mkdir(parents=True, exist_ok=True)
        return viz / f"{Path(image_path).stem}_pose.png"
    viz.parent.mkdir(parents=True, exist_ok=True)
    return viz


def _summary(name: str, result) -> str:
    n = len(result.people)
    if not n:
        return f"{name}: no person found (give --boxes, or --detector whole to run on the whole image)"
    present = sum(int(p.present.sum()) for p in result.people)
    outside = sum(int((~p.in_image & p.present).sum()) for p in result.people)
    best = max(p.score for p in result.people)
    return (f"{name}: {n} {'person' if n == 1 else 'people'}, {present} keypoints present "
            f"({outside} outside the image), best score {best:.2f}")


def run(args) -> int:
    """Run the command; returns the exit code (2 if any image failed, after processing the others)."""
    from tqdm import tqdm

    from probpose.draw import draw_poses
    from probpose.inference import PosePredictor
    from probpose.weights import load_pretrained

    json_boxes = None
    try:
        if args.boxes:
            parse_boxes(args.boxes)
        if args.boxes_json is not None:
            json_boxes = json.loads(Path(args.boxes_json).read_text())
        model = load_pretrained(args.weights, trusted=args.trust_checkpoint)
        predictor = PosePredictor(model, device=args.device, flip_test=not args.no_flip, precision=args.precision)
    except (ProbPoseError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    results = {}
    many = len(args.images) > 1
    for path in tqdm(args.images, disable=not many or not sys.stderr.isatty(), desc="predict"):
        try:
            predictor.set_image(path, _boxes_for(args, path, json_boxes), box_source="given", detector=args.detector)
            result = predictor.predict(decoder=args.decoder, presence_threshold=args.threshold)
            results[path] = result.to_json()
            print(_summary(path, result))
            if args.viz is not None:
                from PIL import Image

                canvas = draw_poses(predictor.image, result.people)
                Image.fromarray(canvas).save(_viz_path(args.viz, path, many))
        except (ProbPoseError, OSError, ValueError) as e:
            failed += 1
            print(f"error: {path}: {e}", file=sys.stderr)
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1, allow_nan=False))
        except OSError as e:
            print(f"error: cannot write {args.json}: {e}", file=sys.stderr)
            return 2
    return 2 if failed else 0
