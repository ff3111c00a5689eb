"""Results for the app's analysis tabs (CropCOCO explorer, Calibration, Threshold sweep), shipped in
``analysis/precomputed/`` and recomputed on demand by the app's "Recompute" buttons.

Every number comes from the analysis package itself (``run_model``, ``evaluate_run``, ``generate_cropcoco``,
``threshold_sweep``, ``rank_failures``); this module only picks a seeded subset of people, runs each model once and
turns the results into the small JSON files the app reads:

- ``calibration.json``: ``{"maps" | "presence": {"temperature", "before", "after"}}``, curves as the analysis
  package writes them (coverage: ``levels`` / ``hit_rate``; reliability: ``confidence`` / ``frequency``), + ``ece``.
- ``sweep.json``: ``{"thresholds", "models": {"probpose" | "baseline": {"mAP", "Ex-mAP", "presence_error",
  "best"}}}``.
- ``cropcoco_cases.json``: ``{"probpose" | "baseline": {"cases": [...]}}``, worst Ex-OKS first. A case stores the
  crop's source image (relative to the data folder) and its crop rectangle, so the app re-creates the crop from
  the shared data; no image is copied.

The CropCOCO-style set is generated (seeded, ``analysis.cropcoco``) into a cache folder outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.calibration import MapSamples
from analysis.coco_io import CocoSet, keypoints_array, load_coco, people_to_run
from analysis.evaluate import PersonRecords, RunOutput, evaluate_run, run_model
from analysis.exoks import pair_keypoint_terms, relabel_visibility
from analysis.failures import rank_failures
from probpose.constants import DEFAULT_PRESENCE_THRESHOLD
from probpose.errors import AnnotationError

__all__ = ["compute_calibration", "compute_sweep", "compute_cropcoco_cases", "precompute_all",
           "calibration_view", "sweep_view", "default_data", "SHARED_DATA"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROBPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MAX_CASES = 150  # per model: keeps cropcoco_cases.json small; the worst cases are the interesting ones

Progress = Callable[..., None] | None


def default_data() -> tuple[Path, Path]:
    """(image folder, annotation JSON) of the shared COCO val subset."""
    root = SHARED_DATA / "coco_subset"
    return root / "val2017", root / "annotations" / "person_keypoints_val2017.json"


def _say(progress: Progress, fraction: float, text: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), text)


def _rel_to_shared(path: Path) -> str:
    """A data path as the app will look it up: relative to the shared data folder when inside it."""
    try:
        return Path(path).resolve().relative_to(SHARED_DATA.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _load_model(source, kind: str):
    """An ``nn.Module`` is used as it is (tests); anything else goes to ``load_pretrained`` (None = embedded)."""
    if hasattr(source, "forward"):
        return source.eval()
    from probpose.weights import load_pretrained

    if source is None and kind == "heatmap":
        source = "embedded-heatmap"
    return load_pretrained(source, kind=kind)


def _source_name(model) -> str:
    meta = getattr(model, "metadata", None) or {}
    src = meta.get("path") or meta.get("source")
    return Path(str(src)).name if src else type(model).__name__


# ---------------------------------------------------------------------------------------------- the data


@dataclass
class EvalSet:
    """The people the models run on: image folder + cleaned COCO set, and how it was made (for the JSON)."""

    image_dir: Path
    coco: CocoSet
    info: dict
    source: CocoSet | None = None  # the val set the crops come from


def _pick_images(coco: CocoSet, max_people: int | None, seed: int) -> list[int]:
    """Images in a seeded order until ``max_people`` runnable people are reached (all when None): a smaller
    request is a prefix of a larger one, so the app's quick recompute is part of the shipped run."""
    order = [int(i) for i in np.random.default_rng(seed).permutation(sorted(coco.images))]
    per_image = Counter(p.image_id for p in people_to_run(coco))
    ids, n = [], 0
    for iid in order:
        if not per_image[iid]:
            continue
        if max_people is not None and n >= max_people:
            break
        ids.append(iid)
        n += per_image[iid]
    return ids


def prepare_set(data_dir=None, ann=None, *, dataset: str = "cropcoco", max_people: int | None = None,
                seed: int = 0, work_dir=None, progress: Progress = None) -> EvalSet:
    """The seeded subset of the val set (``dataset="coco"``) or of its generated CropCOCO version.

    Raises:
        AnnotationError: the data folder or annotation file is missing (with where it was looked for).
    """
    from analysis.cropcoco import CropCocoConfig, generate_cropcoco

    d_img, d_ann = default_data()
    data_dir, ann = Path(data_dir or d_img), Path(ann or d_ann)
    if not data_dir.is_dir() or not ann.is_file():
        raise AnnotationError(f"the evaluation data is not here (images {data_dir}, annotations {ann}); set "
                              "PROBPOSE_SHARED_DATA to the folder holding coco_subset/, or pass --data and --ann")
    coco = load_coco(ann)
    ids = _pick_images(coco, max_people, seed)
    info = {"images": _rel_to_shared(data_dir), "annotations": _rel_to_shared(ann), "seed": seed,
            "dataset": dataset, "max_people": max_people}
    if dataset == "coco":
        sub = coco.subset(ids)
        return EvalSet(data_dir, sub, {**info, "num_images": len(ids), "num_people": len(people_to_run(sub))})
    if dataset != "cropcoco":
        raise ValueError(f"dataset must be 'coco' or 'cropcoco', got {dataset!r}")
    # cached by (annotation file, seed, source images): generation is deterministic per image
    key = hashlib.sha1(json.dumps([str(ann.resolve()), seed, ids]).encode()).hexdigest()[:12]
    root = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "probpose_studio_cropcoco" / key
    ann_file = root / "annotations" / "person_keypoints_val2017.json"
    if not ann_file.is_file():
        _say(progress, 0.02, f"building CropCOCO from {len(ids)} images")
        generate_cropcoco(data_dir, coco.subset(ids), root, CropCocoConfig(seed=seed), progress=False)
    crop = load_coco(ann_file)
    # the crops repeat their source's people, so keep crops (in order) until max_people again
    keep, n = [], 0
    for iid in sorted(crop.images):
        if max_people is not None and n >= max_people:
            break
        keep.append(iid)
        n += sum(1 for a in crop.anns_by_image.get(iid, []) if not a["iscrowd"])
    crop = crop.subset(keep)
    return EvalSet(root / "val2017", crop, {**info, "cropcoco_root": str(root), "num_images": len(keep),
                                            "num_people": len(people_to_run(crop))}, coco)


# ---------------------------------------------------------------------------------------------- running


def _merge(parts: list[RunOutput]) -> RunOutput:
    """One RunOutput from runs over disjoint image chunks (so a progress bar can move between chunks)."""
    recs = [p.records for p in parts if len(p.records)]
    records = PersonRecords(**{k: np.concatenate([getattr(r, k) for r in recs])
                               for k in PersonRecords.__dataclass_fields__}) if recs else PersonRecords.empty()
    samples = [p.map_samples for p in parts if p.map_samples is not None]
    skipped: Counter = Counter()
    for p in parts:
        skipped.update(p.skipped)
    return RunOutput(parts[0].kind, parts[0].model_name, [r for p in parts for r in p.results], records,
                     [i for p in parts for i in p.image_ids], MapSamples.concat(samples) if samples else None,
                     np.concatenate([p.map_sample_image for p in parts if p.map_sample_image is not None]),
                     skipped, [m for p in parts for m in p.messages], sum(p.seconds for p in parts),
                     parts[0].temperature)


def run_in_chunks(model, es: EvalSet, *, keep_map_samples: bool = False, progress: Progress = None,
                  span: tuple[float, float] = (0.0, 1.0), label: str = "", chunks: int = 10) -> RunOutput:
    """``run_model`` over ``es`` in up to ``chunks`` image chunks, reporting progress inside ``span``."""
    ids = sorted(es.coco.images)
    groups = [g.tolist() for g in np.array_split(np.asarray(ids), min(chunks, max(len(ids), 1))) if len(g)]
    parts = []
    for i, g in enumerate(groups):
        _say(progress, span[0] + (span[1] - span[0]) * i / len(groups), f"running {label} ({i}/{len(groups)})")
        parts.append(run_model(model, es.image_dir, es.coco.subset(g), keep_map_samples=keep_map_samples,
                               progress=False))
    _say(progress, span[1], f"{label} done")
    return _merge(parts)


# ---------------------------------------------------------------------------------------------- views


def calibration_view(metrics: dict) -> dict | None:
    """``evaluate_run`` metrics -> the app's calibration data (None without calibration results)."""
    cal = (metrics or {}).get("calibration") or {}
    maps, pres = cal.get("maps") or {}, cal.get("presence") or {}
    if not maps and "reliability_before" not in pres:
        return None
    out: dict = {"model": metrics.get("model"),
                 "description": f"Model: {metrics.get('model', '?')}; temperatures fitted on half of the images "
                                "and evaluated on the other half."}
    if maps:
        out["maps"] = {"temperature": maps.get("temperature_fitted"), "model_temperature": maps.get(
            "temperature_model"), "n_fit": maps.get("n_fit"), "n_eval": maps.get("n_eval"),
                       "before": {**(maps.get("coverage_before") or {}), "ece": maps.get("coverage_ece_before")},
                       "after": {**(maps.get("coverage_after") or {}), "ece": maps.get("coverage_ece_after")}}
    if "reliability_before" in pres:
        out["presence"] = {"temperature": pres.get("temperature"), "n_fit": pres.get("n_fit"),
                           "n_eval": pres.get("n_eval"),
                           "before": {**pres["reliability_before"], "ece": pres.get("ece_before")},
                           "after": {**pres["reliability_after"], "ece": pres.get("ece_after")}}
    return out


def sweep_view(by_model: dict[str, dict]) -> dict | None:
    """{model name: ``SweepResult.to_dict()``} -> the app's sweep data (None when empty)."""
    models = {name: {"thresholds": sw["thresholds"], "mAP": sw["ap"], "Ex-mAP": sw["ex_ap"],
                     "presence_error": sw["presence_error"],
                     "best": {"mAP": sw.get("best_ap"), "Ex-mAP": sw.get("best_ex_ap"),
                              "presence_error": sw.get("best_presence")}}
              for name, sw in by_model.items() if sw}
    if not models:
        return None
    return {"thresholds": next(iter(models.values()))["thresholds"], "models": models}


def _r(v, nd: int = 2):
    v = float(v)
    return round(v, nd) if np.isfinite(v) else None


def _cases(run: RunOutput, coco: CocoSet, threshold: float, max_cases: int,
           source: CocoSet | None = None) -> list[dict]:
    """Per-person cases worst Ex-OKS first (people with nothing to score are left out)."""
    anns = {a["id"]: a for a in coco.annotations}
    by_ann = {r["gt_ann_id"]: r for r in run.results}
    cases = []
    for row in rank_failures(run.results, coco, threshold):
        if not np.isfinite(row.exoks):
            continue
        a, res = anns[row.ann_id], by_ann[row.ann_id]
        im = coco.images[row.image_id]
        pred = np.asarray(res["keypoints"], dtype=np.float64).reshape(-1, 3)
        gt = keypoints_array(a)
        # per-keypoint Ex-OKS similarity, as in diagnose_keypoints (v relabelled by the activation window)
        vis = relabel_visibility(a, extended=True)
        bbox = np.asarray(a["bbox"], dtype=np.float64)[None]
        sim = pair_keypoint_terms(pred[None], gt[None, :, :2], vis[None], bbox, np.array([float(a["area"])]),
                                  True, threshold)[0, 0]
        src = coco.images.get(row.image_id, {})
        sid = src.get("source_image_id")
        cases.append({
            "rank": len(cases), "image_id": row.image_id, "ann_id": row.ann_id, "file_name": im["file_name"],
            "source_file_name": source.images[sid]["file_name"] if source and sid in source.images else None,
            "source_image_id": sid, "crop_xywh": src.get("crop_xywh"),
            "width": im.get("width"), "height": im.get("height"),
            "bbox": [_r(v) for v in a["bbox"]], "gt_keypoints": [[_r(x), _r(y), int(v)] for x, y, v in gt],
            "pred_keypoints": [[_r(x), _r(y)] for x, y in pred[:, :2]],
            "presence": [_r(p, 3) for p in pred[:, 2]],
            "per_keypoint_error": [_r(1 - s, 3) if vis[k] > 0 else None for k, s in enumerate(sim)],
            "labels": row.labels, "problems": row.to_dict()["problems"], "oks": _r(row.oks, 4),
            "exoks": _r(row.exoks, 4), "error": _r(1 - row.exoks, 4), "score": _r(row.score, 4)})
        if len(cases) >= max_cases:
            break
    return cases


def _summary(metrics: dict) -> dict:
    return {"model": metrics["model"], "kind": metrics["kind"], "people": metrics["counts"]["people_run"],
            "AP": metrics["coco"]["AP"], "Ex-AP (oracle thr)": metrics["exoks_oracle"]["AP"],
            "oracle_threshold": metrics["oracle_threshold"], "Ex-AP (fixed thr)": metrics["exoks_fixed"]["AP"],
            "presence_error_fixed": metrics["presence"]["fixed"]["error"]}


def _header(es: EvalSet, what: str) -> dict:
    i = es.info
    name = "CropCOCO-style crops (generated, seed {seed}) of".format(**i) if i["dataset"] == "cropcoco" else ""
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "data": i,
            "description": f"{what} on {i['num_people']} people in {i['num_images']} {name} images of "
                           f"`{i['images']}`."}


def _results(runs: dict[str, RunOutput], es: EvalSet, threshold: float, seed: int, want: set[str],
             max_cases: int, progress: Progress) -> dict[str, dict]:
    """The three app files from one run per model (``want`` picks which)."""
    out: dict[str, dict] = {}
    metrics = {}
    for i, (name, run) in enumerate(runs.items()):
        _say(progress, 0.85 + 0.1 * i / len(runs), f"evaluating {name}")
        metrics[name] = evaluate_run(run, es.coco, fixed_threshold=threshold, seed=seed, sweep="sweep" in want,
                                     calibrate="calibration" in want and name == "probpose")
    if "calibration" in want:
        cal = calibration_view(metrics["probpose"]) or {}
        cal.update(_header(es, f"ProbPose `{metrics['probpose']['model']}`"))
        cal["n_people"] = es.info["num_people"]
        out["calibration"] = cal
    if "sweep" in want:
        sw = sweep_view({n: m.get("sweep") for n, m in metrics.items()}) or {}
        sw.update(_header(es, "Sweep of " + ", ".join(f"{n} `{m['model']}`" for n, m in metrics.items())))
        out["sweep"] = sw
    if "cases" in want:
        data = {**_header(es, "Cases of " + ", ".join(f"{n} `{m['model']}`" for n, m in metrics.items())),
                "threshold": threshold, "summary": {n: _summary(m) for n, m in metrics.items()}}
        for name, run in runs.items():
            cases = _cases(run, es.coco, threshold, max_cases, es.source)
            data[name] = {"model": metrics[name]["model"], "cases": cases}
        out["cases"] = data
    _say(progress, 1.0, "done")
    return out


def _compute(want: set[str], models: tuple[str, ...], *, max_people, progress, probpose_source, baseline_source,
             data_dir, ann, seed, threshold, dataset, work_dir, max_cases) -> dict[str, dict]:
    es = prepare_set(data_dir, ann, dataset=dataset, max_people=max_people, seed=seed, work_dir=work_dir,
                     progress=progress)
    if not es.coco.images:
        raise AnnotationError(f"no usable people in {es.info['annotations']}")
    runs = {}
    spans = {1: [(0.05, 0.85)], 2: [(0.05, 0.45), (0.45, 0.85)]}[len(models)]
    for name, span in zip(models, spans, strict=True):
        _say(progress, span[0], f"loading the {name} model")
        model = _load_model(probpose_source if name == "probpose" else baseline_source,
                            "probpose" if name == "probpose" else "heatmap")
        runs[name] = run_in_chunks(model, es, keep_map_samples="calibration" in want and name == "probpose",
                                   progress=progress, span=span, label=name)
    return _results(runs, es, threshold, seed, want, max_cases, progress)


def _kw(kw: dict) -> dict:
    base = {"max_people": None, "progress": None, "probpose_source": None, "baseline_source": None,
            "data_dir": None, "ann": None, "seed": 0, "threshold": DEFAULT_PRESENCE_THRESHOLD,
            "dataset": "cropcoco", "work_dir": None, "max_cases": MAX_CASES}
    unknown = set(kw) - set(base)
    if unknown:
        raise TypeError(f"unexpected argument(s): {sorted(unknown)}")
    return {**base, **kw}


def compute_calibration(**kw) -> dict:
    """Presence and map calibration of ProbPose (before / after temperature scaling) on a seeded subset.

    Keyword args: max_people, progress (callback(fraction, text)), probpose_source (path / Hub id / alias /
    nn.Module; None = embedded demo), baseline_source (unused here), data_dir, ann (default: the shared val
    subset), seed, threshold, dataset ("cropcoco" (default) or "coco"), work_dir (CropCOCO cache).
    """
    return _compute({"calibration"}, ("probpose",), **_kw(kw))["calibration"]


def compute_sweep(**kw) -> dict:
    """mAP, Ex-mAP and presence error vs the presence threshold for ProbPose and the baseline (args as
    ``compute_calibration``; baseline_source None = embedded heatmap demo)."""
    return _compute({"sweep"}, ("probpose", "baseline"), **_kw(kw))["sweep"]


def compute_cropcoco_cases(**kw) -> dict:
    """ProbPose and baseline people of CropCOCO ranked by Ex-OKS error (args as ``compute_sweep``; max_cases
    per model)."""
    return _compute({"cases"}, ("probpose", "baseline"), **_kw(kw))["cases"]


FILES = {"calibration": "calibration.json", "sweep": "sweep.json", "cases": "cropcoco_cases.json"}


def precompute_all(out_dir="analysis/precomputed", probpose_source=None, baseline_source=None, data_dir=None,
                   ann=None, max_people: int | None = None, seed: int = 0, progress: Progress = None,
                   command: str = "", **kw) -> dict[str, Path]:
    """Run each model once and write calibration.json, sweep.json, cropcoco_cases.json and README.md into
    ``out_dir``. Returns {name: path}."""
    args = _kw({**kw, "max_people": max_people, "progress": progress, "probpose_source": probpose_source,
                "baseline_source": baseline_source, "data_dir": data_dir, "ann": ann, "seed": seed})
    t0 = time.perf_counter()
    res = _compute(set(FILES), ("probpose", "baseline"), **args)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, name in FILES.items():
        (out / name).write_text(json.dumps(res[key], separators=(",", ":"), allow_nan=False))
        paths[key] = out / name
    paths["readme"] = out / "README.md"
    paths["readme"].write_text(_readme(res, command, time.perf_counter() - t0))
    return paths


def _readme(res: dict, command: str, seconds: float) -> str:
    c = res["cases"]
    d = c["data"]
    lines = ["# Precomputed analysis results (read by the app's tabs 3-5)", "",
             f"Made {c['created']} in {seconds:.0f} s by `analysis.precompute.precompute_all`"
             + (f":\n\n```bash\n{command}\n```" if command else "."), "",
             "| model | kind | people | AP | Ex-AP (oracle thr) | oracle thr | Ex-AP (thr "
             f"{c['threshold']:.2f}) | presence error (thr {c['threshold']:.2f}) |", "|---|---|---|---|---|---|---|---|"]
    for s in c["summary"].values():
        lines.append(f"| `{s['model']}` | {s['kind']} | {s['people']} | {s['AP']:.3f} | {s['Ex-AP (oracle thr)']:.3f} "
                     f"| {s['oracle_threshold']:.2f} | {s['Ex-AP (fixed thr)']:.3f} | "
                     f"{s['presence_error_fixed']:.3f} |")
    lines += ["", f"Data: {c['description']} Annotations `{d['annotations']}`, seed {d['seed']}, "
              f"max people {d['max_people']}. Paths are relative to the shared data folder (`../shared/data`, or "
              "`PROBPOSE_SHARED_DATA`); the CropCOCO crops are not stored here: each case keeps its source image "
              "and crop rectangle and the app re-creates it.", "",
              "Small-sample figures: a few hundred people at most; not comparable with the paper's full-dataset "
              "numbers.", "",
              "Files: `calibration.json` (ProbPose presence / map calibration, temperatures fitted on half of the "
              "images), `sweep.json` (mAP / Ex-mAP / presence error vs threshold, both models), "
              f"`cropcoco_cases.json` (the worst {MAX_CASES} people per model by Ex-OKS error)."]
    return "\n".join(lines) + "\n"
