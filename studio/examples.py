"""Example photos and the ``?tab=<id>&example=<i>`` start-up links (used by links and the screenshot script)."""

from __future__ import annotations

from studio import settings

TAB_IDS = ("explore", "compare", "cropcoco", "calibration", "sweep")
EXAMPLE_IDS = (885, 1000, 5001)


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


def startup_example(query: dict, tab: str) -> str | None:
    if tab_from_query(query) != tab or "example" not in (query or {}):
        return None
    examples = example_images()
    try:
        return examples[int(query["example"]) % len(examples)] if examples else None
    except ValueError:
        return None

