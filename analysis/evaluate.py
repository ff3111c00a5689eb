"""Evaluation runner: a model over the ground-truth person boxes of a COCO-format set -> results JSON + records.

``run_model`` runs the network once per image (``PosePredictor``) on the people the official top-down dataset runs
(``people_to_run``: GT boxes clipped to the image as the official dataset clips them; no crowd, no
``num_keypoints == 0``), writes COCO keypoint results (third keypoint value = presence, unrounded, as the official
CocoMetric) and keeps per-person arrays (``PersonRecords``) from which every metric of the report is recomputed
cheaply (thresholds, sweeps, failures) without running the network again. ``evaluate_run`` turns a run into the
metrics dict the report, the CLI and the app show: as ``CocoMetric``, the results go through OKS-NMS (0.9) first,
the oracle presence threshold is chosen on the survivors, then standard AP and Ex-AP follow the official rules
(``analysis.exoks``); pycocotools' standard AP on the same detections is kept beside it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.calibration import (
    MAP_TEMPERATURE_BOUNDS,
    MapSamples,
    at_bound,
    coverage,
    expected_calibration_error,
    fit_map_temperature,
    fit_presence_temperature,
    maps_at_temperature,
    mass_above,
    reliability,
    sigmoid,
    split_by_image,
)
from analysis.coco_io import CocoSet, people_to_run
from analysis.cocoeval import pycocotools_keypoint_ap
from analysis.exoks import EvalParams, evaluate_keypoints
from analysis.presence import (
    DEFAULT_THRESHOLDS,
    oracle_threshold,
    person_roles,
    presence_by_place,
    presence_by_role,
    presence_labels,
    presence_report,
)
from analysis.scoring import NMS_THRESHOLD, nms_keep, rescore, results_with_scores
from analysis.sweep import threshold_sweep
from probpose import geometry
from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, NUM_KEYPOINTS
from probpose.errors import ProbPoseError

__all__ = ["PersonRecords", "RunOutput", "run_model", "evaluate_run", "evaluated_subset", "results_with_scores",
           "rescore", "RULES_NOTE"]

# what the primary numbers follow, in one line (the report prints it)
RULES_NOTE = ("official ProbPose evaluator rules: OKS-NMS 0.9 first; standard AP scores only v in {1, 2}; "
              "detections with all presences <= 0 dropped; detections in images whose GTs are all ignored ignored; "
              "oracle threshold = best presence accuracy over linspace(0, 1, 21) with presence > t")


@dataclass
class PersonRecords:
    """Per-person arrays of one run (N people, K keypoints), aligned with ``RunOutput.results``.

    image_id, ann_id: (N,). pred_xy: (N,K,2) image px. presence: (N,K) presence probability (heatmap baseline:
    clipped heatmap peak). presence_logit: (N,K) (NaN for heatmaps). rescore: (N,K) per-keypoint values the
    instance score averages (ProbPose: predicted OKS; heatmaps: peak). label: (N,K) GT presence 1 / 0 / NaN.
    mass_above: (N,K) mass strictly above the GT pixel in the map (coverage check; NaN unless the GT is present
    and labelled; heatmaps: NaN). centers, scales: (N,2) activation windows.
    """

    image_id: np.ndarray
    ann_id: np.ndarray
    pred_xy: np.ndarray
    presence: np.ndarray
    presence_logit: np.ndarray
    rescore: np.ndarray
    label: np.ndarray
    mass_above: np.ndarray
    centers: np.ndarray
    scales: np.ndarray

    def __len__(self) -> int:
        return len(self.image_id)

    @staticmethod
    def empty() -> PersonRecords:
        k = NUM_KEYPOINTS
        return PersonRecords(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k, 2)), np.zeros((0, k)),
                             np.zeros((0, k)), np.zeros((0, k)), np.zeros((0, k)), np.zeros((0, k)),
                             np.zeros((0, 2)), np.zeros((0, 2)))


@dataclass
class RunOutput:
    """One model over one set. results: COCO results (one per person run); image_ids: images evaluated (those
    that could be read); skipped: counts of what could not be run; messages: the first reasons."""

    kind: str
    model_name: str
    results: list[dict]
    records: PersonRecords
    image_ids: list[int]
    map_samples: MapSamples | None = None
    map_sample_image: np.ndarray | None = None
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    temperature: float = 0.5  # the sparsemax temperature the model ran with (0.5 official; demo: calibrated)


def _usable_box(box_xyxy: np.ndarray, size: tuple[int, int]) -> bool:
    w, h = size
    x0, y0 = max(box_xyxy[0], 0.0), max(box_xyxy[1], 0.0)
    x1, y1 = min(box_xyxy[2], w - 1.0), min(box_xyxy[3], h - 1.0)
    return x1 > x0 and y1 > y0


def run_model(model, image_dir: str | Path, coco: CocoSet, *, flip_test: bool = True, batch_size: int = 8,
              keep_map_samples: bool = False, max_images: int | None = None, progress: bool = True,
              device=None, precision: str = "fp32") -> RunOutput:
    """Run ``model`` (ProbPose or heatmap baseline) on the GT people of ``coco`` the official runner would run.

    ``people_to_run`` selects them (not crowd, ``num_keypoints`` > 0, box with area inside the image) and clips
    their boxes with the official formula, so the window is the official one whether or not the predictor clips
    boxes itself. Missing / unreadable images are skipped (and left out of the evaluation); the GTs not run stay
    in the ground truth.

    Args:
        keep_map_samples: keep the map logits of present GT keypoints (float16, in memory) for map temperature
            fitting (ProbPose only).
        max_images: only the first N images (sorted by id), for quick looks.
    """
    from tqdm import tqdm

    from probpose.inference import PosePredictor

    t0 = time.perf_counter()
    predictor = PosePredictor(model, device=device, flip_test=flip_test, batch_size=batch_size, precision=precision)
    image_dir = Path(image_dir)
    ids = sorted(coco.images)[: max_images] if max_images else sorted(coco.images)
    by_image: dict[int, list] = {}
    for p in people_to_run(coco, ids):
        by_image.setdefault(p.image_id, []).append(p)
    # people the official runner would run but for a box with no area once clipped to the image
    n_candidates = {iid: sum(1 for a in coco.anns_by_image.get(iid, []) if not a["iscrowd"] and a["num_keypoints"]
                             and a["bbox"][2] > 0 and a["bbox"][3] > 0 and max(a["keypoints"][0::3]
                                                                                + a["keypoints"][1::3]) > 0)
                    for iid in ids}
    skipped: Counter = Counter()
    messages: list[str] = []
    results: list[dict] = []
    rec: dict[str, list] = {k: [] for k in ("image_id", "ann_id", "pred_xy", "presence", "presence_logit",
                                            "rescore", "label", "mass_above", "centers", "scales")}
    samples: list[MapSamples] = []
    sample_img: list[np.ndarray] = []
    evaluated: list[int] = []
    for iid in tqdm(ids, desc=f"evaluate {predictor.kind}", disable=not progress, unit="img"):
        im = coco.images[iid]
        path = image_dir / im["file_name"]
        people = by_image.get(iid, [])
        if not path.is_file():
            skipped["missing_image"] += 1
            if len(messages) < 50:
                messages.append(f"image {iid}: {path} not found; left out of the evaluation")
            continue
        n_off = n_candidates[iid] - len(people)
        if n_off:
            skipped["box_outside_image"] += n_off
            if len(messages) < 50:
                messages.append(f"image {iid}: {n_off} box(es) with no area inside the image not run")
        if not people:
            evaluated.append(iid)  # its GT is all crowd / unlabelled / zero-area: nothing to run
            continue
        try:
            from probpose.image import load_image

            img = load_image(path)
        except ProbPoseError as e:
            skipped["unreadable_image"] += 1
            if len(messages) < 50:
                messages.append(f"image {iid}: {e}; left out of the evaluation")
            continue
        h, w = img.shape[:2]
        if (w, h) != (int(im["width"]), int(im["height"])):
            skipped["size_mismatch"] += 1
            if len(messages) < 50:
                messages.append(f"image {iid}: file is {w}x{h} but the JSON says {im['width']}x{im['height']}; "
                                "evaluated anyway")
        ok = [p for p in people if _usable_box(p.box_xyxy, (w, h))]
        if len(ok) < len(people):
            skipped["box_outside_image"] += len(people) - len(ok)
            if len(messages) < 50:
                messages.append(f"image {iid}: {len(people) - len(ok)} box(es) with no area inside the image "
                                "not run")
        evaluated.append(iid)
        if not ok:
            continue
        try:
            out = predictor.set_image(img, np.stack([p.box_xyxy for p in ok]), box_source="gt")
        except ProbPoseError as e:
            skipped["failed_image"] += 1
            messages.append(f"image {iid}: {e}")
            evaluated.pop()
            continue
        res = predictor.predict(decoder="expected_oks", presence_threshold=DEFAULT_PRESENCE_THRESHOLD)
        anns = {a["id"]: a for a in coco.anns_by_image[iid]}
        labels = presence_labels([anns[p.ann_id] for p in ok])
        for i, (p, pp) in enumerate(zip(ok, res.people, strict=True)):
            kpts = np.concatenate([pp.keypoints, pp.presence[:, None]], axis=1)
            if out.kind in ("probpose", "probpose_dh"):  # DH: presence = P(inside the wide window)
                resc, logit = pp.oks, out.presence_logits[i].astype(np.float64)
            else:
                resc, logit = pp.keypoint_scores, np.full(NUM_KEYPOINTS, np.nan)
            b32 = p.box_xyxy.astype(np.float32)  # the official bbox_xyxy2xywh works on the float32 box
            results.append({
                # unrounded: rounding presences creates exact ties at the oracle threshold
                "image_id": iid, "category_id": 1, "keypoints": [float(v) for v in kpts.ravel()],
                "score": float(pp.score), "bbox": [float(b32[0]), float(b32[1]), float(b32[2] - b32[0]),
                                                   float(b32[3] - b32[1])],
                "keypoint_scores": [float(v) for v in pp.keypoint_scores],
                "visibility": [None if not np.isfinite(v) else float(v) for v in pp.visibility],
                "gt_ann_id": int(p.ann_id),
            })
            gt_hm = geometry.image_to_heatmap(p.keypoints[:, :2], pp.center, pp.scale)
            hh, ww = pp.probmaps.shape[1:]
            on_grid = (gt_hm[:, 0] >= -0.5) & (gt_hm[:, 0] <= ww - 0.5) & (gt_hm[:, 1] >= -0.5) & \
                (gt_hm[:, 1] <= hh - 0.5)
            use = (labels[i] == 1) & on_grid
            ma = np.full(NUM_KEYPOINTS, np.nan)
            if out.kind == "probpose" and use.any():
                ma[use] = mass_above(pp.probmaps[use].astype(np.float64), gt_hm[use])
                if keep_map_samples and out.logits is not None:
                    ks = np.nonzero(use)[0]
                    lf = None if out.logits_flipped is None else out.logits_flipped[i, ks].astype(np.float16)
                    samples.append(MapSamples(out.logits[i, ks].astype(np.float16), lf, gt_hm[ks], ks))
                    sample_img.append(np.full(len(ks), iid))
            for k, v in (("image_id", iid), ("ann_id", p.ann_id), ("pred_xy", pp.keypoints),
                         ("presence", pp.presence), ("presence_logit", logit), ("rescore", resc),
                         ("label", labels[i]), ("mass_above", ma), ("centers", pp.center), ("scales", pp.scale)):
                rec[k].append(v)
    records = PersonRecords(**{k: np.array(v, dtype=np.int64 if k in ("image_id", "ann_id") else np.float64)
                               for k, v in rec.items()}) if results else PersonRecords.empty()
    ms = MapSamples.concat(samples) if keep_map_samples else None
    return RunOutput(predictor.kind, predictor.model_name, results, records, evaluated, ms,
                     np.concatenate(sample_img) if sample_img else np.zeros(0, np.int64), skipped, messages,
                     time.perf_counter() - t0, float(getattr(model, "temperature", 0.5)))


def _calibration(run: RunOutput, seed: int, progress=None) -> dict:
    """Presence and map temperature scaling fitted on a seeded half of the images and applied to the other."""
    r = run.records
    out: dict = {}
    fit, ev = split_by_image(r.image_id, 0.5, seed)
    lab = r.label
    out["presence_reliability_all"] = reliability(r.presence, lab).to_dict()
    if run.kind == "probpose" and len(r):
        t = fit_presence_temperature(r.presence_logit[fit], lab[fit])
        before = reliability(r.presence[ev], lab[ev])
        after = reliability(sigmoid(r.presence_logit[ev] / t), lab[ev])
        out["presence"] = {"temperature": t, "ece_before": before.ece, "ece_after": after.ece,
                           "reliability_before": before.to_dict(), "reliability_after": after.to_dict(),
                           "n_fit": int(np.isfinite(lab[fit]).sum()), "n_eval": int(np.isfinite(lab[ev]).sum())}
        out["map_coverage_all"] = coverage(r.mass_above).to_dict()
        ms = run.map_samples
        if ms is not None and len(ms):
            fit_ids = set(np.unique(r.image_id[fit]).tolist())
            in_fit = np.array([i in fit_ids for i in run.map_sample_image.tolist()], dtype=bool)
            tm = fit_map_temperature(ms.take(np.nonzero(in_fit)[0]), seed=seed, progress=progress)
            evs = ms.take(np.nonzero(~in_fit)[0])
            base_t = run.temperature  # "before" = the maps as the model outputs them
            cb = coverage(mass_above(maps_at_temperature(evs, base_t), evs.gt_xy))
            ca = coverage(mass_above(maps_at_temperature(evs, tm), evs.gt_xy))
            out["maps"] = {"temperature_model": base_t, "temperature_fitted": tm,
                           "temperature_at_bound": at_bound(tm, MAP_TEMPERATURE_BOUNDS),
                           "temperature_bounds": list(MAP_TEMPERATURE_BOUNDS), "coverage_before": cb.to_dict(),
                           "coverage_after": ca.to_dict(), "coverage_ece_before": cb.ece,
                           "coverage_ece_after": ca.ece, "n_fit": int(in_fit.sum()), "n_eval": int((~in_fit).sum())}
    else:
        out["presence"] = {"ece": expected_calibration_error(r.presence, lab)}
    return out


def evaluated_subset(run: RunOutput, scores: np.ndarray | None = None,
                     nms_threshold: float | None = NMS_THRESHOLD) -> tuple[list[dict], np.ndarray]:
    """The results the official metric evaluates: (re-scored) results after per-image OKS-NMS.

    Args:
        scores: (N,) instance scores to use (default: the run's own). nms_threshold: None to skip the NMS.
    Returns:
        (results in the official order, (M,) indices into ``run.results`` / ``run.records``).
    """
    res = run.results if scores is None else results_with_scores(run.results, scores)
    areas = np.prod(run.records.scales, axis=1) if len(run.records) else np.zeros(0)  # the window area
    keep = nms_keep(res, areas, nms_threshold)
    return [res[i] for i in keep], keep


def _take(r: PersonRecords, idx: np.ndarray) -> PersonRecords:
    return PersonRecords(**{k: getattr(r, k)[idx] for k in PersonRecords.__dataclass_fields__})


def evaluate_run(run: RunOutput, coco: CocoSet, *, fixed_threshold: float = DEFAULT_PRESENCE_THRESHOLD,
                 calibrate: bool = True, sweep: bool = True, seed: int = 0, progress: bool = False,
                 nms_threshold: float | None = NMS_THRESHOLD) -> dict:
    """All metrics of one run (JSON-able dict), computed as the official ``CocoMetric`` computes them.

    The run's results first go through per-image OKS-NMS (``nms_threshold``, 0.9 as the official top-down
    metric; None skips it); every AP below is on the survivors.

    Keys: 'rules' (one line: which rules the primary numbers follow), 'counts', 'nms' (threshold, detections
    before / after), 'coco' (standard AP / AR under the official rules: the primary mAP), 'coco_pycocotools'
    (``pycocotools`` on the same detections, for reference), 'exoks_oracle' / 'exoks_fixed' (Ex-mAP with
    per-visibility AP at the official oracle presence threshold and at ``fixed_threshold``), 'oracle_threshold'
    (-1 when the labels hold one class), 'presence' (error fixed / best / balanced + curve, on the evaluated
    people), 'presence_by_role' (CropCOCO-style sets that record their cut targets: the same for the target and
    for the other people in the crop), 'presence_by_place' (sets that mark keypoints outside the image: presence
    by where each keypoint lies, ``analysis.presence.presence_by_place``), 'calibration', 'sweep' (see
    ``analysis.sweep``), 'coco_exact_area' (when some areas are estimated), 'fixed_threshold'.
    """
    from tqdm import tqdm

    gt = coco.dataset
    ids = run.image_ids
    n_phases = 6 + int(calibrate) + (len(DEFAULT_THRESHOLDS) if sweep else 0)
    bar = tqdm(total=n_phases, desc=f"metrics {run.kind}", disable=not progress, unit="step")

    def phase(name: str, done: int = 1) -> None:
        """Count the finished phase and name the one that starts (so a long phase is never silent)."""
        bar.update(done)
        bar.set_postfix_str(name)

    phase("OKS-NMS + standard AP", 0)
    metrics: dict = {"model": run.model_name, "kind": run.kind, "fixed_threshold": fixed_threshold,
                     "rules": RULES_NOTE}
    metrics["counts"] = {"images_in_file": len(coco.images), "images_evaluated": len(ids),
                         "people_run": len(run.results), "gt_people": coco.num_people,
                         "seconds": round(run.seconds, 2), **{k: int(v) for k, v in coco.counts.items()},
                         **{f"skipped_{k}": int(v) for k, v in run.skipped.items()}}
    evaluated, keep = evaluated_subset(run, nms_threshold=nms_threshold)
    metrics["nms"] = {"threshold": nms_threshold, "before": len(run.results), "after": len(evaluated)}
    metrics["coco"] = evaluate_keypoints(gt, evaluated, EvalParams(), image_ids=ids).stats
    phase("pycocotools AP")
    metrics["coco_pycocotools"] = pycocotools_keypoint_ap(gt, evaluated, image_ids=ids)
    phase("oracle threshold + Ex-AP")
    r = _take(run.records, keep)  # the oracle is chosen on the evaluated people, as the official metric does
    oracle = oracle_threshold(r.presence, r.label)
    metrics["oracle_threshold"] = oracle.threshold
    metrics["oracle_accuracy"] = oracle.accuracy
    for name, thr in (("exoks_oracle", oracle.threshold), ("exoks_fixed", fixed_threshold)):
        res = evaluate_keypoints(gt, evaluated, EvalParams(extended=True, presence_threshold=thr), image_ids=ids)
        metrics[name] = {**res.stats, "presence_threshold": thr, "num_out_keypoints": res.num_out_keypoints}
        if name == "exoks_oracle":
            phase("Ex-AP at the fixed threshold")
    phase("presence")
    metrics["presence"] = presence_report(r.presence, r.label, fixed_threshold)
    roles = person_roles(gt)
    if roles:  # a CropCOCO-style set of analysis.cropcoco: the cut target apart from the people around it
        metrics["presence_by_role"] = presence_by_role(r.presence, r.label, r.ann_id, roles, fixed_threshold)
    by_place = presence_by_place(r.presence, r.label, r.ann_id, gt, fixed_threshold, roles)
    if by_place:  # the set marks keypoints outside the image (CropCOCO): which of them the presence misses
        metrics["presence_by_place"] = by_place
    if calibrate:
        phase("calibration (temperature fits)")
        metrics["calibration"] = _calibration(
            run, seed, progress=lambda i, t: bar.set_postfix_str(f"calibration: map temperature fit, try {i} T={t:.2f}"))
    if sweep:
        phase("threshold sweep")
        metrics["sweep"] = threshold_sweep(run, coco, progress=lambda t: phase(f"sweep t={t:.2f}"),
                                           nms_threshold=nms_threshold).to_dict()
    phase("exact-area AP", 0 if sweep else 1)
    # a subset with exactly known areas (the shared data marks estimated areas); AP there is exact
    exact = [a["id"] for a in gt["annotations"] if a.get("area_source", "coco") != "bbox*0.52"]
    if len(exact) < len(gt["annotations"]):
        keep_ids = set(exact)
        sub = dict(gt)
        sub["annotations"] = [a for a in gt["annotations"] if a["id"] in keep_ids]
        sub_res = [x for x in evaluated if x.get("gt_ann_id") in keep_ids]
        metrics["coco_exact_area"] = {**evaluate_keypoints(sub, sub_res, EvalParams(), image_ids=ids).stats,
                                      "pycocotools_AP": pycocotools_keypoint_ap(sub, sub_res, image_ids=ids)["AP"],
                                      "num_annotations": len(exact)}
    bar.update(bar.total - bar.n)
    bar.close()
    return metrics
