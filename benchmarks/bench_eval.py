"""Evaluation speed: instances per second of our native evaluator (standard and Ex-OKS) and of pycocotools on the
shared COCO val subset, with synthetic predictions (GT + Gaussian noise + 20% duplicated false positives).

    python benchmarks/bench_eval.py [--ann ../shared/data/coco_subset/annotations/person_keypoints_val2017.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.coco_io import load_coco  # noqa: E402
from analysis.cocoeval import pycocotools_keypoint_ap  # noqa: E402
from analysis.exoks import EvalParams, evaluate_keypoints  # noqa: E402

K = 17


def synthetic_results(cs, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    res = []
    for a in cs.annotations:
        if a["iscrowd"]:
            continue
        kp = np.array(a["keypoints"], float).reshape(K, 3)
        x, y, w, h = a["bbox"]
        kp[:, 0] = np.where(kp[:, 2] > 0, kp[:, 0], x + w / 2) + rng.normal(0, 0.04 * max(w, 1), K)
        kp[:, 1] = np.where(kp[:, 2] > 0, kp[:, 1], y + h / 2) + rng.normal(0, 0.04 * max(h, 1), K)
        kp[:, 2] = rng.uniform(0, 1, K)
        res.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(),
                    "score": float(rng.uniform()), "bbox": a["bbox"]})
    for r in list(res[: len(res) // 5]):
        kp = np.array(r["keypoints"])
        kp[0::3] += 40
        res.append({**r, "keypoints": kp.tolist(), "score": float(rng.uniform())})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ann", default=str(ROOT.parent / "shared/data/coco_subset/annotations/"
                                          "person_keypoints_val2017.json"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cs = load_coco(args.ann)
    res = synthetic_results(cs)
    cases = {
        "native standard (= pycocotools AP)": lambda: evaluate_keypoints(cs.dataset, res),
        "native Ex-OKS (thr 0.5, 3 visibility levels)": lambda: evaluate_keypoints(
            cs.dataset, res, EvalParams(extended=True, presence_threshold=0.5)),
        "pycocotools COCOeval keypoints": lambda: pycocotools_keypoint_ap(cs.dataset, res),
    }
    rows = []
    for name, fn in tqdm(cases.items(), desc="bench"):
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best = min(times)
        rows.append((name, best, len(res) / best))
    print(f"\n{len(cs.images)} images, {len(res)} predicted instances ({cs.num_people} GT people); best of "
          f"{args.repeats}\n")
    print(f"| {'evaluator':<46} | {'seconds':>8} | {'instances/s':>11} |")
    print(f"|{'-' * 48}|{'-' * 10}|{'-' * 13}|")
    for name, sec, ips in rows:
        print(f"| {name:<46} | {sec:8.3f} | {ips:11.0f} |")


if __name__ == "__main__":
    main()
