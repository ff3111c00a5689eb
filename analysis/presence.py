"""Presence classification: is a GT keypoint inside the activation window, and does the model say so?

Labels follow the official ``_do_python_variables_eval``: a labelled keypoint (v > 0) is *present* (1) when it lies
inside the AW of its GT box (``pad_to_contain`` <= 1.25, always recomputed from the geometry: a stored
``pad_to_contain`` is not used here, as in the official code), absent (0) otherwise; unlabelled keypoints are
ignored. At a fixed threshold a prediction says "present" when its score is >= the threshold (the Ex-OKS
convention). The **oracle** threshold is the official one (``oracle_threshold``): the best accuracy over
``numpy.linspace(0, 1, 21)`` (unrounded) with the strict rule ``float32(score) > t``, first on ties, and -1 when the
labels hold fewer than two classes. The score is the presence head's probability for ProbPose and the clipped
heatmap peak for the heatmap baseline (the "heatmap-peak rule").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.exoks import pad_to_contain
from probpose.constants import WINDOW_PADDING

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ORACLE_THRESHOLDS",
    "OracleThreshold",
    "oracle_threshold",
    "oracle_threshold_from_results",
    "PresenceStats",
    "presence_labels",
    "presence_error",
    "best_threshold",
    "presence_report",
    "presence_ranking",
    "person_roles",
    "presence_by_role",
    "PLACES",
    "PLACE_LABELS",
    "presence_by_place",
    "place_rows",
]

DEFAULT_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 21), 2)  # sweeps and curves: 0, 0.05, ..., 1 (display grid)
ORACLE_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # the official scan, unrounded (0.15000000000000002, ...)


def presence_labels(gt_anns: list[dict], padding: float = WINDOW_PADDING) -> np.ndarray:
    """(N, K) float labels for GT annotations: 1 inside the AW, 0 outside, NaN unlabelled.

    Out-ness is recomputed from the box and keypoints (``pad_to_contain`` > padding), ignoring a stored
    ``pad_to_contain``, as the official classification evaluation does.
    """
    out = []
    for a in gt_anns:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        is_out = pad_to_contain(a["bbox"], kp) > padding
        lab = np.where(is_out, 0.0, 1.0)
        lab[kp[:, 2] <= 0] = np.nan
        out.append(lab)
    return np.array(out, dtype=np.float64).reshape(len(gt_anns), -1)


@dataclass
class OracleThreshold:
    """The official oracle presence threshold: ``threshold`` (-1 when undefined), its ``accuracy`` (NaN when
    undefined) and the label counts it was chosen on."""

    threshold: float
    accuracy: float
    n_present: int
    n_absent: int


def oracle_threshold(scores: np.ndarray, labels: np.ndarray,
                     thresholds: np.ndarray = ORACLE_THRESHOLDS) -> OracleThreshold:
    """Best-accuracy presence threshold, exactly as the official ``CocoMetric`` picks it.

    Scores are cast to float32 and compared with ``>`` to each threshold of ``thresholds`` (float64, unrounded);
    the first threshold with the highest accuracy wins. With fewer than two label classes the threshold is -1
    (every keypoint then counts as "in" for Ex-OKS, whose rule is ``presence >= threshold``).

    Args:
        scores: (...,) presence scores. labels: same shape, 1 / 0 / NaN (NaN ignored).
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float32).ravel()
    keep = ~np.isnan(y)
    y, s = y[keep].astype(bool), s[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return OracleThreshold(-1.0, float("nan"), n_pos, n_neg)
    acc = ((s[:, None] > np.asarray(thresholds)[None]) == y[:, None]).sum(axis=0) / len(y)
    i = int(np.argmax(acc))
    return OracleThreshold(float(np.asarray(thresholds)[i]), float(acc[i]), n_pos, n_neg)


def oracle_threshold_from_results(gt: dict, results: list[dict], padding: float = WINDOW_PADDING) -> float:
    """The official oracle threshold of a results list against a COCO GT dict (-1 when undefined).

    Each result is paired with its GT person through ``gt_ann_id`` (the official metric pairs by person id); the
    presences are the third keypoint values. As the official code: GTs whose keypoints are all zero take no part,
    and a result whose GT is missing among the rest makes the whole classification fail, leaving -1.
    """
    anns = {a["id"]: a for a in gt["annotations"] if not np.allclose(np.asarray(a["keypoints"], float), 0)}
    by_key: dict = {}
    for r in results:
        by_key[(r["image_id"], r.get("gt_ann_id"))] = r  # the official dict keeps the last of duplicates
    pres, gts = [], []
    for (iid, aid), r in by_key.items():
        a = anns.get(aid)
        if a is None or a["image_id"] != iid:
            return -1.0
        pres.append(np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[:, 2])
        gts.append(a)
    if not gts:
        return -1.0
    return oracle_threshold(np.array(pres), presence_labels(gts, padding)).threshold


@dataclass
class PresenceStats:
    """Presence classification at one threshold.

    error: share of labelled keypoints misclassified; balanced_error: mean of the two per-class error rates
    (NaN if a class is absent); false_out: present keypoints called absent ("missed"); false_in: absent keypoints
    called present ("hallucinated"); n_present / n_absent: label counts.
    """

    threshold: float
    error: float
    balanced_error: float
    false_out: int
    false_in: int
    n_present: int
    n_absent: int

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in self.__dict__.items()}


def presence_error(scores: np.ndarray, labels: np.ndarray, threshold: float, strict: bool = False) -> PresenceStats:
    """Classification error of ``scores >= threshold`` against ``labels`` (NaN labels ignored).

    Args:
        scores: (...,) presence scores in [0, 1]. labels: same shape, 1 / 0 / NaN.
        strict: the official oracle rule instead: ``float32(score) > threshold`` (no clipping).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    keep = np.isfinite(y) & np.isfinite(s)
    s, y = s[keep], y[keep].astype(bool)
    pred = s.astype(np.float32) > threshold if strict else np.clip(s, 0.0, 1.0) >= threshold
    false_out = int((y & ~pred).sum())
    false_in = int((~y & pred).sum())
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    n = n_pos + n_neg
    err = (false_out + false_in) / n if n else float("nan")
    bal = (false_out / n_pos + false_in / n_neg) / 2 if n_pos and n_neg else float("nan")
    return PresenceStats(float(threshold), err, bal, false_out, false_in, n_pos, n_neg)


def best_threshold(scores: np.ndarray, labels: np.ndarray, thresholds=ORACLE_THRESHOLDS,
                   balanced: bool = False) -> PresenceStats:
    """The threshold of ``thresholds`` with the lowest (balanced) error under the official oracle rule
    (``float32(score) > t``); ties go to the smallest threshold. With ``balanced=False`` and the default grid this
    is ``oracle_threshold``'s choice (when both classes are present)."""
    stats = [presence_error(scores, labels, t, strict=True) for t in thresholds]
    key = [(s.balanced_error if balanced else s.error) for s in stats]
    key = [np.inf if not np.isfinite(k) else k for k in key]
    return stats[int(np.argmin(key))]


def presence_ranking(scores: np.ndarray, labels: np.ndarray) -> dict:
    """How well the scores separate the classes, whatever the threshold.

    Why: with ~90% of keypoints inside the window, a calibrated presence puts its best balanced threshold near 1,
    where the 0.05 grid of ``best_threshold`` is too coarse to find it; these two do not depend on a grid.

    Returns:
        {'auc': P(a present keypoint scores above an absent one), ties counting half (NaN with one class);
        'best_balanced_any': ``PresenceStats.to_dict()`` at the lowest balanced error over every threshold
        (``score >= t`` for each distinct float32 score; ties go to the smallest threshold)}.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    sc = np.asarray(scores, dtype=np.float32).ravel()
    keep = ~np.isnan(y)
    y, sc = y[keep] > 0.5, sc[keep]
    pos, neg = np.sort(sc[y]), np.sort(sc[~y])
    if not len(pos) or not len(neg):
        nan = float("nan")
        return {"auc": nan, "best_balanced_any": presence_error(sc, y, nan).to_dict()}
    # Mann-Whitney: for each present score, absent scores below it, plus half the ties
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    auc = float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))
    t = np.unique(sc)
    fnr = np.searchsorted(pos, t, side="left") / len(pos)  # present keypoints scored below t: called out
    fpr = (len(neg) - np.searchsorted(neg, t, side="left")) / len(neg)  # absent ones at or above t: called in
    best = float(t[int(np.argmin((fnr + fpr) / 2))])
    return {"auc": auc, "best_balanced_any": presence_error(sc, y, best).to_dict()}


def presence_report(scores: np.ndarray, labels: np.ndarray, fixed_threshold: float,
                    thresholds=DEFAULT_THRESHOLDS) -> dict:
    """Error at a fixed threshold (``>=``), at the oracle best threshold (plain and balanced, official ``>`` rule on
    the unrounded grid), the grid-free ranking measures of ``presence_ranking``, and the whole curve (``>=``,
    display grid).

    Returns:
        {'fixed': dict, 'best': dict, 'best_balanced': dict, 'auc': float, 'best_balanced_any': dict,
        'curve': {'thresholds': [...], 'error': [...], 'balanced_error': [...]}}
    """
    curve = [presence_error(scores, labels, t) for t in thresholds]
    return {
        "fixed": presence_error(scores, labels, fixed_threshold).to_dict(),
        "best": best_threshold(scores, labels).to_dict(),
        "best_balanced": best_threshold(scores, labels, balanced=True).to_dict(),
        **presence_ranking(scores, labels),
        "curve": {"thresholds": [float(t) for t in thresholds], "error": [c.error for c in curve],
                  "balanced_error": [c.balanced_error for c in curve]},
    }


def person_roles(gt: dict) -> dict[int, str]:
    """Annotation id -> "target" (the person a CropCOCO-style image was cut around, ``images[].target_ann_id`` of
    ``analysis.cropcoco``) or "other" (anyone else the crop cuts). Empty when the set records no targets (COCO, the
    official CropCOCO release)."""
    target = {im["id"]: im["target_ann_id"] for im in gt.get("images", []) if "target_ann_id" in im}
    if not target:
        return {}
    return {a["id"]: "target" if a.get("source_ann_id") == target[a["image_id"]] else "other"
            for a in gt.get("annotations", []) if a["image_id"] in target}


def presence_by_role(scores: np.ndarray, labels: np.ndarray, ann_ids, roles: dict[int, str],
                     fixed_threshold: float) -> dict:
    """Presence error of each person role (``person_roles``): {role: {'people', 'fixed', 'best_balanced', 'auc',
    'best_balanced_any'}}.

    Why: most out-of-window keypoints of a CropCOCO-style set belong to the people *around* the target, whose box
    the crop clips to a sliver or to a region that shows someone else; the target's own keypoints leave the window
    less often. The two are different problems and one number hides which one a model fails.

    Args:
        scores, labels: (N, K) as ``presence_report``. ann_ids: (N,) annotation id per row.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    role = np.array([roles.get(int(a), "") for a in ann_ids])
    out = {}
    for name in ("target", "other"):
        m = role == name
        if m.any():
            out[name] = {"people": int(m.sum()),
                         "fixed": presence_error(scores[m], labels[m], fixed_threshold).to_dict(),
                         "best_balanced": best_threshold(scores[m], labels[m], balanced=True).to_dict(),
                         **presence_ranking(scores[m], labels[m])}
    return out


# where a labelled keypoint lies: (inside the image?, inside the activation window?) -> name
PLACES = {(True, True): "in_image", (True, False): "in_image_out_window", (False, True): "out_image_in_window",
          (False, False): "out_window"}
PLACE_LABELS = {"in_image": "inside the image", "in_image_out_window": "inside the image, outside the window",
                "out_image_in_window": "outside the image, inside the window", "out_window": "outside the window"}


def _by_place(scores: np.ndarray, labels: np.ndarray, in_image: np.ndarray, fixed_threshold: float) -> dict:
    keep = np.isfinite(labels) & np.isfinite(scores)
    s, y, img = scores[keep], labels[keep] > 0.5, in_image[keep]
    places = {}
    for (i, w), name in PLACES.items():
        m = (img == i) & (y == w)
        if m.any():
            places[name] = {"n": int(m.sum()), "mean_presence": float(s[m].mean()),
                            "called_present": float((np.clip(s[m], 0, 1) >= fixed_threshold).mean())}
    # the presence of a model that knows exactly which keypoints the image shows and calls those present
    oracle = presence_error(img.astype(np.float64), y.astype(np.float64), 0.5).to_dict()
    return {"places": places, "image_oracle": oracle,
            "image_auc": presence_ranking(s, img.astype(np.float64))["auc"]}


def presence_by_place(scores: np.ndarray, labels: np.ndarray, ann_ids, gt: dict, fixed_threshold: float,
                      roles: dict[int, str] | None = None) -> dict:
    """Presence by where each labelled keypoint lies, on sets that mark keypoints outside the image (v=3, as
    CropCOCO does); {} on a set without any.

    Why: a keypoint outside the image may still be inside the activation window (the window is the box x1.25, so
    it reaches past the image edge), and one inside the image is always inside the window of a clipped box. So the
    two things a presence head must do come apart: tell which keypoints the image shows, and guess how far the
    unseen ones lie. ``image_oracle`` is the error of a presence that did the first perfectly and called exactly
    the keypoints inside the image present; ``image_auc`` is how well the model's presence separates keypoints
    inside the image from those outside it.

    Args:
        scores, labels: (N, K) as ``presence_report``. ann_ids: (N,) annotation id per row. gt: the COCO dict
        (its keypoints' v). roles: ``person_roles(gt)``; when given, each role is reported too.
    Returns:
        {'all' | 'target' | 'other': {'people', 'places': {name of ``PLACES``: {'n', 'mean_presence',
        'called_present' (share >= ``fixed_threshold``)}}, 'image_oracle': ``PresenceStats.to_dict()``,
        'image_auc': float}}.
    """
    vis = {a["id"]: np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)[:, 2] for a in gt["annotations"]}
    if not any((v == 3).any() for v in vis.values()):
        return {}
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    ids = [int(a) for a in ann_ids]
    in_image = np.stack([vis[a] != 3 for a in ids]) if ids else np.zeros(labels.shape, bool)
    groups = {"all": np.ones(len(ids), bool)}
    if roles:
        role = np.array([roles.get(a, "") for a in ids])
        groups.update({name: role == name for name in ("target", "other") if (role == name).any()})
    return {name: {"people": int(m.sum()), **_by_place(scores[m], labels[m], in_image[m], fixed_threshold)}
            for name, m in groups.items()}


def place_rows(by_place: dict, groups) -> list[tuple[str, list[dict | None]]]:
    """Table rows of ``presence_by_place`` output: (place label, one cell per group: its place dict or None), in
    ``PLACE_LABELS`` order, leaving out places no group has keypoints in. The report and the app's tab format the
    cells their own way."""
    rows = []
    for place, label in PLACE_LABELS.items():
        cells = [by_place[g]["places"].get(place) for g in groups]
        if any(c is not None for c in cells):  # e.g. in-image keypoints outside the window are rare
            rows.append((label, cells))
    return rows
