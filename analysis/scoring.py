"""Instance scores and OKS-NMS of top-down results, as the official ``CocoMetric`` applies them before evaluating.

The evaluation runner (``analysis.evaluate``) and the threshold sweep (``analysis.sweep``) both import this module;
it imports neither (one-directional imports inside ``analysis``).
"""

from __future__ import annotations

import numpy as np

from probpose.constants import COCO_SIGMAS

__all__ = ["NMS_THRESHOLD", "rescore", "results_with_scores", "oks_overlap", "oks_nms", "nms_keep"]

NMS_THRESHOLD = 0.9  # CocoMetric's nms_thr for top-down results


def rescore(records, threshold: float) -> np.ndarray:
    """Instance scores: mean of ``records.rescore`` over keypoints with presence > threshold (0 if none), (N,).

    ``records``: a ``PersonRecords`` (or anything with ``presence`` and ``rescore`` (N, K) arrays).
    """
    sel = records.presence > threshold
    n = sel.sum(axis=1)
    with np.errstate(invalid="ignore"):
        s = np.where(sel, records.rescore, 0.0).sum(axis=1) / n
    return np.where(n > 0, s, 0.0)


def results_with_scores(results: list[dict], scores: np.ndarray) -> list[dict]:
    """Shallow copies of ``results`` with new instance scores."""
    return [{**r, "score": float(s)} for r, s in zip(results, scores, strict=True)]


def oks_overlap(kpts: np.ndarray, others: np.ndarray, area: float, other_areas: np.ndarray,
                sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """OKS between one prediction and others, as the NMS measures it (mmpose ``oks_iou`` without ``vis_thr``).

    Every keypoint counts; the scale is the mean of the two areas; the result is float32 (the official array
    type, so the ``<= thr`` test sees the same rounding).

    Args:
        kpts: (K, 2+) image px. others: (M, K, 2+). area: the window area of ``kpts``. other_areas: (M,).
    Returns:
        (M,) float32.
    """
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((others[:, :, 0] - kpts[None, :, 0]) ** 2 + (others[:, :, 1] - kpts[None, :, 1]) ** 2)
    e = d2 / var / ((area + np.asarray(other_areas, dtype=np.float64)[:, None]) / 2 + np.spacing(1)) / 2
    return np.exp(-e).mean(axis=1).astype(np.float32)


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = NMS_THRESHOLD,
            sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """Greedy OKS-NMS of one image's predictions (mmpose ``oks_nms``): keep the best-scored prediction, drop every
    other whose OKS with it exceeds ``threshold``, repeat.

    The order is ``numpy.argsort(scores)`` reversed (numpy's default sort, as the official code), so ties are
    broken the same way for the same input order.

    Args:
        kpts: (N, K, 2+) image px. scores: (N,). areas: (N,) (the official code uses the window area, w * h of the
            padded, aspect-fixed box).
    Returns:
        (M,) indices into the inputs, in keep order (best first).
    """
    scores = np.asarray(scores, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    order = scores.argsort()[::-1]
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(int(i))
        ovr = oks_overlap(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas)
        order = order[1:][ovr <= threshold]
    return np.asarray(keep, dtype=np.int64)


def nms_keep(results: list[dict], areas: np.ndarray, threshold: float | None = NMS_THRESHOLD) -> np.ndarray:
    """Indices of ``results`` that survive per-image OKS-NMS, in the order the official metric writes them.

    As ``CocoMetric``: per image (images in first-appearance order), the predictions are sorted by their person id
    (``gt_ann_id``, else their position), de-duplicated by id (first kept), then ``oks_nms`` in keep order.
    ``threshold=None`` keeps everything (same ordering, no suppression).

    Args:
        results: COCO keypoint results (``image_id``, ``keypoints``, ``score``; optional ``gt_ann_id``).
        areas: (N,) the area each prediction's NMS scale uses.
    Returns:
        (M,) int indices into ``results``.
    """
    by_image: dict[int, list[int]] = {}
    for i, r in enumerate(results):
        by_image.setdefault(r["image_id"], []).append(i)
    keep: list[int] = []
    for idx in by_image.values():
        idx = sorted(idx, key=lambda j: (results[j].get("gt_ann_id", j), j))
        seen: set = set()
        uniq = []
        for j in idx:
            key = results[j].get("gt_ann_id", ("pos", j))
            if key not in seen:
                seen.add(key)
                uniq.append(j)
        if threshold is None:
            keep += uniq
            continue
        kp = np.array([np.asarray(results[j]["keypoints"], dtype=np.float64).reshape(-1, 3) for j in uniq])
        sc = np.array([results[j]["score"] for j in uniq], dtype=np.float64)
        k = oks_nms(kp, sc, np.asarray(areas, dtype=np.float64)[uniq], threshold)
        keep += [uniq[t] for t in k]
    return np.asarray(keep, dtype=np.int64)
