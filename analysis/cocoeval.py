"""COCO keypoint mAP through pycocotools (the reference our native evaluator is checked against)."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from analysis.coco_io import to_pycocotools

__all__ = ["PYCOCO_STAT_NAMES", "pycocotools_keypoint_ap"]

PYCOCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def pycocotools_keypoint_ap(gt: dict, results: list[dict], image_ids=None,
                            sigmas: np.ndarray | None = None) -> dict[str, float]:
    """Standard COCO keypoint AP / AR via ``pycocotools.cocoeval.COCOeval(iouType="keypoints")``.

    Args:
        gt: cleaned COCO dict (``CocoSet.dataset``). results: COCO keypoint results (loaded with ``loadRes``).
        image_ids: evaluate only these images (default all in ``gt``).
    Returns:
        {'AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl'}; all -1 when there is nothing
        to evaluate (no results).
    """
    from pycocotools.cocoeval import COCOeval

    known = {im["id"] for im in gt["images"]}
    results = [r for r in results if r.get("image_id") in known]
    if not results:
        return {k: -1.0 for k in PYCOCO_STAT_NAMES}
    coco_gt = to_pycocotools(copy.deepcopy(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(PYCOCO_STAT_NAMES, ev.stats, strict=True)}
