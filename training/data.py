"""COCO top-down pose dataset with the ProbPose training augmentation (spec 5.1-5.3).

One sample = one annotated person: the image is cut around the person's activation window (AW) with the UDP affine
(spec 3.5), keypoints go through the same matrix, and targets come from `probpose.codec`.

Pipeline order (the official one, plus our crop augmentation and optional colour jitter):
flip -> half-body -> crop augmentation (spec 5.3) -> box scale/shift/rotation -> UDP affine -> colour jitter -> codec.

Every random draw of sample ``i`` in epoch ``e`` comes from ``np.random.default_rng((seed, e, i))``, so a sample
is a pure function of (seed, epoch, index): data order and augmentation survive a resume exactly, and DataLoader
workers need no seeding of their own.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from probpose.constants import (
    FLIP_INDICES,
    INPUT_SIZE,
    LOWER_BODY_IDS,
    NUM_KEYPOINTS,
    PIXEL_MEAN,
    PIXEL_STD,
    UPPER_BODY_IDS,
)
from probpose.errors import AnnotationError, ImageLoadError

__all__ = ["PersonRecord", "AugmentConfig", "CocoPoseDataset", "load_coco_people", "Sample", "make_sample"]


@dataclass
class PersonRecord:
    """One annotated person. ``box`` is xyxy image px clipped to [0, w-1] x [0, h-1] (spec 5.1)."""

    image_path: Path
    image_id: int
    ann_id: int
    image_size: tuple[int, int]  # (w, h)
    box: np.ndarray  # (4,) float64 xyxy
    keypoints: np.ndarray  # (K, 3) float64: x, y, v (COCO v in {0, 1, 2}; CropCOCO also 3)
    area: float


def load_coco_people(ann_json: str | Path, image_dir: str | Path, require_images: bool = True) -> list[PersonRecord]:
    """Read a COCO person-keypoints JSON into per-person records with the official filtering (spec 5.1).

    Dropped: crowd regions, ``num_keypoints == 0``, all-zero keypoints, boxes with w or h <= 0. People whose image
    file is missing are skipped with one warning that counts them (``require_images=False`` keeps them).

    Raises:
        AnnotationError: unreadable or malformed JSON (missing ``images``/``annotations``, bad keypoint arrays).
    """
    ann_json = Path(ann_json)
    image_dir = Path(image_dir)
    try:
        data = json.loads(ann_json.read_text())
    except FileNotFoundError as e:
        raise AnnotationError(f"annotation file not found: {ann_json}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{ann_json} is not valid JSON ({e}); pass a COCO person_keypoints_*.json") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"{ann_json} is not COCO-format: it needs 'images' and 'annotations' lists")
    images = {}
    for im in data["images"]:
        try:
            images[im["id"]] = (im["file_name"], int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise AnnotationError(f"{ann_json}: image entry {im!r} lacks id/file_name/width/height") from e

    people: list[PersonRecord] = []
    missing: set[str] = set()
    for ann in data["annotations"]:
        try:
            if ann.get("iscrowd", 0) or ann.get("num_keypoints", 1) == 0:
                continue
            kpts = np.asarray(ann["keypoints"], dtype=np.float64)
            x, y, w, h = (float(v) for v in ann["bbox"])
            image_id = ann["image_id"]
        except (KeyError, TypeError, ValueError) as e:
            raise AnnotationError(f"{ann_json}: annotation {ann.get('id', '?')} is malformed ({e})") from e
        if kpts.size != NUM_KEYPOINTS * 3:
            raise AnnotationError(f"{ann_json}: annotation {ann.get('id', '?')} has {kpts.size} keypoint values, "
                                  f"expected {NUM_KEYPOINTS * 3} (17 COCO keypoints as x, y, v)")
        if w <= 0 or h <= 0 or kpts.max() <= 0:
            continue
        if image_id not in images:
            raise AnnotationError(f"{ann_json}: annotation {ann.get('id', '?')} refers to unknown image {image_id}")
        file_name, iw, ih = images[image_id]
        path = image_dir / file_name
        if require_images and not path.exists():
            missing.add(file_name)
            continue
        box = np.array([x, y, x + w, y + h])
        box[0::2] = np.clip(box[0::2], 0, iw - 1)
        box[1::2] = np.clip(box[1::2], 0, ih - 1)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        people.append(PersonRecord(path, int(image_id), int(ann.get("id", -1)), (iw, ih), box,
                                   kpts.reshape(NUM_KEYPOINTS, 3), float(ann.get("area", w * h))))
    if missing:
        warnings.warn(f"{len(missing)} image file(s) listed in {ann_json.name} are missing from {image_dir}; "
                      "their people were skipped", stacklevel=2)
    return people


@dataclass
class AugmentConfig:
    """Training augmentation (defaults = the official pipeline, spec 5.2, plus crop augmentation, spec 5.3).

    ``enabled=False`` gives the test pipeline: GT box -> AW -> UDP crop, nothing random.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_total: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_padding: float = 1.5
    half_body_upper_prob: float = 0.7
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_factor: float = 0.5  # scale = 1 + scale_factor * t, t ~ N(0,1) truncated to [-1, 1]
    scale_prob: float = 1.0
    rotate_factor: float = 80.0  # degrees
    rotate_prob: float = 0.6
    color_jitter: float = 0.0  # brightness/contrast/saturation factors drawn from [1 - s, 1 + s]
    crop_prob: float = 0.0  # RandomEdgesBlackout prob (0.8 in its defaults; absent from the released config)
    crop_keep_range: tuple[float, float] = (0.7, 0.9)  # keep-rectangle size / context-box size, per axis
    crop_context: float = 1.25  # context box = person box scaled by this about its centre

    def __post_init__(self) -> None:
        self.crop_keep_range = tuple(float(v) for v in self.crop_keep_range)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop_keep_range"] = list(self.crop_keep_range)
        return d


@dataclass
class Sample:
    """One augmented person in numpy, before the codec (all coordinates in input-crop px)."""

    image: np.ndarray  # (256, 192, 3) uint8 RGB crop
    keypoints: np.ndarray  # (K, 2) float64 input px
    annotated: np.ndarray  # (K,) bool, COCO v >= 1
    visible: np.ndarray  # (K,) bool, COCO v == 2 and not blacked out by crop augmentation
    in_rect: np.ndarray  # (K,) bool, inside the crop-augmentation keep rectangle (all True when not applied)
    center: np.ndarray  # (2,) AW centre, image px
    scale: np.ndarray  # (2,) AW size, image px
    rotation: float  # degrees
    flipped: bool
    cropped: bool  # crop augmentation applied
    crop_rect: np.ndarray | None = field(default=None)  # (4,) xyxy keep rectangle, image px (after flip)


def _trunc_normal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Standard normals truncated to [-1, 1] (rejection; 68% acceptance)."""
    out = np.empty(n)
    for i in range(n):
        v = rng.standard_normal()
        while abs(v) > 1.0:
            v = rng.standard_normal()
        out[i] = v
    return out


def _half_body_box(kpts: np.ndarray, annotated: np.ndarray, box: np.ndarray, cfg: AugmentConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """RandomHalfBody: box around the upper or lower annotated keypoints, clipped to the current box."""
    if annotated.sum() < cfg.half_body_min_total or rng.random() > cfg.half_body_prob:
        return box
    upper = [i for i in UPPER_BODY_IDS if annotated[i]]
    lower = [i for i in LOWER_BODY_IDS if annotated[i]]
    prefer_upper = rng.random() < cfg.half_body_upper_prob
    ok_up, ok_low = len(upper) >= cfg.half_body_min_upper, len(lower) >= cfg.half_body_min_lower
    if not ok_up and not ok_low:
        return box
    ids = upper if (ok_up and (prefer_upper or not ok_low)) else lower
    pts = kpts[ids]
    center = pts.mean(axis=0)
    size = (pts.max(axis=0) - pts.min(axis=0)) * cfg.half_body_padding
    new = np.concatenate([center - size / 2, center + size / 2])
    new = np.concatenate([np.maximum(new[:2], box[:2]), np.minimum(new[2:], box[2:])])
    if np.any(new[2:] - new[:2] < 2.0):  # degenerate (collinear keypoints): keep the full box
        return box
    return new


def _keep_rectangle(box: np.ndarray, image_size: tuple[int, int], cfg: AugmentConfig,
                    rng: np.random.Generator) -> np.ndarray:
    """RandomEdgesBlackout's keep rectangle: (0.7-0.9) x the context box, random integer position inside it."""
    w, h = image_size
    c = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) * cfg.crop_context / 2
    ctx = np.concatenate([c - half, c + half])
    ctx[0::2] = np.clip(ctx[0::2], 0, w - 1)
    ctx[1::2] = np.clip(ctx[1::2], 0, h - 1)
    lo, hi = cfg.crop_keep_range
    keep = np.floor((ctx[2:] - ctx[:2]) * rng.uniform(lo, hi, size=2))
    x0 = int(rng.integers(int(ctx[0]), max(int(ctx[0]), int(ctx[2] - keep[0])) + 1))
    y0 = int(rng.integers(int(ctx[1]), max(int(ctx[1]), int(ctx[3] - keep[1])) + 1))
    return np.array([x0, y0, x0 + keep[0], y0 + keep[1]], dtype=np.float64)


def make_sample(image: np.ndarray, person: PersonRecord, cfg: AugmentConfig,
                rng: np.random.Generator | None) -> Sample:
    """Apply the augmentation pipeline to one person and cut the 256x192 crop (all in numpy).

    Args:
        image: (H, W, 3) uint8 RGB, the person's full image (not modified).
        person: the annotation. cfg: augmentation. rng: None or ``cfg.enabled=False`` -> test pipeline.
    """
    from probpose.geometry import apply_affine, box_to_window, udp_warp_matrix, warp_image

    w, h = person.image_size
    kpts = person.keypoints[:, :2].copy()
    v = person.keypoints[:, 2]
    annotated = v > 0
    visible = v == 2
    box = person.box.copy()
    flipped = cropped = False
    rotation = 0.0
    rect = None
    in_rect = np.ones(NUM_KEYPOINTS, dtype=bool)
    train = cfg.enabled and rng is not None

    if train and rng.random() < cfg.flip_prob:
        flipped = True
        image = image[:, ::-1]  # a view; warp_image makes it contiguous
        kpts[:, 0] = (w - 1) - kpts[:, 0]
        box = np.array([(w - 1) - box[2], box[1], (w - 1) - box[0], box[3]])
        idx = list(FLIP_INDICES)
        kpts, annotated, visible = kpts[idx], annotated[idx], visible[idx]

    if train and cfg.half_body_prob > 0:
        box = _half_body_box(kpts, annotated, box, cfg, rng)

    if train and cfg.crop_prob > 0 and rng.random() < cfg.crop_prob:
        r = _keep_rectangle(box, (w, h), cfg, rng)
        inter = np.concatenate([np.maximum(box[:2], r[:2]), np.minimum(box[2:], r[2:])])
        if np.all(inter[2:] - inter[:2] >= 2.0):
            cropped, rect, box = True, r, inter
            in_rect = (kpts[:, 0] >= r[0]) & (kpts[:, 0] < r[2]) & (kpts[:, 1] >= r[1]) & (kpts[:, 1] < r[3])
            visible = visible & in_rect  # blacked-out keypoints cannot be visible
            masked = np.zeros_like(image)
            x0, y0, x1, y1 = (int(t) for t in r)
            masked[y0:y1, x0:x1] = image[y0:y1, x0:x1]
            image = masked

    if train:
        t = _trunc_normal(rng, 4)
        bw, bh = box[2] - box[0], box[3] - box[1]
        c = (box[:2] + box[2:]) / 2
        if rng.random() < cfg.shift_prob:
            c = c + t[:2] * cfg.shift_factor * np.array([bw, bh])
        s = 1.0 + cfg.scale_factor * t[2] if rng.random() < cfg.scale_prob else 1.0
        if rng.random() < cfg.rotate_prob:
            rotation = float(cfg.rotate_factor * t[3])
        half = np.array([bw, bh]) * s / 2
        box = np.concatenate([c - half, c + half])

    center, scale = box_to_window(box)
    matrix = udp_warp_matrix(center, scale, rotation)
    crop = warp_image(image, matrix, INPUT_SIZE)
    kin = apply_affine(kpts, matrix)
    kin[~annotated] = 0.0

    if train and cfg.color_jitter > 0:
        crop = _color_jitter(crop, cfg.color_jitter, rng)
    return Sample(crop, kin, annotated, visible, in_rect, center, scale, rotation, flipped, cropped, rect)


def _color_jitter(crop: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter; pixels that are exactly black (outside the image or the crop
    augmentation's rectangle) stay black so that "black = no image" means the same in training and test."""
    f = rng.uniform(1 - strength, 1 + strength, size=3)
    x = crop.astype(np.float32)
    empty = ~crop.any(axis=-1)
    x *= f[0]
    mean = x.mean()
    x = (x - mean) * f[1] + mean
    grey = x.mean(axis=-1, keepdims=True)
    x = (x - grey) * f[2] + grey
    x[empty] = 0.0
    return np.clip(x, 0, 255).astype(np.uint8)


def read_image_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB via ``probpose.image.load_image`` (EXIF-aware, as at inference).

    Raises:
        ImageLoadError: unreadable file, or its size differs from the annotation's ``expected_size`` (w, h).
    """
    from probpose.image import load_image

    img = load_image(path)
    if expected_size is not None and (img.shape[1], img.shape[0]) != tuple(expected_size):
        raise ImageLoadError(f"{path} is {img.shape[1]}x{img.shape[0]} but its annotation says "
                             f"{expected_size[0]}x{expected_size[1]}; the keypoints would not match it")
    return img


def normalize_image(crop: np.ndarray) -> torch.Tensor:
    """(256, 192, 3) uint8 RGB -> (3, 256, 192) float32, ImageNet mean/std on the 0-255 scale."""
    x = (crop.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class CocoPoseDataset(Dataset):
    """Top-down COCO person crops with ProbPose targets.

    ``ds[i]`` is a dict of tensors:
        image (3,256,192) f32 normalised RGB; probmap (K,64,48) f32 target T (spec 3.2); target_weight (K,) f32;
        in_window (K,) f32 presence label (keypoint inside the AW); annotated (K,) f32 (v >= 1);
        visible (K,) f32 (v == 2, and 0 where crop augmentation blacked it out); keypoints_input (K,2) f32;
        center, scale (2,) f64 AW in image px; rotation () f32; index () int64;
        with ``heatmap_targets=True`` also heatmap (K,64,48) and heatmap_weight (K,) (baseline Gaussian, sigma 2).

    Images are decoded once and cached in memory (``preload=True`` decodes all in the constructor so that forked
    DataLoader workers share them).
    """

    def __init__(self, ann_json: str | Path, image_dir: str | Path, augment: AugmentConfig | None = None,
                 seed: int = 0, heatmap_targets: bool = False, preload: bool = True,
                 max_people: int | None = None) -> None:
        self.people = load_coco_people(ann_json, image_dir)
        if max_people is not None:
            self.people = self.people[:max_people]
        if not self.people:
            raise AnnotationError(f"no usable people in {ann_json} (after dropping crowd / empty annotations)")
        self.augment = augment if augment is not None else AugmentConfig(enabled=False)
        self.seed = int(seed)
        self.epoch = 0
        self.heatmap_targets = heatmap_targets
        self._cache: dict[Path, np.ndarray] = {}
        if preload:
            for p in self.people:
                self.image(p)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of an epoch (call before iterating, like DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.people)

    def image(self, person: PersonRecord) -> np.ndarray:
        img = self._cache.get(person.image_path)
        if img is None:
            img = read_image_rgb(person.image_path, person.image_size)
            self._cache[person.image_path] = img
        return img

    def sample(self, index: int) -> Sample:
        """The augmented numpy sample of ``index`` in the current epoch (deterministic)."""
        person = self.people[index]
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.augment.enabled else None
        return make_sample(self.image(person), person, self.augment, rng)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from probpose.codec import encode_heatmaps, encode_probmaps

        s = self.sample(index)
        target = encode_probmaps(s.keypoints, s.annotated)
        item = {
            "image": normalize_image(s.image),
            "probmap": torch.as_tensor(np.asarray(target.maps), dtype=torch.float32),
            "target_weight": torch.as_tensor(np.asarray(target.weights), dtype=torch.float32),
            "in_window": torch.as_tensor(np.asarray(target.in_window), dtype=torch.float32),
            "annotated": torch.from_numpy(s.annotated.astype(np.float32)),
            "visible": torch.from_numpy(s.visible.astype(np.float32)),
            "keypoints_input": torch.from_numpy(s.keypoints.astype(np.float32)),
            "center": torch.from_numpy(s.center),
            "scale": torch.from_numpy(s.scale),
            "rotation": torch.tensor(s.rotation, dtype=torch.float32),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.heatmap_targets:
            hm = encode_heatmaps(s.keypoints, s.annotated)
            item["heatmap"] = torch.as_tensor(np.asarray(hm.maps), dtype=torch.float32)
            item["heatmap_weight"] = torch.as_tensor(np.asarray(hm.weights), dtype=torch.float32)
        item.update(self.extra_targets(s, index))
        return item

    def extra_targets(self, sample: Sample, index: int) -> dict[str, torch.Tensor]:
        """More tensors for the item of ``sample`` (subclasses: ``training.dual_data.DualPoseDataset``)."""
        return {}
