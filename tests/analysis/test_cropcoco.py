"""CropCOCO generator (seeded protocol) and the official-release finder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from analysis.coco_io import load_coco
from analysis.cropcoco import (
    CropCocoConfig,
    crop_annotations,
    draw_keep_rectangle,
    find_official_cropcoco,
    generate_cropcoco,
)
from probpose.errors import AnnotationError

K = 17


def test_crop_annotations_by_hand():
    kp = [0, 0, 0] * K
    kp[0:3] = [20, 30, 2]  # inside the crop -> (10, 20)
    kp[3:6] = [5, 30, 1]  # left of the crop -> v=3, x = -5 kept
    kp[6:9] = [20, 95, 2]  # below the crop -> v=3
    ann = {"id": 7, "image_id": 1, "bbox": [0, 10, 40, 80], "area": 1600.0, "iscrowd": 0, "keypoints": kp,
           "num_keypoints": 3}
    far = {"id": 8, "image_id": 1, "bbox": [300, 10, 40, 80], "area": 1.0, "iscrowd": 0, "keypoints": kp,
           "num_keypoints": 3}
    out = crop_annotations([ann, far], (10, 10, 50, 60))
    assert len(out) == 1  # the second person lies outside the crop
    a = out[0]
    assert a["bbox"] == [0.0, 0.0, 30.0, 60.0]  # clipped to the 50x60 crop
    assert a["keypoints"][:9] == [10.0, 20.0, 2, -5.0, 20.0, 3, 10.0, 85.0, 3]
    assert a["keypoints"][9:12] == [0.0, 0.0, 0]  # unlabelled stays (0, 0, 0)
    assert a["num_keypoints"] == 1
    assert a["area"] == pytest.approx(1600.0 * (30 * 60) / (40 * 80))
    # pad_to_contain against the clipped 30x60 box made 3:4 (45x60, x in [-7.5, 37.5], y in [0, 60]):
    # x=-5 is inside -> 1.0; y=85 is 25 px below -> 1 + 2*25/60
    assert a["pad_to_contain"][:3] == pytest.approx([1.0, 1.0, 1 + 50 / 60], abs=1e-4)
    assert a["pad_to_contain"][3] == -1.0


def test_keep_rectangle_geometry():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y, w, h = draw_keep_rectangle([100, 50, 80, 160], (400, 300), rng)
        # context 1.25x = 100 x 200 around (140, 130), clipped to y >= 30 ... y <= 230 (fits)
        assert 90 <= x and x + w <= 190 and 30 <= y and y + h <= 230
        assert 0.69 * 100 <= w <= 0.9 * 100 and 0.69 * 200 <= h <= 0.9 * 200


def _toy_set(tmp_path, with_missing=False):
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 4):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(img_dir / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 160, "height": 120})
        kp = np.zeros((K, 3))
        kp[:, 0] = np.linspace(42, 98, K)
        kp[:, 1] = np.linspace(12, 108, K)
        kp[:, 2] = 2
        anns.append({"id": 100 + i, "image_id": i, "bbox": [40, 10, 60, 100], "area": 3000.0, "iscrowd": 0,
                     "num_keypoints": K, "keypoints": kp.ravel().tolist(), "category_id": 1})
    if with_missing:
        images.append({"id": 9, "file_name": "gone.jpg", "width": 160, "height": 120})
        anns.append({**anns[0], "id": 109, "image_id": 9})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return img_dir, ann


def test_generate_is_deterministic_and_marks_outside(tmp_path):
    img_dir, ann = _toy_set(tmp_path, with_missing=True)
    a = generate_cropcoco(img_dir, ann, tmp_path / "a", CropCocoConfig(seed=3), progress=False)
    b = generate_cropcoco(img_dir, ann, tmp_path / "b", CropCocoConfig(seed=3), progress=False)
    c = generate_cropcoco(img_dir, ann, tmp_path / "c", CropCocoConfig(seed=4), progress=False)
    ja, jb, jc = (json.loads(s.ann_file.read_text()) for s in (a, b, c))
    assert ja["images"] == jb["images"] and ja["annotations"] == jb["annotations"]
    assert ja["images"] != jc["images"]
    assert a.skipped["missing_image"] == 1 and "gone.jpg" in a.messages[0]
    assert a.num_images == 3 and a.num_out_keypoints > 0
    for im in ja["images"]:
        with Image.open(a.image_dir / im["file_name"]) as pil:
            assert pil.size == (im["width"], im["height"])
        cx, cy, cw, ch = im["crop_xywh"]
        assert (cw, ch) == (im["width"], im["height"])
    for an in ja["annotations"]:
        kp = np.array(an["keypoints"]).reshape(K, 3)
        im = next(i for i in ja["images"] if i["id"] == an["image_id"])
        inside = (kp[:, 0] >= 0) & (kp[:, 0] < im["width"]) & (kp[:, 1] >= 0) & (kp[:, 1] < im["height"])
        assert np.all((kp[:, 2] == 3) == ~inside)  # v=3 exactly for the keypoints outside the crop
        assert (kp[:, 2] == 3).any()  # every crop has something leaving the image
        x, y, w, h = an["bbox"]
        assert x >= 0 and y >= 0 and x + w <= im["width"] + 1e-6 and y + h <= im["height"] + 1e-6
    assert len(load_coco(a.ann_file).images) == 3


def test_find_official_layout(tmp_path, monkeypatch):
    root = tmp_path / "CropCOCO"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    (root / "annotations" / "person_keypoints_val2017.json").write_text("{}")
    img, ann = find_official_cropcoco(root)
    assert img == root / "val2017" and ann.name == "person_keypoints_val2017.json"
    with pytest.raises(AnnotationError, match="no CropCOCO release"):
        find_official_cropcoco(tmp_path / "elsewhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(AnnotationError, match="not in the Hugging Face cache"):
        find_official_cropcoco(None)
