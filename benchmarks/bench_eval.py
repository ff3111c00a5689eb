"""Evaluation speed: instances per second of our native evaluator (standard and Ex-OKS) and of pycocotools on the
shared COCO val subset, with synthetic predictions (GT + Gaussian noise + 20% duplicated false positives).

    python benchmarks/bench_eval.py [--ann ../shared/data/coco_subset/annotations/person_keypoints_val2017.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.coco_io import load_coco, noisy_results  # noqa: E402
from analysis.cocoeval import pycocotools_keypoint_ap  # noqa: E402
from analysis.exoks import EvalParams, evaluate_keypoints  # noqa: E402

K = 17


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ann", default=str(ROOT.parent / "shared/data/coco_subset/annotations/"
                                          "person_keypoints_val2017.json"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cs = load_coco(args.ann)
    res = noisy_results(cs, extra=len(cs.annotations) // 5)
    cases = {
        "native standard (official rules)": lambda: evaluate_keypoints(cs.dataset, res),
        "native standard (pycocotools rules)": lambda: evaluate_keypoints(cs.dataset, res,
                                                                          EvalParams(rules="pycocotools")),
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
