"""Keypoint-threshold sweeps: mAP, Ex-mAP and presence error as functions of the presence threshold.

At threshold t: instance scores are re-computed with t as the rescoring threshold (mean keypoint score over
keypoints with presence > t), the re-scored results go through OKS-NMS (0.9, as the official metric), then mAP
(official standard rules) and Ex-mAP with "in" = presence >= t; the presence error counts (presence >= t) != GT
presence. Cheap: reuses a ``RunOutput``; the network never runs. Imports ``analysis.scoring`` (never
``analysis.evaluate``, which imports this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.coco_io import CocoSet
from analysis.exoks import EvalParams, evaluate_keypoints
from analysis.presence import DEFAULT_THRESHOLDS, presence_error
from analysis.scoring import NMS_THRESHOLD, nms_keep, rescore, results_with_scores

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


def threshold_sweep(run, coco: CocoSet, thresholds=DEFAULT_THRESHOLDS,
                    progress: Callable[[float], None] | None = None,
                    nms_threshold: float | None = NMS_THRESHOLD) -> SweepResult:
    """Sweep ``thresholds`` over one ``RunOutput`` (see module docstring).

    Args:
        progress: called with each threshold once it is done.
        nms_threshold: OKS-NMS threshold applied to the re-scored results (None: no NMS).
    """
    th = np.asarray(thresholds, dtype=np.float64)
    ap, ex, err = np.zeros(len(th)), np.zeros(len(th)), np.zeros(len(th))
    recs = run.records
    areas = np.prod(recs.scales, axis=1) if len(recs) else np.zeros(0)
    for i, t in enumerate(th):
        res = results_with_scores(run.results, rescore(recs, t))
        keep = nms_keep(res, areas, nms_threshold)
        res = [res[j] for j in keep]
        ap[i] = evaluate_keypoints(coco.dataset, res, EvalParams(), image_ids=run.image_ids).stats["AP"]
        ex[i] = evaluate_keypoints(coco.dataset, res, EvalParams(extended=True, presence_threshold=t),
                                   image_ids=run.image_ids).stats["AP"]
        err[i] = presence_error(recs.presence[keep], recs.label[keep], t).error
        if progress is not None:
            progress(float(t))
    return SweepResult(th, ap, ex, err)
