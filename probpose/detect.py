"""Person boxes for top-down pose estimation when the user gives none.

Methods (``detect_people(image, method=...)``):
- ``"whole"``: the whole image as one box (always works; right for single-person crops).
- ``"hog"``: OpenCV's Dalal-Triggs HOG + linear SVM people detector (``cv2.HOGDescriptor`` with the default
  people SVM; ships inside opencv-python-headless 4.x, so it works offline). Fast, but it only finds upright,
  roughly fully visible people taller than ~100 px at the working resolution. Its 64x128 window holds the person
  with a ~16 px margin on each side (Dalal & Triggs 2005), so we shrink every HOG box by that margin
  (1/4 of the width and 1/8 of the height on each side) to approximate a tight person box; the activation
  window then adds its usual x1.25 context.
- ``"rtdetr"``: a real pretrained detector (RT-DETR, ``PekingU/rtdetr_r18vd`` by default, env
  ``PROBPOSE_RTDETR_MODEL``) through Hugging Face transformers (a dependency of the app). Only the COCO "person"
  class is kept. The weights come from the local HF cache, or are downloaded once when the Hub can be used.
- ``"auto"`` (``auto_detector()`` says which and why): rtdetr when transformers is importable and the weights are
  in the local HF cache, or the Hub can be reached (``probpose.hub.hub_status``: a few seconds at most,
  ``HF_HUB_OFFLINE`` honoured, always online on a Space); HOG only otherwise (offline), or when loading RT-DETR
  fails. When nobody is found the result is **empty**; the whole image is used only when asked
  (``whole_if_none=True``), and such a box has the source ``"whole (no person found)"``.
``Detection.source`` says which method made each box.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import cv2
import numpy as np

from probpose.errors import ProbPoseError

__all__ = ["Detection", "detect_people", "nms", "rtdetr_available", "auto_detector", "RTDETR_MODEL_ID", "HOG_MARGIN",
           "WHOLE_FALLBACK"]

RTDETR_MODEL_ID = os.environ.get("PROBPOSE_RTDETR_MODEL", "PekingU/rtdetr_r18vd")
# Margin of the HOG person window on each side, as a fraction of the window (16/64 wide, 16/128 tall).
HOG_MARGIN = (0.25, 0.125)
_HOG_LONG_SIDE = 640  # detect on a copy whose long side is at most this (speed)
_DEFAULT_MIN_SCORE = {"hog": 0.3, "rtdetr": 0.5}
_METHODS = ("auto", "whole", "hog", "rtdetr")
WHOLE_FALLBACK = "whole (no person found)"  # source of the explicit whole-image fallback box


@dataclass
class Detection:
    """One person box.

    Attributes:
        box: (4,) float64 xyxy image px.
        score: detector confidence (HOG: SVM margin, unbounded; RT-DETR: probability; whole: 1.0).
        source: ``"whole"``, ``"hog"`` or ``"rtdetr:<model id>"``.
    """

    box: np.ndarray
    score: float
    source: str


def detect_people(image: np.ndarray, method: str = "auto", *, min_score: float | None = None,
                  max_people: int = 20, whole_if_none: bool = False) -> list[Detection]:
    """Find person boxes in an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB (``probpose.image.load_image`` output).
        method: ``"auto"``, ``"whole"``, ``"hog"`` or ``"rtdetr"`` (see module docstring).
        min_score: drop detections below this score; default 0.3 for hog, 0.5 for rtdetr.
        max_people: keep at most this many boxes, highest score first.
        whole_if_none: when the detector finds nobody, return the whole image as one box with the source
            ``WHOLE_FALLBACK`` instead of an empty list.
    Returns:
        Detections sorted by score, descending; empty when nobody is found (unless ``whole_if_none``).
    Raises:
        ValueError: unknown method or a malformed image.
        ProbPoseError: ``"rtdetr"`` asked for but transformers is missing or the model cannot be loaded.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown detector {method!r}; choose one of {', '.join(_METHODS)}")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}; use load_image")
    if max_people < 1:
        raise ValueError("max_people must be >= 1")
    if method == "whole":
        return [_whole(img)]
    if method == "hog":
        found = _hog(img, _score(min_score, "hog"), max_people)
    elif method == "rtdetr":
        found = _rtdetr(img, _score(min_score, "rtdetr"), max_people, local_only=False)
    else:
        found = None
        choice, _ = auto_detector()
        if choice == "rtdetr":
            try:
                found = _rtdetr(img, _score(min_score, "rtdetr"), max_people, local_only=not _hub_online())
            except ProbPoseError:
                found = None  # a broken cache or a failed download must not stop the demo: HOG below
        if found is None:
            found = _hog(img, _score(min_score, "hog"), max_people)
    if not found and whole_if_none:
        return [Detection(_whole(img).box, 1.0, WHOLE_FALLBACK)]
    return found


def _hub_online() -> bool:
    from probpose.hub import hub_status

    return hub_status().online


def auto_detector(model_id: str | None = None) -> tuple[str, str]:
    """Which detector ``method="auto"`` uses here, and why: ("rtdetr" | "hog", reason). Contacts nothing but the
    quick reachability check of ``probpose.hub`` (and only when the weights are not cached)."""
    repo = model_id or RTDETR_MODEL_ID
    if not _transformers_importable():
        return "hog", "transformers is not installed (pip install transformers)"
    if rtdetr_available(repo):
        return "rtdetr", f"RT-DETR {repo} from the local Hugging Face cache"
    from probpose.hub import hub_status

    status = hub_status()
    if status.online:
        return "rtdetr", f"RT-DETR {repo}, downloaded once from the Hub ({status.reason})"
    return "hog", f"offline HOG detector: RT-DETR {repo} is not cached and {status.reason}"


def _score(min_score: float | None, method: str) -> float:
    return _DEFAULT_MIN_SCORE[method] if min_score is None else float(min_score)


def _whole(img: np.ndarray) -> Detection:
    h, w = img.shape[:2]
    # The official top-down demo's default box for a whole image is [0, 0, w, h] (mmpose inference_topdown).
    return Detection(np.array([0.0, 0.0, float(w), float(h)]), 1.0, "whole")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression. boxes (N,4) xyxy, scores (N,). Returns kept indices, best first."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


# --- HOG people detector: OpenCV's own (Dalal & Triggs 2005, default people SVM) --------------------------------


@functools.lru_cache(maxsize=1)
def _hog_descriptor() -> cv2.HOGDescriptor:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def _hog(img: np.ndarray, min_score: float, max_people: int) -> list[Detection]:
    h, w = img.shape[:2]
    factor = min(1.0, _HOG_LONG_SIDE / max(h, w))
    small = img if factor == 1.0 else cv2.resize(img, (round(w * factor), round(h * factor)),
                                                  interpolation=cv2.INTER_AREA)
    if small.shape[0] < 128 or small.shape[1] < 64:
        return []  # smaller than one HOG window
    # groupThreshold=2: a window must be confirmed by neighbours (a lone hit is usually clutter).
    rects, weights = _hog_descriptor().detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05,
                                                        groupThreshold=2)
    if len(rects) == 0:
        return []
    rects = np.asarray(rects, np.float64).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / factor
    scores = np.asarray(weights, np.float64).reshape(-1)
    ok = scores >= min_score
    boxes, scores = boxes[ok], scores[ok]
    keep = nms(boxes, scores, 0.4)[:max_people]
    out = []
    for i in keep:
        x1, y1, x2, y2 = boxes[i]
        mx, my = HOG_MARGIN[0] * (x2 - x1), HOG_MARGIN[1] * (y2 - y1)
        box = np.array([x1 + mx, y1 + my, x2 - mx, y2 - my])
        # Detector boxes reach the window builder as the detector gives them, clipped at most to [0, w] x [0, h]
        # as mmdet clips its own boxes; only GT boxes get the dataset's [0, w-1] clipping (docs/inference.md).
        box[0::2] = np.clip(box[0::2], 0.0, float(w))
        box[1::2] = np.clip(box[1::2], 0.0, float(h))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(Detection(box, float(scores[i]), "hog"))
    return out


def _transformers_importable() -> bool:
    return importlib.util.find_spec("transformers") is not None


def rtdetr_available(model_id: str | None = None) -> bool:
    """True when transformers is importable and the RT-DETR weights are in the local HF cache (no network)."""
    if not _transformers_importable():
        return False
    from probpose.hub import cached_file

    repo = model_id or RTDETR_MODEL_ID
    if os.path.isdir(repo):  # a local folder given as the model id
        return os.path.isfile(os.path.join(repo, "config.json"))
    if cached_file(repo, "config.json") is None:
        return False
    return any(cached_file(repo, f) is not None for f in ("model.safetensors", "pytorch_model.bin"))


@functools.lru_cache(maxsize=2)
def _load_rtdetr(model_id: str, local_only: bool):
    if not _transformers_importable():
        raise ProbPoseError("the 'rtdetr' detector needs Hugging Face transformers, which is not installed: "
                            "pip install transformers (optional extra), or use --detector hog / whole")
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from probpose.hub import hf_cache_dir, hub_offline

    offline = local_only or hub_offline()
    kw = {"local_files_only": offline, "cache_dir": None if os.path.isdir(model_id) else str(hf_cache_dir())}
    try:
        processor = AutoImageProcessor.from_pretrained(model_id, **kw)
        model = AutoModelForObjectDetection.from_pretrained(model_id, **kw).eval()
    except Exception as e:  # OSError / HF errors / connection errors all mean "not available"
        where = "in the local Hugging Face cache" if offline else "locally or from the Hub"
        raise ProbPoseError(f"could not load the RT-DETR model {model_id!r} {where}: {type(e).__name__}: {e}. "
                            "Download it once with network access (hf download "
                            f"{model_id}), or use --detector hog / whole") from e
    person = [i for i, name in model.config.id2label.items() if str(name).lower() == "person"]
    if not person:
        raise ProbPoseError(f"detector {model_id!r} has no 'person' class in its labels")
    return processor, model, int(person[0])


def _rtdetr(img: np.ndarray, min_score: float, max_people: int, local_only: bool) -> list[Detection]:
    import torch

    processor, model, person_id = _load_rtdetr(RTDETR_MODEL_ID, local_only)
    h, w = img.shape[:2]
    inputs = processor(images=img, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    res = processor.post_process_object_detection(outputs, target_sizes=[(h, w)], threshold=min_score)[0]
    labels = res["labels"].cpu().numpy()
    scores = res["scores"].float().cpu().numpy()
    boxes = res["boxes"].float().cpu().numpy().astype(np.float64)
    sel = labels == person_id
    boxes, scores = boxes[sel], scores[sel]
    keep = nms(boxes, scores, 0.7)[:max_people]  # DETR-style outputs are nearly duplicate-free already
    out = []
    for i in keep:
        b = boxes[i].copy()
        b[0::2] = np.clip(b[0::2], 0.0, float(w))  # as mmdet: [0, w], not the dataset's [0, w-1]
        b[1::2] = np.clip(b[1::2], 0.0, float(h))
        if b[2] > b[0] and b[3] > b[1]:
            out.append(Detection(b, float(scores[i]), f"rtdetr:{RTDETR_MODEL_ID}"))
    return out
