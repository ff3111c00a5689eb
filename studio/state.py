"""Shared helpers of every tab: the ZeroGPU shim, user-level error messages, and the ``ExploreSession`` kept in
``gr.State`` (the image plus cached network outputs: sliders re-decode from it without running the network)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from probpose.constants import DEFAULT_PRESENCE_THRESHOLD
from probpose.errors import ProbPoseError
from studio import settings, spaces  # spaces is imported first by studio/__init__ (ZeroGPU)
from studio.inputs import load_input_image, resolve_boxes, unit_value
from studio.models import ModelSpec, banner, get_model, has_presence, load_model, model_kind, model_spec

log = logging.getLogger("probpose.app")

DECODER_EOKS = "expected-OKS (ProbPose)"
DECODER_ARGMAX = "argmax"
DECODER_CHOICES = [DECODER_EOKS, DECODER_ARGMAX]
DECODER_KEYS = {DECODER_EOKS: "expected_oks", DECODER_ARGMAX: "argmax"}


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


def notify(message: str) -> None:
    """A yellow toast in the UI; a Python warning outside a Gradio request."""
    try:
        gr.Warning(message)
    except Exception:  # never let a notification break a handler
        log.warning(message)


def user_message(err: BaseException) -> str:
    """A short message for the status line and the toast: the error's own for user mistakes, a generic one (and
    a logged traceback) for bugs. Server temp paths of uploads become their file names, and '<' / '>' are
    escaped so Markdown / the toast do not swallow them as HTML."""
    if isinstance(err, ProbPoseError):
        return _public(str(err))
    log.error("unexpected error in an app handler:\n%s", "".join(traceback.format_exception(err)))
    return _public(f"Internal error ({type(err).__name__}: {err}). The app is still running; try another input.")


_TEMP_ROOTS = tuple({os.path.realpath(tempfile.gettempdir()), tempfile.gettempdir(),
                     os.environ.get("GRADIO_TEMP_DIR", "") or tempfile.gettempdir()})
_TEMP_PATH = re.compile("(?:" + "|".join(re.escape(r.rstrip("/")) for r in _TEMP_ROOTS) + r")/[^\s'\"`]*/([^/\s'\"`]+)")


def _public(message: str) -> str:
    message = _TEMP_PATH.sub(r"\1", message)  # '/tmp/gradio/3f2a.../photo.jpg' -> 'photo.jpg'
    return message.replace("<", "&lt;").replace(">", "&gt;")


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
    # what the browser shows now, per output ("keypoint", "bars"): a redraw that would rebuild the same figure
    # sends gr.skip() instead (Gradio has no partial figure update; this keeps slider moves small)
    views: dict = field(default_factory=dict)


@gpu(duration=60)
def run_network(spec: ModelSpec, image: np.ndarray, boxes: np.ndarray, box_source: str):
    """The only place the network runs. On ZeroGPU this is the GPU-decorated call."""
    from probpose.inference import PosePredictor
    from studio import memory

    model = get_model(spec)
    predictor = PosePredictor(model, device=device())
    try:
        predictor.set_image(image, boxes=boxes, box_source=box_source)
    finally:
        memory.trim()  # the forward's freed activations go back to the system (studio/memory.py)
    return predictor.outputs


def session_predictor(session: ExploreSession):
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
    spec, model = load_model(spec or model_spec(model_choice, model_path))  # an unloadable default falls back
    boxes, box_source, box_notes = resolve_boxes(image, box_mode, boxes_text)
    t0 = time.perf_counter()
    outputs = run_network(spec, image, boxes, box_source)
    return ExploreSession(image=image, outputs=outputs, spec=spec, kind=model_kind(model), boxes=boxes,
                          box_source=box_source, notes=notes + box_notes,
                          metadata=dict(getattr(model, "metadata", {}) or {}),
                          seconds=time.perf_counter() - t0)


def decoder_key(decoder: str | None) -> str:
    """The decoder radio value (or an API caller's expected_oks / argmax) -> the predictor's decoder name."""
    if decoder in (None, ""):
        return DECODER_KEYS[DECODER_EOKS]
    if decoder in DECODER_KEYS:
        return DECODER_KEYS[decoder]
    if decoder in DECODER_KEYS.values():
        return decoder
    raise ProbPoseError(f"Unknown decoder {decoder!r}: use {DECODER_EOKS!r} or {DECODER_ARGMAX!r} "
                        "(API: expected_oks or argmax).")


def raw_dual_maps(session: ExploreSession) -> bool:
    """ProbPose-DH with raw (``normalize="none"``) or sigmoid maps: no sparsemax, so no temperature to apply."""
    return session.kind == "probpose_dh" and getattr(session.outputs, "map_normalization", None) != "sparsemax"


@dataclass(frozen=True)
class MapTemperatures:
    """Sparsemax temperatures a session's maps can be shown at. ``model``: what the loaded model runs at;
    ``calibrated``: the one fitted after training (None when the checkpoint carries no calibration);
    ``uncalibrated``: the one before that fit (the training temperature). None everywhere for heatmaps and raw
    ProbPose-DH maps, which have no temperature."""

    model: float | None
    calibrated: float | None
    uncalibrated: float | None

    def pick(self, calibrated: bool) -> float | None:
        """The temperature the "calibrated" checkbox asks for (None: there is no choice to make)."""
        return self.calibrated if calibrated else self.uncalibrated


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0 else None


def map_temperatures(session: ExploreSession) -> MapTemperatures:
    """Read the checkpoint's calibration metadata: ``calibration.map_temperature`` (this repo's calibrated
    checkpoints, whose config already runs at it, with ``train_temperature`` the one before the fit), or a
    ``calibrated_temperature``-style key of other checkpoints (the model still runs at its own)."""
    if not has_presence(session.kind) or raw_dual_maps(session):
        return MapTemperatures(None, None, None)
    model_t = _number(getattr(session.outputs, "temperature", None))
    meta = session.metadata or {}
    cal = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
    fitted = _number(cal.get("map_temperature", cal.get("temperature")))
    for key in ("calibrated_temperature", "temperature_calibrated", "calibration_temperature"):
        fitted = fitted or _number(meta.get(key))
    if fitted is None:
        return MapTemperatures(model_t, None, model_t)
    before = _number(cal.get("train_temperature"))
    if before is None:  # the fit is in the metadata only: the model itself runs uncalibrated
        before = model_t if model_t != fitted else None
    return MapTemperatures(model_t, fitted, before)


def session_temperature(session: ExploreSession, calibrated: bool) -> float | None:
    """The map temperature the checkbox asks for, when that differs from what the model runs at (else None:
    decode at the model's own)."""
    t = map_temperatures(session)
    want = t.pick(calibrated)
    return None if want is None or want == t.model else want


def temperature_note(session: ExploreSession, calibrated: bool) -> str:
    """One line on which map temperature the maps are shown at, and what the checkbox changes."""
    if session.kind not in ("probpose", "probpose_dh"):
        return ""
    if raw_dual_maps(session):
        return ("_Calibrated temperature: this ProbPose-DH checkpoint's maps are raw (no sparsemax), so there is "
                "no temperature to apply; the option is ignored._")
    t = map_temperatures(session)
    shown = t.pick(calibrated) or t.model
    if t.calibrated is None:
        return (f"_This checkpoint carries no calibrated temperature: the maps use the model's own "
                f"(T = {t.model:.3g}) either way._")
    if t.uncalibrated is None:
        return f"_Maps at the calibrated temperature T = {t.calibrated:.3g} (the pre-calibration one is unknown)._"
    if calibrated:
        return (f"_Maps at the calibrated temperature T = {t.calibrated:.3g} (untick to see the training "
                f"temperature T = {t.uncalibrated:.3g})._")
    return (f"_Maps at the training temperature T = {shown:.3g}, before calibration (tick to use the calibrated "
            f"T = {t.calibrated:.3g})._")


def decode_session(session: ExploreSession, decoder: str | None = DECODER_EOKS,
                   presence_threshold: float = DEFAULT_PRESENCE_THRESHOLD, calibrated: bool = True):
    """PoseResult from the cached outputs (no network)."""
    kwargs = {"decoder": decoder_key(decoder),
              "presence_threshold": unit_value(presence_threshold, "presence threshold")}
    t = session_temperature(session, calibrated)
    if t is not None:
        kwargs["temperature"] = t
    return session_predictor(session).predict(**kwargs)


_OUTPUT_ROOT: Path | None = None


def output_root() -> Path:
    """This process's folder for download files (one per process, removed at exit)."""
    global _OUTPUT_ROOT
    if _OUTPUT_ROOT is None or not _OUTPUT_ROOT.is_dir():
        _OUTPUT_ROOT = Path(tempfile.mkdtemp(prefix="probpose_app_"))
        atexit.register(shutil.rmtree, _OUTPUT_ROOT, True)
    return _OUTPUT_ROOT


def sweep_outputs(max_age_s: float | None = None) -> int:
    """Delete download folders older than the cache age (Gradio has copied them into its own cache by then);
    returns how many were removed. Without this every Run left a folder in /tmp for good."""
    max_age_s = settings.CACHE_MAX_AGE_SECONDS if max_age_s is None else max_age_s
    now, removed = time.time(), 0
    for d in output_root().iterdir():
        try:
            if now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # another request swept it
            pass
    return removed


def write_json(data: dict, stem: str = "probpose_keypoints") -> str:
    """Write a download file (its own folder, so the visitor gets the plain name) and sweep old ones."""
    sweep_outputs()
    folder = Path(tempfile.mkdtemp(dir=output_root()))
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data, indent=1, default=json_default))
    return str(path)


def json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


def result_json(session: ExploreSession, result, decoder: str | None, threshold: float,
                calibrated: bool = True) -> dict:
    data = json.loads(json.dumps(result.to_json(), default=json_default))
    data["model"] = {"source": session.spec.key, "label": session.spec.label, "kind": session.kind,
                     "official": session.spec.official}
    if banner(session.spec):  # the offline demo model says so in every result
        data["model"]["warning"] = banner(session.spec).lstrip("> ").replace("**", "")
    temps = map_temperatures(session)
    shown = temps.pick(calibrated) or temps.model
    data["settings"] = {"decoder": decoder_key(decoder), "presence_threshold": float(threshold),
                        "map_temperature": shown,
                        "calibrated_temperature": shown if shown is not None and shown == temps.calibrated else None}
    data["notes"] = list(session.notes)
    if session.kind == "probpose_dh":
        data["source_legend"] = {"0": "expert map (activation window)", "1": "wide map (wide window)"}
    return data

