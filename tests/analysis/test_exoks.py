"""Ex-OKS / OKS evaluator: hand-computed small cases, the pycocotools cross-check, exococotools parity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.coco_io import coco_from_dict, load_coco, noisy_results
from analysis.cocoeval import pycocotools_keypoint_ap
from analysis.exoks import (
    EvalParams,
    aw_xyxy,
    evaluate_keypoints,
    pad_to_contain,
    pair_keypoint_terms,
    relabel_visibility,
)
from probpose.constants import COCO_SIGMAS

K = 17
BOX = np.array([0.0, 0.0, 30.0, 40.0])  # xywh, already 3:4
# AW: 3:4 box scaled x1.25 about (15, 20) -> 37.5 x 50 -> x in [-3.75, 33.75], y in [-5, 45]


def _sim(pred_xy, presence, gt_xy, gt_v, extended, thr=0.5, area=100.0, k=5):
    """Similarity of keypoint k alone (all other keypoints unlabelled)."""
    dt = np.zeros((1, K, 3))
    dt[0, k] = [*pred_xy, presence]
    gt = np.zeros((1, K, 2))
    gt[0, k] = gt_xy
    ann = {"bbox": BOX.tolist(), "keypoints": [0] * (3 * K)}
    ann["keypoints"][3 * k: 3 * k + 3] = [*gt_xy, gt_v]
    vis = relabel_visibility(ann, extended)
    terms = pair_keypoint_terms(dt, gt, vis[None], BOX[None], np.array([area]), extended, thr)
    return float(terms[0, 0, k]), int(vis[k])


def test_aw_and_pad_to_contain_by_hand():
    np.testing.assert_allclose(aw_xyxy(BOX), [-3.75, -5.0, 33.75, 45.0])
    # wide box: h = 40 / 0.75 = 53.33, x1.25 = 66.67 about y = 5
    np.testing.assert_allclose(aw_xyxy([0, 0, 40, 10]), [-5.0, -28.333333, 45.0, 38.333333], atol=1e-5)
    kp = np.array([[15, 20, 2], [40, 20, 2], [15, -10, 1], [0, 0, 0]], float)
    # x: 10 px right of the 30-px box -> 1 + 2*10/30; y: 10 px above the 40-px box -> 1 + 2*10/40
    np.testing.assert_allclose(pad_to_contain(BOX, kp), [1.0, 1 + 20 / 30, 1.5, -1.0])


def test_oks_two_keypoints_by_hand():
    # nose (sigma .026) off by 1 px, left shoulder (sigma .079) off by 2 px, area 100:
    # exp(-1 / (2*100*0.052^2)) = exp(-1.849112) = 0.157377; exp(-4 / (2*100*0.158^2)) = exp(-0.801154) = 0.448811
    gt = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": BOX.tolist(),
          "num_keypoints": 2, "keypoints": [0] * (3 * K)}
    gt["keypoints"][0:3] = [10, 10, 2]
    gt["keypoints"][15:18] = [20, 20, 2]
    dt = np.zeros((K, 3))
    dt[:, :2] = 15
    dt[0] = [11, 10, 1]
    dt[5] = [20, 22, 1]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}], "annotations": [gt]}
    res = [{"image_id": 1, "category_id": 1, "keypoints": dt.ravel().tolist(), "score": 1.0}]
    r = evaluate_keypoints(coco_from_dict(data).dataset, res)
    expected = (0.157377 + 0.448811) / 2  # 0.303094
    _, _, sim = r.similarities[1]
    assert sim[0, 0, 0] == pytest.approx(expected, abs=2e-6)
    assert r.stats["OKS"] == -1.0  # 0.30 < 0.5: no match at OKS 0.5
    assert r.stats["AP"] == 0.0


@pytest.mark.parametrize(
    "case, pred, presence, gt, v, d2, v_eval",
    [
        ("in/in: euclidean", (13, 14), 0.9, (10, 10), 2, 9 + 16, 2),
        # GT (40, 20) is outside the AW -> v=3; pred in: official e(pred)^2 = min(33.75, 3.75)^2 + min(25, 25)^2
        ("out/in: e(pred), nearest corner", (30, 20), 0.9, (40, 20), 2, 3.75 ** 2 + 25.0 ** 2, 3),
        # GT in, pred says out: e(gt)^2 = min(13.75, 23.75)^2 + min(15, 35)^2
        ("in/out: e(gt)", (13, 14), 0.1, (10, 10), 2, 13.75 ** 2 + 15.0 ** 2, 2),
        ("out/out: perfect", (30, 20), 0.1, (40, 20), 2, 0.0, 3),
        # an annotated v=3 that lies inside the AW is evaluated as v=1 (geometric relabel)
        ("v=3 inside AW -> v=1", (13, 14), 0.9, (10, 10), 3, 25.0, 1),
        # presence exactly at the threshold counts as "in"
        ("threshold is inclusive", (13, 14), 0.5, (10, 10), 2, 25.0, 2),
    ],
)
def test_exoks_distance_rule_rows(case, pred, presence, gt, v, d2, v_eval):
    area = 1000.0
    sim, vis = _sim(pred, presence, gt, v, extended=True, area=area)
    assert vis == v_eval, case
    expected = math.exp(-d2 / (2 * area * (2 * COCO_SIGMAS[5]) ** 2))
    assert sim == pytest.approx(expected, rel=1e-9), case


def test_exoks_literal_values():
    # out/in with area 1000: d^2 = 639.0625; 2*1000*0.158^2 = 49.928; exp(-12.799682) = 2.7617e-6
    sim, _ = _sim((30, 20), 0.9, (40, 20), 2, extended=True, area=1000.0)
    assert sim == pytest.approx(2.7617e-6, rel=1e-3)
    # in/out: d^2 = 414.0625 -> exp(-8.293192) = 2.5021e-4
    sim, _ = _sim((13, 14), 0.1, (10, 10), 2, extended=True, area=1000.0)
    assert sim == pytest.approx(2.5021e-4, rel=1e-3)


def test_standard_mode_ignores_presence_and_v3():
    sim_lo, _ = _sim((13, 14), 0.0, (10, 10), 2, extended=False, area=1000.0)
    sim_hi, _ = _sim((13, 14), 1.0, (10, 10), 2, extended=False, area=1000.0)
    assert sim_lo == sim_hi == pytest.approx(math.exp(-25 / (2 * 1000 * 0.158 ** 2)))
    ann = {"bbox": BOX.tolist(), "keypoints": [40, 20, 3] + [0] * (3 * K - 3)}
    assert relabel_visibility(ann, extended=False)[0] == 0


def _two_person_set(scores):
    """One image, two GTs; dt 1 sits exactly on GT 1, dt 2 is far from GT 2."""
    anns, res = [], []
    for i, (ox, score, off) in enumerate(zip((0.0, 200.0), scores, (0.0, 80.0), strict=True)):
        kp = np.zeros((K, 3))
        kp[:, 0] = ox + 10 + np.arange(K)
        kp[:, 1] = 20 + np.arange(K) * 3
        kp[:, 2] = 2
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 5000.0,
                     "bbox": [ox, 0.0, 60.0, 80.0], "num_keypoints": K, "keypoints": kp.ravel().tolist()})
        d = kp.copy()
        d[:, 0] += off
        d[:, 2] = 0.9
        res.append({"image_id": 1, "category_id": 1, "keypoints": d.ravel().tolist(), "score": score})
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 200}], "annotations": anns}
    return coco_from_dict(data).dataset, res


def test_ap_by_hand():
    # good detection first: precision 1 up to recall 0.5 -> 51 of 101 recall points -> AP = 51/101
    gt, res = _two_person_set((0.9, 0.8))
    for extended in (False, True):
        r = evaluate_keypoints(gt, res, EvalParams(extended=extended))
        assert r.stats["AP"] == pytest.approx(51 / 101), extended
        assert r.stats["AR"] == pytest.approx(0.5)
    # bad detection first: precision 1/2 at recall 0.5 -> AP = 0.5 * 51/101
    gt, res = _two_person_set((0.7, 0.8))
    assert evaluate_keypoints(gt, res).stats["AP"] == pytest.approx(0.5 * 51 / 101)
    assert pycocotools_keypoint_ap(gt, res)["AP"] == pytest.approx(0.5 * 51 / 101)


def test_pycocotools_rules_equal_pycocotools_on_real_data(coco_val):
    _, ann = coco_val
    cs = load_coco(ann)
    res = noisy_results(cs)
    ref = pycocotools_keypoint_ap(cs.dataset, res)
    py = EvalParams(rules="pycocotools")
    ours = evaluate_keypoints(cs.dataset, res, py).stats
    assert 0.05 < ref["AP"] < 0.95  # a non-trivial operating point
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k
    sub = sorted(cs.images)[:40]
    ref = pycocotools_keypoint_ap(cs.dataset, res, image_ids=sub)
    ours = evaluate_keypoints(cs.dataset, res, py, image_ids=sub).stats
    assert ours["AP"] == pytest.approx(ref["AP"], abs=1e-12)


@pytest.mark.slow
def test_parity_with_exococotools(coco_val, tmp_path, exococotools_cocoeval):
    import contextlib
    import copy
    import io

    from analysis.coco_io import to_pycocotools
    from analysis.cropcoco import generate_cropcoco

    COCOeval = exococotools_cocoeval
    img, ann = coco_val
    cs = load_coco(ann).subset(sorted(load_coco(ann).images)[:60])
    s = generate_cropcoco(img, cs, tmp_path / "cc", progress=False)
    crop = load_coco(s.ann_file)
    res = noisy_results(crop, seed=1)
    names = {"AP .5": "AP50", "AP .75": "AP75", "AP (M)": "APm", "AP (L)": "APl", "AR .5": "AR50",
             "AR .75": "AR75", "AR (M)": "ARm", "AR (L)": "ARl"}
    for extended, thr in ((False, 0.5), (True, 0.5), (True, 0.3)):
        gt = to_pycocotools(copy.deepcopy(crop.dataset))
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(copy.deepcopy(res))
            ev = COCOeval(gt, dt, "keypoints", None, use_area=True, extended_oks=extended, confidence_thr=thr,
                          padding=1.25)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ref = dict(zip(ev.stats_names, ev.stats, strict=True))
        ours = evaluate_keypoints(crop.dataset, res, EvalParams(extended=extended, presence_threshold=thr,
                                                                relabel="annotation")).stats
        if extended:
            assert "AP (v=3)" in ref and ref["AP (v=3)"] > 0
        for k, v in ref.items():
            k = "loc_similarity" if k == "OKS" else k  # the official OKS stat (ours: "OKS" is matches at 0.5)
            assert ours[names.get(k, k)] == pytest.approx(v, abs=1e-9), (extended, thr, k)
