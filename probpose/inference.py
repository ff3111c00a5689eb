"""Top-down pipeline and the stateful predictor (SAM 2 style).

``PosePredictor.set_image`` runs the network once per image and caches ``NetworkOutputs``; ``predict`` re-decodes
from that cache (decoder, presence threshold, sparsemax temperature) without touching the network.

Pipeline per person (spec 1.1, 3.5, 10): box (as given, like the official ``inference_topdown``; clipped to the
image only with ``clip_boxes=True``, the official dataset rule for GT boxes) -> activation window
(``geometry.box_to_window``: 3:4, x1.25) -> UDP warp to 256x192 (black outside the image) -> ImageNet normalisation
(RGB) -> batched forward under ``torch.inference_mode`` -> flip test (mirrored crop, maps mirrored back along W
with channels re-indexed by FLIP_INDICES, scalars re-indexed, both averaged) -> cache.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from probpose import codec, dual_codec, geometry
from probpose.constants import (
    DEFAULT_PRESENCE_THRESHOLD,
    FLIP_INDICES,
    INPUT_SIZE,
    KEYPOINT_NAMES,
    PIXEL_MEAN,
    PIXEL_STD,
    RESCORE_PRESENCE_THRESHOLD,
)
from probpose.errors import BoxError
from probpose.image import load_image
from probpose.precision import PRECISIONS, autocast_dtype, resolve_precision

__all__ = [
    "NetworkOutputs",
    "PersonPose",
    "PoseResult",
    "PosePredictor",
    "ImageRegion",
    "predict_image",
    "preprocess_crops",
    "DECODERS",
    "PRECISIONS",
    "HEATMAP_SCORE_THRESHOLD",
    "MODEL_KINDS",
    "MAP_CHOICES",
]

DECODERS = ("expected_oks", "argmax")
# mmpose's ViTPose rescoring: instance score = mean of keypoint scores above this.
HEATMAP_SCORE_THRESHOLD = 0.2
MODEL_KINDS = ("probpose", "heatmap", "probpose_dh")
MAP_CHOICES = ("expert", "wide")  # which ProbPose-DH map a PersonPose helper reads


# ----------------------------------------------------------------------------------------------- data types


@dataclass
class NetworkOutputs:
    """Everything the network said about one image (the predictor's cache). N people, K keypoints.

    probmaps: (N,K,64,48) float32, flip-averaged probability maps (heatmap baseline: flip-averaged heatmaps).
    logits, logits_flipped: (N,K,64,48) float32 pre-temperature logits of the plain and the mirrored pass (the
        latter mirrored back to the original orientation); ``logits_flipped`` is None without flip test; both None
        for the heatmap baseline.
    presence, visibility, oks: (N,K) float32 flip-averaged sigmoids (heatmap baseline: presence = clip(heatmap
        peak, 0, 1), visibility / oks NaN). presence_logits: (N,K) flip-averaged pre-sigmoid (NaN for heatmaps).
    centers, scales: (N,2) activation windows in image px. boxes: (N,4) the xyxy boxes that made them (as given;
        clipped to [0, w-1] x [0, h-1] when ``set_image(clip_boxes=True)``).
    boxes_given: (N,4) the boxes as given. box_sources: N strings. box_scores: (N,) detector scores (1 if given).
    image_size: (w, h). kind: "probpose" | "heatmap" | "probpose_dh". temperature: the model's sparsemax
    temperature.
    timings_ms: {"preprocess", "network"} wall time of ``set_image``.

    ProbPose-DH only (None for the other kinds; docs/dual.md): expert_maps / wide_maps (N,K,64,48) the
    flip-averaged maps of the two windows (``probmaps`` is ``expert_maps``, for compatibility; ``logits`` /
    ``logits_flipped`` are the expert branch's); wide_logits / wide_logits_flipped the wide branch's (re-temperature
    needs ``map_normalization == "sparsemax"``); bbox_masks (N,256,192) bool, ``dual_codec.bbox_mask`` of each
    box in its crop (the merge rule; the mask clips the box to the image, as the official one); in_padding /
    out_padding / spread: the model's window paddings and decode spread s; map_normalization: the model's
    ``config.normalize`` ("none" = raw, not distributions). presence is P(inside the WIDE window) for this kind.
    """

    probmaps: np.ndarray
    logits: np.ndarray | None
    logits_flipped: np.ndarray | None
    presence: np.ndarray
    visibility: np.ndarray
    oks: np.ndarray
    presence_logits: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    boxes: np.ndarray
    boxes_given: np.ndarray
    box_sources: list[str]
    box_scores: np.ndarray
    image_size: tuple[int, int]
    kind: str
    flip_test: bool
    temperature: float
    normalize: float = 1.0
    timings_ms: dict = field(default_factory=dict)
    expert_maps: np.ndarray | None = None
    wide_maps: np.ndarray | None = None
    wide_logits: np.ndarray | None = None
    wide_logits_flipped: np.ndarray | None = None
    bbox_masks: np.ndarray | None = None
    in_padding: float | None = None
    out_padding: float | None = None
    spread: float | None = None
    map_normalization: str | None = None

    @property
    def is_dual(self) -> bool:
        return self.kind == "probpose_dh"

    @property
    def num_people(self) -> int:
        return int(self.probmaps.shape[0])


@dataclass
class ImageRegion:
    """A credible region of one keypoint's map, in heatmap and image coordinates.

    mask: (64,48) bool on the heatmap grid; area_heatmap: pixels in it; area_image: its area in image px^2;
    outlines: list of (M,2) polygons in image px; threshold: smallest map value inside; mass: the mass it holds.
    """

    mask: np.ndarray
    area_heatmap: int
    area_image: float
    outlines: list[np.ndarray]
    threshold: float
    mass: float


@dataclass
class PersonPose:
    """One person's decoded pose. K = 17; coordinates in image px (x, y).

    box (4,) xyxy as used for the window (as given, or clipped with ``clip_boxes=True``); box_source; center (2,),
    scale (2,), window (4,) the activation window; keypoints (K,2); presence (K,) P(inside the window); present
    (K,) presence >= threshold; visibility (K,); oks (K,) predicted OKS (the official ``keypoint_scores``);
    keypoint_scores (K,) the decoder's value (ProbPose: map value at the expected-OKS arg-max; heatmaps: peak
    value); in_image (K,) keypoint inside the image; probmaps (K,64,48); score: instance score (see
    ``PosePredictor.predict``).

    ProbPose-DH fields (None for the other models; docs/dual.md): keypoints are the MERGED keypoints and may lie
    outside the activation window (inside the wide window); presence is P(inside the WIDE window); probmaps are
    the expert maps; source (K,) int8 which map the merge took (0 expert, 1 wide); expert_keypoints /
    wide_keypoints (K,2) each map's own decode in image px; wide_maps (K,64,48); wide_window (4,) the wide map's
    window in image px (xyxy through its first / last map-pixel centres, as ``window``); map_paddings
    (in_padding, out_padding); map_spread: the decode spread s. Raw DH maps (``normalize="none"``) are not
    distributions: the helpers clip them at 0 and normalise (``map_distribution``) before regions / E-maps.
    """

    box: np.ndarray
    box_source: str
    center: np.ndarray
    scale: np.ndarray
    window: np.ndarray
    keypoints: np.ndarray
    presence: np.ndarray
    present: np.ndarray
    visibility: np.ndarray
    oks: np.ndarray
    keypoint_scores: np.ndarray
    in_image: np.ndarray
    probmaps: np.ndarray
    score: float
    box_score: float = 1.0
    source: np.ndarray | None = None
    expert_keypoints: np.ndarray | None = None
    wide_keypoints: np.ndarray | None = None
    wide_maps: np.ndarray | None = None
    wide_window: np.ndarray | None = None
    map_paddings: tuple[float, float] | None = None
    map_spread: float | None = None

    @property
    def is_dual(self) -> bool:
        """True for a ProbPose-DH person (it has a wide map)."""
        return self.wide_maps is not None

    def _check_k(self, k: int) -> int:
        n = self.probmaps.shape[0]
        if not -n <= k < n:
            raise IndexError(f"keypoint index {k} out of range 0..{n - 1}")
        return k % n

    def _check_which(self, which: str) -> int:
        """Index of the map `which` names in map_paddings (0 expert, 1 wide)."""
        if which not in MAP_CHOICES:
            raise ValueError(f"which must be one of {MAP_CHOICES}, got {which!r}")
        if which == "wide" and not self.is_dual:
            raise ValueError("only ProbPose-DH people have a wide map")
        return MAP_CHOICES.index(which)

    def map_distribution(self, k: int, which: str = "expert") -> np.ndarray:
        """(64,48) float64 keypoint k's map (`which`: "expert" = ``probmaps``, "wide" for ProbPose-DH) clipped at 0
        and normalised to sum 1 (all zeros when it has no positive mass). ProbPose maps already are distributions;
        raw DH maps are not."""
        k = self._check_k(k)
        m = (self.probmaps, self.wide_maps)[self._check_which(which)][k]
        p = np.where(np.isfinite(m), np.maximum(np.asarray(m, np.float64), 0.0), 0.0)
        total = p.sum()
        return p / total if total > 0 else p

    def expected_oks_map(self, k: int, which: str = "expert") -> np.ndarray:
        """(64,48) expected OKS of predicting each heatmap pixel for keypoint k (spec 3.3, E_k). ProbPose-DH: of
        the normalised ``map_distribution(k, which)`` with the model's decode spread (on that map's grid)."""
        if not self.is_dual:
            self._check_which(which)
            return codec.expected_oks_maps(self.probmaps)[self._check_k(k)]
        return codec.expected_oks_maps(self.map_distribution(k, which)[None], self.map_spread)[0]

    def credible_region(self, k: int, mass: float = 0.9, which: str = "expert") -> ImageRegion:
        """Smallest set of map pixels holding ``mass`` of keypoint k's map, with outlines in image px.
        ProbPose-DH: `which` map ("expert" / "wide"), clipped at 0 and normalised first, outlines mapped with
        that map's window."""
        k = self._check_k(k)
        if self.is_dual:
            return self._dual_credible_region(k, mass, self._check_which(which))
        self._check_which(which)
        region = codec.credible_region(self.probmaps[k], mass)
        outlines = [geometry.heatmap_to_image(poly, self.center, self.scale)
                    for poly in codec.region_outline(region.mask)]
        # One heatmap pixel covers (S_w / 47) x (S_h / 63) image px under UDP.
        px_area = (self.scale[0] / (self.probmaps.shape[2] - 1)) * (self.scale[1] / (self.probmaps.shape[1] - 1))
        return ImageRegion(mask=region.mask, area_heatmap=int(region.area), area_image=float(region.area * px_area),
                           outlines=outlines, threshold=float(region.threshold), mass=float(region.mass))

    def _dual_credible_region(self, k: int, mass: float, i: int) -> ImageRegion:
        region = codec.credible_region(self.map_distribution(k, MAP_CHOICES[i]), mass)
        pad = self.map_paddings[i]
        outlines = [dual_codec.map_to_image(poly, pad, self.center, self.scale)
                    for poly in codec.region_outline(region.mask)]
        # One map px spans the window (first to last pixel centre) / (size - 1), in image px.
        win = dual_codec.window_in_image(pad, self.center, self.scale)
        hm_h, hm_w = self.probmaps.shape[1:]
        px_area = (win[2] - win[0]) / (hm_w - 1) * (win[3] - win[1]) / (hm_h - 1)
        return ImageRegion(mask=region.mask, area_heatmap=int(region.area), area_image=float(region.area * px_area),
                           outlines=outlines, threshold=float(region.threshold), mass=float(region.mass))

    def to_json(self) -> dict:
        d = {
            "box": _floats(self.box), "box_source": self.box_source, "box_score": _float(self.box_score),
            "score": _float(self.score), "center": _floats(self.center), "scale": _floats(self.scale),
            "window": _floats(self.window), "keypoints": [_floats(p) for p in self.keypoints],
            "presence": _floats(self.presence), "present": [bool(v) for v in self.present],
            "visibility": _floats(self.visibility), "oks": _floats(self.oks),
            "keypoint_scores": _floats(self.keypoint_scores), "in_image": [bool(v) for v in self.in_image],
        }
        if self.is_dual:
            d.update({
                "source": [int(v) for v in self.source], "wide_window": _floats(self.wide_window),
                "expert_keypoints": [_floats(p) for p in self.expert_keypoints],
                "wide_keypoints": [_floats(p) for p in self.wide_keypoints],
                "map_paddings": _floats(self.map_paddings),
            })
        return d


@dataclass
class PoseResult:
    """Poses of all people in one image. image_size (w, h); decoder / presence_threshold / temperature as used."""

    people: list[PersonPose]
    image_size: tuple[int, int]
    decoder: str
    presence_threshold: float
    temperature: float | None
    model_name: str
    kind: str
    flip_test: bool

    def to_json(self) -> dict:
        """Plain JSON-able dict (NaN -> null)."""
        return {
            "model": self.model_name, "kind": self.kind, "decoder": self.decoder,
            "presence_threshold": float(self.presence_threshold),
            "temperature": None if self.temperature is None else float(self.temperature),
            "flip_test": bool(self.flip_test), "image_size": [int(v) for v in self.image_size],
            "keypoint_names": list(KEYPOINT_NAMES), "people": [p.to_json() for p in self.people],
        }


def _float(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _floats(a) -> list:
    return [_float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


# ----------------------------------------------------------------------------------------------- preprocessing


def _as_boxes(boxes, image_size: tuple[int, int], clip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate boxes -> (given (N,4), used (N,4)). BoxError names the box and the image size.

    used = given (the official demo path builds the window from the raw box), or with ``clip`` the box clipped to
    [0, w-1] x [0, h-1] (``geometry.clip_box``: the official dataset rule for GT boxes). Either way a box must be
    finite, have x2 > x1 and y2 > y1, and overlap the image [0, w] x [0, h] (clipped: keep an area inside it).
    """
    w, h = image_size
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4)), np.zeros((0, 4))
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise BoxError(f"boxes must be (N, 4) xyxy image px, got shape {b.shape}")
    used = b.copy()
    for i, box in enumerate(b):
        if not np.all(np.isfinite(box)):
            raise BoxError(f"box {i} {box.tolist()} has NaN or infinite values")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise BoxError(f"box {i} {box.tolist()} is empty or not xyxy (need x2 > x1 and y2 > y1; "
                           "convert xywh with geometry.box_xywh_to_xyxy)")
        if box[0] >= w or box[1] >= h or box[2] <= 0 or box[3] <= 0:
            raise BoxError(f"box {i} {box.tolist()} lies entirely outside the {w}x{h} image; check that it is "
                           "xyxy in this image's pixels")
        if not clip:
            continue
        try:
            c = geometry.clip_box(box, image_size)
        except BoxError as e:
            raise BoxError(f"box {i}: {e}") from None
        if c[2] <= c[0] or c[3] <= c[1]:
            raise BoxError(f"box {i} {box.tolist()} has no area inside the {w}x{h} image "
                           f"(clipped to {c.tolist()}); check that it is xyxy in this image's pixels")
        used[i] = c
    return b, used


def preprocess_crops(image: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """UDP-warp one crop per window. image (H,W,3) uint8 RGB; centers, scales (N,2). Returns (N,256,192,3) uint8."""
    crops = [geometry.warp_image(image, geometry.udp_warp_matrix(c, s)) for c, s in zip(centers, scales, strict=True)]
    if not crops:
        return np.zeros((0, 256, 192, 3), np.uint8)
    return np.stack(crops)


def _normalise(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N,256,192,3) uint8 RGB -> (N,3,256,192) float32 ImageNet-normalised, on device."""
    x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float()
    mean = torch.as_tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _flip_back(maps: torch.Tensor) -> torch.Tensor:
    """Maps of the mirrored crop back to the original orientation: mirror along W, swap left/right channels."""
    return codec.flip_maps_torch(maps)


def _reindex(v: torch.Tensor) -> torch.Tensor:
    return v[..., list(FLIP_INDICES)]


# ----------------------------------------------------------------------------------------------- predictor


class PosePredictor:
    """Stateful top-down predictor: ``set_image`` runs the network once, ``predict`` re-decodes cheaply.

    Args:
        model: a ``ProbPose`` (``kind == "probpose"``), ``HeatmapPose`` (``kind == "heatmap"``) or ``DualProbPose``
            (``kind == "probpose_dh"``: both maps are cached and merged, see docs/dual.md).
        device: None -> CUDA when available, else CPU.
        flip_test: average with the mirrored crop (spec 10); on by default as in the official evaluation.
        batch_size: crops per forward pass (a flip-tested batch runs 2 x batch_size crops at once).
        precision: "auto" (default: bf16 autocast on CUDA -- fp16 on GPUs without bf16 -- and on CPUs with native
            bf16, AVX512-BF16 / AMX; fp32 elsewhere, e.g. AVX2-only CPUs where bf16 is emulated and ~15x slower);
            "fp32"; "bf16" / "fp16" (autocast; fp16 CUDA only); "int8" (dynamic int8 quantisation of the Linear
            layers, CPU only, on a private copy of the model; moves trained keypoints, see docs/inference.md).
            ``self.precision`` holds the resolved choice (see ``probpose.precision.resolve_precision``).
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None, flip_test: bool = True,
                 batch_size: int = 8, precision: str = "auto") -> None:
        kind = getattr(model, "kind", None)
        if kind not in MODEL_KINDS:
            raise TypeError(f"PosePredictor needs a ProbPose or HeatmapPose model (or a ProbPose-DH DualProbPose), "
                            f"got {type(model).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        precision = resolve_precision(precision, self.device)  # "auto" -> what is fast on this device
        if precision == "int8":
            model = _quantize_int8(model)
        elif any(t.device != self.device for t in (*model.parameters(), *model.buffers())):
            model = model.to(self.device)  # a no-op .to() still walks every module (~13 ms: the app's redraws)
        self.model = model.eval()
        self.kind: str = kind
        self.flip_test = bool(flip_test)
        self.batch_size = int(batch_size)
        self.precision = precision
        self.image: np.ndarray | None = None
        self.outputs: NetworkOutputs | None = None
        self._retemp: dict = {}

    @property
    def model_name(self) -> str:
        meta = getattr(self.model, "metadata", None) or {}
        return str(meta.get("name") or meta.get("source") or type(self.model).__name__)

    @property
    def is_image_set(self) -> bool:
        return self.outputs is not None

    def reset_image(self) -> None:
        """Forget the cached image and outputs."""
        self.image, self.outputs, self._retemp = None, None, {}

    # -------------------------------------------------------------------------------------------- network

    def set_image(self, image, boxes=None, box_source: str | Sequence[str] = "given", *,
                  detector: str = "auto", box_scores=None, clip_boxes: bool = False) -> NetworkOutputs:
        """Load the image, find or take person boxes, run the network once, cache and return the outputs.

        Args:
            image: anything ``probpose.image.load_image`` accepts (it is converted to (H,W,3) uint8 RGB).
            boxes: (N,4) xyxy image px, a list of ``detect.Detection``, or None to run ``detect_people``
                with ``detector``. Boxes are used as given, also where they stick out of the image (the
                official ``inference_topdown`` builds the window from the raw box); a box that does not overlap
                the image raises BoxError.
            box_source: label stored with given boxes (one string, or one per box).
            box_scores: (N,) optional detector scores for given boxes (default 1).
            clip_boxes: clip the boxes to [0, w-1] x [0, h-1] first: what the official dataset does to
                ground-truth boxes (evaluation); never for typed, clicked or detected boxes.
        Raises:
            ImageLoadError, BoxError. Nothing is cached unless everything succeeds.
        """
        img = load_image(image)
        h, w = img.shape[:2]
        if boxes is None:
            from probpose.detect import detect_people

            boxes = detect_people(img, detector)
        if len(boxes) and hasattr(boxes[0], "source"):  # detect.Detection list
            box_source = [d.source for d in boxes]
            box_scores = [d.score for d in boxes]
            boxes = np.stack([np.asarray(d.box, np.float64) for d in boxes])
        given, used = _as_boxes(boxes, (w, h), clip=clip_boxes)
        n = len(given)
        sources = [box_source] * n if isinstance(box_source, str) else [str(s) for s in box_source]
        if len(sources) != n:
            raise BoxError(f"got {len(sources)} box sources for {n} boxes")
        scores = np.ones(n) if box_scores is None else np.asarray(box_scores, np.float64).reshape(-1)
        if len(scores) != n:
            raise BoxError(f"got {len(scores)} box scores for {n} boxes")

        t0 = time.perf_counter()
        if n:
            centers, scales = geometry.box_to_window(used)
        else:
            centers, scales = np.zeros((0, 2)), np.zeros((0, 2))
        crops = preprocess_crops(img, centers, scales)
        cfg = getattr(self.model, "config", None)
        dual = {}
        if self.kind == "probpose_dh":  # the merge rule's box masks, and the geometry the codec needs
            masks = [dual_codec.bbox_mask(b, c, s, (w, h)) for b, c, s in zip(used, centers, scales, strict=True)]
            dual = {"bbox_masks": np.stack(masks) if masks else np.zeros((0, *INPUT_SIZE[::-1]), bool),
                    "in_padding": float(cfg.in_padding), "out_padding": float(cfg.out_padding),
                    "spread": float(cfg.spread), "map_normalization": str(cfg.normalize)}
        t1 = time.perf_counter()
        raw = self._forward_crops(crops)
        t2 = time.perf_counter()
        norm = getattr(cfg, "normalize", 1.0)  # ProbPose: a float factor; ProbPose-DH: a mode name (its own field)
        self.outputs = NetworkOutputs(
            **raw, **dual, centers=centers, scales=scales, boxes=used, boxes_given=given, box_sources=sources,
            box_scores=scores, image_size=(w, h), kind=self.kind, flip_test=self.flip_test,
            temperature=float(getattr(self.model, "temperature", 1.0)),
            normalize=1.0 if isinstance(norm, str) else float(norm),
            timings_ms={"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3})
        self.image = img
        self._retemp = {}
        return self.outputs

    def _run(self, x: torch.Tensor):
        dtype = autocast_dtype(self.precision)
        if dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                return self.model(x)
        return self.model(x)

    @torch.inference_mode()
    def _forward_crops(self, crops: np.ndarray) -> dict:
        """Batched forward (+ flip test) of (N,256,192,3) uint8 crops -> the array fields of NetworkOutputs."""
        n = len(crops)
        k = int(getattr(self.model.config, "num_keypoints", len(KEYPOINT_NAMES)))
        hm_h, hm_w = self.model.config.heatmap_size
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, self.batch_size):
            x = _normalise(crops[start:start + self.batch_size], self.device)
            b = x.shape[0]
            if self.flip_test:
                x = torch.cat([x, x.flip(-1)])  # one pass over plain + mirrored crops
            out = self._run(x)
            for name, arr in self._collect(out, b).items():
                parts.setdefault(name, []).append(arr)
        empty_maps = np.zeros((0, k, hm_h, hm_w), np.float32)
        empty_vec = np.zeros((0, k), np.float32)
        res = {}
        dual = self.kind == "probpose_dh"
        map_names = ("probmaps", "logits", "logits_flipped") + (
            ("wide_maps", "wide_logits", "wide_logits_flipped") if dual else ())
        for name in map_names:
            res[name] = np.concatenate(parts[name]) if parts.get(name) else (
                empty_maps if name in ("probmaps", "wide_maps") or self.kind != "heatmap" else None)
        if self.kind == "heatmap" or not self.flip_test:
            res["logits_flipped"] = None
            if dual:
                res["wide_logits_flipped"] = None
        if self.kind == "heatmap":
            res["logits"] = None
        if dual:
            res["expert_maps"] = res["probmaps"]
        for name in ("presence", "visibility", "oks", "presence_logits"):
            res[name] = np.concatenate(parts[name]) if parts.get(name) else empty_vec
        return res

    def _collect(self, out, b: int) -> dict[str, np.ndarray]:
        """Split a (plain [+ mirrored]) batch output into flip-averaged numpy arrays."""
        def np32(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        if self.kind == "heatmap":
            hm = out.heatmaps.float()
            if self.flip_test:
                hm = (hm[:b] + _flip_back(hm[b:])) / 2
            peak = hm.flatten(-2).amax(-1).clamp(0, 1)  # the heatmap-peak rule for presence
            nan = torch.full_like(peak, float("nan"))
            return {"probmaps": np32(hm), "presence": np32(peak), "visibility": np32(nan), "oks": np32(nan),
                    "presence_logits": np32(nan)}
        scal = {"presence": out.presence, "visibility": out.visibility, "oks": out.oks,
                "presence_logits": out.presence_logits}
        res: dict[str, np.ndarray] = {}
        if self.kind == "probpose_dh":
            res.update(self._collect_dual(out, b))
        elif self.flip_test:
            maps, logits = out.probmaps.float(), out.logits.float()
            res["probmaps"] = np32((maps[:b] + _flip_back(maps[b:])) / 2)
            res["logits"] = np32(logits[:b])
            res["logits_flipped"] = np32(_flip_back(logits[b:]))
        else:
            res["probmaps"], res["logits"] = np32(out.probmaps.float()), np32(out.logits.float())
        for name, v in scal.items():
            v = v.float()
            res[name] = np32((v[:b] + _reindex(v[b:])) / 2) if self.flip_test else np32(v)
        return res

    def _collect_dual(self, out, b: int) -> dict[str, np.ndarray]:
        """ProbPose-DH maps: both windows are centred on the crop, so ``dual_codec.flip_dual_maps`` un-mirrors
        both exactly; each map is averaged with its mirror (as the official predict)."""
        e, w, el, wl = (t.detach().float().cpu().numpy() for t in
                        (out.expert_maps, out.wide_maps, out.expert_logits, out.wide_logits))
        if not self.flip_test:
            return {"probmaps": e, "wide_maps": w, "logits": el, "wide_logits": wl}
        fe, fw = dual_codec.flip_dual_maps(e[b:], w[b:])
        fel, fwl = dual_codec.flip_dual_maps(el[b:], wl[b:])
        return {"probmaps": (e[:b] + fe) / 2, "wide_maps": (w[:b] + fw) / 2, "logits": el[:b], "wide_logits": wl[:b],
                "logits_flipped": np.ascontiguousarray(fel), "wide_logits_flipped": np.ascontiguousarray(fwl)}

    # -------------------------------------------------------------------------------------------- decoding

    def probmaps_at(self, temperature: float | None = None) -> np.ndarray:
        """(N,K,64,48) flip-averaged maps at a sparsemax temperature (None: the model's), from the cached logits:
        mean(sparsemax(logits / T), sparsemax(logits_flipped / T)), times ``normalize``, clamped to [0, 1]."""
        out = self._need_outputs()
        if out.is_dual:
            return self.dual_maps_at(temperature)[0]
        if temperature is None or (out.kind == "probpose" and float(temperature) == out.temperature):
            return out.probmaps
        if out.kind != "probpose":
            raise ValueError("temperature applies to ProbPose probability maps only, not to heatmaps")
        t = _check_temperature(temperature)
        if t not in self._retemp:
            self._remember(t, _retemper(out.logits, out.logits_flipped, t, out.normalize))
        return self._retemp[t]

    def dual_maps_at(self, temperature: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """ProbPose-DH: (expert (N,K,64,48), wide (N,K,64,48)) flip-averaged maps; at a sparsemax temperature
        recomputed from both branches' cached logits as ``probmaps_at`` does. Temperature applies only to models
        built with ``normalize="sparsemax"``: the official DH maps (``"none"``, raw; ``"sigmoid"``) have none, and
        a temperature other than None raises ValueError for them."""
        out = self._need_outputs()
        if not out.is_dual:
            raise ValueError(f"dual_maps_at needs a ProbPose-DH model (kind 'probpose_dh'), this one is {out.kind!r}")
        sparse = out.map_normalization == "sparsemax"
        if temperature is None or (sparse and float(temperature) == out.temperature):
            return out.expert_maps, out.wide_maps
        if not sparse:
            raise ValueError(f"temperature is not applicable to this ProbPose-DH model: its maps use "
                             f"normalize={out.map_normalization!r} (heatmap-like, no sparsemax temperature); only "
                             "models built with normalize='sparsemax' can be re-tempered. Pass temperature=None.")
        t = _check_temperature(temperature)
        if t not in self._retemp:
            self._remember(t, (_retemper(out.logits, out.logits_flipped, t, 1.0),
                               _retemper(out.wide_logits, out.wide_logits_flipped, t, 1.0)))
        return self._retemp[t]

    def _remember(self, t: float, value) -> None:
        if len(self._retemp) > 8:
            self._retemp.clear()
        self._retemp[t] = value

    def predict(self, decoder: str = "expected_oks", presence_threshold: float = DEFAULT_PRESENCE_THRESHOLD,
                temperature: float | None = None) -> PoseResult:
        """Decode the cached outputs; never runs the network.

        Args:
            decoder: "expected_oks" (spec 3.3) or "argmax" (integer arg-max). Heatmap models always use their
                own DARK-UDP decoder for "expected_oks" (reported as "dark_udp").
            presence_threshold: ``present = presence >= threshold``.
            temperature: recompute ProbPose maps at this sparsemax temperature (calibration); None = model's.
                ProbPose-DH: only for ``normalize="sparsemax"`` models (see ``dual_maps_at``).
        Instance score: ProbPose (and DH): mean predicted OKS over keypoints with presence > 0.45 (official
            rescoring), 0 if none; heatmap baseline: mean of keypoint scores above 0.2 (mmpose ViTPose rescoring),
            0 if none.
        ProbPose-DH: both maps are decoded ("expected_oks": ``dual_codec.decode_dual`` with the model's spread;
            "argmax": integer arg-max of each map) and merged per keypoint by the official box-mask rule;
            the people carry the DH fields of ``PersonPose``.
        """
        out = self._need_outputs()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        thr = float(presence_threshold)
        if not 0.0 <= thr <= 1.0:
            raise ValueError(f"presence_threshold must be in [0, 1], got {presence_threshold}")
        maps = self.probmaps_at(temperature)
        used = decoder
        dual = wide_windows = None
        if out.is_dual:
            dual = dec = self._decode_dual(*self.dual_maps_at(temperature), decoder)
            wide_windows = dual_codec.window_in_image(out.out_padding, out.centers[:, None], out.scales[:, None])[:, 0]
        elif decoder == "argmax":
            dec = codec.decode_argmax(maps)
        elif out.kind == "heatmap":
            dec, used = codec.decode_heatmaps(maps), "dark_udp"
        else:
            dec = codec.decode_expected_oks(maps)
        kpts = geometry.input_to_image(dec.keypoints, out.centers, out.scales) if out.num_people else \
            np.zeros((0, maps.shape[1], 2))
        w, h = out.image_size
        in_image = (kpts[..., 0] >= 0) & (kpts[..., 0] < w) & (kpts[..., 1] >= 0) & (kpts[..., 1] < h)
        scores = np.asarray(dec.scores, np.float64)
        windows = geometry.window_xyxy(out.centers, out.scales)
        people = []
        for i in range(out.num_people):
            if out.kind in ("probpose", "probpose_dh"):
                sel = out.presence[i] > RESCORE_PRESENCE_THRESHOLD
                score = float(out.oks[i][sel].mean()) if sel.any() else 0.0
            else:
                sel = scores[i] > HEATMAP_SCORE_THRESHOLD
                score = float(scores[i][sel].mean()) if sel.any() else 0.0
            people.append(PersonPose(
                box=out.boxes[i].copy(), box_source=out.box_sources[i], center=out.centers[i].copy(),
                scale=out.scales[i].copy(), window=windows[i], keypoints=kpts[i],
                presence=out.presence[i].astype(np.float64), present=out.presence[i] >= thr,
                visibility=out.visibility[i].astype(np.float64), oks=out.oks[i].astype(np.float64),
                keypoint_scores=scores[i], in_image=in_image[i], probmaps=maps[i], score=score,
                box_score=float(out.box_scores[i])))
            if dual is not None:
                c, s = out.centers[i], out.scales[i]
                p = people[-1]
                p.source = dual.source[i].copy()
                p.expert_keypoints = geometry.input_to_image(dual.expert_keypoints[i], c, s)
                p.wide_keypoints = geometry.input_to_image(dual.wide_keypoints[i], c, s)
                p.wide_maps = self.dual_maps_at(temperature)[1][i]
                p.wide_window = wide_windows[i]
                p.map_paddings = (out.in_padding, out.out_padding)
                p.map_spread = out.spread
        tempered = out.kind == "probpose" or (out.is_dual and out.map_normalization == "sparsemax")
        return PoseResult(people=people, image_size=out.image_size, decoder=used, presence_threshold=thr,
                          temperature=None if not tempered else (
                              out.temperature if temperature is None else float(temperature)),
                          model_name=self.model_name, kind=out.kind, flip_test=out.flip_test)

    def _decode_dual(self, expert_maps: np.ndarray, wide_maps: np.ndarray, decoder: str) -> dual_codec.DualDecoded:
        """Decode + merge both ProbPose-DH maps of all cached people (UDP input px)."""
        out = self._need_outputs()
        if decoder == "expected_oks":
            return dual_codec.decode_dual(expert_maps, wide_maps, out.bbox_masks, out.in_padding, out.out_padding,
                                          out.spread)
        # "argmax": integer arg-max of each map, mapped with its window, then the same box-mask merge rule.
        e, w = codec.decode_argmax(expert_maps), codec.decode_argmax(wide_maps)
        e_xy = dual_codec.map_to_input(e.heatmap_xy, dual_codec.map_window(out.in_padding))
        w_xy = dual_codec.map_to_input(w.heatmap_xy, dual_codec.map_window(out.out_padding))
        use_expert = dual_codec._inside_mask(w_xy, out.bbox_masks)
        return dual_codec.DualDecoded(keypoints=np.where(use_expert[..., None], e_xy, w_xy),
                                      scores=np.where(use_expert, e.scores, w.scores),
                                      source=np.where(use_expert, 0, 1).astype(np.int8), expert_keypoints=e_xy,
                                      wide_keypoints=w_xy, expert_scores=e.scores, wide_scores=w.scores)

    def _need_outputs(self) -> NetworkOutputs:
        if self.outputs is None:
            raise RuntimeError("no image set: call set_image(image, boxes) first")
        return self.outputs


def _check_temperature(temperature) -> float:
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return t


def _retemper(logits: np.ndarray, logits_flipped: np.ndarray | None, t: float, factor: float) -> np.ndarray:
    """mean(sparsemax(logits / t), sparsemax(logits_flipped / t)) * factor, clamped to [0, 1] (flipped None: the
    plain pass only). logits: (N,K,H,W) float32."""
    from probpose.models.probpose import sparsemax

    def pm(z: np.ndarray) -> torch.Tensor:
        z = torch.from_numpy(np.ascontiguousarray(z))
        n, k, hh, ww = z.shape
        return sparsemax(z.reshape(n, k, hh * ww) / t, dim=-1).reshape(n, k, hh, ww)

    with torch.inference_mode():
        p = pm(logits)
        if logits_flipped is not None:
            p = (p + pm(logits_flipped)) / 2
        return (p * factor).clamp(0, 1).numpy()


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of the Linear layers (CPU); the caller's model is left untouched."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 flags the quantized tensor API as deprecated; it still works
        warnings.simplefilter("ignore")
        q = quantize_dynamic(copy.deepcopy(model).cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8)
    q.kind = model.kind
    q.config = model.config
    q.metadata = dict(getattr(model, "metadata", {}) or {})
    if hasattr(model, "temperature"):
        q.temperature = model.temperature
    return q


def predict_image(image, model: torch.nn.Module | None = None, boxes=None, *, detector: str = "auto",
                  decoder: str = "expected_oks", presence_threshold: float = DEFAULT_PRESENCE_THRESHOLD,
                  flip_test: bool = True, device: str | torch.device | None = None) -> PoseResult:
    """One-shot convenience: ``PosePredictor(model).set_image(image, boxes).predict(...)``.

    model None loads ``probpose.weights.load_pretrained(None)`` (the embedded demo weights).
    """
    if model is None:
        from probpose.weights import load_pretrained

        model = load_pretrained(None)
    predictor = PosePredictor(model, device=device, flip_test=flip_test)
    predictor.set_image(image, boxes, detector=detector)
    return predictor.predict(decoder=decoder, presence_threshold=presence_threshold)
