"""Presence where the answer is known without labels: a portrait whose legs are out of the frame, and crops of
real photos with nobody in them (where every keypoint should be called absent).

    python scripts/presence_checks.py [--weights embedded] [--threshold 0.3] [--crops 200]

Prints (1) the presence of each keypoint on examples/grace_hopper.jpg with the whole image as the person box;
(2) on empty crops of coco_subset val2017 (a person-sized box placed where its activation window overlaps no
person box of the image, crowd and unlabelled people included, by more than 5%; one per image, seeded): the mean
and 95th percentile presence, the share of keypoints at or above the threshold and the share of crops with at
least one; (3) the same on a flat grey crop. Val images are for reporting only; nothing here trains.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probpose import PosePredictor, load_image, load_pretrained  # noqa: E402
from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, KEYPOINT_NAMES  # noqa: E402
from training.features import window_clear  # noqa: E402  (the training background crops' test)

VAL = ROOT.parent / "shared" / "data" / "coco_subset"


def empty_boxes(ann_path: Path, image_dir: Path, limit: int, seed: int = 0):
    """(image path, box xyxy) with the box's activation window clear of every person box of its image."""
    coco = json.loads(ann_path.read_text())
    boxes: dict[int, list[np.ndarray]] = {}
    for a in coco["annotations"]:  # every person region, crowd and keypoint-less ones too
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append(np.array([x, y, x + w, y + h]))
    rng = np.random.default_rng(seed)
    out = []
    for im in sorted(coco["images"], key=lambda d: d["id"]):
        path = image_dir / im["file_name"]
        if not path.is_file() or len(out) >= limit:
            continue
        w, h = im["width"], im["height"]
        for _ in range(50):
            bw, bh = rng.uniform(0.2, 0.5) * w, rng.uniform(0.3, 0.7) * h
            cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
            box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
            if window_clear(box, boxes.get(im["id"], [])):
                out.append((path, box))
                break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="embedded")
    ap.add_argument("--threshold", type=float, default=DEFAULT_PRESENCE_THRESHOLD)
    ap.add_argument("--crops", type=int, default=200)
    ap.add_argument("--data", type=Path, default=VAL)
    args = ap.parse_args(argv)
    pred = PosePredictor(load_pretrained(args.weights))
    thr = args.threshold
    print(f"command: python scripts/presence_checks.py --weights {args.weights} --threshold {thr} --crops {args.crops}")

    img = load_image(ROOT / "examples" / "grace_hopper.jpg")
    h, w = img.shape[:2]
    pred.set_image(img, boxes=np.array([[0, 0, w, h]], float))
    p = pred.predict(presence_threshold=thr).people[0].presence
    print("\ngrace_hopper.jpg, whole image as the box: presence per keypoint")
    print(" ".join(f"{KEYPOINT_NAMES[k]} {p[k]:.2f}" for k in range(17)))
    legs = p[13:17]
    print(f"knees and ankles (out of the frame): max {legs.max():.2f} -> "
          f"{'absent' if legs.max() < thr else 'NOT all absent'} at threshold {thr}")

    crops = empty_boxes(args.data / "annotations" / "person_keypoints_val2017.json", args.data / "val2017",
                        args.crops)
    pres = []
    for path, box in crops:
        pred.set_image(load_image(path), boxes=box[None])
        pres.append(pred.predict(presence_threshold=thr).people[0].presence)
    pres = np.array(pres)
    grey = np.full((256, 192, 3), 128, np.uint8)
    pred.set_image(grey, boxes=np.array([[0, 0, 192, 256]], float))
    g = pred.predict(presence_threshold=thr).people[0].presence
    print(f"\n| empty crops | crops | mean presence | 95th pct | keypoints >= {thr} | crops with any >= {thr} |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| coco_subset val, nobody in the window | {len(pres)} | {pres.mean():.3f} | "
          f"{np.percentile(pres, 95):.3f} | {(pres >= thr).mean():.1%} | {(pres >= thr).any(1).mean():.1%} |")
    print(f"| flat grey 192x256 | 1 | {g.mean():.3f} | {np.percentile(g, 95):.3f} | {(g >= thr).mean():.1%} | "
          f"{float((g >= thr).any()):.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
