"""The official evaluator's rules, each on a small case whose expected value is worked out by hand from the
official ``_cocoeval.py`` / ``CocoMetric`` (read as a specification), plus the exococotools cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.coco_io import clip_gt_box, coco_from_dict, people_to_run
from analysis.cocoeval import pycocotools_keypoint_ap
from analysis.exoks import EvalParams, aw_xyxy, evaluate_keypoints, pad_to_contain
from analysis.presence import (
    ORACLE_THRESHOLDS,
    oracle_threshold,
    oracle_threshold_from_results,
    presence_labels,
)
from analysis.scoring import nms_keep, oks_nms

K = 17
GRID = np.linspace(0, 1, 21)


def _person(ox: float = 0.0, v: int = 2, n: int = K) -> np.ndarray:
    """(K, 3) keypoints spread over a 60 x 80 box at x offset ``ox``; the first ``n`` labelled with ``v``."""
    kp = np.zeros((K, 3))
    kp[:, 0] = ox + 10 + np.arange(K) * 2
    kp[:, 1] = 10 + np.arange(K) * 3
    kp[:n, 2] = v
    kp[n:] = 0
    return kp


def _ann(aid, iid, kp, ox=0.0, crowd=0, area=4000.0):
    return {"id": aid, "image_id": iid, "category_id": 1, "iscrowd": crowd, "area": area, "bbox": [ox, 0.0, 60.0, 80.0],
            "num_keypoints": int(((kp[:, 2] == 1) | (kp[:, 2] == 2)).sum()), "keypoints": kp.ravel().tolist()}


def _dt(iid, kp, score, presence=0.9, shift=0.0):
    d = kp.copy()
    d[:, 0] += shift
    d[:, 2] = presence
    return {"image_id": iid, "category_id": 1, "keypoints": d.ravel().tolist(), "score": score}


def _gt(anns, n_images):
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 300} for i in range(1, n_images + 1)],
            "annotations": anns}
    return coco_from_dict(data).dataset


def _ap(gt, res, **kw):
    return evaluate_keypoints(gt, res, EvalParams(**kw)).stats["AP"]


# -------------------------------------------------------------------------------------------- rule 1: standard AP


def test_all_zero_presences_drop_the_detection():
    # the only detection sits exactly on the GT but every presence is 0: the official _prepare drops it
    # (count_nonzero(presence > 0) == 0), so nothing is detected: precision 0 at every recall -> AP 0.0
    kp = _person()
    gt = _gt([_ann(1, 1, kp)], 1)
    res = [_dt(1, kp, 1.0, presence=0.0)]
    assert _ap(gt, res) == 0.0
    assert _ap(gt, res, extended=True, presence_threshold=0.5) == 0.0
    # pycocotools keeps it: a perfect match -> 1.0 (ours in pycocotools mode agrees with the library)
    assert _ap(gt, res, rules="pycocotools") == pytest.approx(1.0)
    assert pycocotools_keypoint_ap(gt, res)["AP"] == pytest.approx(1.0)
    # presences < 0 count as "all <= 0" too
    assert _ap(gt, [_dt(1, kp, 1.0, presence=-0.5)]) == 0.0


def test_detections_in_images_whose_gts_are_all_ignored_are_ignored():
    # image 1: a GT and a perfect detection (score 0.5). image 2: one GT with no labelled keypoint and a detection
    # (score 0.9) far outside its 3x box (fallback OKS ~0, so it matches nothing).
    # official: every GT of image 2 is ignored -> its detection is ignored -> AP 1.0 (both modes).
    # pycocotools: it is a false positive ranked first -> precision 1/2 at recall 1 -> AP 0.5.
    kp, empty = _person(), np.zeros((K, 3))
    gt = _gt([_ann(1, 1, kp), _ann(2, 2, empty)], 2)
    far = _dt(2, _person(ox=300.0), 0.9)
    far_kp = np.array(far["keypoints"]).reshape(K, 3)
    far_kp[:, 1] += 250.0
    far["keypoints"] = far_kp.ravel().tolist()
    res = [_dt(1, kp, 0.5), far]
    assert _ap(gt, res) == pytest.approx(1.0)
    assert _ap(gt, res, extended=True, presence_threshold=0.5) == pytest.approx(1.0)
    assert _ap(gt, res, rules="pycocotools") == pytest.approx(0.5)
    assert pycocotools_keypoint_ap(gt, res)["AP"] == pytest.approx(0.5)
    # an image without any GT: same rule (np.all of no GT is True)
    gt3 = _gt([_ann(1, 1, kp)], 2)
    res3 = [_dt(1, kp, 0.5), {**_dt(2, kp, 0.9)}]
    assert _ap(gt3, res3) == pytest.approx(1.0)
    assert _ap(gt3, res3, rules="pycocotools") == pytest.approx(0.5)


def test_standard_mode_scores_only_v1_v2():
    # GT: 12 keypoints v=2, 5 keypoints v=3 (outside the image); the detection is exact on the 12 and 50 px off on
    # the 5. official standard mode sets v=3 -> 0: OKS = 1 -> AP 1. pycocotools scores v=3 at its coordinates.
    kp = _person()
    kp[12:, 2] = 3
    det = kp.copy()
    det[12:, 0] += 50.0
    gt = _gt([_ann(1, 1, kp)], 1)
    res = [_dt(1, det, 1.0)]
    assert _ap(gt, res) == pytest.approx(1.0)
    ours_py = _ap(gt, res, rules="pycocotools")
    assert ours_py < 0.9 and ours_py == pytest.approx(pycocotools_keypoint_ap(gt, res)["AP"], abs=1e-12)


def test_a_crowd_gt_with_keypoints_is_not_ignored():
    # official _prepare overwrites gt['ignore'] with the visibility rule only: a crowd GT that has labelled
    # keypoints counts (the crowd flag only allows repeated matches). One matched GT + one unmatched crowd GT:
    # recall 1/2 with precision 1 -> AP = 51/101 (recall thresholds 0..0.50). pycocotools ignores it -> 1.0.
    kp = _person()
    gt = _gt([_ann(1, 1, kp), _ann(2, 1, _person(ox=200.0), ox=200.0, crowd=1)], 1)
    res = [_dt(1, kp, 1.0)]
    assert _ap(gt, res) == pytest.approx(51 / 101)
    assert _ap(gt, res, rules="pycocotools") == pytest.approx(1.0)


def test_more_than_20_detections_per_image():
    # 24 far false positives score above the true one: at rank 25 it is cut by maxDets 20 -> AP 0; at rank 20
    # it is kept: precision 1/20 at recall 1 for every recall threshold -> AP 0.05 (both modes, both rule sets)
    kp = _person()
    gt = _gt([_ann(1, 1, kp)], 1)
    fps = [_dt(1, kp, 0.99 - i * 0.01, shift=150.0) for i in range(24)]
    assert _ap(gt, fps + [_dt(1, kp, 0.1)]) == 0.0
    res = fps[:19] + [_dt(1, kp, 0.5)]
    for kw in ({}, {"rules": "pycocotools"}, {"extended": True}):
        assert _ap(gt, res, **kw) == pytest.approx(0.05), kw
    assert pycocotools_keypoint_ap(gt, res)["AP"] == pytest.approx(0.05)


def test_duplicates_and_false_positives():
    # two identical perfect detections of one GT: the first is a TP, the second a FP after it (GT taken):
    # interpolated precision at recall 1 is 1 -> AP 1. A FP ranked first halves it -> 0.5.
    kp = _person()
    gt = _gt([_ann(1, 1, kp)], 1)
    assert _ap(gt, [_dt(1, kp, 0.9), _dt(1, kp, 0.8)]) == pytest.approx(1.0)
    assert _ap(gt, [_dt(1, kp, 0.9, shift=150.0), _dt(1, kp, 0.8)]) == pytest.approx(0.5)


def test_rules_are_checked():
    with pytest.raises(ValueError, match="pycocotools"):
        evaluate_keypoints(_gt([], 1), [], EvalParams(extended=True, rules="pycocotools"))
    with pytest.raises(ValueError, match="rules"):
        evaluate_keypoints(_gt([], 1), [], EvalParams(rules="xtcocotools"))


# ------------------------------------------------------------------------------- Ex-OKS presence threshold rules


def test_exoks_presence_outside_0_1_and_nan():
    # presences are clipped to [0, 1] before ">= threshold": 1.7 is "in", -0.4 is "out"; NaN is neither (the
    # official int cast), so its keypoint is scored by plain distance
    kp = _person()
    gt = _gt([_ann(1, 1, kp)], 1)
    hi = _dt(1, kp, 1.0, presence=1.7)
    assert _ap(gt, [hi], extended=True, presence_threshold=1.0) == pytest.approx(1.0)
    lo = _dt(1, kp, 1.0, presence=-0.4)
    lo["keypoints"][2] = 0.9  # one positive presence, so the detection is not dropped
    # 16 keypoints called "out" while inside the AW: their similarity is the GT's depth in the AW, small -> no match
    assert _ap(gt, [lo], extended=True, presence_threshold=0.5) == 0.0
    nan = _dt(1, kp, 1.0, presence=float("nan"))
    nan["keypoints"][2] = 0.9
    assert _ap(gt, [nan], extended=True, presence_threshold=0.5) == pytest.approx(1.0)


def test_exoks_threshold_is_inclusive_and_minus_one_means_all_in():
    kp = _person()
    gt = _gt([_ann(1, 1, kp)], 1)
    t = float(GRID[3])  # 0.15000000000000002
    at = _dt(1, kp, 1.0, presence=t)
    assert _ap(gt, [at], extended=True, presence_threshold=t) == pytest.approx(1.0)  # presence >= t: in
    below = _dt(1, kp, 1.0, presence=0.15)  # 0.15 < 0.15000000000000002: out
    below["keypoints"][2] = 0.9
    assert _ap(gt, [below], extended=True, presence_threshold=t) == 0.0
    assert _ap(gt, [below], extended=True, presence_threshold=-1.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------- oracle threshold rules


def test_oracle_uses_strict_greater_on_the_unrounded_grid():
    # absent keypoint at presence 0.25 (exact in float32): official "0.25 > 0.25" is False -> correct at t=0.25,
    # the first threshold where all three are right (at 0.2 the absent one is still "in")
    o = oracle_threshold(np.array([0.9, 0.8, 0.25]), np.array([1, 1, 0]))
    assert o.threshold == GRID[5] and o.accuracy == 1.0
    # absent at 0.3: float32(0.3) = 0.30000001 > 0.30000000000000004 -> still "in" at t=0.3, right from 0.35 on;
    # the returned value is the unrounded grid value 0.35000000000000003
    o = oracle_threshold(np.array([0.9, 0.8, 0.3]), np.array([1, 1, 0]))
    assert o.threshold == GRID[7] and o.threshold != 0.35
    # ties in accuracy go to the first threshold; NaN labels are ignored
    o = oracle_threshold(np.array([0.9, 0.04, np.nan]), np.array([1, 0, np.nan]))
    assert o.threshold == GRID[1]
    # ... and float32 decides: float32(0.05) = 0.0500000007 > 0.05, so 0.05 is still "in" at t = 0.05
    assert oracle_threshold(np.array([0.9, 0.05]), np.array([1, 0])).threshold == GRID[2]
    # one class only -> -1 (the official metric leaves prob_thr at -1)
    assert oracle_threshold(np.array([0.9, 0.1]), np.array([1, 1])).threshold == -1.0
    assert oracle_threshold(np.zeros(0), np.zeros(0)).threshold == -1.0
    # presences above 1 are not clipped here: 1.2 > 1.0 is "in" even at the last threshold
    o = oracle_threshold(np.array([1.2, 0.0]), np.array([1, 0]))
    assert o.threshold == 0.0 and np.array_equal(ORACLE_THRESHOLDS, GRID)


def test_oracle_labels_from_geometry_and_results():
    # labels recompute out-ness from the box (a stored pad_to_contain is not used): (40, 20) lies outside the AW of
    # the 30 x 40 box even though the file says pad_to_contain 1.0 and v=2
    kp = np.zeros((K, 3))
    kp[0] = [15, 20, 2]
    kp[1] = [40, 20, 2]
    kp[2] = [10, 10, 3]  # v=3 inside the AW -> present
    ann = {"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 900.0, "bbox": [0, 0, 30, 40],
           "num_keypoints": 3, "keypoints": kp.ravel().tolist(), "pad_to_contain": [1.0] * K}
    lab = presence_labels([ann])
    assert lab[0, :3].tolist() == [1.0, 0.0, 1.0] and np.isnan(lab[0, 3:]).all()
    gt = _gt([ann], 1)
    pres = np.zeros((K, 3))
    pres[:, 2] = 0.5
    pres[1, 2] = 0.12  # the absent keypoint: right from t = 0.15 on
    res = [{"image_id": 1, "category_id": 1, "keypoints": pres.ravel().tolist(), "score": 1.0, "gt_ann_id": 7}]
    assert oracle_threshold_from_results(gt, res) == GRID[3]
    # a result whose GT person is unknown makes the official classification fail: -1
    assert oracle_threshold_from_results(gt, [{**res[0], "gt_ann_id": 99}]) == -1.0


# ------------------------------------------------------------------------------------------- geometry, NMS, runner


def test_window_widths_are_float32_as_the_official_code():
    b = [10.1, 20.3, 30.7, 47.13]  # narrow: width = 47.13 * 0.75, then x1.25, each rounded to float32
    w32 = float(np.float32(np.float32(47.13 * 0.75) * np.float32(1.25)))
    h32 = float(np.float32(np.float32(47.13) * np.float32(1.25)))
    cx, cy = 10.1 + ((10.1 + 30.7) - 10.1) / 2, 20.3 + ((20.3 + 47.13) - 20.3) / 2
    np.testing.assert_array_equal(aw_xyxy(b), [cx - w32 / 2, cy - h32 / 2, cx + w32 / 2, cy + h32 / 2])
    assert aw_xyxy(b)[0] != cx - 47.13 * 0.75 * 1.25 / 2  # the float64 window differs in the last bits
    # pad_to_contain: the keypoint on the AW edge (exactly padding 1.25 by geometry) is not "out"
    kp = np.array([[15.0, 20.0, 2], [-3.75, 20.0, 2]])
    assert pad_to_contain([0, 0, 30, 40], kp)[1] == pytest.approx(1.25) and pad_to_contain([0, 0, 30, 40], kp)[1] <= 1.25
    # a zero-width box: the official 0/0 is NaN (never out); a keypoint beside it is infinitely far (out)
    p = pad_to_contain([5, 5, 0, 0], np.array([[5.0, 5.0, 2], [15.0, 5.0, 2], [0, 0, 0]]))
    assert p[0] == 1.0 and p[1] == np.inf and p[2] == -1.0


def test_oks_nms_removes_near_duplicates_in_score_order():
    kp = _person()[:, :2]
    near = kp + 0.5  # OKS with kp ~ 1 > 0.9: suppressed
    far = kp + 40.0
    kpts = np.stack([near, kp, far])
    keep = oks_nms(kpts, np.array([0.5, 0.9, 0.7]), np.full(3, 4000.0))
    assert keep.tolist() == [1, 2]
    # results: per image sorted by person id, de-duplicated by id, kept in score order
    res = [{"image_id": 1, "keypoints": np.c_[p, np.ones(K)].ravel().tolist(), "score": s, "gt_ann_id": a}
           for p, s, a in ((near, 0.5, 3), (kp, 0.9, 1), (far, 0.7, 2), (far, 0.95, 2))]
    assert nms_keep(res, np.full(4, 4000.0)).tolist() == [1, 2]  # id 2 appears twice: the first is kept
    assert nms_keep(res, np.full(4, 4000.0), threshold=None).tolist() == [1, 2, 0]


def test_runner_selection_and_gt_box_clipping():
    # official _is_valid_instance: no crowd, num_keypoints != 0, clipped box with area, some coordinate > 0
    kp = _person()
    anns = [_ann(1, 1, kp), _ann(2, 1, kp, crowd=1), {**_ann(3, 1, kp), "num_keypoints": 0},
            {**_ann(4, 1, kp), "bbox": [420.0, 10.0, 50.0, 50.0]},  # entirely right of the 400-px image
            {**_ann(5, 1, kp), "bbox": [-20.0, 250.5, 100.0, 100.0]}]
    cs = coco_from_dict({"images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 300}],
                         "annotations": anns})
    people = people_to_run(cs)
    assert [p.ann_id for p in people] == [1, 5]
    # x1 = clip(-20, 0, 399) = 0, y1 = 250.5, x2 = clip(80, 0, 399) = 80, y2 = clip(350.5, 0, 299) = 299
    np.testing.assert_array_equal(people[1].box_xyxy, [0.0, 250.5, 80.0, 299.0])
    np.testing.assert_array_equal(clip_gt_box([0.1, 0.2, 10.0, 10.0], 400, 300),
                                  np.float32([0.1, 0.2, 10.1, 10.2]).astype(np.float64))


# ---------------------------------------------------------------------- cross-check against the official algorithm


def _synthetic_set(rng, n_images=12, kind="inout"):
    """A COCO dict + results covering one of the hard cases (see ``test_matches_the_official_evaluator``)."""
    images, anns, res = [], [], []
    aid = 1
    for iid in range(1, n_images + 1):
        images.append({"id": iid, "file_name": f"{iid}.jpg", "width": 400, "height": 300})
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(20, 120), rng.uniform(30, 160)
            x, y = rng.uniform(-20, 300), rng.uniform(-20, 200)
            kp = np.zeros((K, 3))
            kp[:, 0] = x + rng.uniform(-0.4, 1.4, K) * w  # some keypoints well outside the box / window
            kp[:, 1] = y + rng.uniform(-0.4, 1.4, K) * h
            kp[:, 2] = rng.choice([0, 1, 2, 2, 3], K)
            kp[kp[:, 2] == 0, :2] = 0
            crowd = int(kind == "dup" and rng.uniform() < 0.15)
            if kind == "dup" and rng.uniform() < 0.15:
                kp[:] = 0  # a person without labelled keypoints
            anns.append({"id": aid, "image_id": iid, "category_id": 1, "iscrowd": crowd, "bbox": [x, y, w, h],
                         "area": w * h * rng.uniform(0.3, 0.9), "keypoints": kp.ravel().tolist(),
                         "num_keypoints": int((kp[:, 2] > 0).sum())})
            n_det = {"many": 12, "dup": 2}.get(kind, 1)
            for _ in range(n_det):
                d = kp.copy()
                d[:, 0] = np.where(kp[:, 2] > 0, kp[:, 0], x + w / 2) + rng.normal(0, 0.05 * w, K)
                d[:, 1] = np.where(kp[:, 2] > 0, kp[:, 1], y + h / 2) + rng.normal(0, 0.05 * h, K)
                if kind == "ties":
                    d[:, 2] = rng.choice(np.round(GRID, 2), K)  # presences exactly on the threshold grid
                elif kind == "range":
                    d[:, 2] = rng.uniform(-0.6, 1.6, K)
                    if rng.uniform() < 0.2:
                        d[:, 2] = -rng.uniform(0, 1, K)  # all <= 0: dropped
                else:
                    d[:, 2] = rng.uniform(0, 1, K)
                    if rng.uniform() < 0.1:
                        d[:, 2] = 0.0
                r = {"image_id": iid, "category_id": 1, "keypoints": d.ravel().tolist(),
                     "score": float(rng.choice([0.5, 0.7, rng.uniform()]))}  # repeated scores: tie order
                if kind != "many":  # "many" has no bbox: detection areas from the keypoint extent
                    r["bbox"] = [x, y, w, h]
                res.append(r)
            if kind == "dup":  # an exact duplicate and a shifted false positive
                res.append(dict(res[-1]))
                fp = np.array(res[-1]["keypoints"]).reshape(K, 3)
                fp[:, 0] += 60
                res.append({**res[-1], "keypoints": fp.ravel().tolist(), "score": float(rng.uniform())})
            aid += 1
    if kind == "dup":  # an image without any GT, with detections
        images.append({"id": n_images + 1, "file_name": "x.jpg", "width": 400, "height": 300})
        res.append({**res[0], "image_id": n_images + 1})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}, res


def _sets(coco_val, tmp_path):
    from analysis.coco_io import load_coco, noisy_results
    from analysis.cropcoco import generate_cropcoco

    img, ann = coco_val
    cs = load_coco(ann)
    cs = cs.subset(sorted(cs.images)[:40])
    crop = load_coco(generate_cropcoco(img, cs, tmp_path / "cc", progress=False).ann_file)
    rng = np.random.default_rng(0)
    out = {"cropcoco": (crop.dataset, noisy_results(crop, seed=1)), "coco": (cs.dataset, noisy_results(cs, seed=2))}
    for kind in ("inout", "ties", "range", "many", "dup"):
        data, res = _synthetic_set(rng, kind=kind)
        out[kind] = (coco_from_dict(data).dataset, res)
    return out


@pytest.mark.slow
def test_matches_the_official_evaluator(coco_val, tmp_path, exococotools_cocoeval):
    """Seven sets (our CropCOCO, COCO val, in/out cases, presences on the threshold grid, presences outside [0, 1],
    > 20 detections per image, duplicates / false positives / unlabelled and crowd people / an image without GT):
    every stat of standard AP and of Ex-AP at fixed thresholds equals the official code's (exococotools 1.0.0, the
    pip release of ``_cocoeval.py``, given ``pad_to_contain`` as ``CocoMetric`` adds it) to 1e-9."""
    import contextlib
    import copy
    import io

    from analysis.coco_io import to_pycocotools

    COCOeval = exococotools_cocoeval
    names = {"AP .5": "AP50", "AP .75": "AP75", "AP (M)": "APm", "AP (L)": "APl", "AR .5": "AR50",
             "AR .75": "AR75", "AR (M)": "ARm", "AR (L)": "ARl", "OKS": "loc_similarity"}
    for set_name, (gt, res) in _sets(coco_val, tmp_path).items():
        gt_ptc = copy.deepcopy(gt)
        for a in gt_ptc["annotations"]:  # CocoMetric._compute_min_padding_in_coco
            a.setdefault("pad_to_contain", pad_to_contain(a["bbox"], np.reshape(a["keypoints"], (K, 3))).tolist())
        for extended, thr in ((False, 0.5), (True, 0.5), (True, 0.3), (True, float(GRID[3])), (True, -1.0)):
            coco_gt = to_pycocotools(copy.deepcopy(gt_ptc))
            with contextlib.redirect_stdout(io.StringIO()):
                dt = coco_gt.loadRes(copy.deepcopy(res))
                ev = COCOeval(coco_gt, dt, "keypoints", None, use_area=True, extended_oks=extended,
                              confidence_thr=thr, padding=1.25)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            ref = dict(zip(ev.stats_names, ev.stats, strict=True))
            ours = evaluate_keypoints(gt, res, EvalParams(extended=extended, presence_threshold=thr)).stats
            for k, v in ref.items():
                assert ours[names.get(k, k)] == pytest.approx(v, abs=1e-9), (set_name, extended, thr, k)


def test_report_rules_line_says_by_how_much_and_which_to_trust():
    from analysis.report import rules_line

    m = {"rules": "official rules", "nms": {"before": 10, "after": 9}, "coco": {"AP": 0.609},
         "coco_pycocotools": {"AP": 0.451}}
    line = rules_line(m)
    assert "official rules" in line and "kept 9 of 10" in line
    assert "45.1 vs 60.9 (-15.8 points)" in line and "trust the official number" in line
    assert "same mAP" in rules_line({**m, "coco_pycocotools": {"AP": 0.609}})
