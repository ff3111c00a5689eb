"""Native numpy COCO keypoint evaluation with the Extended OKS (Ex-OKS) of ProbPose (spec 7.2).

One evaluator, two modes, each computed as the official ProbPose evaluator (``_cocoeval.py`` as its ``CocoMetric``
calls it) computes it:
- ``extended=False``: standard COCO keypoint AP (OKS over keypoints with v in {1, 2}, greedy matching by score,
  OKS thresholds .50:.05:.95, maxDets 20, areas all / medium / large).
- ``extended=True``: Ex-OKS / Ex-mAP. A predicted keypoint is "in" the activation window (AW) when its presence
  (the third value of the result keypoint, clipped to [0, 1]) is >= ``presence_threshold``; GT keypoints with
  v=3 are "out". Per keypoint squared distance:

  ===========  ==========  ===============================================
  GT           prediction  d^2
  ===========  ==========  ===============================================
  in (v<3)     in          |pred - gt|^2
  out (v=3)    in          e(pred)^2  (how deep inside the AW the prediction lies)
  in           out         e(gt)^2    (how deep inside the AW the GT lies)
  out          out         0          (similarity 1)
  ===========  ==========  ===============================================

  with e(q)^2 = min(q_x - x0, x1 - q_x)^2 + min(q_y - y0, y1 - q_y)^2 on the GT's AW (x0, y0, x1, y1). This is
  the official code's behaviour: for a point inside the AW it is the distance to the nearest AW *corner*, not to
  the nearest edge as the exococotools README says. We match the code so that numbers reproduce.

Official rules (``rules="official"``, the default), in both modes:
- standard mode scores only v in {1, 2}: every other v (3 included) becomes 0;
- a GT is ignored at a visibility level when it has no keypoint at that level (the crowd flag only lets a crowd GT
  be matched more than once; ``num_keypoints`` is not read);
- detections whose presences are all <= 0 are dropped;
- in an image whose GTs are all ignored (at the level and area range evaluated, or with no GT at all), the
  detections are ignored rather than counted as false positives;
- the AW widths are float32 (as ``fix_bbox_aspect_ratio``), so per-pair similarities agree to the last bit.
``rules="pycocotools"`` (standard mode only) reproduces ``pycocotools.cocoeval.COCOeval(iouType="keypoints")``
instead: every v > 0 is scored at its coordinates (v=3 included), ``num_keypoints == 0`` or crowd means ignored,
no detection is dropped and detections in images without usable GT are false positives.

Out-ness of GT keypoints (``relabel``): "geometric" (default, mmpose CocoMetric) uses ``pad_to_contain`` from the
annotation and computes it where absent, so any labelled keypoint outside the AW becomes v=3 and an annotated v=3
inside the AW becomes v=1; "annotation" (exococotools 1.0.0) relabels only annotations that store
``pad_to_contain`` and otherwise trusts the v=3 flags of the file.

Where we differ from the official file (never in its numbers on data it can evaluate):
- visibility levels are indexed by position, so data whose levels are not {1, ..., n} also works (the official
  code indexes by value and fails there);
- the reported ``OKS`` stat is the mean similarity of the matches at OKS 0.5, level "all", area "all";
  ``loc_similarity`` is the official one (mean over every match at every threshold, level and area).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probpose.constants import ASPECT_RATIO, COCO_SIGMAS, NUM_KEYPOINTS, WINDOW_PADDING

__all__ = [
    "AREA_RANGES",
    "EvalParams",
    "KeypointEvalResult",
    "aw_xyxy",
    "pad_to_contain",
    "relabel_visibility",
    "pair_keypoint_terms",
    "similarity",
    "evaluate_keypoints",
]

AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5 ** 2),
    "medium": (32.0 ** 2, 96.0 ** 2),
    "large": (96.0 ** 2, 1e5 ** 2),
}
_EPS = np.spacing(1)


@dataclass
class EvalParams:
    """Evaluation settings. The defaults give the official standard keypoint AP (``extended=False``)."""

    extended: bool = False
    presence_threshold: float | None = 0.5  # None: use the clipped presence value itself (official behaviour)
    rules: str = "official"  # or "pycocotools" (standard mode only)
    padding: float = WINDOW_PADDING
    relabel: str = "geometric"  # or "annotation" (exococotools)
    sigmas: np.ndarray = field(default_factory=lambda: COCO_SIGMAS.copy())
    use_area: bool = True
    max_dets: int = 20
    iou_thrs: np.ndarray = field(default_factory=lambda: np.linspace(0.5, 0.95, 10))
    rec_thrs: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101))
    area_ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(AREA_RANGES))


@dataclass
class KeypointEvalResult:
    """Output of ``evaluate_keypoints``.

    stats: 'AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl', 'OKS', and 'AP (v=1)' ... per
        visibility level (-1 where undefined, as pycocotools).
    levels: the visibility levels present (e.g. [1, 2, 3]); level index 0 is "all v > 0".
    precision: (T, V, R, A) with V = 1 + len(levels), A = len(area_ranges); -1 where there is no GT.
    recall: (T, V, A).
    matches: dt id -> (gt id, similarity) for matches at OKS 0.5, level "all", area "all".
    similarities: image id -> (dt ids (D,), gt ids (G,), (V, D, G) similarity) of the evaluated detections.
    """

    stats: dict[str, float]
    levels: list[int]
    precision: np.ndarray
    recall: np.ndarray
    params: EvalParams
    matches: dict[int, tuple[int, float]]
    similarities: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    num_images: int
    num_gt: int
    num_dt: int
    num_out_keypoints: int


def _fix_aspect(bbox_xywh, aspect_ratio: float, padding: float) -> tuple[np.ndarray, ...]:
    """(x0, y0, x1, y1) of the aspect-fixed, padded box exactly as ``fix_bbox_aspect_ratio`` computes it.

    The box goes through xyxy first; the new width / height are float32 (so they carry float32 rounding, as the
    official code); a zero side counts as 1 px when choosing, and sizing, the enlarged side.
    """
    b = np.asarray(bbox_xywh, dtype=np.float64)
    bx0, by0 = b[..., 0], b[..., 1]
    bx1, by1 = bx0 + b[..., 2], by0 + b[..., 3]
    cx, cy = bx0 + (bx1 - bx0) / 2, by0 + (by1 - by0) / 2
    w, h = bx1 - bx0, by1 - by0
    new_w, new_h = w.astype(np.float32), h.astype(np.float32)
    w1, h1 = np.where(w == 0, 1.0, w), np.where(h == 0, 1.0, h)
    wide = w1 / h1 > aspect_ratio
    new_h = np.where(wide, (w1 / aspect_ratio).astype(np.float32), new_h)
    new_w = np.where(wide, new_w, (h1 * aspect_ratio).astype(np.float32))
    new_w = (new_w * np.float32(padding)).astype(np.float32)
    new_h = (new_h * np.float32(padding)).astype(np.float32)
    return cx - new_w / 2, cy - new_h / 2, cx + new_w / 2, cy + new_h / 2


def aw_xyxy(bbox_xywh, aspect_ratio: float = ASPECT_RATIO, padding: float = WINDOW_PADDING) -> np.ndarray:
    """Activation window of GT boxes as Ex-OKS builds it (``fix_bbox_aspect_ratio``).

    Enlarge the short side to w / h = aspect_ratio, then scale by ``padding`` about the centre; widths in float32
    and a zero side counting as 1 px, as in the official code.

    Args:
        bbox_xywh: (..., 4) image px.
    Returns:
        (..., 4) xyxy image px (float64).
    """
    return np.stack(_fix_aspect(bbox_xywh, aspect_ratio, padding), axis=-1).astype(np.float64)


def pad_to_contain(bbox_xywh, keypoints) -> np.ndarray:
    """Smallest AW padding that contains each keypoint (``find_min_padding_exact``).

    1 + max(2 dx / w, 2 dy / h), with (w, h) the aspect-fixed unpadded box and dx, dy how far the keypoint lies
    outside it (0 inside). A keypoint lies outside the AW of padding p exactly when this exceeds p. Computed in
    the official order of operations (float32 box sides, x1 = x0 + w); an undefined value (a zero-size box) is
    returned as 1.0, which, like the official NaN, never exceeds a padding >= 1.

    Args:
        bbox_xywh: (4,). keypoints: (K, 3) x, y, v (or (K, 2): all treated as labelled).
    Returns:
        (K,) float64; -1 for unlabelled keypoints (v <= 0).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    fx0, fy0, fx1, fy1 = (float(v) for v in _fix_aspect(np.asarray(bbox_xywh, dtype=np.float64), ASPECT_RATIO, 1.0))
    w, h = fx1 - fx0, fy1 - fy0
    x1, y1 = fx0 + w, fy0 + h
    dx = np.maximum(np.maximum(fx0 - kp[:, 0], 0.0), np.maximum(kp[:, 0] - x1, 0.0))
    dy = np.maximum(np.maximum(fy0 - kp[:, 1], 0.0), np.maximum(kp[:, 1] - y1, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        pad = 1.0 + np.maximum(2 * dx / w, 2 * dy / h)
    pad = np.where(np.isnan(pad), 1.0, pad)
    if kp.shape[1] >= 3:
        pad[kp[:, 2] <= 0] = -1.0
    return pad


def relabel_visibility(ann: dict, extended: bool, padding: float = WINDOW_PADDING,
                       relabel: str = "geometric", rules: str = "official") -> np.ndarray:
    """Visibility flags (K,) int used by the evaluation of one GT annotation (spec 7.2 ``_prepare``).

    Standard mode: every v not in {1, 2} becomes 0 (``rules="pycocotools"``: the flags are kept as they are, so
    v=3 is scored at its coordinates). Extended mode: with ``pad_to_contain`` (stored, or computed when
    ``relabel="geometric"``), labelled keypoints outside the AW get v=3 and v=3 inside it gets v=1.
    """
    kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    vis = kp[:, 2].astype(np.int64)
    if not extended:
        if rules == "pycocotools":
            return vis
        return np.where((vis == 1) | (vis == 2), vis, 0)
    ptc = ann.get("pad_to_contain")
    if ptc is None and relabel == "geometric":
        ptc = pad_to_contain(ann["bbox"], kp)
    if ptc is not None:
        ptc = np.asarray(ptc, dtype=np.float64).copy()
        ptc[vis <= 0] = -1.0
        out = ptc > padding
        vis = vis.copy()
        vis[(vis > 2) & ~out] = 1
        vis[out] = 3
    return vis


def _edge_sq(x, y, box) -> np.ndarray:
    """Official e(q)^2: per-axis distance to the nearer AW side, squared and summed (nearest corner)."""
    x0, y0, x1, y1 = box
    return np.minimum(x - x0, x1 - x) ** 2 + np.minimum(y - y0, y1 - y) ** 2


def pair_keypoint_terms(dt_kpts: np.ndarray, gt_kpts: np.ndarray, gt_vis: np.ndarray, gt_bbox_xywh: np.ndarray,
                        gt_area: np.ndarray, extended: bool, presence_threshold: float | None = 0.5,
                        padding: float = WINDOW_PADDING, sigmas: np.ndarray = COCO_SIGMAS) -> np.ndarray:
    """Per-keypoint similarity exp(-d^2 / (2 area (2 sigma)^2)) of every (dt, gt) pair, before masking.

    Args:
        dt_kpts: (D, K, 3) x, y, presence. gt_kpts: (G, K, 2) x, y. gt_vis: (G, K) evaluation visibility
            (after ``relabel_visibility``). gt_bbox_xywh: (G, 4). gt_area: (G,) normalising area.
    Returns:
        (D, G, K) similarity per keypoint (the d^2 rule of the module docstring in extended mode; Euclidean in
        standard mode).
    """
    xd, yd = dt_kpts[:, None, :, 0], dt_kpts[:, None, :, 1]
    xg, yg = gt_kpts[None, :, :, 0], gt_kpts[None, :, :, 1]
    d2 = (xd - xg) ** 2 + (yd - yg) ** 2
    if extended:
        box = [c[None, :, None] for c in aw_xyxy(gt_bbox_xywh, padding=padding).T]
        c = np.clip(dt_kpts[:, None, :, 2], 0.0, 1.0)
        if presence_threshold is not None:
            # NaN presence is neither in nor out (Euclidean), as the official integer cast leaves it
            c = np.where(c >= presence_threshold, 1.0, np.where(c < presence_threshold, 0.0, np.nan))
        g_in = gt_vis[None] < 3
        e_pred, e_gt = _edge_sq(xd, yd, box), _edge_sq(xg, yg, box)
        d2 = np.where(~g_in & (c == 1), e_pred, d2)
        d2 = np.where(g_in & (c == 0), np.broadcast_to(e_gt, d2.shape), d2)
        d2 = np.where(~g_in & (c == 0), 0.0, d2)
    var = (2.0 * np.asarray(sigmas)) ** 2
    return np.exp(-d2 / var / (gt_area[None, :, None] + _EPS) / 2.0)


def _outside_box_terms(dt_kpts, boxes, gt_area, sigmas) -> np.ndarray:
    """(D, G, K) similarity for GTs without keypoints at a level: distance of dt outside the box only."""
    xd, yd = dt_kpts[:, None, :, 0], dt_kpts[:, None, :, 1]
    x0, y0, x1, y1 = [c[None, :, None] for c in boxes.T]
    dx = np.maximum(0.0, x0 - xd) + np.maximum(0.0, xd - x1)
    dy = np.maximum(0.0, y0 - yd) + np.maximum(0.0, yd - y1)
    var = (2.0 * np.asarray(sigmas)) ** 2
    return np.exp(-(dx ** 2 + dy ** 2) / var / (gt_area[None, :, None] + _EPS) / 2.0)


def similarity(dt_kpts: np.ndarray, gt_kpts: np.ndarray, gt_vis: np.ndarray, gt_bbox_xywh: np.ndarray,
               gt_area: np.ndarray, levels: list[int], params: EvalParams) -> np.ndarray:
    """OKS (standard) or Ex-OKS (extended) of every (dt, gt) pair at every visibility level.

    Level 0 averages over keypoints with v > 0, level i over v == levels[i-1]. A GT with no keypoint at a level
    gets the official fallback: distance of the prediction outside the AW (extended) or outside COCO's
    3x-enlarged box (standard), averaged over all K keypoints.

    Args:
        dt_kpts: (D, K, 3). gt_kpts: (G, K, 2). gt_vis: (G, K). gt_bbox_xywh: (G, 4). gt_area: (G,).
    Returns:
        (V, D, G) with V = 1 + len(levels).
    """
    D, G = len(dt_kpts), len(gt_kpts)
    V = 1 + len(levels)
    if D == 0 or G == 0:
        return np.zeros((V, D, G))
    terms = pair_keypoint_terms(dt_kpts, gt_kpts, gt_vis, gt_bbox_xywh, gt_area, params.extended,
                                params.presence_threshold, params.padding, params.sigmas)
    if params.extended:
        boxes = aw_xyxy(gt_bbox_xywh, padding=params.padding)
    else:
        b = np.asarray(gt_bbox_xywh, dtype=np.float64)
        boxes = np.stack([b[:, 0] - b[:, 2], b[:, 1] - b[:, 3], b[:, 0] + 2 * b[:, 2], b[:, 1] + 2 * b[:, 3]], 1)
    fallback = _outside_box_terms(dt_kpts, boxes, gt_area, params.sigmas).mean(axis=2)  # (D, G)
    out = np.empty((V, D, G))
    masks = [gt_vis > 0] + [gt_vis == lv for lv in levels]
    for v, m in enumerate(masks):
        n = m.sum(axis=1)  # (G,)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = (terms * m[None]).sum(axis=2) / n[None]
        out[v] = np.where(n[None] > 0, s, fallback)
    return out


@dataclass
class _GtBlock:
    ids: np.ndarray
    kpts: np.ndarray  # (G, K, 2)
    vis: np.ndarray  # (G, K)
    bbox: np.ndarray  # (G, 4) xywh
    area: np.ndarray  # (G,) normalising area
    crowd: np.ndarray  # (G,) bool
    ignore: np.ndarray  # (G, V) bool


def _prepare_gt(gt: dict, params: EvalParams) -> tuple[dict[int, _GtBlock], list[int], list[int], int]:
    anns_by_image: dict[int, list[dict]] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if a.get("category_id", 1) == 1 and a["image_id"] in anns_by_image:
            anns_by_image[a["image_id"]].append(a)
    vis_by_ann = {}
    levels_set: set[int] = set()
    n_out = 0
    for anns in anns_by_image.values():
        for a in anns:
            v = relabel_visibility(a, params.extended, params.padding, params.relabel, params.rules)
            vis_by_ann[id(a)] = v
            levels_set.update(int(x) for x in np.unique(v) if x > 0)
            n_out += int((v == 3).sum())
    levels = sorted(levels_set)
    blocks = {}
    for iid, anns in anns_by_image.items():
        G = len(anns)
        kp = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(G, NUM_KEYPOINTS, 3)
        vis = np.array([vis_by_ann[id(a)] for a in anns], dtype=np.int64).reshape(G, NUM_KEYPOINTS)
        bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(G, 4)
        if params.use_area:
            area = np.array([a.get("area", a["bbox"][2] * a["bbox"][3] * 0.53) for a in anns], dtype=np.float64)
        else:
            area = bbox[:, 2] * bbox[:, 3] * 0.53
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        ign = np.zeros((G, 1 + len(levels)), dtype=bool)
        ign[:, 0] = (vis > 0).sum(axis=1) == 0  # official: only the (relabelled) visibilities decide
        for i, lv in enumerate(levels):
            ign[:, i + 1] = (vis == lv).sum(axis=1) == 0
        if params.rules == "pycocotools":  # the num_keypoints field and the crowd flag decide
            ign[:, 0] = np.array([a.get("num_keypoints", int((np.asarray(a["keypoints"][2::3]) > 0).sum())) == 0
                                  for a in anns], dtype=bool)
            ign |= crowd[:, None]
        blocks[iid] = _GtBlock(np.array([a["id"] for a in anns], dtype=np.int64), kp[..., :2], vis, bbox,
                               area.reshape(G), crowd, ign)
    return blocks, sorted(anns_by_image), levels, n_out


@dataclass
class _DtBlock:
    ids: np.ndarray
    kpts: np.ndarray  # (D, K, 3), sorted by score, truncated to max_dets
    scores: np.ndarray
    area: np.ndarray


def _prepare_dt(results: list[dict], image_ids: set[int], params: EvalParams) -> dict[int, _DtBlock]:
    by_image: dict[int, list[tuple[int, dict]]] = {}
    # pycocotools loadRes: ids are 1-based positions; with a bbox in the first result, area = bbox w*h,
    # otherwise the keypoint extent.
    use_bbox = bool(results) and "bbox" in results[0] and results[0]["bbox"] != []
    for i, r in enumerate(results):
        if r.get("category_id", 1) != 1 or r["image_id"] not in image_ids:
            continue
        kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        if params.rules == "official" and not np.any(kp[:, 2] > 0):
            continue  # the official code drops detections whose presences are all <= 0 (both modes)
        by_image.setdefault(r["image_id"], []).append((i + 1, r))
    blocks = {}
    for iid, items in by_image.items():
        scores = np.array([r["score"] for _, r in items], dtype=np.float64)
        order = np.argsort(-scores, kind="mergesort")[: params.max_dets]
        items = [items[j] for j in order]
        kp = np.array([r["keypoints"] for _, r in items], dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        if use_bbox:
            area = np.array([r["bbox"][2] * r["bbox"][3] for _, r in items], dtype=np.float64)
        else:
            area = (kp[:, :, 0].max(1) - kp[:, :, 0].min(1)) * (kp[:, :, 1].max(1) - kp[:, :, 1].min(1))
        blocks[iid] = _DtBlock(np.array([i for i, _ in items], dtype=np.int64), kp, scores[order], area)
    return blocks


def _match(sim: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray, thrs: np.ndarray):
    """pycocotools' greedy matching for one image / level / area. sim: (D, G) with GTs already sorted so that
    ignored ones come last. Returns dt_match (T, D) gt index or -1, dt_ignore (T, D) bool, matched sim (T, D)."""
    T, (D, G) = len(thrs), sim.shape
    dtm = -np.ones((T, D), dtype=np.int64)
    dtig = np.zeros((T, D), dtype=bool)
    msim = np.zeros((T, D))
    for t, thr in enumerate(thrs):
        gtm = np.zeros(G, dtype=bool)
        for d in range(D):
            best = min(thr, 1 - 1e-10)
            m = -1
            for g in range(G):
                if gtm[g] and not crowd[g]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break
                if sim[d, g] < best:
                    continue
                best = sim[d, g]
                m = g
            if m == -1:
                continue
            dtig[t, d] = gt_ignore[m]
            dtm[t, d] = m
            msim[t, d] = best
            gtm[m] = True
    return dtm, dtig, msim


def evaluate_keypoints(gt: dict, results: list[dict], params: EvalParams | None = None,
                       image_ids=None) -> KeypointEvalResult:
    """COCO keypoint AP (standard) or Ex-mAP (extended) of ``results`` against a GT dataset dict.

    Args:
        gt: COCO dict with ``images`` and ``annotations`` (person category 1), e.g. ``CocoSet.dataset``.
        results: COCO keypoint results: image_id, category_id, keypoints [x, y, presence] * K, score, bbox.
        params: ``EvalParams``; default standard COCO keypoint AP under the official rules.
        image_ids: restrict to these images (default all images of ``gt``).
    """
    p = params or EvalParams()
    if p.rules not in ("official", "pycocotools"):
        raise ValueError(f"rules must be 'official' or 'pycocotools', got {p.rules!r}")
    if p.rules == "pycocotools" and p.extended:
        raise ValueError("rules='pycocotools' exists for standard AP only; Ex-OKS has only the official rules")
    official = p.rules == "official"
    loc_sum, loc_n = 0.0, 0
    blocks, all_ids, levels, n_out = _prepare_gt(gt, p)
    img_ids = all_ids if image_ids is None else sorted(set(int(i) for i in image_ids) & set(all_ids))
    dts = _prepare_dt(results, set(img_ids), p)
    V, A, T, R = 1 + len(levels), len(p.area_ranges), len(p.iou_thrs), len(p.rec_thrs)
    area_list = list(p.area_ranges.values())
    empty_kp = np.zeros((0, NUM_KEYPOINTS, 3))

    # per (v, a): lists over images of dt scores, matched flags, dt ignore, gt ignore
    acc = [[{"scores": [], "tp": [], "ig": [], "npig": 0} for _ in range(A)] for _ in range(V)]
    matches: dict[int, tuple[int, float]] = {}
    sims_out = {}
    for iid in img_ids:
        g = blocks[iid]
        d = dts.get(iid)
        D = 0 if d is None else len(d.ids)
        if len(g.ids) == 0 and D == 0:
            continue
        sim = similarity(d.kpts if D else empty_kp, g.kpts, g.vis, g.bbox, g.area, levels, p)
        sims_out[iid] = (d.ids if D else np.zeros(0, np.int64), g.ids, sim)
        for v in range(V):
            for a, (lo, hi) in enumerate(area_list):
                gig = g.ignore[:, v] | (g.area < lo) | (g.area > hi)
                order = np.argsort(gig, kind="mergesort")
                gig_s, crowd_s = gig[order], g.crowd[order]
                if D:
                    dtm, dtig, msim = _match(sim[v][:, order], gig_s, crowd_s, p.iou_thrs)
                    out_rng = (d.area < lo) | (d.area > hi)
                    dtig = dtig | ((dtm < 0) & out_rng[None])
                    if official and gig.all():
                        # official code: detections in images with no usable GT (none at all included) are
                        # ignored rather than counted as false positives (pycocotools counts them)
                        dtig[:] = True
                    hit = dtm >= 0
                    loc_sum += float(msim[hit].sum())
                    loc_n += int(hit.sum())
                    cell = acc[v][a]
                    cell["scores"].append(d.scores)
                    cell["tp"].append(dtm >= 0)
                    cell["ig"].append(dtig)
                    if v == 0 and a == 0:
                        for j in range(D):
                            if dtm[0, j] >= 0:
                                matches[int(d.ids[j])] = (int(g.ids[order][dtm[0, j]]), float(msim[0, j]))
                acc[v][a]["npig"] += int((~gig).sum())

    precision = -np.ones((T, V, R, A))
    recall = -np.ones((T, V, A))
    for v in range(V):
        for a in range(A):
            cell = acc[v][a]
            if cell["npig"] == 0:
                continue
            if cell["scores"]:
                scores = np.concatenate(cell["scores"])
                tp_all = np.concatenate(cell["tp"], axis=1)
                ig_all = np.concatenate(cell["ig"], axis=1)
            else:
                scores, tp_all, ig_all = np.zeros(0), np.zeros((T, 0), bool), np.zeros((T, 0), bool)
            inds = np.argsort(-scores, kind="mergesort")
            tps = tp_all[:, inds] & ~ig_all[:, inds]
            fps = ~tp_all[:, inds] & ~ig_all[:, inds]
            tp_sum = np.cumsum(tps, axis=1, dtype=np.float64)
            fp_sum = np.cumsum(fps, axis=1, dtype=np.float64)
            for t in range(T):
                tp, fp = tp_sum[t], fp_sum[t]
                nd = len(tp)
                rc = tp / cell["npig"]
                pr = tp / (fp + tp + _EPS)
                recall[t, v, a] = rc[-1] if nd else 0.0
                pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
                q = np.zeros(R)
                ri = np.searchsorted(rc, p.rec_thrs, side="left")
                ok = ri < nd
                q[ok] = pr[ri[ok]]  # unreachable recall thresholds keep precision 0, as pycocotools
                precision[t, v, :, a] = q

    def _mean(x):
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    names = list(p.area_ranges)
    ai = {n: i for i, n in enumerate(names)}
    stats = {
        "AP": _mean(precision[:, 0, :, ai["all"]]),
        "AP50": _mean(precision[0, 0, :, ai["all"]]),
        "AP75": _mean(precision[5, 0, :, ai["all"]]),
        "APm": _mean(precision[:, 0, :, ai["medium"]]) if "medium" in ai else -1.0,
        "APl": _mean(precision[:, 0, :, ai["large"]]) if "large" in ai else -1.0,
        "AR": _mean(recall[:, 0, ai["all"]]),
        "AR50": _mean(recall[0, 0, ai["all"]]),
        "AR75": _mean(recall[5, 0, ai["all"]]),
        "ARm": _mean(recall[:, 0, ai["medium"]]) if "medium" in ai else -1.0,
        "ARl": _mean(recall[:, 0, ai["large"]]) if "large" in ai else -1.0,
    }
    for i, lv in enumerate(levels):
        stats[f"AP (v={lv})"] = _mean(precision[:, i + 1, :, ai["all"]])
    stats["OKS"] = float(np.mean([s for _, s in matches.values()])) if matches else -1.0
    stats["loc_similarity"] = loc_sum / loc_n if loc_n else -1.0
    n_gt = sum(len(blocks[i].ids) for i in img_ids)
    n_dt = sum(len(dts[i].ids) for i in dts)
    return KeypointEvalResult(stats, levels, precision, recall, p, matches, sims_out, len(img_ids), n_gt, n_dt,
                              n_out)
