"""User input -> arrays: uploaded images (any Gradio payload), person boxes (typed, clicked, detected),
keypoint and person selectors. Every mistake raises a ``ProbPoseError`` subclass with a user-level message."""

from __future__ import annotations

import os

import numpy as np

from probpose.boxes import parse_boxes as _parse_boxes
from probpose.constants import KEYPOINT_NAMES, NUM_KEYPOINTS
from probpose.errors import BoxError, ImageLoadError, ProbPoseError
from studio import settings

MIN_SIDE = 8  # px: smaller images hold no person worth a pose (and make degenerate boxes)
BOX_AUTO = "automatic (person detector)"
BOX_WHOLE = "whole image"
BOX_TYPED = "typed / clicked boxes"
BOX_CHOICES = [BOX_AUTO, BOX_WHOLE, BOX_TYPED]
_BOX_ALIASES = {"auto": BOX_AUTO, "automatic": BOX_AUTO, "whole": BOX_WHOLE, "typed": BOX_TYPED, "given": BOX_TYPED}


def payload_source(payload):
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

    src = payload_source(payload)
    if src is None:
        raise ImageLoadError("No image: upload a photo, take a webcam snapshot or click an example.")
    image, info = load_image_with_info(src, max_pixels=settings.MAX_PIXELS)
    notes = list(info.notes)  # the loader already names EXIF rotation and transparency: no second note
    if info.source_mode not in ("RGB", "uint8 (H,W,3)"):
        notes.append(f"converted from {info.source_mode}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageLoadError(f"The image is only {w}x{h} pixels: too small to hold a person. Use a photo at least "
                             f"{MIN_SIDE} pixels on each side.")
    if max(h, w) > settings.MAX_SIDE:
        import cv2

        s = settings.MAX_SIDE / max(h, w)
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        notes.append(f"downscaled from {w}x{h} to {image.shape[1]}x{image.shape[0]} (cap {settings.MAX_SIDE} px)")
    return image, notes


def parse_boxes(text: str | None, image_size: tuple[int, int]) -> np.ndarray:
    """The box field -> (N, 4) xyxy, unclipped (``probpose.boxes.parse_boxes``: one 'x1,y1,x2,y2' per line or
    ';'-separated). Raises BoxError; an empty field gets the app's hint on how to give boxes."""
    if not (text or "").strip():
        raise BoxError("No boxes typed: write one 'x1,y1,x2,y2' per line, click two corners on the image, "
                       "or choose automatic / whole image.")
    return _parse_boxes(text, image_size, max_boxes=settings.MAX_PEOPLE)  # the UI and the API alike


def box_mode_choice(mode: str | None) -> str:
    """The box-mode radio value (or an API caller's short alias auto / whole / typed); None means automatic.
    Raises BoxError for anything else, rather than silently detecting."""
    if mode is None or mode == "":
        return BOX_AUTO
    m = str(mode).strip()
    if m in BOX_CHOICES:
        return m
    alias = _BOX_ALIASES.get(m.lower())
    if alias is None:
        raise BoxError(f"Unknown box mode {mode!r}: use one of " + ", ".join(repr(c) for c in BOX_CHOICES)
                       + " (or auto / whole / typed).")
    return alias


def resolve_boxes(image: np.ndarray, mode: str | None, text: str | None) -> tuple[np.ndarray, str, list[str]]:
    """(boxes (N,4), box_source, notes) for the box mode of the UI."""
    from probpose.detect import detect_people

    h, w = image.shape[:2]
    mode = box_mode_choice(mode)
    whole = np.array([[0.0, 0.0, float(w), float(h)]])  # the official whole-image box
    if mode == BOX_TYPED:
        return parse_boxes(text, (w, h)), "given", []
    if mode == BOX_WHOLE:
        return whole, "whole", []
    from probpose.detect import auto_detector

    method, why = auto_detector()
    dets = detect_people(image, "auto", max_people=settings.MAX_PEOPLE)
    if not dets:  # said plainly; the whole image only when the user picks it
        raise BoxError(f"No person found by the {'RT-DETR' if method == 'rtdetr' else 'HOG'} person detector "
                       f"({why}). Choose '{BOX_WHOLE}' under person boxes to run on the whole picture, or click "
                       "two corners on the image to draw a box.")
    src = dets[0].source.split(":")[0]
    name = "RT-DETR" if src == "rtdetr" else "HOG (offline)" if src == "hog" else src
    note = f"{len(dets)} person box(es) from the {name} detector"
    if src == "hog":
        note += f" ({why})" if method == "hog" else " (RT-DETR could not be loaded)"
    return np.stack([d.box for d in dets]), src, [note]


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
    """The person # field -> a valid index (see ``person_choice`` for the note on a clamped value)."""
    return person_choice(person, n)[0]


def person_choice(person, n: int, what: str = "person") -> tuple[int, str]:
    """(index in 0..n-1, note). A number outside the range (or not a number) is clamped, and the note says so,
    so the UI can show the clamped value in the field and explain it."""
    try:
        asked = float(person if person not in (None, "") else 0)
        i = int(asked) if np.isfinite(asked) else 0
    except (TypeError, ValueError):
        asked, i = None, 0
    last = max(n - 1, 0)
    shown = int(np.clip(i, 0, last))
    if asked is not None and np.isfinite(asked) and asked == shown:
        return shown, ""
    count = f"{n} {what if n == 1 else ('people' if what == 'person' else what + 's')}"
    return shown, f"{what.capitalize()} # {person!r} does not exist here ({count}, numbered 0 to {last}): showing {shown}."


def unit_value(value, name: str, *, low: float = 0.0, high: float = 1.0, low_open: bool = False) -> float:
    """A slider / API number -> float in [low, high] (``low_open``: above low). Raises ProbPoseError naming the
    field for text, NaN or out-of-range values (an API caller can send anything)."""
    bounds = f"{'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ProbPoseError(f"The {name} must be a number {bounds}, got {value!r}.") from None
    if not np.isfinite(v) or v < low or v > high or (low_open and v == low):
        raise ProbPoseError(f"The {name} must be a number {bounds}, got {value!r}.")
    return v


def payload_key(payload) -> str | None:
    src = payload_source(payload)
    return src if isinstance(src, str) else None

