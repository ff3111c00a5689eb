"""GPU check for a maintainer (called by benchmarks/gpu_check.sh; a few minutes on any CUDA GPU).

    python benchmarks/gpu_check.py [--dry-run] [--batches 1,8,32] [--people 8] [--weights PATH]

1. Speed table on CUDA: ProbPose-s (official architecture, random init) network ms per crop for fp32, fp16 and
   bf16 autocast at each batch size, and the default top-down path (PosePredictor defaults: precision auto, flip
   test on, and flip off) per person on a COCO photo with --people boxes.
2. Agreement with the CPU fp32 reference, on the embedded trained demo model (realistic, peaked maps; or
   --weights): max keypoint difference (image px), presence difference and map difference for every CUDA
   precision; fp32 must agree within 0.1 px, fp16 / bf16 within 1 px (else the line says FAIL and the exit code
   is 1).
3. The ZeroGPU path: ``studio.state.run_network`` (the app's only network call, wrapped by ``spaces.GPU`` on a
   ZeroGPU Space, a no-op elsewhere) on the same photo, against the CPU fp32 reference.
--dry-run runs everything on the CPU (fp32, plus bf16 where the CPU has native bf16; the speed table on the small
probpose_t, one repeat) to check the script's logic without a GPU; its figures describe the CPU, not a GPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the app's default model resolves to the embedded one, offline

from bench_inference import _image_and_boxes  # noqa: E402

from probpose import geometry  # noqa: E402
from probpose.inference import PosePredictor, _normalise, preprocess_crops  # noqa: E402
from probpose.precision import autocast_dtype, cpu_features  # noqa: E402

TOLERANCE_PX = {"fp32": 0.1, "fp16": 1.0, "bf16": 1.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REPEATS = 10  # timed repeats per cell (1 in --dry-run)


def _best_ms(fn, device: torch.device, repeats: int | None = None) -> float:
    repeats = repeats or REPEATS
    for _ in range(3 if REPEATS > 1 else 1):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def precisions_for(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"] + (["bf16"] if cpu_features().native_bf16 else [])


def speed_table(device: torch.device, batches: list[int], image, boxes, model_name: str = "probpose_s") -> None:
    from probpose.models import probpose as factories

    torch.manual_seed(0)
    model = getattr(factories, model_name)().eval().to(device)
    crops = preprocess_crops(image, *geometry.box_to_window(boxes))
    x_all = _normalise(np.resize(crops, (max(batches), *crops.shape[1:])), device)
    print(f"\nspeed on {device} ({model_name}, random init), ms per crop / per person:")
    print(f"| {'precision':9} | " + " | ".join(f"net b{b:<3}" for b in batches) + " | default path flip on | flip off |")
    print("|" + "-" * 11 + "|" + "|".join("-" * 10 + ":" for _ in batches) + "|" + "-" * 21 + ":|" + "-" * 9 + ":|")
    for p in precisions_for(device):
        dtype = autocast_dtype(p)
        cells = []
        for b in batches:
            x = x_all[:b]

            def net(x=x, dtype=dtype):
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    model(x)

            cells.append(f"{_best_ms(net, device) / b:10.2f}")
        paths = []
        for flip in (True, False):
            pred = PosePredictor(model, device=device, flip_test=flip, precision=p)
            paths.append(_best_ms(lambda pred=pred: (pred.set_image(image, boxes), pred.predict()), device,
                                  min(REPEATS, 5)) / len(boxes))
        print(f"| {p:9} | " + " | ".join(cells) + f" | {paths[0]:20.2f} | {paths[1]:8.2f} |")
    print(f"precision 'auto' on {device}: {PosePredictor(model, device=device).precision}")


def _compare(name: str, ref, out, tolerance: float) -> bool:
    kp_ref = np.stack([p.keypoints for p in ref.people])
    kp = np.stack([p.keypoints for p in out.people])
    dkp = float(np.abs(kp - kp_ref).max())
    dpres = float(max(np.abs(p.presence - q.presence).max() for p, q in zip(out.people, ref.people, strict=True)))
    dmap = float(max(np.abs(p.probmaps - q.probmaps).max() for p, q in zip(out.people, ref.people, strict=True)))
    ok = dkp <= tolerance
    print(f"| {name:34} | {dkp:11.3f} | {dpres:9.2e} | {dmap:9.2e} | {'PASS' if ok else 'FAIL'} (<= {tolerance} px) |")
    return ok


def agreement(device: torch.device, weights: str | None, image, boxes) -> bool:
    from probpose.weights import load_pretrained

    model = load_pretrained(weights).eval()
    desc = weights or "embedded trained demo model"
    ref = PosePredictor(copy.deepcopy(model), device="cpu", precision="fp32")
    ref.set_image(image, boxes)
    ref_res = ref.predict()
    print(f"\nagreement with CPU fp32 ({desc}, flip test on, {len(boxes)} people):")
    print(f"| {'path':34} | {'max|dkp| px':>11} | {'max|dpres|':>9} | {'max|dmap|':>9} | verdict |")
    print(f"|{'-' * 36}|{'-' * 12}:|{'-' * 11}:|{'-' * 11}:|---------|")
    ok = True
    for p in precisions_for(device):
        pred = PosePredictor(copy.deepcopy(model), device=device, precision=p)
        pred.set_image(image, boxes)
        ok &= _compare(f"{device.type} {p}", ref_res, pred.predict(), TOLERANCE_PX[p])
    # The app's network call: spaces.GPU-decorated on ZeroGPU (studio.state.gpu), device() -> CUDA inside it.
    from studio import spaces as spaces_module
    from studio import state
    from studio.models import MODEL_DEFAULT, get_model, model_spec

    spec = model_spec(MODEL_DEFAULT, "")
    app_model = get_model(spec)
    if weights is None:
        outputs = state.run_network(spec, image, boxes, "given")
        app_pred = PosePredictor(app_model, device=next(app_model.parameters()).device)
        app_pred.image, app_pred.outputs = image, outputs
        auto = PosePredictor(app_model, device=state.device()).precision
        deco = "spaces.GPU" if spaces_module is not None else "no-op outside a ZeroGPU Space"
        ok &= _compare(f"app run_network ({state.device()}, {auto})", ref_res, app_pred.predict(),
                       TOLERANCE_PX.get(auto, 1.0))
        print(f"ZeroGPU decorator: {deco}; app model: {spec.label}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU only: check the logic without a GPU")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--weights", default=None, help="checkpoint for the agreement check (default: embedded)")
    args = ap.parse_args(argv)
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    global REPEATS
    if args.dry_run:
        device = torch.device("cpu")
        REPEATS = 1
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("error: no CUDA device (torch.cuda.is_available() is False); use --dry-run to check on the CPU")
        return 2
    print(f"torch {torch.__version__}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)}, bf16 {torch.cuda.is_bf16_supported()})"
             if device.type == "cuda" else f" ({cpu_features().describe()})"))
    image, boxes, desc = _image_and_boxes(args.people)
    print(f"image: {desc}, {len(boxes)} people")
    t0 = time.perf_counter()
    # --dry-run: the small demo architecture, so that the logic check stays short on a CPU
    speed_table(device, [int(b) for b in args.batches.split(",")], image, boxes,
                "probpose_t" if args.dry_run else "probpose_s")
    ok = agreement(device, args.weights, image, boxes)
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
