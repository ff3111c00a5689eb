"""Bad input: malformed / empty JSON, missing images, zero-area boxes, crowds, images without people, v=0."""

from __future__ import annotations

import json

import pytest

from analysis.coco_io import coco_from_dict, load_coco, people_to_run
from probpose.errors import AnnotationError

K = 17


def _kp(v=2):
    return [10, 10, v] * K


def test_unreadable_files_raise_clear_errors(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_coco(tmp_path / "nope.json")
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(AnnotationError, match="empty"):
        load_coco(tmp_path / "empty.json")
    (tmp_path / "bad.json").write_text('{"images": [')
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_coco(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(AnnotationError, match="top level"):
        load_coco(tmp_path / "list.json")
    (tmp_path / "noimg.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(AnnotationError, match="no images"):
        load_coco(tmp_path / "noimg.json")


def test_bad_items_are_skipped_and_counted():
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80},  # no people
                   {"id": "x", "file_name": "c.jpg"}],  # malformed
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [5, 5, 30, 40], "keypoints": _kp(), "area": 900.0},
            {"id": 11, "image_id": 1, "bbox": [5, 5, 0, 40], "keypoints": _kp(), "area": 0.0},  # zero area
            {"id": 12, "image_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1, "area": 2500.0},  # crowd
            {"id": 13, "image_id": 99, "bbox": [5, 5, 30, 40], "keypoints": _kp()},  # missing image entry
            {"id": 14, "image_id": 1, "bbox": [5, 5, 30], "keypoints": _kp()},  # malformed box
            {"id": 15, "image_id": 1, "bbox": [5, 5, 30, 40], "keypoints": [1, 2, 3]},  # short keypoints
            {"id": 16, "image_id": 1, "bbox": [50, 5, 30, 40], "keypoints": [0, 0, 0] * K},  # v=0 at (0, 0)
            {"id": 17, "image_id": 1, "bbox": [50, 5, 30, 40], "keypoints": [float("nan"), 1, 2] + _kp()[3:]},
        ],
    }
    cs = coco_from_dict(data)
    assert sorted(cs.images) == [1, 2]
    assert [a["id"] for a in cs.annotations] == [10, 11, 12, 16, 17]
    c = cs.counts
    assert (c["malformed_image"], c["zero_area_box"], c["crowd"], c["missing_image_entry"]) == (1, 1, 1, 1)
    assert c["malformed_annotation"] == 2 and c["bad_keypoints"] == 1 and c["no_keypoints"] == 1
    assert c["images_without_people"] == 1
    assert c["missing_area"] == 2  # ids 16, 17 had no area: bbox w*h*0.53
    assert cs.anns_by_image[1][3]["area"] == pytest.approx(30 * 40 * 0.53)
    assert cs.anns_by_image[1][4]["keypoints"][:3] == [0.0, 0.0, 0]  # the NaN keypoint became unlabelled
    assert all(msg for msg in cs.issues)
    # people run (the official runner's selection): not the crowd, not the zero-area box, not the person with
    # num_keypoints == 0 (id 16)
    assert [p.ann_id for p in people_to_run(cs)] == [10, 17]
    assert cs.num_people == 3  # 10, 11 (zero-area but labelled), 17


def test_real_subset_loads_clean(coco_val):
    _, ann = coco_val
    cs = load_coco(ann)
    assert len(cs.images) == 155 and cs.num_people == 468
    assert cs.counts["crowd"] == 1 and not cs.counts["malformed_annotation"]
