"""CropCOCO: generate a seeded CropCOCO-style set from any COCO person-keypoint set, or find the official release.

Our protocol (the official generation script is not published; see docs/analysis.md):
1. For each source image, up to ``max_crops_per_image`` target people (non-crowd, >= ``min_keypoints`` labelled
   keypoints, box >= ``min_box_side`` px) are drawn in a seeded random order.
2. For a target, the context box is its box scaled x1.25 about the centre, clipped to the image; the keep rectangle
   has size (floor(ctx_w * rw), floor(ctx_h * rh)) with rw, rh ~ U(0.7, 0.9) and a uniform integer top-left inside
   the context box (as ``RandomEdgesBlackout`` does in training). The image is really cropped to it.
3. A draw is accepted only if at least one labelled keypoint of the target falls outside the crop (up to
   ``max_tries`` draws; otherwise no crop is made for that target: "nothing leaves the image").
4. Every annotation of the image is shifted into the crop. Boxes are clipped to the crop (the model and Ex-OKS then
   build the same activation window); people whose clipped box is empty are dropped. Labelled keypoints outside
   the crop are marked v=3 **keeping their true (outside) coordinates**; unlabelled ones stay (0, 0, 0).
   ``num_keypoints`` counts in-image labelled keypoints (v in {1, 2}), so standard AP ignores people left with
   none. ``pad_to_contain`` is stored (computed against the clipped box), so every evaluator relabels out-of-AW
   keypoints the same way (a v=3 keypoint that is still inside the activation window is evaluated as v=1).
5. Image ids are ``source_id * 100 + k``; file names ``<source id:012d>_<k>.jpg`` (JPEG quality 95); each image
   entry records ``source_image_id`` and ``crop_xywh``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from analysis.coco_io import PERSON_CATEGORY, CocoSet, keypoints_array, load_coco
from analysis.exoks import pad_to_contain
from probpose.constants import WINDOW_PADDING
from probpose.errors import AnnotationError

__all__ = [
    "CropCocoConfig",
    "CropCocoSummary",
    "draw_keep_rectangle",
    "crop_annotations",
    "generate_cropcoco",
    "find_official_cropcoco",
    "CROPCOCO_HUB_ID",
]

CROPCOCO_HUB_ID = "vrg-prague/CropCOCO"
ANN_NAME = "person_keypoints_val2017.json"


@dataclass
class CropCocoConfig:
    """Generator settings (defaults: our documented protocol)."""

    seed: int = 0
    keep_range: tuple[float, float] = (0.7, 0.9)
    context: float = WINDOW_PADDING
    max_crops_per_image: int = 2
    max_tries: int = 5
    min_keypoints: int = 1
    min_box_side: float = 8.0
    jpeg_quality: int = 95


@dataclass
class CropCocoSummary:
    """What ``generate_cropcoco`` wrote: folder paths and counts (images, people, keypoints moved to v=3, skips)."""

    root: Path
    ann_file: Path
    image_dir: Path
    num_images: int
    num_people: int
    num_out_keypoints: int
    skipped: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def draw_keep_rectangle(box_xywh, image_size: tuple[int, int], rng: np.random.Generator,
                        keep_range: tuple[float, float] = (0.7, 0.9),
                        context: float = WINDOW_PADDING) -> tuple[int, int, int, int]:
    """One keep rectangle for a target person (``RandomEdgesBlackout`` geometry).

    Args:
        box_xywh: (4,) target box. image_size: (w, h). rng: numpy Generator.
    Returns:
        (x0, y0, w, h) integer pixels, inside the image, w and h >= 1.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    W, H = image_size
    cx, cy = x + w / 2, y + h / 2
    cx0 = int(np.clip(math.floor(cx - context * w / 2), 0, W - 1))
    cy0 = int(np.clip(math.floor(cy - context * h / 2), 0, H - 1))
    cx1 = int(np.clip(math.ceil(cx + context * w / 2), cx0 + 1, W))
    cy1 = int(np.clip(math.ceil(cy + context * h / 2), cy0 + 1, H))
    ctx_w, ctx_h = cx1 - cx0, cy1 - cy0
    rw, rh = rng.uniform(*keep_range), rng.uniform(*keep_range)
    kw, kh = max(1, int(ctx_w * rw)), max(1, int(ctx_h * rh))
    kx = cx0 + int(rng.integers(0, ctx_w - kw + 1))
    ky = cy0 + int(rng.integers(0, ctx_h - kh + 1))
    return kx, ky, kw, kh


def crop_annotations(anns: list[dict], crop_xywh: tuple[int, int, int, int],
                     padding: float = WINDOW_PADDING) -> list[dict]:
    """Move annotations into a crop (step 4 of the protocol).

    Args:
        anns: COCO annotations of the source image. crop_xywh: (x0, y0, w, h) integer crop.
    Returns:
        New annotation dicts (ids kept, image_id unchanged: the caller sets it); people whose box falls outside
        the crop are dropped. Each has ``keypoints`` with v=3 outside the crop, ``bbox`` clipped, ``area`` scaled
        by the kept box fraction, ``num_keypoints`` (v in {1, 2}), ``pad_to_contain`` (K,) and ``source_ann_id``.
    """
    x0, y0, cw, ch = crop_xywh
    out = []
    for a in anns:
        bx, by, bw, bh = a["bbox"]
        nx0, ny0 = max(bx - x0, 0.0), max(by - y0, 0.0)
        nx1, ny1 = min(bx + bw - x0, float(cw)), min(by + bh - y0, float(ch))
        if nx1 <= nx0 or ny1 <= ny0:
            continue
        kp = keypoints_array(a)
        lab = kp[:, 2] > 0
        kp[lab, 0] -= x0
        kp[lab, 1] -= y0
        outside = lab & ((kp[:, 0] < 0) | (kp[:, 0] >= cw) | (kp[:, 1] < 0) | (kp[:, 1] >= ch))
        kp[outside, 2] = 3
        new_box = [nx0, ny0, nx1 - nx0, ny1 - ny0]
        # the segment area shrinks with the visible box; scaling by the kept box fraction keeps OKS scales sane
        frac = (new_box[2] * new_box[3]) / (bw * bh) if bw * bh > 0 else 0.0
        b = {k: v for k, v in a.items() if k not in ("segmentation",)}
        b.update(
            bbox=[round(v, 2) for v in new_box],
            keypoints=[round(float(v), 2) if j % 3 != 2 else int(v) for j, v in enumerate(kp.ravel())],
            num_keypoints=int(((kp[:, 2] == 1) | (kp[:, 2] == 2)).sum()),
            area=float(a.get("area", bw * bh * 0.53)) * frac,
            pad_to_contain=[round(float(p), 4) for p in pad_to_contain(new_box, kp)],
            source_ann_id=a["id"],
        )
        out.append(b)
    return out


def generate_cropcoco(image_dir: str | Path, ann: str | Path | CocoSet, out_dir: str | Path,
                      config: CropCocoConfig | None = None, progress: bool = True) -> CropCocoSummary:
    """Write a CropCOCO-style set: ``out_dir/val2017/*.jpg`` + ``out_dir/annotations/person_keypoints_val2017.json``.

    Deterministic for a given source set and ``config.seed``. Missing or unreadable images are skipped with a
    message; the rest is written.
    """
    from tqdm import tqdm

    cfg = config or CropCocoConfig()
    cs = ann if isinstance(ann, CocoSet) else load_coco(ann)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    img_out = out_dir / "val2017"
    img_out.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    skipped: dict[str, int] = {"missing_image": 0, "no_target": 0, "nothing_leaves": 0}
    messages: list[str] = []
    n_out = 0
    ids = sorted(cs.images)
    for iid in tqdm(ids, desc="cropcoco", disable=not progress):
        im = cs.images[iid]
        src_anns = cs.anns_by_image.get(iid, [])
        targets = [a for a in src_anns if not a["iscrowd"] and a["num_keypoints"] >= cfg.min_keypoints
                   and min(a["bbox"][2], a["bbox"][3]) >= cfg.min_box_side]
        # a generator per (seed, image): an image's crops do not depend on which other images are in the set
        img_rng = np.random.default_rng([cfg.seed, iid])
        order = img_rng.permutation(len(targets))
        if not targets:
            skipped["no_target"] += 1
            continue
        path = image_dir / im["file_name"]
        try:
            with Image.open(path) as pil:
                pil.load()
                src = pil.convert("RGB")
        except (OSError, ValueError) as e:
            skipped["missing_image"] += 1
            messages.append(f"image {iid}: cannot read {path} ({e.__class__.__name__}); skipped")
            continue
        W, H = src.size
        k = 0
        for t in order:
            if k >= cfg.max_crops_per_image:
                break
            target = targets[t]
            kp = keypoints_array(target)
            lab = kp[:, 2] > 0
            crop = None
            for _ in range(cfg.max_tries):
                cx, cy, cw, ch = draw_keep_rectangle(target["bbox"], (W, H), img_rng, cfg.keep_range, cfg.context)
                inside = (kp[:, 0] >= cx) & (kp[:, 0] < cx + cw) & (kp[:, 1] >= cy) & (kp[:, 1] < cy + ch)
                if np.any(lab & ~inside):
                    crop = (cx, cy, cw, ch)
                    break
            if crop is None:
                skipped["nothing_leaves"] += 1
                continue
            new_id = iid * 100 + k
            fname = f"{iid:012d}_{k}.jpg"
            src.crop((crop[0], crop[1], crop[0] + crop[2], crop[1] + crop[3])).save(
                img_out / fname, quality=cfg.jpeg_quality)
            entry = {k2: v for k2, v in im.items() if k2 not in ("coco_url", "flickr_url")}
            entry.update(id=new_id, file_name=fname, width=crop[2], height=crop[3], source_image_id=iid,
                         crop_xywh=list(crop), target_ann_id=target["id"])
            images.append(entry)
            for b in crop_annotations(src_anns, crop):
                b["image_id"] = new_id
                b["id"] = b["source_ann_id"] * 100 + k
                n_out += sum(1 for v in b["keypoints"][2::3] if v == 3)
                anns.append(b)
            k += 1
    if not images:
        raise AnnotationError(f"no CropCOCO image could be made from {cs.path or 'the annotations'} with the images "
                              f"in {image_dir}: {skipped}")
    dataset = {
        "info": {"description": "CropCOCO-style set generated by ProbPose Studio (analysis.cropcoco)",
                 "source": str(cs.path) if cs.path else "", "seed": cfg.seed,
                 "protocol": "keep 70-90% of the 1.25x context box per side; labelled keypoints outside the "
                             "crop have v=3 with their true coordinates; boxes clipped to the crop"},
        "licenses": cs.dataset.get("licenses", []),
        "images": images,
        "annotations": anns,
        "categories": [PERSON_CATEGORY],
    }
    ann_file = out_dir / "annotations" / ANN_NAME
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(dataset))
    n_people = sum(1 for a in anns if not a.get("iscrowd") and any(v > 0 for v in a["keypoints"][2::3]))
    return CropCocoSummary(out_dir, ann_file, img_out, len(images), n_people, n_out, skipped, messages)


def find_official_cropcoco(root: str | Path | None = None, allow_download: bool = False) -> tuple[Path, Path]:
    """Locate the official CropCOCO release (``vrg-prague/CropCOCO``): a local folder or the Hugging Face cache.

    Expected layout: ``<root>/annotations/person_keypoints_val2017.json`` and ``<root>/val2017/``.

    Args:
        root: a local copy. Without it the Hub cache is searched (``local_files_only`` unless ``allow_download``).
    Returns:
        (image folder, annotation JSON).
    Raises:
        AnnotationError: not found, with what to do.
    """
    if root is not None:
        root = Path(root)
        ann, img = root / "annotations" / ANN_NAME, root / "val2017"
        if ann.is_file() and img.is_dir():
            return img, ann
        hits = sorted(root.rglob(ANN_NAME)) if root.is_dir() else []
        for h in hits:
            cand = h.parent.parent / "val2017"
            if cand.is_dir():
                return cand, h
        raise AnnotationError(f"no CropCOCO release at {root}: expected {ann} and the image folder {img}")
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(CROPCOCO_HUB_ID, repo_type="dataset", local_files_only=not allow_download))
    except Exception as e:  # offline cache miss, no network, auth: all mean "not available here"
        raise AnnotationError(
            f"the official CropCOCO ({CROPCOCO_HUB_ID}) is not in the Hugging Face cache and could not be fetched "
            f"({e.__class__.__name__}). Download it where the Hub is reachable (huggingface-cli download "
            f"{CROPCOCO_HUB_ID} --repo-type dataset) and pass the folder, or generate a CropCOCO-style set with "
            "`python -m analysis cropcoco`.") from e
    return find_official_cropcoco(snap)

