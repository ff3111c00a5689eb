"""Decode speed per person (17 maps of 64x48) on this machine's CPU.

    python benchmarks/bench_decode.py [--repeats 50] [--threads N]

Prints median milliseconds per person at batch 1 and 8 for each decoder, with the target for expected-OKS
(< 2 ms / person). Timing: time.perf_counter, warm-up calls first, then the median over repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from probpose import codec  # noqa: E402

TARGET_MS = 2.0


def _maps(batch: int, seed: int = 0) -> np.ndarray:
    """Peaked, sparse probability maps (sparsemax-like), float32, each summing to 1."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:64, 0:48]
    p = np.zeros((batch, 17, 64, 48), np.float32)
    for b in range(batch):
        for k in range(17):
            x, y, s = rng.uniform(3, 44), rng.uniform(3, 60), rng.uniform(1, 3)
            m = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * s**2))
            m = np.maximum(m - 0.05, 0)
            p[b, k] = m / m.sum()
    return p


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _one_thread(fn, *args):
    # Many tiny ops: on a busy 2-core machine intra-op threading costs more than it gains.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for batch in (1, 8):
        p = _maps(batch)
        p64 = p.astype(np.float64)
        pt = torch.from_numpy(p)
        cases = {
            "expected-OKS (numpy, float32 maps)": lambda p=p: codec.decode_expected_oks(p),
            "expected-OKS (numpy, float64 maps)": lambda p=p64: codec.decode_expected_oks(p),
            "expected-OKS (torch CPU, float32)": lambda pt=pt: codec.decode_expected_oks_torch(pt),
            "expected-OKS (torch CPU, 1 thread)": lambda pt=pt: _one_thread(codec.decode_expected_oks_torch, pt),
            "argmax": lambda p=p: codec.decode_argmax(p),
            "argmax + DARK-UDP (ArgMaxProbMap)": lambda p=p: codec.decode_argmax_dark(p),
            "credible region 0.9 (17 maps, loop)": lambda p=p: [codec.credible_region(m, 0.9)
                                                               for m in p.reshape(-1, 64, 48)],
            "encode_probmaps (target)": lambda b=batch: codec.encode_probmaps(
                np.random.default_rng(0).uniform(0, 191, (b, 17, 2)), np.ones((b, 17))),
        }
        for name, fn in cases.items():
            rows.append((name, batch, _median_ms(fn, args.repeats) / batch))

    print(f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{'decoder':40s} {'batch':>5s} {'ms/person':>10s}  target")
    for name, batch, ms in rows:
        target = f"< {TARGET_MS:.0f} ms ({'ok' if ms < TARGET_MS else 'MISSED'})" if "expected-OKS" in name else ""
        print(f"{name:40s} {batch:5d} {ms:10.3f}  {target}")


if __name__ == "__main__":
    main()
