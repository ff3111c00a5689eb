"""Keypoint-threshold sweeps: mAP, Ex-mAP and presence error as functions of the presence threshold.

At threshold t: instance scores are re-computed with t as the rescoring threshold (mean keypoint score over
keypoints with presence > t), the Ex-OKS "in / out" decision uses presence >= t, and the presence error counts
(presence >= t) != GT presence. Cheap: reuses a ``RunOutput``; the network never runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.coco_io import CocoSet
from analysis.exoks import EvalParams, evaluate_keypoints
from analysis.presence import DEFAULT_THRESHOLDS, presence_error

__all__ = ["SweepResult", "threshold_sweep"]


@dataclass
class SweepResult:
    """thresholds (T,); ap, ex_ap, presence_error (T,); best_* the threshold with the highest AP / Ex-AP or the
    lowest error (first on ties)."""

    thresholds: np.ndarray
    ap: np.ndarray
    ex_ap: np.ndarray
    presence_error: np.ndarray

    @property
    def best_ap(self) -> float:
        return float(self.thresholds[int(np.argmax(self.ap))])

    @property
    def best_ex_ap(self) -> float:
        return float(self.thresholds[int(np.argmax(self.ex_ap))])

    @property
    def best_presence(self) -> float:
        e = np.where(np.isfinite(self.presence_error), self.presence_error, np.inf)
        return float(self.thresholds[int(np.argmin(e))])

    def to_dict(self) -> dict:
        return {"thresholds": self.thresholds.tolist(), "ap": self.ap.tolist(), "ex_ap": self.ex_ap.tolist(),
                "presence_error": [None if not np.isfinite(v) else float(v) for v in self.presence_error],
                "best_ap": self.best_ap, "best_ex_ap": self.best_ex_ap, "best_presence": self.best_presence}

    @staticmethod
    def from_dict(d: dict) -> SweepResult:
        return SweepResult(np.asarray(d["thresholds"], float), np.asarray(d["ap"], float),
                           np.asarray(d["ex_ap"], float),
                           np.array([np.nan if v is None else v for v in d["presence_error"]], float))


def threshold_sweep(run, coco: CocoSet, thresholds=DEFAULT_THRESHOLDS) -> SweepResult:
    """Sweep ``thresholds`` over one ``RunOutput`` (see module docstring)."""
    from analysis.evaluate import rescore, results_with_scores

    th = np.asarray(thresholds, dtype=np.float64)
    ap, ex, err = np.zeros(len(th)), np.zeros(len(th)), np.zeros(len(th))
    for i, t in enumerate(th):
        res = results_with_scores(run.results, rescore(run.records, t))
        ap[i] = evaluate_keypoints(coco.dataset, res, EvalParams(), image_ids=run.image_ids).stats["AP"]
        ex[i] = evaluate_keypoints(coco.dataset, res, EvalParams(extended=True, presence_threshold=t),
                                   image_ids=run.image_ids).stats["AP"]
        err[i] = presence_error(run.records.presence, run.records.label, t).error
    return SweepResult(th, ap, ex, err)
