"""Example photos and the ``?tab=<id>&example=<i>`` start-up links (used by links and the screenshot script)."""

from __future__ import annotations

import os
import re

from studio import settings
from studio.inputs import BOX_AUTO, BOX_TYPED, BOX_WHOLE

TAB_IDS = ("explore", "compare", "cropcoco", "calibration", "sweep")
EXAMPLE_IDS = (885, 1000, 5001)
# The people of the COCO example photos: their COCO val2017 ground-truth boxes (xywh -> xyxy, rounded), people
# with >= 10 labelled keypoints, from person_keypoints_val2017.json. An example runs on these, so every example
# shows poses without a detector (offline the HOG fallback misses most of them); the user sees them in the box
# field and can switch to the automatic detector.
EXAMPLE_BOXES = {
    885: "277,190,417,398\n281,90,393,259\n596,26,639,253",
    1000: "115,152,198,381\n265,96,354,412\n209,175,309,424\n505,192,640,480\n410,209,525,480\n381,160,469,479\n"
          "330,154,413,468\n411,107,499,228\n183,121,279,394\n52,185,111,398",
    5001: "225,256,353,480\n77,245,191,480\n119,81,188,270\n211,88,335,281\n355,92,518,470\n435,41,506,161",
}
WHOLE_IMAGE_EXAMPLES = ("astronaut.jpg", "grace_hopper.jpg")  # one person filling the picture


def tab_from_query(query: dict | None) -> str:
    """`?tab=calibration` opens that tab (used by links and by the screenshot script)."""
    tab = str((query or {}).get("tab", "explore")).strip().lower()
    return tab if tab in TAB_IDS else "explore"


def example_images() -> list[str]:
    """Example photos: files in examples/ of the repository, else the public COCO val images of the shared data."""
    found: list[str] = []
    ex = settings.REPO_ROOT / "examples"
    if ex.is_dir():
        found += sorted(str(p) for p in ex.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    val = settings.SHARED_DATA / "coco_subset" / "val2017"
    for i in EXAMPLE_IDS:
        p = val / f"{i:012d}.jpg"
        if p.is_file() and not any(p.name in f for f in found):  # examples/ may hold a copy
            found.append(str(p))
    return found[:6]


def _file_name(payload) -> str:
    if isinstance(payload, dict):  # a Gradio FileData dict (preprocess=False): the cached copy keeps orig_name
        return str(payload.get("orig_name") or os.path.basename(str(payload.get("path") or "")))
    return os.path.basename(str(payload)) if isinstance(payload, (str, os.PathLike)) else ""


def example_boxes(payload, box_mode: str | None = BOX_AUTO, boxes_text: str | None = "") -> tuple[str, str]:
    """(box mode, box text) to run an example photo with: its people's boxes for the COCO examples, the whole
    image for the one-person portraits; any other image keeps the given mode and text."""
    name = _file_name(payload)
    if name in WHOLE_IMAGE_EXAMPLES:
        return BOX_WHOLE, ""
    m = re.search(r"(\d{12})\.jpe?g$", name)
    if m and int(m.group(1)) in EXAMPLE_BOXES:
        return BOX_TYPED, EXAMPLE_BOXES[int(m.group(1))]
    return box_mode or BOX_AUTO, boxes_text or ""


def startup_example(query: dict, tab: str) -> str | None:
    if tab_from_query(query) != tab or "example" not in (query or {}):
        return None
    examples = example_images()
    try:
        return examples[int(query["example"]) % len(examples)] if examples else None
    except ValueError:
        return None

