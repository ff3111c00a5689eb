"""Handlers behind the Gradio demo (``app.py`` only wires them into ``gr.Blocks``).

Every handler is a plain function: numpy / paths / strings in, (image, JSON, Plotly figure, markdown, ...) out.
User mistakes (bad image, bad box, bad checkpoint) never raise out of a handler: they come back as a status
message (and a ``gr.Warning`` toast when called from the UI), so the app keeps serving.

Network outputs are cached per image in an ``ExploreSession`` held in ``gr.State``; sliders, the decoder and the
keypoint selector re-decode from that cache without running the network again.
"""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before torch initialises CUDA
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

import json
import logging
import os
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD, KEYPOINT_NAMES, NUM_KEYPOINTS
from probpose.errors import BoxError, ImageLoadError, ProbPoseError
from probpose.inference import MAP_CHOICES as MAP_CHOICES_DH

log = logging.getLogger("probpose.app")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROBPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PRECOMPUTED_DIR = Path(os.environ.get("PROBPOSE_PRECOMPUTED", REPO_ROOT / "analysis" / "precomputed"))

# The app keeps images at most this long on their long side: bigger ones are downscaled (and the UI says so)
# so that drawing and the JSON stay fast; the decoder's accuracy is unaffected at person scale.
MAX_SIDE = int(os.environ.get("PROBPOSE_APP_MAX_SIDE", "2560"))
MAX_PIXELS = 50_000_000  # refuse before decoding (decompression bombs)
MAX_PEOPLE = int(os.environ.get("PROBPOSE_APP_MAX_PEOPLE", "12"))
MAX_CACHED_MODELS = 4

# ---------------------------------------------------------------------------------------------- choices

MODEL_EMBEDDED = "ProbPose: embedded demo model"
MODEL_HUB = "ProbPose-s: official weights (Hub vrg-prague/ProbPose-s)"
MODEL_CUSTOM = "ProbPose: local file or Hub id (box below)"
MODEL_DH = "ProbPose-DH: embedded demo (dual map)"
MODEL_BASELINE = "Heatmap baseline (ViTPose-style, embedded)"
MODEL_CHOICES = [MODEL_EMBEDDED, MODEL_HUB, MODEL_CUSTOM, MODEL_DH, MODEL_BASELINE]
PROBPOSE_CHOICES = MODEL_CHOICES[:4]  # the model dropdown (the baseline is the comparison tab's other side)
PROBPOSE_KINDS = ("probpose", "probpose_dh")  # models with presence / visibility / predicted OKS outputs
HUB_ID = "vrg-prague/ProbPose-s"
ENV_BASELINE = "PROBPOSE_BASELINE_WEIGHTS"

BOX_AUTO = "automatic (person detector)"
BOX_WHOLE = "whole image"
BOX_TYPED = "typed / clicked boxes"
BOX_CHOICES = [BOX_AUTO, BOX_WHOLE, BOX_TYPED]

DECODER_EOKS = "expected-OKS (ProbPose)"
DECODER_ARGMAX = "argmax"
DECODER_CHOICES = [DECODER_EOKS, DECODER_ARGMAX]
_DECODER_KEYS = {DECODER_EOKS: "expected_oks", DECODER_ARGMAX: "argmax"}

DEFAULT_MASS = 0.75  # the official visualiser fills the 75 % credible region

MODEL_HELP = (
    "**Model.** The default is a *small demo ProbPose* trained here on CPU on the ~280 real COCO people that "
    "could be carried to this machine: it shows what ProbPose outputs, not paper accuracy. For the real thing "
    f"choose *{MODEL_HUB}* (downloads `ProbPose-s.pth` from the Hub on first use), or put a Hub id "
    "(`vrg-prague/ProbPose-s`) or a local `.pth` / `.safetensors` path in the box and choose "
    f"*{MODEL_CUSTOM}*; or start the app with `PROBPOSE_WEIGHTS=<path or Hub id>`. "
    f"*{MODEL_DH}* is the dual-map variant ProbPose-DH: an expert map over the activation window (green) and a "
    "wide map over a 1.25x larger window (dashed cyan); per keypoint the merge takes one of them (cyan rings = "
    "taken from the wide map, possibly outside the activation window). A DH checkpoint given as a file or Hub "
    "id is recognised too."
)


# ---------------------------------------------------------------------------------------------- device / ZeroGPU


def gpu(fn: Callable | None = None, *, duration: int = 60):
    """``spaces.GPU`` on a Hugging Face ZeroGPU Space, a no-op elsewhere (usable with or without arguments)."""

    def wrap(f: Callable) -> Callable:
        if spaces is None:
            return f
        return spaces.GPU(duration=duration)(f)

    return wrap(fn) if fn is not None else wrap


def device() -> str:
    """CUDA when there is one (or a ZeroGPU slice inside a ``@gpu`` call), else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _notify(message: str) -> None:
    """A yellow toast in the UI; a Python warning outside a Gradio request."""
    try:
        gr.Warning(message)
    except Exception:  # never let a notification break a handler
        log.warning(message)


def _user_message(err: BaseException) -> str:
    if isinstance(err, ProbPoseError):
        return str(err)
    log.error("unexpected error in an app handler:\n%s", "".join(traceback.format_exception(err)))
    return f"Internal error ({type(err).__name__}: {err}). The app is still running; try another input."


# ---------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to use: ``key`` is what ``probpose.weights.load_pretrained`` takes."""

    key: str
    label: str
    kind: str  # "probpose" | "heatmap" | "auto"


def model_spec(choice: str | None, custom: str | None = None) -> ModelSpec:
    """Map the model dropdown (+ the path / Hub-id box) to a weights source."""
    choice = choice or MODEL_EMBEDDED
    if choice == MODEL_EMBEDDED:
        key = os.environ.get("PROBPOSE_WEIGHTS") or "embedded"
        label = "embedded demo ProbPose" if key == "embedded" else f"ProbPose from PROBPOSE_WEIGHTS={key}"
        return ModelSpec(key, label, "probpose")
    if choice == MODEL_HUB:
        return ModelSpec(HUB_ID, f"official ProbPose-s ({HUB_ID})", "probpose")
    if choice == MODEL_DH:
        return ModelSpec("embedded-dh", "embedded demo ProbPose-DH (dual map)", "probpose_dh")
    if choice == MODEL_BASELINE:
        key = os.environ.get(ENV_BASELINE) or "embedded-heatmap"
        return ModelSpec(key, "heatmap baseline", "heatmap")
    if choice == MODEL_CUSTOM:
        src = (custom or "").strip().strip('"').strip("'")
        if not src:
            raise ProbPoseError("Type a local checkpoint path (.pth / .safetensors) or a Hub id such as "
                                f"{HUB_ID} in the weights box, or pick another model.")
        return ModelSpec(src, f"checkpoint {src}", "auto")
    raise ProbPoseError(f"Unknown model choice {choice!r}; pick one of: {', '.join(MODEL_CHOICES)}")


def baseline_spec() -> ModelSpec:
    return model_spec(MODEL_BASELINE)


_MODELS: OrderedDict[str, torch.nn.Module] = OrderedDict()
_MODELS_LOCK = threading.Lock()  # guards the dict
_LOAD_LOCKS: dict[str, threading.Lock] = {}  # one per source: a slow Hub load must not block cached models


def get_model(spec: ModelSpec) -> torch.nn.Module:
    """Load lazily, once per source (a small LRU). Raises ``CheckpointError`` with a message for the user."""
    from probpose.errors import CheckpointError
    from probpose.weights import load_pretrained

    with _MODELS_LOCK:
        if spec.key in _MODELS:
            _MODELS.move_to_end(spec.key)
            return _MODELS[spec.key]
        load_lock = _LOAD_LOCKS.setdefault(spec.key, threading.Lock())
    with load_lock:  # two clients asking for the same new model load it once
        with _MODELS_LOCK:
            if spec.key in _MODELS:
                return _MODELS[spec.key]
        try:
            model = load_pretrained(spec.key, kind=spec.kind)
        except CheckpointError as e:
            if spec.key != "embedded-dh":
                raise
            raise CheckpointError(f"The embedded ProbPose-DH demo model is not available: {e}. Give a ProbPose-DH "
                                  f"checkpoint path or Hub id with '{MODEL_CUSTOM}' (its kind is detected).") from e
        except ProbPoseError:
            raise
        except Exception as e:  # a file that is not a checkpoint at all (zip error, pickle error, ...)
            raise CheckpointError(f"Could not load weights from {spec.key!r}: {type(e).__name__}: {e}. "
                                  "Give a ProbPose / ViTPose .pth or .safetensors checkpoint.") from e
        model.eval()
        with _MODELS_LOCK:
            _MODELS[spec.key] = model
            while len(_MODELS) > MAX_CACHED_MODELS:
                _MODELS.popitem(last=False)
        return model


def clear_model_cache() -> None:
    with _MODELS_LOCK:
        _MODELS.clear()


def model_kind(model: torch.nn.Module) -> str:
    return getattr(model, "kind", "probpose")


def has_presence(kind: str) -> bool:
    """ProbPose and ProbPose-DH have presence / visibility / OKS outputs; the heatmap baseline has none."""
    return kind in PROBPOSE_KINDS


def embedded_status() -> str:
    """Markdown for the header: which default weights exist, and how to get the official ones."""
    from probpose.weights import EMBEDDED_DH_WEIGHTS, EMBEDDED_HEATMAP_WEIGHTS, EMBEDDED_WEIGHTS

    env = os.environ.get("PROBPOSE_WEIGHTS")
    lines = [MODEL_HELP]
    if env:
        lines.append(f"\n\n`PROBPOSE_WEIGHTS={env}` is set: the default model loads from there.")
    elif not EMBEDDED_WEIGHTS.is_file():
        lines.append(f"\n\n> **The embedded demo model is missing** (`{EMBEDDED_WEIGHTS.relative_to(REPO_ROOT)}` "
                     "is not in this checkout yet). Load the official weights or a local checkpoint as above.")
    if not EMBEDDED_DH_WEIGHTS.is_file():
        lines.append(f"\n\n> The embedded ProbPose-DH demo (`{EMBEDDED_DH_WEIGHTS.relative_to(REPO_ROOT)}`) is not "
                     f"in this checkout yet: *{MODEL_DH}* says so; a DH checkpoint path or Hub id works with "
                     f"*{MODEL_CUSTOM}*.")
    if not os.environ.get(ENV_BASELINE) and not EMBEDDED_HEATMAP_WEIGHTS.is_file():
        lines.append("\n\n> The embedded heatmap baseline is missing, so the comparison tab cannot run "
                     f"(set `{ENV_BASELINE}` to a ViTPose-style checkpoint).")
    return "".join(lines)


# ---------------------------------------------------------------------------------------------- images and boxes


def _payload_source(payload):
    """Gradio image payloads arrive raw (``preprocess=False``) so that *our* loader reports corrupt files:
    a FileData dict, a filepath, or (in tests) a numpy array / PIL image."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        if payload.get("path"):
            return payload["path"]
        url = payload.get("url") or ""
        if url.startswith("data:"):
            import base64

            return base64.b64decode(url.split(",", 1)[1])
        return None
    if isinstance(payload, (str, os.PathLike)):
        return os.fspath(payload)
    return payload


def load_input_image(payload) -> tuple[np.ndarray, list[str]]:
    """Any upload -> (H, W, 3) uint8 RGB plus notes for the status line. Raises ImageLoadError."""
    from probpose.image import load_image_with_info

    src = _payload_source(payload)
    if src is None:
        raise ImageLoadError("No image: upload a photo, take a webcam snapshot or click an example.")
    image, info = load_image_with_info(src, max_pixels=MAX_PIXELS)
    notes = list(info.notes)
    if info.exif_rotated:
        notes.append("EXIF rotation applied")
    if info.alpha_composited:
        notes.append("transparency composited on white")
    if info.source_mode not in ("RGB", "uint8 (H,W,3)"):
        notes.append(f"converted from {info.source_mode}")
    h, w = image.shape[:2]
    if max(h, w) > MAX_SIDE:
        import cv2

        s = MAX_SIDE / max(h, w)
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        notes.append(f"downscaled from {w}x{h} to {image.shape[1]}x{image.shape[0]} (cap {MAX_SIDE} px)")
    return image, notes


def parse_boxes(text: str | None, image_size: tuple[int, int]) -> np.ndarray:
    """'x1,y1,x2,y2' per line (spaces, commas or semicolons) -> (N, 4) xyxy, clipped to the image.

    Raises BoxError for malformed lines, empty boxes and boxes that lie entirely outside the image.
    """
    w, h = image_size
    boxes = []
    for n, line in enumerate((text or "").replace(";", "\n").splitlines(), 1):
        line = line.strip().strip("[]()")
        if not line or line.startswith("#"):
            continue
        parts = [p for p in line.replace(",", " ").split() if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise BoxError(f"Box line {n} ({line!r}) is not four numbers x1,y1,x2,y2.") from None
        if len(vals) != 4 or not all(np.isfinite(vals)):
            raise BoxError(f"Box line {n} ({line!r}) needs exactly four finite numbers x1,y1,x2,y2.")
        x1, y1, x2, y2 = vals
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise BoxError(f"Box line {n} ({line!r}) is empty (under 2 px wide or tall).")
        if x2 <= 0 or y2 <= 0 or x1 >= w - 1 or y1 >= h - 1:
            raise BoxError(f"Box line {n} ({line!r}) lies entirely outside the {w}x{h} image.")
        boxes.append([max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)])
    if not boxes:
        raise BoxError("No boxes typed: write one 'x1,y1,x2,y2' per line, click two corners on the image, "
                       "or choose automatic / whole image.")
    return np.asarray(boxes, dtype=np.float64)


def resolve_boxes(image: np.ndarray, mode: str | None, text: str | None) -> tuple[np.ndarray, str, list[str]]:
    """(boxes (N,4), box_source, notes) for the box mode of the UI."""
    from probpose.detect import detect_people

    h, w = image.shape[:2]
    mode = mode or BOX_AUTO
    if mode == BOX_TYPED:
        return parse_boxes(text, (w, h)), "given", []
    if mode == BOX_WHOLE:
        return np.array([[0.0, 0.0, w - 1.0, h - 1.0]]), "whole", []
    dets = detect_people(image, "auto", max_people=MAX_PEOPLE)
    notes = []
    if len(dets) == 1 and dets[0].source == "whole":
        notes.append("no person found by the detector: using the whole image as one box")
        return np.stack([dets[0].box]), "whole", notes
    src = dets[0].source.split(":")[0] if dets else "auto"
    notes.append(f"{len(dets)} person box(es) from the {src} detector")
    return np.stack([d.box for d in dets]), src, notes


def add_box_corner(pending: list | None, boxes_text: str | None, index) -> tuple[list | None, str, str, str]:
    """Click-to-corner box drawing on the input image: the first click stores a corner, the second completes
    the box and appends 'x1,y1,x2,y2' to the box text. Returns (pending, boxes_text, box_mode, hint)."""
    if index is None or len(index) < 2:
        return pending, boxes_text or "", BOX_TYPED, "Click on the image to place a box corner."
    x, y = float(index[0]), float(index[1])
    if not pending:
        return [x, y], boxes_text or "", BOX_TYPED, f"First corner at ({x:.0f}, {y:.0f}); click the opposite one."
    x0, y0 = pending
    line = f"{min(x0, x):.0f},{min(y0, y):.0f},{max(x0, x):.0f},{max(y0, y):.0f}"
    text = ((boxes_text or "").rstrip() + "\n" + line).strip()
    return None, text, BOX_TYPED, f"Box {line} added; click two more corners for another person."


def clear_boxes() -> tuple[None, str, str]:
    return None, "", "Boxes cleared."


# ---------------------------------------------------------------------------------------------- network + cache


@dataclass
class ExploreSession:
    """Everything a redraw needs, without the network: the image, the cached network outputs, the model source.

    Kept in ``gr.State`` (one per browser session); it holds no model, so copying it is cheap.
    """

    image: np.ndarray
    outputs: object  # probpose.inference.NetworkOutputs
    spec: ModelSpec
    kind: str
    boxes: np.ndarray
    box_source: str
    notes: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    seconds: float = 0.0


@gpu(duration=60)
def _run_network(spec: ModelSpec, image: np.ndarray, boxes: np.ndarray, box_source: str):
    """The only place the network runs. On ZeroGPU this is the GPU-decorated call."""
    from probpose.inference import PosePredictor

    model = get_model(spec)
    predictor = PosePredictor(model, device=device())
    predictor.set_image(image, boxes=boxes, box_source=box_source)
    return predictor.outputs


def _predictor(session: ExploreSession):
    """A predictor over the cached outputs (no network call)."""
    from probpose.inference import PosePredictor

    model = get_model(session.spec)
    # the model's own device: building a predictor must not move a model another request is using
    predictor = PosePredictor(model, device=next(model.parameters()).device)
    predictor.image, predictor.outputs = session.image, session.outputs
    return predictor


def run_session(payload, box_mode: str | None, boxes_text: str | None, model_choice: str | None,
                model_path: str | None = None, spec: ModelSpec | None = None) -> ExploreSession:
    """Load the image, find boxes, run the network once; raises ProbPoseError for the user."""
    image, notes = load_input_image(payload)
    spec = spec or model_spec(model_choice, model_path)
    model = get_model(spec)
    boxes, box_source, box_notes = resolve_boxes(image, box_mode, boxes_text)
    t0 = time.perf_counter()
    outputs = _run_network(spec, image, boxes, box_source)
    return ExploreSession(image=image, outputs=outputs, spec=spec, kind=model_kind(model), boxes=boxes,
                          box_source=box_source, notes=notes + box_notes,
                          metadata=dict(getattr(model, "metadata", {}) or {}),
                          seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- explore tab


def _decoder_key(decoder: str | None) -> str:
    return _DECODER_KEYS.get(decoder or DECODER_EOKS, decoder or "expected_oks")


def _raw_dual_maps(session: ExploreSession) -> bool:
    """ProbPose-DH with raw (``normalize="none"``) or sigmoid maps: no sparsemax, so no temperature to apply."""
    return session.kind == "probpose_dh" and getattr(session.outputs, "map_normalization", None) != "sparsemax"


def _temperature(session: ExploreSession, calibrated: bool) -> float | None:
    """The temperature fitted by the calibration analysis (stored in the checkpoint's metadata), if asked."""
    if not calibrated or not has_presence(session.kind) or _raw_dual_maps(session):
        return None
    meta = session.metadata or {}
    for key in ("calibrated_temperature", "temperature_calibrated", "calibration_temperature"):
        if isinstance(meta.get(key), (int, float)):
            return float(meta[key])
    cal = meta.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("temperature"), (int, float)):
        return float(cal["temperature"])
    return None


def decode_session(session: ExploreSession, decoder: str | None = DECODER_EOKS,
                   presence_threshold: float = DEFAULT_PRESENCE_THRESHOLD, calibrated: bool = False):
    """PoseResult from the cached outputs (no network)."""
    kwargs = {"decoder": _decoder_key(decoder), "presence_threshold": float(presence_threshold)}
    t = _temperature(session, calibrated)
    if t is not None:
        kwargs["temperature"] = t
    return _predictor(session).predict(**kwargs)


def keypoint_index(keypoint: str | int | None) -> int:
    if keypoint is None or keypoint == "":
        return 0
    if isinstance(keypoint, (int, np.integer)):
        k = int(keypoint)
    elif str(keypoint).isdigit():
        k = int(keypoint)
    else:
        name = str(keypoint).strip().lower().replace(" ", "_")
        if name not in KEYPOINT_NAMES:
            raise ProbPoseError(f"Unknown keypoint {keypoint!r}; use one of {', '.join(KEYPOINT_NAMES)}")
        k = KEYPOINT_NAMES.index(name)
    if not 0 <= k < NUM_KEYPOINTS:
        raise ProbPoseError(f"Keypoint index {k} is out of range 0..{NUM_KEYPOINTS - 1}")
    return k


def person_index(person, n: int) -> int:
    try:
        i = int(float(person or 0))
    except (TypeError, ValueError):
        i = 0
    return int(np.clip(i, 0, max(n - 1, 0)))


def _write_json(data: dict, stem: str = "probpose_keypoints") -> str:
    folder = Path(tempfile.mkdtemp(prefix="probpose_app_"))
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data, indent=1, default=_json_default))
    return str(path)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


def result_json(session: ExploreSession, result, decoder: str | None, threshold: float,
                calibrated: bool = False) -> dict:
    data = json.loads(json.dumps(result.to_json(), default=_json_default))
    data["model"] = {"source": session.spec.key, "label": session.spec.label, "kind": session.kind}
    data["settings"] = {"decoder": _decoder_key(decoder), "presence_threshold": float(threshold),
                        "calibrated_temperature": _temperature(session, calibrated)}
    data["notes"] = list(session.notes)
    if session.kind == "probpose_dh":
        data["source_legend"] = {"0": "expert map (activation window)", "1": "wide map (wide window)"}
    return data


# ---------------------------------------------------------------------------------------------- plotly figures

_NAMES = [n.replace("_", " ") for n in KEYPOINT_NAMES]


def _empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=260, xaxis_visible=False, yaxis_visible=False, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def scores_figure(person, threshold: float, kind: str = "probpose", title: str = "") -> go.Figure:
    """Per-keypoint presence / visibility / predicted-OKS bars (the baseline has only its heatmap peak)."""
    fig = go.Figure()
    pres = np.asarray(person.presence, dtype=float)
    label = {"probpose": "presence P(in window)", "probpose_dh": "presence P(inside wide window)"}.get(
        kind, "heatmap peak (baseline 'presence')")
    colors = ["#2ca02c" if p >= threshold else "#d62728" for p in pres]
    fig.add_bar(x=_NAMES, y=pres, name=label, marker_color=colors)
    if has_presence(kind):
        fig.add_bar(x=_NAMES, y=np.asarray(person.visibility, dtype=float), name="visibility", marker_color="#1f77b4")
        fig.add_bar(x=_NAMES, y=np.asarray(person.oks, dtype=float), name="predicted OKS", marker_color="#9467bd")
    fig.add_hline(y=threshold, line_dash="dash", line_color="black", annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(barmode="group", height=320, yaxis_range=[0, 1.05], title=title or None,
                      margin=dict(l=40, r=10, t=40 if title else 20, b=80), legend=dict(orientation="h", y=1.15))
    return fig


def _crop(image: np.ndarray, center, scale) -> np.ndarray:
    from probpose.geometry import udp_warp_matrix, warp_image

    return warp_image(image, udp_warp_matrix(np.asarray(center), np.asarray(scale)))


def _map_axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    # UDP: heatmap pixel j sits at crop pixel j * (192-1)/(W-1), so maps overlay the crop without resampling
    return np.arange(w) * (191.0 / (w - 1)), np.arange(h) * (255.0 / (h - 1))


def chosen_map(person, k: int) -> str:
    """"wide" when the ProbPose-DH merge took keypoint k from the wide map, else "expert" (every other model)."""
    return "wide" if person.is_dual and int(person.source[k]) == 1 else "expert"


def _map_crop(person, which: str = "expert") -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of the UDP crop a map lies on: the activation window, or the DH wide window (its first / last
    map-pixel centres, as ``draw.warp_wide_map_to_image``)."""
    if which != "wide":
        return np.asarray(person.center, np.float64), np.asarray(person.scale, np.float64)
    win = np.asarray(person.wide_window, np.float64)
    return (win[:2] + win[2:]) / 2, win[2:] - win[:2]


def _to_crop(xy, center, scale) -> np.ndarray:
    """Image px -> px of the 192x256 UDP crop of (center, scale)."""
    c, s = np.asarray(center, np.float64), np.asarray(scale, np.float64)
    return (np.asarray(xy, np.float64) - (c - s / 2)) * np.array([191.0, 255.0]) / s


def _map_row(fig, row: int, crop: np.ndarray, pmap: np.ndarray, eoks: np.ndarray, mask: np.ndarray | None,
             marks) -> None:
    """One row of the keypoint panel: map and expected-OKS surface over the crop, then the credible region
    (``mask`` on the map grid) with ``marks`` = [(name, crop xy, marker dict)]."""
    xs, ys = _map_axes(*pmap.shape)
    for col, z, scale in ((1, pmap, "Hot"), (2, eoks, "Viridis")):
        fig.add_trace(go.Image(z=crop, opacity=1.0, hoverinfo="skip"), row=row, col=col)
        zz = np.where(z > 0, z, np.nan) if col == 1 else z
        fig.add_trace(go.Heatmap(z=zz, x=xs, y=ys, colorscale=scale, opacity=0.6, showscale=False,
                                 hovertemplate="x=%{x:.0f} y=%{y:.0f} value=%{z:.4f}<extra></extra>"),
                      row=row, col=col)
    fig.add_trace(go.Image(z=crop, hoverinfo="skip"), row=row, col=3)
    if mask is not None:
        fig.add_trace(go.Heatmap(z=np.where(mask, 1.0, np.nan), x=xs, y=ys, showscale=False, opacity=0.45,
                                 colorscale=[[0, "#00c8ff"], [1, "#00c8ff"]], hoverinfo="skip"), row=row, col=3)
    for name, xy, marker in marks:
        fig.add_trace(go.Scatter(x=[xy[0]], y=[xy[1]], mode="markers", name=name, marker=marker), row=row, col=3)
    for col in (1, 2, 3):
        n = (row - 1) * 3 + col
        fig.update_xaxes(visible=False, range=[-0.5, 191.5], row=row, col=col)
        fig.update_yaxes(visible=False, range=[255.5, -0.5], scaleanchor=f"x{'' if n == 1 else n}", row=row, col=col)


_ARGMAX_MARK = dict(symbol="x", size=12, color="red")
_EOKS_MARK = dict(symbol="circle-open", size=14, color="lime", line_width=3)


def keypoint_figure(image: np.ndarray, person, k: int, mass: float, kind: str = "probpose") -> go.Figure:
    """Three panels on the person's crop: the keypoint's map, its expected-OKS surface, and the credible
    region with the argmax and expected-OKS decodes (they disagree where the map is multi-modal or skewed).
    ProbPose-DH: ``dual_keypoint_figure`` (both maps, one row each)."""
    from probpose.codec import credible_region, decode_argmax, decode_expected_oks, expected_oks_maps

    if getattr(person, "is_dual", False):
        return dual_keypoint_figure(image, person, k, mass)
    maps = np.asarray(person.probmaps, dtype=np.float64)
    pmap = maps[k]
    crop = _crop(image, person.center, person.scale)
    is_pp = has_presence(kind)
    if is_pp:
        titles = (f"P(location) of {_NAMES[k]}", "expected OKS surface", f"{mass:.0%} credible region")
        eoks = expected_oks_maps(maps)[k]
    else:
        titles = (f"heatmap of {_NAMES[k]}", "heatmap (no expected OKS)", f"{mass:.0%} of the positive mass")
        eoks = pmap
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.04)
    pos = np.where(np.isfinite(pmap), np.maximum(pmap, 0), 0)
    annotation, mask, marks = "", None, []
    if pos.sum() > 0:
        region = credible_region(pos, mass)
        mask = region.mask
        am = decode_argmax(maps[k:k + 1]).keypoints[0]
        marks.append(("argmax", am, _ARGMAX_MARK))
        if is_pp:
            eo = decode_expected_oks(maps).keypoints[k]
            marks.append(("expected-OKS", eo, _EOKS_MARK))
            d = float(np.hypot(*(am - eo)))
            annotation = f"argmax vs expected-OKS: {d:.1f} crop px apart; region {region.area} map px"
        else:
            annotation = f"credible region of the normalised heatmap: {region.area} map px"
    _map_row(fig, 1, crop, pmap, eoks, mask, marks)
    fig.update_layout(height=380, margin=dict(l=5, r=5, t=40, b=30), showlegend=True,
                      legend=dict(orientation="h", y=-0.02), title=None)
    if annotation:
        fig.add_annotation(text=annotation, showarrow=False, x=0.5, y=-0.09, xref="paper", yref="paper")
    return fig


def merge_note(person, k: int) -> str:
    """Which map the ProbPose-DH merge chose for keypoint k, and why (docs/dual.md, merge rule)."""
    which = chosen_map(person, k)
    why = ("the wide-map decode lies in the crop and on the person box" if which == "expert" else
           "the wide-map decode lies off the person box or outside the crop")
    return f"merge chose the {which} map for {_NAMES[k]} ({why})"


def dual_keypoint_figure(image: np.ndarray, person, k: int, mass: float) -> go.Figure:
    """ProbPose-DH keypoint panel: one row per map (expert over the activation window, wide over the wide window),
    each with its normalised map (``map_distribution``: raw maps are clipped at 0 and normalised), its
    expected-OKS surface and credible region with the map's arg-max and its decode (as the predictor's decoder
    gives it); the keypoint the merge kept is starred, and the title says which map that was."""
    chosen = chosen_map(person, k)
    titles = []
    for which in MAP_CHOICES_DH:
        tag = " (merge's choice)" if which == chosen else ""
        titles += [f"{which} map of {_NAMES[k]}{tag}", f"expected OKS ({which})", f"{mass:.0%} credible region"]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.08)
    decodes = {"expert": person.expert_keypoints[k], "wide": person.wide_keypoints[k]}
    for row, which in enumerate(MAP_CHOICES_DH, 1):
        center, scale = _map_crop(person, which)
        dist = person.map_distribution(k, which)
        marks, mask = [], None
        if dist.sum() > 0:
            mask = person.credible_region(k, mass, which).mask
            j, i = np.unravel_index(int(np.argmax(dist)), dist.shape)
            xs, ys = _map_axes(*dist.shape)
            marks.append((f"argmax ({which})", (xs[i], ys[j]), _ARGMAX_MARK))
        marks.append((f"decode ({which})", _to_crop(decodes[which], center, scale), _EOKS_MARK))
        if which == chosen:
            marks.append(("merged keypoint", _to_crop(person.keypoints[k], center, scale),
                          dict(symbol="star", size=16, color="magenta")))
        if which == "wide":  # where the activation window lies on the wide crop
            x0, y0 = _to_crop(person.window[:2], center, scale)
            x1, y1 = _to_crop(person.window[2:], center, scale)
            fig.add_trace(go.Scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines",
                                     name="activation window", line=dict(color="lime", width=2)), row=2, col=1)
        _map_row(fig, row, _crop(image, center, scale), dist, person.expected_oks_map(k, which), mask, marks)
    fig.update_layout(height=720, margin=dict(l=5, r=5, t=40, b=30), showlegend=True,
                      legend=dict(orientation="h", y=-0.02), title=None)
    fig.add_annotation(text=merge_note(person, k), showarrow=False, x=0.5, y=-0.05, xref="paper", yref="paper")
    return fig


# ---------------------------------------------------------------------------------------------- explore handlers


def draw_result(image: np.ndarray, result, highlight_person: int | None = None, keypoint: int | None = None,
                mass: float = DEFAULT_MASS) -> np.ndarray:
    """Padded canvas with out-of-image keypoints, activation windows and presence-coloured skeletons; with a
    selected person and keypoint, also that keypoint's map (normalised x presence, as the official visualiser)
    and its credible region. ProbPose-DH: the canvas also fits the wide windows (dashed cyan), and the overlay is
    the map the merge chose for that keypoint (expert or wide)."""
    from probpose.draw import (
        draw_credible_region,
        draw_poses,
        overlay_map,
        padded_canvas,
        pose_windows,
        warp_map_to_image,
    )

    people = result.people
    canvas, offset = padded_canvas(image, pose_windows(people))
    highlight = None
    if highlight_person is not None and keypoint is not None and people:
        i = int(np.clip(highlight_person, 0, len(people) - 1))
        p = people[i]
        which = chosen_map(p, keypoint)
        m = p.map_distribution(keypoint, which)
        if m.sum() > 0:
            shown = m * float(np.clip(p.presence[keypoint], 0, 1))
            center, scale = _map_crop(p, which)
            warped = warp_map_to_image(shown, center, scale, (canvas.shape[1], canvas.shape[0]), offset)
            canvas = overlay_map(canvas, warped, alpha=0.55, vmax=float(warped.max()) or None)
            canvas = draw_credible_region(canvas, p.credible_region(keypoint, mass, which), offset)
        highlight = (i, keypoint)
    return draw_poses(image, people, highlight=highlight, canvas=(canvas, offset))


def _names(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def _person_summary(people, kind: str) -> str:
    rows = []
    for i, p in enumerate(people):
        present = np.asarray(p.present, dtype=bool)
        in_img = np.asarray(p.in_image, dtype=bool)
        out_img = int(np.sum(present & ~in_img))
        absent = [KEYPOINT_NAMES[k] for k in np.flatnonzero(~present)]
        what = "above the threshold" if has_presence(kind) else "with a heatmap peak above the threshold"
        line = f"- person {i}: {int(present.sum())}/17 keypoints {what}"
        if out_img:
            line += f", {out_img} of them outside the image (drawn on the grey padding)"
        if absent and has_presence(kind):
            line += f"; predicted outside the {'wide' if p.is_dual else 'activation'} window: " + _names(absent)
        if p.is_dual:
            wide = [KEYPOINT_NAMES[k] for k in np.flatnonzero(np.asarray(p.source) == 1)]
            line += (f"; source per keypoint (0 expert / 1 wide map): {''.join(str(int(v)) for v in p.source)}, "
                     f"{len(wide)} from the wide map (cyan rings)" + (f": {_names(wide)}" if wide else ""))
        rows.append(line)
    return "\n".join(rows)


def _status(session: ExploreSession, result, extra: str = "") -> str:
    head = (f"**{session.spec.label}**: {len(result.people)} person(s), network {session.seconds * 1000:.0f} ms "
            f"on {device()} (cached: moving the sliders re-decodes without running it again).")
    notes = f"\n\n_Input: {'; '.join(session.notes)}._" if session.notes else ""
    return head + notes + "\n\n" + _person_summary(result.people, session.kind) + (f"\n\n{extra}" if extra else "")


def _explore_views(session: ExploreSession, decoder, threshold, mass, keypoint, person, calibrated):
    result = decode_session(session, decoder, threshold, calibrated)
    k = keypoint_index(keypoint)
    i = person_index(person, len(result.people))
    drawing = draw_result(session.image, result, highlight_person=i, keypoint=k, mass=float(mass))
    data = result_json(session, result, decoder, threshold, calibrated)
    p = result.people[i]
    bars = scores_figure(p, float(threshold), session.kind, title=f"person {i}")
    kp = keypoint_figure(session.image, p, k, float(mass), session.kind)
    notes = []
    if p.is_dual:
        e, w = p.expert_keypoints[k], p.wide_keypoints[k]
        notes.append(f"Person {i}: {merge_note(p, k)}; expert decode ({e[0]:.0f}, {e[1]:.0f}), wide decode "
                     f"({w[0]:.0f}, {w[1]:.0f}) image px.")
    if calibrated and _raw_dual_maps(session):
        notes.append("_Calibrated temperature: this ProbPose-DH checkpoint's maps are raw (no sparsemax), so "
                     "there is no temperature to apply; the option is ignored._")
    elif calibrated and _temperature(session, True) is None and has_presence(session.kind):
        notes.append("_This checkpoint carries no calibrated temperature: the maps use the model's own (0.5)._")
    return drawing, data, bars, kp, _status(session, result, "\n\n".join(notes)), _write_json(data)


def _explore_error(message: str):
    _notify(message)
    empty = _empty_figure("no result")
    return None, {"error": message}, empty, empty, f"**Could not run:** {message}", None


def explore_run(payload, box_mode=BOX_AUTO, boxes_text="", model_choice=MODEL_EMBEDDED, model_path="",
                decoder=DECODER_EOKS, threshold=DEFAULT_PRESENCE_THRESHOLD, mass=DEFAULT_MASS,
                keypoint=KEYPOINT_NAMES[0], person=0, calibrated=False):
    """Run the network once on an image and show everything.

    Returns (session, drawing, keypoints JSON, score bars, keypoint maps, status markdown, JSON file path).
    """
    try:
        session = run_session(payload, box_mode, boxes_text, model_choice, model_path)
        return (session, *_explore_views(session, decoder, threshold, mass, keypoint, person, calibrated))
    except Exception as e:  # user errors become a message; the app keeps serving
        return (None, *_explore_error(_user_message(e)))


def explore_redraw(session: ExploreSession | None, decoder=DECODER_EOKS, threshold=DEFAULT_PRESENCE_THRESHOLD,
                   mass=DEFAULT_MASS, keypoint=KEYPOINT_NAMES[0], person=0, calibrated=False):
    """Re-decode from the cached network outputs (threshold, decoder, keypoint, person, credible mass).

    Returns (drawing, keypoints JSON, score bars, keypoint maps, status markdown, JSON file path).
    """
    if session is None:
        empty = _empty_figure("run an image first")
        return None, {}, empty, empty, "Upload an image (or click an example) and press **Run**.", None
    try:
        return _explore_views(session, decoder, threshold, mass, keypoint, person, calibrated)
    except Exception as e:
        return _explore_error(_user_message(e))


def predict(payload, boxes_text: str = "", model_choice: str = MODEL_EMBEDDED, model_path: str = "",
            decoder: str = DECODER_EOKS, threshold: float = DEFAULT_PRESENCE_THRESHOLD):
    """The simple public endpoint: image [+ optional boxes, one 'x1,y1,x2,y2' per line] -> (JSON, drawing)."""
    mode = BOX_TYPED if (boxes_text or "").strip() else BOX_AUTO
    try:
        session = run_session(payload, mode, boxes_text, model_choice, model_path)
        result = decode_session(session, decoder, threshold)
        return result_json(session, result, decoder, threshold), draw_result(session.image, result)
    except Exception as e:
        message = _user_message(e)
        _notify(message)
        return {"error": message}, None


# ---------------------------------------------------------------------------------------------- compare tab


def compare_maps_figure(image: np.ndarray, pp_person, hm_person, k: int) -> go.Figure:
    """The same crop, the same keypoint: ProbPose's probability map next to the baseline's heatmap. ProbPose-DH:
    the (normalised) map the merge chose for that keypoint, on its own window's crop (the wide one can extend
    past the activation window)."""
    which = chosen_map(pp_person, k)
    left = (f"ProbPose-DH: {which} map of {_NAMES[k]} (merge's choice)" if pp_person.is_dual
            else f"ProbPose: P(location) of {_NAMES[k]}")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=(left, f"baseline: heatmap of {_NAMES[k]}"))
    for col, person, scale in ((1, pp_person, "Hot"), (2, hm_person, "Viridis")):
        dual = col == 1 and person.is_dual
        m = person.map_distribution(k, which) if dual else np.asarray(person.probmaps, dtype=np.float64)[k]
        xs, ys = _map_axes(*m.shape)
        center, scale_ = _map_crop(person, which) if dual else (person.center, person.scale)
        fig.add_trace(go.Image(z=_crop(image, center, scale_), hoverinfo="skip"), row=1, col=col)
        fig.add_trace(go.Heatmap(z=np.where(m > (0 if col == 1 else 0.02), m, np.nan), x=xs, y=ys, opacity=0.6,
                                 colorscale=scale, showscale=False,
                                 hovertemplate="value=%{z:.4f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(visible=False, range=[-0.5, 191.5], row=1, col=col)
        fig.update_yaxes(visible=False, range=[255.5, -0.5], scaleanchor="x" if col == 1 else "x2", row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=5, r=5, t=40, b=5))
    return fig


def compare_scores_figure(pp_person, hm_person, threshold: float) -> go.Figure:
    fig = go.Figure()
    name = "ProbPose-DH P(inside wide window)" if pp_person.is_dual else "ProbPose presence"
    fig.add_bar(x=_NAMES, y=np.asarray(pp_person.presence, float), name=name, marker_color="#2ca02c")
    fig.add_bar(x=_NAMES, y=np.asarray(hm_person.presence, float), name="baseline heatmap peak",
                marker_color="#ff7f0e")
    fig.add_hline(y=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(barmode="group", height=300, yaxis_range=[0, 1.05], margin=dict(l=40, r=10, t=20, b=80),
                      legend=dict(orientation="h", y=1.15))
    return fig


def compare_table(pp_person, hm_person, image_size) -> list[list]:
    """Per keypoint: what each model says (location, inside the image?, its score). ProbPose-DH: absent means
    outside the wide window, and keypoints taken from the wide map say so."""
    rows = []
    for k in range(NUM_KEYPOINTS):
        pk, hk = np.asarray(pp_person.keypoints)[k], np.asarray(hm_person.keypoints)[k]
        p_in, h_in = bool(pp_person.present[k]), bool(hm_person.present[k])
        p_img, h_img = bool(pp_person.in_image[k]), bool(hm_person.in_image[k])
        says = ("in image" if p_img else "outside image") if p_in else "outside window (absent)"
        if pp_person.is_dual:
            says = says.replace("outside window", "outside wide window")
            says += f"; {chosen_map(pp_person, k)} map" + (", outside the activation window"
                                                          if not _inside(pk, pp_person.window) else "")
        rows.append([
            KEYPOINT_NAMES[k],
            f"({pk[0]:.0f}, {pk[1]:.0f})", round(float(pp_person.presence[k]), 3), says,
            f"({hk[0]:.0f}, {hk[1]:.0f})", round(float(hm_person.presence[k]), 3),
            ("in image" if h_img else "outside image") if h_in else "low peak (no outside notion)",
        ])
    return rows


def _inside(xy, box) -> bool:
    return bool(box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3])


COMPARE_HEADERS = ["keypoint", "ProbPose xy", "presence", "ProbPose says", "baseline xy", "heatmap peak",
                   "baseline says"]


def _compare_views(state, keypoint, threshold, person):
    pp_session, hm_session = state
    pp = decode_session(pp_session, DECODER_EOKS, threshold)
    hm = decode_session(hm_session, DECODER_EOKS, threshold)
    k = keypoint_index(keypoint)
    i = person_index(person, len(pp.people))
    pp_draw = draw_result(pp_session.image, pp, highlight_person=i, keypoint=k)
    hm_draw = draw_result(hm_session.image, hm, highlight_person=i, keypoint=k)
    a, b = pp.people[i], hm.people[i]
    h, w = pp_session.image.shape[:2]
    n_pp_out = int(np.sum(~np.asarray(a.present, bool)))
    n_hm_low = int(np.sum(~np.asarray(b.present, bool)))
    says = f"ProbPose says {n_pp_out} keypoint(s) lie outside the activation window"
    if a.is_dual:
        wide = np.flatnonzero(np.asarray(a.source) == 1)
        n_out_aw = sum(not _inside(a.keypoints[k], a.window) for k in wide)
        says = (f"ProbPose-DH takes {len(wide)} keypoint(s) from its wide map ({n_out_aw} of them outside the "
                f"activation window, cyan rings) and says {n_pp_out} lie outside even the wide window")
    status = (f"Same {len(pp.people)} crop(s) through **{pp_session.spec.label}** and the **heatmap baseline**. "
              f"Person {i}: {says} (presence < "
              f"{threshold:.2f}); the baseline has no such output - it always places every keypoint inside the "
              f"window, and {n_hm_low} of its heatmap peaks fall below the threshold (the 'heatmap-peak rule').")
    return (pp_draw, hm_draw, compare_maps_figure(pp_session.image, a, b, k),
            compare_scores_figure(a, b, float(threshold)), compare_table(a, b, (w, h)), status)


def _compare_error(message: str):
    _notify(message)
    return None, None, _empty_figure("no result"), _empty_figure("no result"), [], f"**Could not run:** {message}"


def compare_run(payload, box_mode=BOX_AUTO, boxes_text="", model_choice=MODEL_EMBEDDED, model_path="",
                keypoint=KEYPOINT_NAMES[0], threshold=DEFAULT_PRESENCE_THRESHOLD, person=0):
    """ProbPose and the baseline on the same crops. Returns (state, ProbPose drawing, baseline drawing,
    maps figure, scores figure, per-keypoint table rows, status markdown)."""
    try:
        spec = model_spec(model_choice, model_path)
        pp_session = run_session(payload, box_mode, boxes_text, None, spec=spec)
        if not has_presence(pp_session.kind):
            raise ProbPoseError("Pick a ProbPose model on the left: the comparison is ProbPose vs the baseline.")
        hm_spec = baseline_spec()
        hm_model = get_model(hm_spec)
        t0 = time.perf_counter()
        hm_out = _run_network(hm_spec, pp_session.image, pp_session.boxes, pp_session.box_source)
        hm_session = ExploreSession(image=pp_session.image, outputs=hm_out, spec=hm_spec, kind=model_kind(hm_model),
                                    boxes=pp_session.boxes, box_source=pp_session.box_source,
                                    notes=pp_session.notes, seconds=time.perf_counter() - t0)
        state = (pp_session, hm_session)
        return (state, *_compare_views(state, keypoint, threshold, person))
    except Exception as e:
        return (None, *_compare_error(_user_message(e)))


def compare_redraw(state, keypoint=KEYPOINT_NAMES[0], threshold=DEFAULT_PRESENCE_THRESHOLD, person=0):
    """Re-decode both cached results (keypoint, threshold, person) without the network."""
    if state is None:
        return None, None, _empty_figure("run first"), _empty_figure("run first"), [], "Press **Compare** first."
    try:
        return _compare_views(state, keypoint, threshold, person)
    except Exception as e:
        return _compare_error(_user_message(e))


# ---------------------------------------------------------------------------------------------- examples / tabs

TAB_IDS = ("explore", "compare", "cropcoco", "calibration", "sweep")
EXAMPLE_IDS = (885, 1000, 5001)


def tab_from_query(query: dict | None) -> str:
    """`?tab=calibration` opens that tab (used by links and by the screenshot script)."""
    tab = str((query or {}).get("tab", "explore")).strip().lower()
    return tab if tab in TAB_IDS else "explore"


def example_images() -> list[str]:
    """Example photos: files in examples/ of the repository, else the public COCO val images of the shared data."""
    found: list[str] = []
    ex = REPO_ROOT / "examples"
    if ex.is_dir():
        found += sorted(str(p) for p in ex.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    val = SHARED_DATA / "coco_subset" / "val2017"
    for i in EXAMPLE_IDS:
        p = val / f"{i:012d}.jpg"
        if p.is_file() and not any(p.name in f for f in found):  # examples/ may hold a copy
            found.append(str(p))
    return found[:6]


def explore_example(payload):
    """Examples: the explore view with default settings (cached lazily by Gradio)."""
    return explore_run(payload)


# ---------------------------------------------------------------------------------------------- precomputed analysis


def load_precomputed(name: str) -> dict | None:
    """A JSON result of the analysis package from analysis/precomputed/ (None when absent or unreadable)."""
    path = PRECOMPUTED_DIR / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def _pick(d: dict, *keys, default=None):
    for k in keys:
        if isinstance(d, dict) and k in d and d[k] is not None:
            return d[k]
    return default


def _curve_xy(curve: dict) -> tuple[np.ndarray, np.ndarray]:
    x = _pick(curve, "confidence", "mean_confidence", "nominal", "levels", "expected", "bins", "bin_centers", "mass")
    y = _pick(curve, "observed", "frequency", "hit_rate", "accuracy", "coverage", "empirical", "fraction_positive")
    x = np.asarray(x if x is not None else [], dtype=float)
    y = np.asarray(y if y is not None else [], dtype=float)
    n = min(len(x), len(y))
    return x[:n], y[:n]


def reliability_figure(curves: dict[str, dict], title: str, x_title: str, y_title: str) -> go.Figure:
    """Reliability / coverage diagram: one line per curve, the diagonal is perfect calibration."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                    line=dict(dash="dot", color="grey"))
    for name, curve in curves.items():
        x, y = _curve_xy(curve)
        if len(x):
            ece = _pick(curve, "ece", "ECE")
            label = f"{name}" + (f" (ECE {float(ece):.3f})" if ece is not None else "")
            fig.add_scatter(x=x, y=y, mode="lines+markers", name=label)
    fig.update_layout(title=title, height=380, xaxis_title=x_title, yaxis_title=y_title, xaxis_range=[0, 1],
                      yaxis_range=[0, 1], margin=dict(l=50, r=10, t=40, b=40), legend=dict(y=0.02, x=0.45))
    return fig


def _metrics_files() -> dict[str, dict]:
    """analysis/precomputed/**/metrics.json written by `python -m analysis evaluate` -> {model kind: metrics}."""
    found: dict[str, dict] = {}
    if not PRECOMPUTED_DIR.is_dir():
        return found
    for path in sorted(PRECOMPUTED_DIR.glob("**/metrics*.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = "baseline" if m.get("kind") == "heatmap" else "probpose"
        found.setdefault(name, m)
    return found


def calibration_from_metrics(metrics: dict) -> dict | None:
    """The analysis package's metrics['calibration'] -> the app's calibration view data."""
    from analysis.precompute import calibration_view

    return calibration_view(metrics)


def sweep_from_metrics(by_model: dict[str, dict]) -> dict | None:
    from analysis.precompute import sweep_view

    return sweep_view({name: m.get("sweep") for name, m in by_model.items()})


def load_latest(name: str) -> dict | None:
    """``name`` from analysis/precomputed/, or the app's own ``recomputed_<name>`` when that is newer (so the
    table, the case view and a page reload all show the last recompute)."""
    paths = [p for p in (PRECOMPUTED_DIR / name, PRECOMPUTED_DIR / f"recomputed_{name}") if p.is_file()]
    for path in sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True):
        data = load_precomputed(path.name)
        if data:
            return data
    return None


def calibration_views(data: dict | None = None):
    """(info markdown, maps coverage figure, presence reliability figure, ECE table) from calibration.json."""
    if data is None:
        data = load_latest("calibration.json")
        data = data or calibration_from_metrics(_metrics_files().get("probpose", {}))
    if not data:
        msg = ("No precomputed calibration results in `analysis/precomputed/calibration.json` yet. Press "
               "**Recompute** to run the calibration analysis on a small subset of the shared COCO val data.")
        return msg, _empty_figure("no calibration results"), _empty_figure("no calibration results"), []
    maps, presence, rows = {}, {}, []
    for part, store in (("maps", maps), ("presence", presence)):
        block = _pick(data, part, f"{part}_calibration", default={})
        t = _pick(block, "temperature", "fitted_temperature")
        for stage in ("before", "after"):
            curve = _pick(block, stage)
            if isinstance(curve, dict):
                suffix = "before temperature scaling" if stage == "before" else f"after (T={t:.3g})" if t else "after"
                store[suffix] = curve
        b, a = _pick(_pick(block, "before", default={}), "ece", "ECE"), _pick(_pick(block, "after", default={}),
                                                                              "ece", "ECE")
        if b is not None or a is not None:
            rows.append([part, None if b is None else round(float(b), 4), None if a is None else round(float(a), 4),
                         None if t is None else round(float(t), 4)])
    desc = _pick(data, "description", "what", default="")
    n = _pick(data, "n_people", "num_people", "people")
    info = "**Calibration** of ProbPose's probability maps (does the q-mass credible region hold the ground " \
           "truth a fraction q of the time?) and of its presence probability, before and after temperature " \
           "scaling." + (f" {desc}" if desc else "") + (f" ({n} people.)" if n else "")
    return (info, reliability_figure(maps, "probability maps", "credible mass q", "fraction of GT inside"),
            reliability_figure(presence, "presence", "predicted presence", "fraction actually inside"),
            {"headers": ["output", "ECE before", "ECE after", "temperature"], "data": rows})


def sweep_figure(data: dict) -> go.Figure:
    thr = np.asarray(_pick(data, "thresholds", "threshold", default=[]), dtype=float)
    models = _pick(data, "models", default={k: v for k, v in data.items() if isinstance(v, dict)})
    fig = make_subplots(rows=1, cols=3, subplot_titles=("mAP", "Ex-mAP", "presence error"), horizontal_spacing=0.07)
    colors = {"probpose": "#2ca02c", "baseline": "#ff7f0e", "heatmap": "#ff7f0e"}
    for name, m in models.items():
        for col, keys, best in ((1, ("mAP", "map", "AP"), max), (2, ("Ex-mAP", "ex_map", "exmap", "Ex-AP"), max),
                                (3, ("presence_error", "presence_err", "error"), min)):
            y = _pick(m, *keys)
            if y is None:
                continue
            y = np.asarray(y, dtype=float)
            x = np.asarray(_pick(m, "thresholds", default=thr), dtype=float)[: len(y)]
            c = colors.get(name, None)
            fig.add_scatter(x=x, y=y, mode="lines", name=name, line=dict(color=c), legendgroup=name,
                            showlegend=col == 1, row=1, col=col)
            if len(y) and np.isfinite(y).any():
                i = int(np.nanargmax(y) if best is max else np.nanargmin(y))
                fig.add_scatter(x=[x[i]], y=[y[i]], mode="markers+text", text=[f"{x[i]:.2f}"], legendgroup=name,
                                textposition="top center", marker=dict(size=11, symbol="star", color=c),
                                showlegend=False, row=1, col=col)
    fig.update_xaxes(title_text="presence threshold", range=[0, 1])
    fig.update_layout(height=360, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def sweep_views(data: dict | None = None):
    """(info markdown, curves figure) from sweep.json."""
    if data is None:
        data = load_latest("sweep.json") or sweep_from_metrics(_metrics_files())
    if not data:
        return ("No precomputed sweep in `analysis/precomputed/sweep.json` yet. Press **Recompute** to run it on "
                "a small subset.", _empty_figure("no sweep results"))
    desc = _pick(data, "description", "what", default="")
    return ("**Threshold sweep**: how mAP, Ex-mAP (Ex-OKS) and the presence-classification error change with the "
            "presence threshold, for ProbPose and the heatmap baseline (the star marks each optimum)."
            + (f" {desc}" if desc else ""), sweep_figure(data))


def _cases(data: dict | None, model: str) -> list[dict]:
    if not data:
        return []
    cases = _pick(data, model, default=None)
    if isinstance(cases, dict):
        cases = _pick(cases, "cases", default=[])
    if cases is None:
        cases = _pick(data, "cases", default=[])
        cases = [c for c in cases if _pick(c, "model", default=model) == model]
    return list(cases or [])


def _case_error(c: dict) -> float:
    e = _pick(c, "error", "exoks_error")
    if e is None:
        e = 1.0 - float(_pick(c, "exoks", "ex_oks", "oks", default=1.0))
    return float(e)


def cropcoco_table(model: str = "probpose", data: dict | None = None):
    """(info markdown, table) of the CropCOCO cases ranked by Ex-OKS error, worst first."""
    data = data if data is not None else load_latest("cropcoco_cases.json")
    cases = sorted(_cases(data, model), key=_case_error, reverse=True)
    if not cases:
        return ("No precomputed CropCOCO cases in `analysis/precomputed/cropcoco_cases.json` yet. Press "
                "**Recompute** to build CropCOCO from the shared val data and evaluate a small subset.",
                {"headers": ["rank", "image", "Ex-OKS", "error"], "data": []})
    desc = _pick(data, "description", "dataset", default="")
    rows = [[i, str(_pick(c, "file_name", "image", "image_id", default="?")),
             round(1.0 - _case_error(c), 4), round(_case_error(c), 4)] for i, c in enumerate(cases)]
    info = (f"**CropCOCO explorer** ({model}): {len(cases)} people ranked by Ex-OKS error (1 - Ex-OKS), worst "
            "first. Ground truth is white, the prediction is coloured by presence; keypoints outside the crop "
            "lie on the grey padding." + (f" {desc}" if desc else "") + _data_note(data, cases))
    return info, {"headers": ["rank", "image", "Ex-OKS", "error"], "data": rows}


def _case_image_path(c: dict, data: dict | None = None) -> Path | None:
    """A file holding the case's image as evaluated: an explicit path, or the generated CropCOCO crop when its
    folder is still there (it lives in a temporary cache)."""
    root = _pick(_pick(data or {}, "data", default={}), "cropcoco_root")
    p = _pick(c, "image_path", "path", "file_name", "image")
    if p is None:
        return None
    path = Path(str(p))
    for cand in (path, PRECOMPUTED_DIR / path, REPO_ROOT / path, SHARED_DATA / path,
                 *([Path(root) / "val2017" / path] if root else [])):
        if cand.is_file():
            return cand
    return None


def _source_image_path(c: dict, data: dict | None) -> Path | None:
    """The val image a CropCOCO case was cut from (relative to the shared data folder)."""
    src, folder = _pick(c, "source_file_name"), _pick(_pick(data or {}, "data", default={}), "images")
    if not src or not folder:
        return None
    for cand in (SHARED_DATA / folder / src, Path(folder) / src):
        if cand.is_file():
            return cand
    return None


def case_image(c: dict, data: dict | None = None) -> tuple[np.ndarray | None, str]:
    """(the case's image, note). CropCOCO crops are re-created from the shared val image and the stored crop
    rectangle; without the data a blank canvas of the crop's size is used so GT and prediction still show."""
    crop = _pick(c, "crop_xywh")
    src = _source_image_path(c, data) if crop else None
    if src is not None:
        image, _ = load_input_image(str(src))
        x, y, w, h = (int(v) for v in crop)
        return image[y:y + h, x:x + w], ""
    path = _case_image_path(c, data)
    if path is not None:
        image, _ = load_input_image(str(path))
        return image, ""
    w, h = _pick(c, "width"), _pick(c, "height")
    folder = _pick(_pick(data or {}, "data", default={}), "images", default="the evaluation images")
    note = (f" The image is not on this machine (`{SHARED_DATA / str(folder)}` is absent, e.g. on a Space without "
            "../shared/data), so GT and prediction are drawn on a blank canvas of the crop's size.")
    if w and h:
        return np.full((int(h), int(w), 3), 235, np.uint8), note
    return None, note


def _data_note(data: dict | None, cases: list[dict]) -> str:
    if not cases or _pick(cases[0], "crop_xywh", "source_file_name") is None:
        return ""
    if _source_image_path(cases[0], data) is not None or _case_image_path(cases[0], data) is not None:
        return ""
    return (f" **The shared data is absent** (`{SHARED_DATA}`): the table and error plots come from the "
            "precomputed results; case drawings use a blank canvas. Set `PROBPOSE_SHARED_DATA` to show the photos.")


def draw_case(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, presence: np.ndarray, threshold: float,
              box_xywh=None) -> np.ndarray:
    """Ground truth (white, v=3 keypoints outside the crop included) and prediction (side colours; absent =
    grey ring) on a canvas padded to hold both and the activation window."""
    import cv2

    from probpose.constants import SKELETON
    from probpose.draw import keypoint_color, padded_canvas

    labelled = gt[:, 2] > 0
    pts = np.concatenate([gt[labelled, :2], pred[np.all(np.isfinite(pred), axis=1)]])
    wins = [np.r_[pts.min(0), pts.max(0)]] if len(pts) else []
    if box_xywh is not None:
        from analysis.exoks import aw_xyxy

        wins.append(aw_xyxy(np.asarray(box_xywh, float)))
    canvas, off = padded_canvas(image, wins)
    t = max(1, round(max(image.shape[:2]) / 300))

    def pt(xy):
        return int(round(xy[0] + off[0])), int(round(xy[1] + off[1]))

    if len(wins) > 1:
        cv2.rectangle(canvas, pt(wins[-1][:2]), pt(wins[-1][2:]), (0, 200, 0), t)
    for a, b in SKELETON:
        if labelled[a] and labelled[b]:
            cv2.line(canvas, pt(gt[a]), pt(gt[b]), (255, 255, 255), t, cv2.LINE_AA)
        if presence[a] >= threshold and presence[b] >= threshold:
            cv2.line(canvas, pt(pred[a]), pt(pred[b]), keypoint_color(a), t, cv2.LINE_AA)
    for k in range(len(gt)):
        if labelled[k]:
            cv2.circle(canvas, pt(gt[k]), 2 * t + 2, (255, 255, 255), -1, cv2.LINE_AA)
        color = keypoint_color(k) if presence[k] >= threshold else (150, 150, 150)
        cv2.circle(canvas, pt(pred[k]), 2 * t + 2, color, -1 if presence[k] >= threshold else t, cv2.LINE_AA)
    return canvas


def cropcoco_case(model: str = "probpose", rank: int | float = 0, data: dict | None = None):
    """(drawing with GT + prediction, per-keypoint error figure, markdown) of the case at this rank."""
    try:
        return _cropcoco_case(model, rank, data)
    except Exception as e:
        msg = _user_message(e)
        _notify(msg)
        return None, _empty_figure("no case"), f"**Could not show the case:** {msg}"


def _cropcoco_case(model: str, rank, data: dict | None):
    data = data if data is not None else load_latest("cropcoco_cases.json")
    cases = sorted(_cases(data, model), key=_case_error, reverse=True)
    if not cases:
        return None, _empty_figure("no cases"), "No cases yet (see above)."
    i = person_index(rank, len(cases))
    c = cases[i]
    image, note = case_image(c, data)
    gt = np.asarray(_pick(c, "gt_keypoints", "gt", default=np.zeros((NUM_KEYPOINTS, 3))), dtype=float)
    pred = np.asarray(_pick(c, "pred_keypoints", "keypoints", "pred", default=np.zeros((NUM_KEYPOINTS, 2))), float)
    presence = np.asarray(_pick(c, "presence", default=np.ones(NUM_KEYPOINTS)), dtype=float)
    err = np.asarray(_pick(c, "per_keypoint_error", "keypoint_errors", default=np.full(NUM_KEYPOINTS, np.nan)),
                     dtype=float)
    drawing = None
    if image is not None:
        thr = float(_pick(c, "threshold", default=_pick(data, "threshold", default=DEFAULT_PRESENCE_THRESHOLD)))
        drawing = draw_case(image, gt.reshape(-1, 3), pred.reshape(NUM_KEYPOINTS, -1)[:, :2], presence, thr,
                            box_xywh=_pick(c, "bbox", "box_xywh"))
    labels = _pick(c, "labels", default=[""] * NUM_KEYPOINTS)
    fig = go.Figure(go.Bar(x=_NAMES, y=err, marker_color="#d62728", hovertext=labels))
    fig.update_layout(height=320, yaxis_title="1 - keypoint Ex-OKS similarity", margin=dict(l=50, r=10, t=20, b=80))
    src = _pick(c, "source_file_name")
    crop = _pick(c, "crop_xywh")
    md = (f"Case {i} of {len(cases)}: `{_pick(c, 'file_name', 'image', 'image_id', default='?')}`"
          + (f" (crop x,y,w,h = {crop} of `{src}`)" if src and crop else "")
          + f", Ex-OKS {1 - _case_error(c):.3f}" + (f", OKS {c['oks']:.3f}" if _pick(c, "oks") is not None else "")
          + "." + (f" What went wrong: {c['problems']}." if _pick(c, "problems") else "") + note)
    return drawing, fig, md


def analysis_views():
    """Everything the analysis tabs show on page load (cheap: precomputed JSON only)."""
    return (*cropcoco_table("probpose"), *calibration_views(), *sweep_views())


def _payload_key(payload) -> str | None:
    src = _payload_source(payload)
    return src if isinstance(src, str) else None


def sweep_preview(state, payload, threshold=DEFAULT_PRESENCE_THRESHOLD, model_choice=MODEL_EMBEDDED,
                  model_path=""):
    """The threshold's effect on one image: the network runs once per image (cached in `state`), the slider
    only re-decodes. Returns (state, drawing, markdown)."""
    try:
        key = (_payload_key(payload), model_choice, model_path)
        if state is None or state[0] != key or key[0] is None:
            state = (key, run_session(payload, BOX_AUTO, "", model_choice, model_path))
        session = state[1]
        result = decode_session(session, DECODER_EOKS, threshold)
        n = sum(int(np.sum(p.present)) for p in result.people)
        window = "wide" if session.kind == "probpose_dh" else "activation"
        md = (f"Threshold **{float(threshold):.2f}**: {n} of {17 * len(result.people)} keypoints are called "
              f"present (inside the {window} window); the others are hidden. Lower thresholds keep more "
              "keypoints (more false 'inside'), higher ones drop more (more false 'outside').")
        return state, draw_result(session.image, result), md
    except Exception as e:
        message = _user_message(e)
        _notify(message)
        return state, None, f"**Could not run:** {message}"


def allowed_paths() -> list[str]:
    """Folders outside the repository the app may serve files from (example photos, CropCOCO images)."""
    return [str(p) for p in (SHARED_DATA, PRECOMPUTED_DIR) if p.is_dir()]


def _startup_example(query: dict, tab: str) -> str | None:
    if tab_from_query(query) != tab or "example" not in (query or {}):
        return None
    examples = example_images()
    try:
        return examples[int(query["example"]) % len(examples)] if examples else None
    except ValueError:
        return None


def startup_explore(query: dict):
    """`?tab=explore&example=i`: (input image, session, explore outputs...) or None."""
    path = _startup_example(query, "explore")
    return None if path is None else (path, *explore_run(path))


def startup_compare(query: dict):
    path = _startup_example(query, "compare")
    return None if path is None else (path, *compare_run(path))


def startup_sweep(query: dict):
    path = _startup_example(query, "sweep")
    return None if path is None else (path, *sweep_preview(None, path))


# ---------------------------------------------------------------------------------------------- recompute on demand

RECOMPUTE_PEOPLE = int(os.environ.get("PROBPOSE_APP_RECOMPUTE_PEOPLE", "40"))


def _analysis_fn(name: str):
    """A function of analysis.precompute (the analysis package's entry points for the app), or None."""
    try:
        import analysis.precompute as pre
    except ImportError:
        return None
    return getattr(pre, name, None)


def _progress_cb(progress):
    def cb(fraction: float, desc: str = "") -> None:
        if progress is not None:
            progress(float(fraction), desc=desc)
    return cb


def _recompute(name: str, out_name: str, progress, **kwargs) -> dict | None:
    fn = _analysis_fn(name)
    if fn is None:
        _notify(f"This installation's analysis package has no `{name}` yet; showing the precomputed results.")
        return None
    data = fn(max_people=RECOMPUTE_PEOPLE, progress=_progress_cb(progress), **kwargs)
    try:  # best effort: a read-only checkout just keeps the result in memory
        PRECOMPUTED_DIR.mkdir(parents=True, exist_ok=True)
        (PRECOMPUTED_DIR / f"recomputed_{out_name}").write_text(json.dumps(data, default=_json_default))
    except OSError:
        pass
    return data


def _sources() -> dict:
    return {"probpose_source": model_spec(MODEL_EMBEDDED).key, "baseline_source": baseline_spec().key}


def calibration_recompute(progress=gr.Progress()):  # noqa: B008  (Gradio injects it)
    """Run the calibration analysis on a small subset (progress bar); same outputs as ``calibration_views``."""
    try:
        data = _recompute("compute_calibration", "calibration.json", progress, **_sources())
        return calibration_views(data)
    except Exception as e:
        msg = _user_message(e)
        _notify(msg)
        return (f"**Could not recompute:** {msg}", *calibration_views()[1:])


def sweep_recompute(progress=gr.Progress()):  # noqa: B008  (Gradio injects it)
    """Run the threshold sweep on a small subset; same outputs as ``sweep_views``."""
    try:
        return sweep_views(_recompute("compute_sweep", "sweep.json", progress, **_sources()))
    except Exception as e:
        msg = _user_message(e)
        _notify(msg)
        return (f"**Could not recompute:** {msg}", sweep_views()[1])


def cropcoco_recompute(model: str = "probpose", progress=gr.Progress()):  # noqa: B008  (Gradio injects it)
    """Build CropCOCO from the shared val data, evaluate a small subset, rank the cases."""
    try:
        data = _recompute("compute_cropcoco_cases", "cropcoco_cases.json", progress, **_sources())
        return cropcoco_table(model, data)
    except Exception as e:
        msg = _user_message(e)
        _notify(msg)
        return (f"**Could not recompute:** {msg}", cropcoco_table(model)[1])
