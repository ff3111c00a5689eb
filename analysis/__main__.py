"""``python -m analysis {evaluate,cropcoco,compare,precompute}``: see docs/analysis.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD
from probpose.errors import ProbPoseError

SMALL_SAMPLE_NOTE = ("Small-sample figures: ours come from a few hundred people and the weights given; the paper's "
                     "rows are full COCO val2017 / official CropCOCO with the official ViT-S weights.")


def _load_model(weights: str | None, kind: str, trusted: bool):
    from probpose import weights as W

    if weights is None:
        path, flag = {"probpose": (W.EMBEDDED_WEIGHTS, "--weights"),
                      "probpose_dh": (W.EMBEDDED_DH_WEIGHTS, "--dh-weights")}.get(
            kind, (W.EMBEDDED_HEATMAP_WEIGHTS, "--baseline-weights"))
        if not Path(path).is_file():
            raise ProbPoseError(f"the embedded {kind} weights {path} are not in this checkout; pass a checkpoint "
                                f"with {flag}")
        weights = str(path)
    model = W.load_pretrained(weights, kind=kind, trusted=trusted)
    return model


def _cropcoco_set(args, out: Path, coco):
    """(image dir, CocoSet) of the CropCOCO set: the official release when --cropcoco-root is given, else ours."""
    from analysis.coco_io import load_coco
    from analysis.cropcoco import CropCocoConfig, find_official_cropcoco, generate_cropcoco

    if args.cropcoco_root:
        img, ann = find_official_cropcoco(args.cropcoco_root)
        return img, load_coco(ann)
    s = generate_cropcoco(args.data, coco, out / "cropcoco_set", CropCocoConfig(seed=args.seed))
    print(f"CropCOCO-style set: {s.num_images} crops, {s.num_people} people, {s.num_out_keypoints} keypoints "
          f"outside the image -> {s.root}")
    return s.image_dir, load_coco(s.ann_file)


def _evaluate_one(model, img_dir, coco, out: Path, args, title: str) -> dict:
    from analysis.evaluate import evaluate_run, run_model
    from analysis.report import rules_line, write_report

    run = run_model(model, img_dir, coco, flip_test=not args.no_flip, batch_size=args.batch_size,
                    keep_map_samples=not args.no_calibration and model.kind == "probpose",
                    max_images=args.max_images)
    metrics = evaluate_run(run, coco, fixed_threshold=args.threshold, calibrate=not args.no_calibration,
                           sweep=not args.no_sweep, seed=args.seed, progress=True)
    paths = write_report(out, metrics, run, coco, title=title, png=not args.no_png, progress=True)
    print(f"{title}: mAP {metrics['coco']['AP']:.3f} (official rules; pycocotools "
          f"{metrics['coco_pycocotools']['AP']:.3f}), Ex-mAP {metrics['exoks_oracle']['AP']:.3f} "
          f"(oracle thr {metrics['exoks_oracle']['presence_threshold']:.2f}) -> {paths['report']}")
    print("  " + rules_line(metrics))
    return metrics


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="image folder of the COCO-format set")
    p.add_argument("--ann", required=True, help="COCO person-keypoint JSON")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cropcoco-root", default=None, help="official CropCOCO folder (default: generate ours)")
    p.add_argument("--seed", type=int, default=0, help="CropCOCO generation and calibration split seed")
    p.add_argument("--threshold", type=float, default=DEFAULT_PRESENCE_THRESHOLD,
                   help="fixed presence threshold reported beside the oracle one (default 0.3)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (quick look)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--no-calibration", action="store_true")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--no-png", action="store_true", help="HTML plots only")
    p.add_argument("--trusted", action="store_true", help="allow unpickling a .pth checkpoint you trust")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ev = sub.add_parser("evaluate", help="evaluate one model on a COCO-format set (and its CropCOCO version)")
    ev.add_argument("--weights", default=None, help="checkpoint (default: the embedded demo model)")
    ev.add_argument("--kind", default="probpose", choices=("probpose", "probpose_dh", "heatmap"))
    ev.add_argument("--cropcoco", action="store_true", help="also evaluate the CropCOCO version of the set")
    _add_common(ev)
    cc = sub.add_parser("cropcoco", help="build a CropCOCO-style set, or check an official release")
    cc.add_argument("--data", help="source image folder")
    cc.add_argument("--ann", help="source COCO person-keypoint JSON")
    cc.add_argument("--out", help="output folder (gets val2017/ and annotations/)")
    cc.add_argument("--seed", type=int, default=0)
    cc.add_argument("--max-crops-per-image", type=int, default=2)
    cc.add_argument("--official", nargs="?", const="", default=None,
                    help="locate the official release (a folder, or the Hugging Face cache when empty)")
    cp = sub.add_parser("compare", help="ProbPose vs heatmap baseline, paper-style table")
    cp.add_argument("--weights", default=None, help="ProbPose checkpoint (default: embedded)")
    cp.add_argument("--baseline-weights", default=None, help="heatmap baseline checkpoint (default: embedded)")
    cp.add_argument("--dh-weights", default=None,
                    help="ProbPose-DH checkpoint for a third row (default: the embedded DH model when present)")
    cp.add_argument("--no-dh", action="store_true", help="leave the ProbPose-DH row out")
    _add_common(cp)
    pc = sub.add_parser("precompute", help="write the app's analysis/precomputed/ (calibration, sweep, cases)")
    pc.add_argument("--weights", default=None, help="ProbPose checkpoint (default: embedded)")
    pc.add_argument("--baseline-weights", default=None, help="heatmap baseline checkpoint (default: embedded)")
    pc.add_argument("--data", default=None, help="val image folder (default: ../shared/data/coco_subset/val2017)")
    pc.add_argument("--ann", default=None, help="its COCO person-keypoint JSON (default: the shared val JSON)")
    pc.add_argument("--out", default="analysis/precomputed", help="output folder (default analysis/precomputed)")
    pc.add_argument("--max-people", type=int, default=None, help="people in the seeded subset (default: all)")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--trusted", action="store_true", help="allow unpickling a .pth checkpoint you trust")
    args = ap.parse_args(argv)
    try:
        return _dispatch(args)
    except ProbPoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from analysis.coco_io import load_coco

    if args.cmd == "cropcoco":
        from analysis.cropcoco import CropCocoConfig, find_official_cropcoco, generate_cropcoco

        if args.official is not None:
            img, ann = find_official_cropcoco(args.official or None)
            cs = load_coco(ann)
            print(f"official CropCOCO: {ann} ({len(cs.images)} images, {cs.num_people} people), images in {img}")
            return 0
        if not (args.data and args.ann and args.out):
            print("error: cropcoco needs --data, --ann and --out (or --official)", file=sys.stderr)
            return 2
        s = generate_cropcoco(args.data, args.ann, args.out,
                              CropCocoConfig(seed=args.seed, max_crops_per_image=args.max_crops_per_image))
        print(f"wrote {s.num_images} crops ({s.num_people} people, {s.num_out_keypoints} keypoints outside the "
              f"image) to {s.root}; skipped {s.skipped}")
        for m in s.messages[:20]:
            print("  " + m)
        return 0

    if args.cmd == "precompute":
        return _precompute(args)
    out = Path(args.out)
    coco = load_coco(args.ann)
    if coco.issues:
        print(f"{len(coco.issues)} annotation problem(s) (details in the report): {dict(coco.counts)}")
    if args.cmd == "evaluate":
        model = _load_model(args.weights, args.kind, args.trusted)
        _evaluate_one(model, args.data, coco, out / "coco", args, "COCO")
        if args.cropcoco or args.cropcoco_root:
            img, crop = _cropcoco_set(args, out, coco)
            _evaluate_one(model, img, crop, out / "cropcoco", args, "CropCOCO")
        return 0

    from analysis.compare import comparison_markdown, comparison_rows, write_comparison
    from probpose.weights import EMBEDDED_DH_WEIGHTS

    print("loading models ...", flush=True)
    models = {"Heatmap baseline": _load_model(args.baseline_weights, "heatmap", args.trusted),
              "ProbPose": _load_model(args.weights, "probpose", args.trusted)}
    if not args.no_dh and (args.dh_weights or EMBEDDED_DH_WEIGHTS.is_file()):
        models["ProbPose-DH"] = _load_model(args.dh_weights, "probpose_dh", args.trusted)
    print(f"models: {', '.join(models)}; sets: COCO and CropCOCO", flush=True)
    img, crop = _cropcoco_set(args, out, coco)
    metrics: dict = {}
    for name, model in models.items():
        slug = model.kind
        metrics[name] = {"coco": _evaluate_one(model, args.data, coco, out / slug / "coco", args, f"{name} COCO"),
                         "cropcoco": _evaluate_one(model, img, crop, out / slug / "cropcoco", args,
                                                   f"{name} CropCOCO")}
    write_comparison(out, metrics, SMALL_SAMPLE_NOTE)
    print(comparison_markdown(comparison_rows(metrics), SMALL_SAMPLE_NOTE))
    return 0


def _precompute(args) -> int:
    from tqdm import tqdm

    from analysis.precompute import precompute_all

    models = (_load_model(args.weights, "probpose", args.trusted),
              _load_model(args.baseline_weights, "heatmap", args.trusted))
    with tqdm(total=100, desc="precompute", unit="%") as bar:
        def progress(fraction: float, text: str = "") -> None:
            bar.set_postfix_str(text)
            bar.update(round(100 * fraction) - bar.n)

        paths = precompute_all(args.out, *models, data_dir=args.data, ann=args.ann, max_people=args.max_people,
                               seed=args.seed, progress=progress,
                               command="python -m analysis " + " ".join(sys.argv[1:]))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
