"""Person boxes typed by a user (the app's box field, the CLI's ``--boxes``): one parser for both."""

from __future__ import annotations

import re

import numpy as np

from probpose.errors import BoxError

__all__ = ["MAX_BOXES", "parse_boxes"]

# Typed boxes per image: each box is one network pass, so an unbounded list would hold a worker for minutes.
MAX_BOXES = 100


def parse_boxes(text: str | None, image_size: tuple[int, int] | None = None,
                max_boxes: int | None = MAX_BOXES) -> np.ndarray:
    """'x1,y1,x2,y2' per box -> (N, 4) float64 xyxy.

    Boxes are separated by new lines or ';'; the four numbers by commas and / or spaces; brackets are ignored and
    lines starting with '#' are comments. Corners may come in any order (they are sorted). Boxes are never
    clipped (a box may reach past the image border, as the official top-down pipeline allows); with
    ``image_size`` (w, h) a box that does not overlap the image at all is an error.

    Raises BoxError (a short message naming the box) for anything that is not four finite numbers, for boxes
    under 2 px wide or tall, for no boxes at all, and for more than ``max_boxes`` boxes (None: no cap), checked
    before any box is parsed.
    """
    lines = [(n, ln.strip().strip("[]()").strip()) for n, ln in enumerate(re.split(r"[;\n]", text or ""), 1)]
    lines = [(n, ln) for n, ln in lines if ln and not ln.startswith("#")]
    if max_boxes is not None and len(lines) > max_boxes:
        raise BoxError(f"Too many boxes: {len(lines)} given, at most {max_boxes} per image (each box is one "
                       "network pass). Remove some boxes.")
    boxes = []
    for n, line in lines:
        parts = [p for p in re.split(r"[,\s]+", line) if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise BoxError(f"Box {n} ({line!r}) is not four numbers x1,y1,x2,y2.") from None
        if len(vals) != 4 or not all(np.isfinite(vals)):
            raise BoxError(f"Box {n} ({line!r}) needs exactly four finite numbers x1,y1,x2,y2.")
        x1, y1, x2, y2 = vals
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise BoxError(f"Box {n} ({line!r}) is empty (under 2 px wide or tall).")
        if image_size is not None:
            w, h = image_size
            if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
                raise BoxError(f"Box {n} ({line!r}) lies entirely outside the {w}x{h} image.")
        boxes.append([x1, y1, x2, y2])
    if not boxes:
        raise BoxError("No boxes given: write one 'x1,y1,x2,y2' per line (or ';' between boxes).")
    return np.asarray(boxes, dtype=np.float64)
