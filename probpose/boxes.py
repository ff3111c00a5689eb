"""Person boxes typed by a user (the app's box field, the CLI's ``--boxes``): one parser for both."""

from __future__ import annotations

import re

import numpy as np

from probpose.errors import BoxError

__all__ = ["parse_boxes"]


def parse_boxes(text: str | None, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """'x1,y1,x2,y2' per box -> (N, 4) float64 xyxy.

    Boxes are separated by new lines or ';'; the four numbers by commas and / or spaces; brackets are ignored and
    lines starting with '#' are comments. Corners may come in any order (they are sorted). With ``image_size``
    (w, h) the boxes are clipped to the image and a box entirely outside it is an error.

    Raises BoxError (a short message naming the box) for anything that is not four finite numbers, for boxes
    under 2 px wide or tall, and for no boxes at all.
    """
    boxes = []
    for n, line in enumerate(re.split(r"[;\n]", text or ""), 1):
        line = line.strip().strip("[]()").strip()
        if not line or line.startswith("#"):
            continue
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
            if x2 <= 0 or y2 <= 0 or x1 >= w - 1 or y1 >= h - 1:
                raise BoxError(f"Box {n} ({line!r}) lies entirely outside the {w}x{h} image.")
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)
        boxes.append([x1, y1, x2, y2])
    if not boxes:
        raise BoxError("No boxes given: write one 'x1,y1,x2,y2' per line (or ';' between boxes).")
    return np.asarray(boxes, dtype=np.float64)
