"""Robust COCO person-keypoint I/O: load and clean annotation files, list the people to run, write results.

Bad input never stops a whole evaluation: malformed items are skipped or repaired with a message recorded in
``CocoSet.issues`` and counted in ``CocoSet.counts``; only an unreadable, empty or structurally wrong file raises
``AnnotationError``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probpose.constants import KEYPOINT_NAMES, NUM_KEYPOINTS, SKELETON
from probpose.errors import AnnotationError

__all__ = [
    "PERSON_CATEGORY",
    "CocoSet",
    "Person",
    "load_coco",
    "coco_from_dict",
    "people_to_run",
    "clip_gt_box",
    "to_pycocotools",
    "write_results",
    "load_results",
    "keypoints_array",
]

PERSON_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(KEYPOINT_NAMES),
    "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
}
MAX_ISSUES_KEPT = 200  # the report shows counts; the first messages are kept for the reader


@dataclass
class CocoSet:
    """A cleaned COCO person-keypoint set.

    dataset: pycocotools-loadable dict (``images``, ``annotations``, ``categories``) holding only valid items.
    images: image id -> image entry. anns_by_image: image id -> list of its annotations (possibly empty).
    issues: human-readable messages about what was skipped or repaired (first ``MAX_ISSUES_KEPT``).
    counts: how many of each problem were met (``malformed_annotation``, ``missing_image_entry``, ``crowd``,
        ``zero_area_box``, ``no_keypoints``, ``images_without_people``, ``bad_keypoints``, ``missing_area``...).
    """

    dataset: dict
    images: dict[int, dict]
    anns_by_image: dict[int, list[dict]]
    path: Path | None = None
    issues: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def annotations(self) -> list[dict]:
        return self.dataset["annotations"]

    @property
    def num_people(self) -> int:
        """Non-crowd annotations with at least one labelled keypoint."""
        return sum(1 for a in self.annotations if not a.get("iscrowd", 0) and a["num_keypoints"] > 0)

    def note(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.issues) < MAX_ISSUES_KEPT:
            self.issues.append(message)

    def subset(self, image_ids) -> CocoSet:
        """The same set restricted to ``image_ids`` (issues and counts are carried over)."""
        keep = set(int(i) for i in image_ids)
        ds = dict(self.dataset)
        ds["images"] = [im for im in self.dataset["images"] if im["id"] in keep]
        ds["annotations"] = [a for a in self.dataset["annotations"] if a["image_id"] in keep]
        return CocoSet(ds, {i: self.images[i] for i in self.images if i in keep},
                       {i: self.anns_by_image[i] for i in self.anns_by_image if i in keep},
                       self.path, list(self.issues), Counter(self.counts))


@dataclass
class Person:
    """One ground-truth person to run the model on.

    box_xyxy: (4,) image px, the annotation box clipped to the image as the official dataset does
    (``clip_gt_box``). keypoints: (K, 3) GT x, y, v.
    """

    image_id: int
    ann_id: int
    box_xyxy: np.ndarray
    keypoints: np.ndarray
    area: float


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def keypoints_array(ann: dict) -> np.ndarray:
    """(K, 3) float64 x, y, v of an annotation's ``keypoints`` list."""
    return np.asarray(ann["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)


def load_coco(path: str | Path) -> CocoSet:
    """Read and clean a COCO person-keypoint JSON.

    Raises:
        AnnotationError: the file is missing, not JSON, empty, or lacks ``images`` / ``annotations`` lists.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}; give the path of a COCO person_keypoints_*.json file")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise AnnotationError(f"annotation file {path} is empty; it should be a COCO JSON with images and annotations")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"annotation file {path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                              f"{e.colno}); check that the download or copy is complete") from e
    cs = coco_from_dict(data, source=str(path))
    cs.path = path
    return cs


def coco_from_dict(data, source: str = "annotations") -> CocoSet:
    """Clean an in-memory COCO dict (see ``load_coco``). The input is not modified."""
    if not isinstance(data, dict):
        raise AnnotationError(f"{source}: the top level must be a JSON object with 'images' and 'annotations', "
                              f"got {type(data).__name__}")
    if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations", []), list):
        raise AnnotationError(f"{source}: 'images' and 'annotations' must be lists; is this a COCO annotation file "
                              "(not a results file)?")
    if not data["images"]:
        raise AnnotationError(f"{source}: the file lists no images; nothing to evaluate")

    cs = CocoSet(dataset={}, images={}, anns_by_image={})
    images: list[dict] = []
    for i, im in enumerate(data["images"]):
        ok = (isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str)
              and _finite_number(im.get("width")) and _finite_number(im.get("height"))
              and im["width"] > 0 and im["height"] > 0)
        if not ok:
            cs.note("malformed_image", f"image entry #{i} skipped: it needs an integer id, a file_name and positive "
                                       f"width/height (got {str(im)[:120]})")
            continue
        if im["id"] in cs.images:
            cs.note("duplicate_image", f"image id {im['id']} listed twice; the second entry is skipped")
            continue
        im = dict(im)
        cs.images[im["id"]] = im
        cs.anns_by_image[im["id"]] = []
        images.append(im)
    if not images:
        raise AnnotationError(f"{source}: none of the {len(data['images'])} image entries is usable")

    cats = data.get("categories") or [PERSON_CATEGORY]
    person_ids = {c.get("id") for c in cats if isinstance(c, dict) and c.get("name") == "person"} or {1}
    anns: list[dict] = []
    used_ids = {a.get("id") for a in data.get("annotations", []) if isinstance(a, dict)}
    next_id = max([i for i in used_ids if isinstance(i, int)] + [0]) + 1
    seen_ids: set[int] = set()
    for i, a in enumerate(data.get("annotations", [])):
        if not isinstance(a, dict):
            cs.note("malformed_annotation", f"annotation #{i} skipped: not an object")
            continue
        if a.get("category_id", 1) not in person_ids:
            continue  # other categories are not ours to evaluate
        a = dict(a)
        aid = a.get("id")
        if not isinstance(aid, int) or aid in seen_ids:
            a["id"] = next_id
            next_id += 1
            cs.note("missing_annotation_id", f"annotation #{i} had no unique integer id; given id {a['id']}")
        seen_ids.add(a["id"])
        if a.get("image_id") not in cs.images:
            cs.note("missing_image_entry", f"annotation {a['id']} skipped: its image_id {a.get('image_id')} is not "
                                           "in 'images'")
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)):
            cs.note("malformed_annotation", f"annotation {a['id']} skipped: bbox must be 4 finite numbers "
                                            f"[x, y, w, h], got {bbox}")
            continue
        a["bbox"] = [float(v) for v in bbox]
        crowd = bool(a.get("iscrowd", 0))
        a["iscrowd"] = int(crowd)
        kp = a.get("keypoints")
        if kp is None and crowd:
            kp = [0] * (3 * NUM_KEYPOINTS)
        if not (isinstance(kp, (list, tuple)) and len(kp) == 3 * NUM_KEYPOINTS):
            cs.note("malformed_annotation", f"annotation {a['id']} skipped: keypoints must be a list of "
                                            f"{3 * NUM_KEYPOINTS} numbers (x, y, v per keypoint)")
            continue
        kp_arr = np.array([v if _finite_number(v) else np.nan for v in kp], dtype=np.float64).reshape(-1, 3)
        bad = ~np.isfinite(kp_arr).all(axis=1) | (kp_arr[:, 2] < 0) | (kp_arr[:, 2] > 3)
        if bad.any():
            cs.note("bad_keypoints", f"annotation {a['id']}: {int(bad.sum())} keypoint(s) with non-finite values or "
                                     "v outside 0..3 set to unlabelled (v=0)")
            kp_arr[bad] = 0.0
        kp_arr[:, 2] = np.round(kp_arr[:, 2])
        a["keypoints"] = [float(v) if j % 3 != 2 else int(v) for j, v in enumerate(kp_arr.ravel())]
        if "num_keypoints" not in a or not isinstance(a["num_keypoints"], int):
            a["num_keypoints"] = int((kp_arr[:, 2] > 0).sum())
        if not _finite_number(a.get("area")):
            a["area"] = float(bbox[2] * bbox[3] * 0.53)  # the official fallback when an area is absent
            cs.note("missing_area", f"annotation {a['id']}: no area; using bbox w*h*0.53 = {a['area']:.1f}")
        if crowd:
            cs.counts["crowd"] += 1
        elif bbox[2] <= 0 or bbox[3] <= 0:
            cs.note("zero_area_box", f"annotation {a['id']} (image {a['image_id']}): box {bbox} has zero area; "
                                     "kept as ground truth but no prediction is run for it")
        elif a["num_keypoints"] == 0:
            cs.counts["no_keypoints"] += 1
        a["category_id"] = 1
        anns.append(a)
        cs.anns_by_image[a["image_id"]].append(a)

    cs.counts["images_without_people"] = sum(
        1 for v in cs.anns_by_image.values() if not any(a["num_keypoints"] > 0 and not a["iscrowd"] for a in v))
    cs.dataset = {"info": data.get("info", {}), "licenses": data.get("licenses", []), "images": images,
                  "annotations": anns, "categories": [PERSON_CATEGORY]}
    return cs


def clip_gt_box(bbox_xywh, width: float, height: float) -> np.ndarray:
    """A GT box clipped to the image exactly as the official top-down dataset does before building the window.

    x1 = clip(x, 0, w-1), y1 = clip(y, 0, h-1), x2 = clip(x+w, 0, w-1), y2 = clip(y+h, 0, h-1), stored as float32
    (``base_coco_style_dataset.parse_data_info``); returned as float64 holding those float32 values.

    Args:
        bbox_xywh: (4,) annotation box. width, height: image size from the annotation file.
    Returns:
        (4,) xyxy image px.
    """
    x, y, w, h = (float(v) for v in bbox_xywh)
    box = [np.clip(x, 0, width - 1), np.clip(y, 0, height - 1), np.clip(x + w, 0, width - 1),
           np.clip(y + h, 0, height - 1)]
    return np.array(box, dtype=np.float32).astype(np.float64)


def people_to_run(cs: CocoSet, image_ids=None) -> list[Person]:
    """Ground-truth people the model is run on, as the official top-down dataset selects them.

    A person is run when it is not crowd, its ``num_keypoints`` is not 0, its box clipped to the image
    (``clip_gt_box``) has positive width and height, and some keypoint coordinate is > 0 (``_is_valid_instance``).
    The others stay in the ground truth: people with ``num_keypoints == 0`` are never predicted, so they are misses
    wherever they are not ignored (Ex-AP counts CropCOCO people whose keypoints are all outside the image).
    """
    ids = sorted(cs.images) if image_ids is None else [int(i) for i in image_ids]
    out = []
    for iid in ids:
        im = cs.images.get(iid)
        if im is None:
            continue
        for a in cs.anns_by_image.get(iid, []):
            if a["iscrowd"] or a["num_keypoints"] == 0:
                continue
            box = clip_gt_box(a["bbox"], float(im["width"]), float(im["height"]))
            kp = keypoints_array(a)
            if box[2] - box[0] <= 0 or box[3] - box[1] <= 0 or np.max(kp[:, :2]) <= 0:
                continue
            out.append(Person(iid, a["id"], box, kp, float(a["area"])))
    return out


def to_pycocotools(dataset: dict):
    """A pycocotools ``COCO`` built from a dict, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def write_results(results: list[dict], path: str | Path) -> Path:
    """Write a COCO keypoint results JSON (list of dicts with image_id, category_id, keypoints, score...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, separators=(",", ":")))
    return path


def load_results(path: str | Path) -> list[dict]:
    """Read a COCO results JSON; raises ``AnnotationError`` with a clear message when it is not one."""
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AnnotationError(f"cannot read results file {path}: {e}") from e
    if not isinstance(data, list):
        raise AnnotationError(f"results file {path} must be a JSON list of detections")
    return data


def noisy_results(cs, *, seed: int = 0, extra: int = 20) -> list[dict]:
    """COCO results made from the GT of `cs`: keypoints jittered by 4% of the box, random presence and score,
    plus `extra` copies shifted 40 px sideways (false positives). For benchmarks and evaluator cross-checks."""
    rng = np.random.default_rng(seed)
    k = NUM_KEYPOINTS
    res = []
    for a in cs.annotations:
        if a["iscrowd"]:
            continue
        kp = np.array(a["keypoints"], float).reshape(k, 3)
        x, y, w, h = a["bbox"]
        kp[:, 0] = np.where(kp[:, 2] > 0, kp[:, 0], x + w / 2) + rng.normal(0, 0.04 * max(w, 1), k)
        kp[:, 1] = np.where(kp[:, 2] > 0, kp[:, 1], y + h / 2) + rng.normal(0, 0.04 * max(h, 1), k)
        kp[:, 2] = rng.uniform(0, 1, k)
        res.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(),
                    "score": float(rng.uniform()), "bbox": a["bbox"]})
    for r in list(res[:extra]):
        kp = np.array(r["keypoints"])
        kp[0::3] += 40
        res.append({**r, "keypoints": kp.tolist(), "score": float(rng.uniform())})
    return res
