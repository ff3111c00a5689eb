"""Person detection: whole image, HOG on a real COCO photo, auto fallback, RT-DETR errors without transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probpose import detect
from probpose.detect import Detection, detect_people, nms
from probpose.errors import ProbPoseError
from probpose.image import load_image

# COCO val 1000 (CC BY 2.0): a group photo with one large standing person in front.
HOG_IMAGE_ID = 1000


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def hog_case(coco_val):
    folder, ann_file = coco_val
    data = json.loads(ann_file.read_text())
    info = next(i for i in data["images"] if i["id"] == HOG_IMAGE_ID)
    image = load_image(folder / info["file_name"])
    # Large, upright people: taller than 40% of the image and about twice as tall as wide.
    gts = []
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        if a["image_id"] == HOG_IMAGE_ID and h > 0.4 * info["height"] and h > 1.8 * w:
            gts.append([x, y, x + w, y + h])
    assert gts, "the chosen image must contain a large standing person"
    return image, gts


def test_whole_image_box():
    img = np.zeros((30, 50, 3), np.uint8)
    (d,) = detect_people(img, "whole")
    assert d.source == "whole" and d.score == 1.0
    np.testing.assert_array_equal(d.box, [0, 0, 49, 29])


def test_hog_finds_the_standing_person(hog_case, monkeypatch):
    image, gts = hog_case
    dets = detect_people(image, "hog")
    assert dets and all(d.source == "hog" for d in dets)
    best = max(_iou(d.box, g) for d in dets for g in gts)
    assert best > 0.3, best
    h, w = image.shape[:2]
    for d in dets:
        assert 0 <= d.box[0] < d.box[2] <= w - 1 and 0 <= d.box[1] < d.box[3] <= h - 1
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    # auto without transformers is HOG (same boxes).
    monkeypatch.setattr(detect, "_transformers_importable", lambda: False)
    auto = detect_people(image, "auto")
    assert [d.source for d in auto] == ["hog"] * len(dets)
    np.testing.assert_allclose(auto[0].box, dets[0].box)
    assert len(detect_people(image, "hog", max_people=1)) == 1


def test_auto_falls_back_to_whole_image_without_people(monkeypatch):
    monkeypatch.setattr(detect, "_transformers_importable", lambda: False)
    flat = np.full((300, 200, 3), 128, np.uint8)
    assert detect_people(flat, "hog") == []
    (d,) = detect_people(flat, "auto")
    assert d.source == "whole"
    tiny = np.zeros((40, 30, 3), np.uint8)  # smaller than one HOG window
    assert detect_people(tiny, "hog") == []
    assert detect_people(tiny, "auto")[0].source == "whole"


def test_rtdetr_without_transformers_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(detect, "_transformers_importable", lambda: False)
    detect._load_rtdetr.cache_clear()
    assert not detect.rtdetr_available()
    with pytest.raises(ProbPoseError, match="transformers"):
        detect_people(np.zeros((64, 64, 3), np.uint8), "rtdetr")


def test_bad_arguments():
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown detector"):
        detect_people(img, "yolo")
    with pytest.raises(ValueError, match="uint8 RGB"):
        detect_people(np.zeros((64, 64), np.uint8), "whole")
    with pytest.raises(ValueError, match="max_people"):
        detect_people(img, "whole", max_people=0)


def test_nms_hand_example():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) suppresses 0 (IoU 1) and 1 (IoU 90/110 = 0.82); box 2 is disjoint.
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.85), [3, 1, 2])


def test_detection_dataclass_fields():
    d = Detection(np.array([1.0, 2.0, 3.0, 4.0]), 0.5, "hog")
    assert d.box.shape == (4,) and d.source == "hog"
