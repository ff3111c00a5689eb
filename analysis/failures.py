"""Failure ranking: every predicted instance with its OKS and Ex-OKS against its own GT, and what went wrong
per keypoint.

Per-keypoint diagnosis (labelled keypoints only; GT "in" = inside the activation window):
- ``missed``: GT in, predicted out (presence < threshold);
- ``hallucinated``: GT out, predicted in;
- ``swapped``: both in, and the prediction is much closer to the mirrored keypoint's GT (left/right confusion):
  its similarity to the mirrored GT is >= 0.5 and exceeds its similarity to its own GT by >= 0.25;
- ``far``: both in, per-keypoint OKS similarity < 0.5 (and not swapped);
- ``ok``: both in and close, or both out; ``unlabelled``: v = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.coco_io import CocoSet, keypoints_array
from analysis.exoks import pair_keypoint_terms, relabel_visibility
from probpose.constants import FLIP_INDICES, KEYPOINT_NAMES, WINDOW_PADDING

__all__ = ["FailureRow", "diagnose_keypoints", "rank_failures", "failures_table"]

FAR_SIMILARITY = 0.5
SWAP_MARGIN = 0.25


@dataclass
class FailureRow:
    """One instance. oks: standard OKS vs its GT (NaN without in-image labelled keypoints); exoks: Ex-OKS at the
    threshold; labels: (K,) per-keypoint diagnosis; counts of each failure kind; score: instance score."""

    image_id: int
    ann_id: int
    oks: float
    exoks: float
    score: float
    labels: list[str]
    missed: int
    hallucinated: int
    swapped: int
    far: int

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["problems"] = ", ".join(f"{KEYPOINT_NAMES[k]}: {lab}" for k, lab in enumerate(self.labels)
                                  if lab not in ("ok", "unlabelled"))
        return d


def diagnose_keypoints(pred: np.ndarray, gt_ann: dict, threshold: float,
                       padding: float = WINDOW_PADDING) -> tuple[list[str], float, float]:
    """Diagnose one prediction against its GT annotation.

    Args:
        pred: (K, 3) x, y, presence (image px). gt_ann: COCO annotation (bbox, area, keypoints).
    Returns:
        (labels (K,), OKS, Ex-OKS).
    """
    gt = keypoints_array(gt_ann)
    bbox = np.asarray(gt_ann["bbox"], dtype=np.float64)[None]
    area = np.array([float(gt_ann.get("area", bbox[0, 2] * bbox[0, 3] * 0.53))])
    vis_std = relabel_visibility(gt_ann, extended=False)
    vis_ex = relabel_visibility(gt_ann, extended=True, padding=padding)
    sim_std = pair_keypoint_terms(pred[None], gt[None, :, :2], vis_std[None], bbox, area, False)[0, 0]
    sim_ex = pair_keypoint_terms(pred[None], gt[None, :, :2], vis_ex[None], bbox, area, True, threshold,
                                 padding)[0, 0]
    m_std, m_ex = vis_std > 0, vis_ex > 0
    oks = float(sim_std[m_std].mean()) if m_std.any() else float("nan")
    exoks = float(sim_ex[m_ex].mean()) if m_ex.any() else float("nan")
    # similarity of each prediction to the mirrored keypoint's GT (left/right swap check)
    mirrored = gt[list(FLIP_INDICES)]
    sim_mir = pair_keypoint_terms(pred[None], mirrored[None, :, :2], vis_std[None], bbox, area, False)[0, 0]
    mir_ok = vis_ex[list(FLIP_INDICES)] > 0
    present = np.clip(pred[:, 2], 0, 1) >= threshold
    labels = []
    for k in range(len(gt)):
        if vis_ex[k] <= 0:
            labels.append("unlabelled")
        elif vis_ex[k] == 3:
            labels.append("hallucinated" if present[k] else "ok")
        elif not present[k]:
            labels.append("missed")
        elif FLIP_INDICES[k] != k and mir_ok[k] and sim_mir[k] >= FAR_SIMILARITY and \
                sim_mir[k] - sim_std[k] >= SWAP_MARGIN:
            labels.append("swapped")
        elif sim_std[k] < FAR_SIMILARITY:
            labels.append("far")
        else:
            labels.append("ok")
    return labels, oks, exoks


def rank_failures(results: list[dict], coco: CocoSet, threshold: float, sort_by: str = "exoks",
                  padding: float = WINDOW_PADDING) -> list[FailureRow]:
    """Rows for every result that carries ``gt_ann_id`` (runner output), worst first by ``sort_by``
    ("exoks" or "oks"; NaN last)."""
    anns = {a["id"]: a for a in coco.annotations}
    rows = []
    for r in results:
        a = anns.get(r.get("gt_ann_id"))
        if a is None:
            continue
        pred = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        labels, oks, exoks = diagnose_keypoints(pred, a, threshold, padding)
        rows.append(FailureRow(int(r["image_id"]), int(a["id"]), oks, exoks, float(r.get("score", 0.0)), labels,
                               labels.count("missed"), labels.count("hallucinated"), labels.count("swapped"),
                               labels.count("far")))
    if sort_by not in ("exoks", "oks"):
        raise ValueError(f"sort_by must be 'exoks' or 'oks', got {sort_by!r}")
    rows.sort(key=lambda row: (np.inf if not np.isfinite(getattr(row, sort_by)) else getattr(row, sort_by)))
    return rows


def failures_table(rows: list[FailureRow], limit: int | None = None) -> list[dict]:
    """Plain dicts (image_id, ann_id, oks, exoks, score, missed, hallucinated, swapped, far, problems) for a
    table widget; the per-keypoint ``labels`` list is dropped."""
    out = []
    for row in rows[:limit]:
        d = row.to_dict()
        d.pop("labels")
        d["oks"] = None if not np.isfinite(d["oks"]) else round(d["oks"], 4)
        d["exoks"] = None if not np.isfinite(d["exoks"]) else round(d["exoks"], 4)
        d["score"] = round(d["score"], 4)
        out.append(d)
    return out
