"""Person detection: whole image, HOG on a real COCO photo, auto choice (RT-DETR online / cached, HOG offline),
the explicit whole-image fallback, RT-DETR errors without transformers."""

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
    np.testing.assert_array_equal(d.box, [0, 0, 50, 30])  # official default box [0, 0, w, h]


def test_hog_finds_the_standing_person(hog_case, monkeypatch):
    image, gts = hog_case
    dets = detect_people(image, "hog")
    assert dets and all(d.source == "hog" for d in dets)
    best = max(_iou(d.box, g) for d in dets for g in gts)
    assert best > 0.3, best
    h, w = image.shape[:2]
    for d in dets:
        assert 0 <= d.box[0] < d.box[2] <= w and 0 <= d.box[1] < d.box[3] <= h
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    # auto without transformers is HOG (same boxes).
    monkeypatch.setattr(detect, "_transformers_importable", lambda: False)
    auto = detect_people(image, "auto")
    assert [d.source for d in auto] == ["hog"] * len(dets)
    np.testing.assert_allclose(auto[0].box, dets[0].box)
    assert len(detect_people(image, "hog", max_people=1)) == 1


def test_auto_says_nobody_and_uses_the_whole_image_only_when_asked(monkeypatch):
    monkeypatch.setattr(detect, "_transformers_importable", lambda: False)
    flat = np.full((300, 200, 3), 128, np.uint8)
    assert detect_people(flat, "hog") == []
    assert detect_people(flat, "auto") == []  # "no person found" is an empty answer, not a silent whole box
    (d,) = detect_people(flat, "auto", whole_if_none=True)
    assert d.source == detect.WHOLE_FALLBACK == "whole (no person found)"
    np.testing.assert_array_equal(d.box, [0, 0, 200, 300])
    tiny = np.zeros((40, 30, 3), np.uint8)  # smaller than one HOG window
    assert detect_people(tiny, "hog") == []
    assert detect_people(tiny, "hog", whole_if_none=True)[0].source == detect.WHOLE_FALLBACK


def test_auto_detector_is_rtdetr_online_and_hog_offline(monkeypatch, tmp_path):
    from probpose import hub

    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PROBPOSE_ONLINE", "SPACE_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(detect, "_transformers_importable", lambda: True)
    hub.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    method, why = detect.auto_detector()
    assert method == "hog" and "offline" in why and "HF_HUB_OFFLINE" in why
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("SPACE_ID", "org/space")  # a Space is online: RT-DETR is downloaded once
    method, why = detect.auto_detector()
    assert method == "rtdetr" and "downloaded once" in why
    monkeypatch.setattr(detect, "_transformers_importable", lambda: False)
    assert detect.auto_detector()[0] == "hog"
    hub.reset()


@pytest.mark.slow
def test_auto_uses_rtdetr_from_the_hf_cache(monkeypatch, tmp_path, hog_case):
    """A tiny random RT-DETR saved by transformers into a fake HF cache under the default model id: auto picks it
    offline, and its boxes carry the rtdetr source (random weights: min_score 0 keeps every query)."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor

    from probpose import hub

    snap = tmp_path / "hub" / f"models--{detect.RTDETR_MODEL_ID.replace('/', '--')}" / "snapshots" / "abc123"
    cfg = RTDetrConfig(
        num_labels=2, id2label={0: "person", 1: "bicycle"}, label2id={"person": 0, "bicycle": 1}, d_model=32,
        encoder_hidden_dim=32, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_layers=1, decoder_layers=1,
        num_queries=10, encoder_attention_heads=2, decoder_attention_heads=2, use_pretrained_backbone=False,
        backbone_config={"model_type": "rt_detr_resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 32, 64],
                         "depths": [1, 1, 1, 1], "out_features": ["stage2", "stage3", "stage4"]},
        encoder_in_channels=[16, 32, 64], decoder_in_channels=[32, 32, 32], num_denoising=0)
    RTDetrForObjectDetection(cfg).save_pretrained(snap)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset()
    detect._load_rtdetr.cache_clear()
    try:
        assert detect.rtdetr_available()
        assert detect.auto_detector()[0] == "rtdetr"
        image, _ = hog_case
        dets = detect_people(image, "auto", min_score=0.0, max_people=5)
        assert dets and all(d.source == f"rtdetr:{detect.RTDETR_MODEL_ID}" for d in dets)
    finally:
        detect._load_rtdetr.cache_clear()
        hub.reset()


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
