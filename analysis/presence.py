"""Presence classification: is a GT keypoint inside the activation window, and does the model say so?

Labels follow the official ``_do_python_variables_eval``: a labelled keypoint (v > 0) is *present* (1) when it lies
inside the AW of its GT box (``pad_to_contain`` <= 1.25, stored or computed), absent (0) otherwise; unlabelled
keypoints are ignored. A prediction says "present" when its score is >= the threshold (the Ex-OKS convention).
The score is the presence head's probability for ProbPose and the clipped heatmap peak for the heatmap baseline
(the "heatmap-peak rule").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.exoks import relabel_visibility
from probpose.constants import WINDOW_PADDING

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PresenceStats",
    "presence_labels",
    "presence_error",
    "best_threshold",
    "presence_report",
]

DEFAULT_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 21), 2)  # the official scan: 0, 0.05, ..., 1


def presence_labels(gt_anns: list[dict], padding: float = WINDOW_PADDING) -> np.ndarray:
    """(N, K) float labels for GT annotations: 1 inside the AW, 0 outside, NaN unlabelled."""
    out = []
    for a in gt_anns:
        v = relabel_visibility(a, extended=True, padding=padding, relabel="geometric")
        lab = np.where(v == 3, 0.0, 1.0)
        lab[v <= 0] = np.nan
        out.append(lab)
    return np.array(out, dtype=np.float64).reshape(len(gt_anns), -1)


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


def presence_error(scores: np.ndarray, labels: np.ndarray, threshold: float) -> PresenceStats:
    """Classification error of ``scores >= threshold`` against ``labels`` (NaN labels ignored).

    Args:
        scores: (...,) presence scores in [0, 1]. labels: same shape, 1 / 0 / NaN.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    keep = np.isfinite(y) & np.isfinite(s)
    s, y = s[keep], y[keep].astype(bool)
    pred = np.clip(s, 0.0, 1.0) >= threshold
    false_out = int((y & ~pred).sum())
    false_in = int((~y & pred).sum())
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    n = n_pos + n_neg
    err = (false_out + false_in) / n if n else float("nan")
    bal = (false_out / n_pos + false_in / n_neg) / 2 if n_pos and n_neg else float("nan")
    return PresenceStats(float(threshold), err, bal, false_out, false_in, n_pos, n_neg)


def best_threshold(scores: np.ndarray, labels: np.ndarray, thresholds=DEFAULT_THRESHOLDS,
                   balanced: bool = False) -> PresenceStats:
    """The threshold of ``thresholds`` with the lowest (balanced) error; ties go to the smallest threshold."""
    stats = [presence_error(scores, labels, t) for t in thresholds]
    key = [(s.balanced_error if balanced else s.error) for s in stats]
    key = [np.inf if not np.isfinite(k) else k for k in key]
    return stats[int(np.argmin(key))]


def presence_report(scores: np.ndarray, labels: np.ndarray, fixed_threshold: float,
                    thresholds=DEFAULT_THRESHOLDS) -> dict:
    """Error at a fixed threshold, at the oracle best threshold (plain and balanced), and the whole curve.

    Returns:
        {'fixed': dict, 'best': dict, 'best_balanced': dict, 'curve': {'thresholds': [...], 'error': [...],
        'balanced_error': [...]}}
    """
    curve = [presence_error(scores, labels, t) for t in thresholds]
    return {
        "fixed": presence_error(scores, labels, fixed_threshold).to_dict(),
        "best": best_threshold(scores, labels, thresholds).to_dict(),
        "best_balanced": best_threshold(scores, labels, thresholds, balanced=True).to_dict(),
        "curve": {"thresholds": [float(t) for t in thresholds], "error": [c.error for c in curve],
                  "balanced_error": [c.balanced_error for c in curve]},
    }
