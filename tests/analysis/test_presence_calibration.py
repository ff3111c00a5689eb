"""Presence error, reliability / ECE, temperature scaling, sparsemax, coverage: hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.calibration import (
    MapSamples,
    coverage,
    expected_oks_nll,
    fit_map_temperature,
    fit_presence_temperature,
    mass_above,
    reliability,
    sigmoid,
    sparsemax,
    split_by_image,
)
from analysis.presence import (
    best_threshold,
    person_roles,
    presence_by_place,
    presence_by_role,
    presence_error,
    presence_labels,
    presence_ranking,
    presence_report,
)


def test_presence_error_by_hand():
    scores = np.array([0.9, 0.6, 0.2, 0.4, 0.1, 0.7])
    labels = np.array([1, 1, 1, 0, 0, np.nan])
    s = presence_error(scores, labels, 0.5)
    # predicted in: 0.9, 0.6 | out: 0.2 (label 1 -> missed), 0.4, 0.1 (label 0, right); NaN ignored
    assert (s.false_out, s.false_in, s.n_present, s.n_absent) == (1, 0, 3, 2)
    assert s.error == pytest.approx(1 / 5)
    assert s.balanced_error == pytest.approx((1 / 3 + 0 / 2) / 2)
    assert presence_error(scores, labels, 0.4).false_in == 1  # >= is inclusive
    b = best_threshold(scores, labels)
    # the positives' 0.2 lies below the negatives' 0.4: every threshold errs at least once. Under the official
    # oracle rule (float32(score) > t, unrounded grid) the negative 0.1 is still "in" at t = 0.1 (float32(0.1) >
    # 0.1), so the first threshold with one error is 0.15000000000000002 (only 0.4 is wrong)
    assert b.threshold == np.linspace(0, 1, 21)[3] and b.error == pytest.approx(1 / 5)


def test_presence_ranking_by_hand_and_against_brute_force():
    # present 0.9, 0.8, 0.4; absent 0.5, 0.1, NaN label ignored. Pairs (pos > neg): 0.9 beats both, 0.8 both,
    # 0.4 beats 0.1 only -> AUC 5/6. Threshold 0.8 misses 1/3 of present and calls no absent one in: 1/6.
    s = np.array([0.9, 0.8, 0.4, 0.5, 0.1, 0.7])
    y = np.array([1, 1, 1, 0, 0, np.nan])
    r = presence_ranking(s, y)
    assert r["auc"] == pytest.approx(5 / 6)
    b = r["best_balanced_any"]
    assert b["threshold"] == pytest.approx(0.8) and b["balanced_error"] == pytest.approx(1 / 6)
    assert (b["false_out"], b["false_in"]) == (1, 0)
    # Ties count half: one present and one absent at the same score.
    assert presence_ranking(np.array([0.5, 0.5]), np.array([1.0, 0.0]))["auc"] == 0.5
    # One class only: undefined, not an error.
    assert math.isnan(presence_ranking(np.array([0.3, 0.6]), np.array([1.0, 1.0]))["auc"])
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.85).astype(float)
    s = np.clip(rng.normal(0.6 + 0.3 * y, 0.15), 0, 1).astype(np.float32)
    r = presence_ranking(s, y)
    pairs = (s[y == 1][:, None] > s[y == 0][None]).mean() + 0.5 * (s[y == 1][:, None] == s[y == 0][None]).mean()
    assert r["auc"] == pytest.approx(pairs)
    brute = min(presence_error(s, y, float(t)).balanced_error for t in np.unique(s))
    assert r["best_balanced_any"]["balanced_error"] == pytest.approx(brute)
    # Never worse than the 0.05 grid's best, which it refines (here the grid's optimum is not on a grid point).
    report = presence_report(s, y, 0.3)
    assert report["best_balanced_any"]["balanced_error"] <= report["best_balanced"]["balanced_error"]
    assert report["auc"] == r["auc"]


def test_presence_by_role_splits_the_cut_target_from_the_people_around_it():
    gt = {"images": [{"id": 1, "target_ann_id": 10}, {"id": 2, "target_ann_id": 20}],
          "annotations": [{"id": 1000, "image_id": 1, "source_ann_id": 10},
                          {"id": 1100, "image_id": 1, "source_ann_id": 11},
                          {"id": 2000, "image_id": 2, "source_ann_id": 20}]}
    roles = person_roles(gt)
    assert roles == {1000: "target", 1100: "other", 2000: "target"}
    assert person_roles({"images": [{"id": 1}], "annotations": [{"id": 5, "image_id": 1}]}) == {}  # plain COCO
    scores = np.array([[0.9, 0.6], [0.9, 0.9], [0.2, 0.7]])
    labels = np.array([[1, 0], [0, 0], [0, 1]])
    by = presence_by_role(scores, labels, [1000, 1100, 2000], roles, 0.5)
    assert by["target"]["people"] == 2 and by["other"]["people"] == 1
    # targets at 0.5: 0.9 in (right), 0.6 out (wrong), 0.2 out (right), 0.7 in (right); the other person: both wrong
    assert by["target"]["fixed"]["false_in"] == 1 and by["target"]["fixed"]["n_absent"] == 2
    assert by["other"]["fixed"]["false_in"] == 2 and by["other"]["fixed"]["n_present"] == 0
    assert by["target"]["best_balanced"]["balanced_error"] == pytest.approx(0.0)  # 0.65 separates them


def test_presence_by_place_separates_what_the_image_shows_from_how_far_the_rest_lies():
    def ann(i, image_id, vs):
        kp = [0.0, 0.0, 0] * 17
        for k, v in enumerate(vs):
            kp[3 * k + 2] = v
        return {"id": i, "image_id": image_id, "keypoints": kp}

    gt = {"images": [{"id": 1, "target_ann_id": 10}],
          "annotations": [{**ann(1000, 1, [2, 3, 3]), "source_ann_id": 10},
                          {**ann(1100, 1, [1, 3, 0]), "source_ann_id": 11}]}
    nan = np.nan
    # keypoint 1 of the target is outside the image but inside its window; the rest outside are outside the window
    labels = np.full((2, 17), nan)
    labels[0, :3] = [1, 1, 0]
    labels[1, :2] = [1, 0]
    scores = np.full((2, 17), 0.5)
    scores[0, :3] = [0.9, 0.8, 0.2]
    scores[1, :2] = [0.7, 0.95]
    by = presence_by_place(scores, labels, [1000, 1100], gt, 0.5, person_roles(gt))
    a = by["all"]
    assert a["people"] == 2 and set(a["places"]) == {"in_image", "out_image_in_window", "out_window"}
    assert a["places"]["in_image"] == {"n": 2, "mean_presence": pytest.approx(0.8), "called_present": 1.0}
    assert a["places"]["out_window"]["n"] == 2 and a["places"]["out_window"]["called_present"] == 0.5
    # calling exactly the in-image keypoints present misses the one in the window past the edge: 1 of 3 present
    assert a["image_oracle"]["false_out"] == 1 and a["image_oracle"]["false_in"] == 0
    assert a["image_oracle"]["balanced_error"] == pytest.approx(1 / 6)
    # in-image scores 0.9, 0.7 against out-of-image 0.8, 0.2, 0.95: 3 of 6 pairs ranked right
    assert a["image_auc"] == pytest.approx(0.5)
    assert by["target"]["people"] == 1 and by["other"]["places"]["out_window"]["mean_presence"] == 0.95
    # a set without v=3 (plain COCO) has nothing to split
    coco = {"annotations": [ann(1, 1, [2, 2])]}
    assert presence_by_place(scores[:1], labels[:1], [1], coco, 0.5) == {}


def test_presence_labels_use_the_activation_window():
    kp = [0, 0, 0] * 17
    kp[0:3] = [15, 20, 2]  # inside
    kp[3:6] = [40, 20, 1]  # outside the AW [-3.75, 33.75]
    kp[6:9] = [10, 10, 3]  # annotated out but inside the AW -> present
    lab = presence_labels([{"bbox": [0, 0, 30, 40], "keypoints": kp}])
    assert lab[0, :3].tolist() == [1.0, 0.0, 1.0] and np.isnan(lab[0, 3])


def test_reliability_and_ece_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0, 1])
    r = reliability(p, y)
    assert r.count[0] == 2 and r.count[9] == 3 and r.count[5] == 1
    assert r.frequency[0] == 0.5 and r.frequency[9] == pytest.approx(2 / 3)
    # ECE = 2/6 |0.5 - 0.05| + 3/6 |2/3 - 0.95| + 1/6 |1 - 0.55|
    expected = 2 / 6 * 0.45 + 3 / 6 * (0.95 - 2 / 3) + 1 / 6 * 0.45
    assert r.ece == pytest.approx(expected)
    assert np.isnan(r.confidence[3])


def test_presence_temperature_recovers_the_true_one():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 20000)
    y = (rng.uniform(size=z.size) < sigmoid(z / 2.5)).astype(float)  # labels drawn at temperature 2.5
    t = fit_presence_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.08)
    before = reliability(sigmoid(z), y).ece
    after = reliability(sigmoid(z / t), y).ece
    assert after < before / 3
    assert fit_presence_temperature(z, np.ones_like(z)) == 1.0  # a single class: nothing to fit


def test_sparsemax_matches_torch_and_by_hand():
    assert sparsemax(np.array([0.2, 0.0, 5.0])).tolist() == [0.0, 0.0, 1.0]
    # z = (1, 0.5, 0): tau = (1 + 0.5 - 1) / 2 = 0.25 -> (0.75, 0.25, 0)
    np.testing.assert_allclose(sparsemax(np.array([1.0, 0.5, 0.0])), [0.75, 0.25, 0.0])
    from probpose.models.probpose import sparsemax as sm_torch

    z = np.random.default_rng(1).normal(size=(30, 3072)) * 4
    for t in (0.1, 0.5, 10.0):
        np.testing.assert_allclose(sparsemax(z / t), sm_torch(torch.tensor(z / t), dim=-1).numpy(), atol=1e-12)


def test_mass_above_and_coverage_by_hand():
    m = np.zeros((3, 2, 2))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0] = 0.5, 0.3, 0.2
    gt = np.array([[0, 0], [1, 0], [1, 1]], float)  # at the mode, at 0.3, outside the support
    np.testing.assert_allclose(mass_above(m, gt), [0.0, 0.5, 1.0])
    c = coverage(np.array([0.0, 0.5, 1.0]), n_levels=4)  # p = .25 .5 .75 1
    np.testing.assert_allclose(c.hit_rate, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert c.ece == pytest.approx(np.mean(np.abs(np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3]) - [.25, .5, .75, 1])))


def test_expected_oks_nll_by_hand():
    m = np.zeros((1, 64, 48))
    m[0, 10, 20] = 1.0
    # GT one pixel right of the mass, s_0 = 0.55: -log(exp(-1 / 1.1))
    assert expected_oks_nll(m, np.array([[21.0, 10.0]]), np.array([0]))[0] == pytest.approx(1 / 1.1)


def test_map_temperature_fit_improves_likelihood():
    rng = np.random.default_rng(0)
    n = 120
    yy, xx = np.mgrid[0:64, 0:48]
    gt = np.stack([rng.uniform(8, 40, n), rng.uniform(8, 56, n)], 1)
    # logits peaked 3 px away from the GT on average: the model temperature 0.5 is over-confident
    centre = gt + rng.normal(0, 3, (n, 2))
    logits = -((xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2) / 8.0
    s = MapSamples(logits.astype(np.float32), None, gt, np.full(n, 5))
    t = fit_map_temperature(s)
    from analysis.calibration import maps_at_temperature

    nll = lambda tt: expected_oks_nll(maps_at_temperature(s, tt), s.gt_xy, s.keypoint).mean()  # noqa: E731
    assert t > 0.5 and nll(t) < nll(0.5)
    assert math.isfinite(t)


def test_split_by_image_is_disjoint_and_seeded():
    ids = np.repeat(np.arange(20), 3)
    a, b = split_by_image(ids, 0.5, seed=1)
    assert not set(ids[a]) & set(ids[b]) and a.sum() == 30
    assert (split_by_image(ids, 0.5, seed=1)[0] == a).all()
