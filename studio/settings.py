"""Where the app finds its data and how big an input it accepts (environment knobs, read once at import).

Handlers read these as ``settings.NAME`` at call time, so tests (and a Space) can override them."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROBPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PRECOMPUTED_DIR = Path(os.environ.get("PROBPOSE_PRECOMPUTED", REPO_ROOT / "analysis" / "precomputed"))
# The app keeps images at most this long on their long side: bigger ones are downscaled (and the UI says so)
# so that drawing and the JSON stay fast; the decoder's accuracy is unaffected at person scale.
MAX_SIDE = int(os.environ.get("PROBPOSE_APP_MAX_SIDE", "2560"))
MAX_PIXELS = 50_000_000  # refuse before decoding (decompression bombs)
MAX_PEOPLE = int(os.environ.get("PROBPOSE_APP_MAX_PEOPLE", "12"))
MAX_CACHED_MODELS = 4
# people per Recompute button press (the analysis tabs run on a small subset)
RECOMPUTE_PEOPLE = int(os.environ.get("PROBPOSE_APP_RECOMPUTE_PEOPLE", "40"))
DEFAULT_MASS = 0.75  # the official visualiser fills the 75 % credible region
# Bounded disk and memory (docs/app.md): Gradio's upload / output cache is swept every CACHE_SWEEP_SECONDS of
# files older than CACHE_MAX_AGE_SECONDS (gr.Blocks(delete_cache=...)); the cached network outputs (gr.State) of
# at most MAX_SESSIONS browser sessions are kept, least recently used dropped first (launch
# state_session_capacity), and none longer than SESSION_TTL_SECONDS. A dropped session's sliders ask for Run again.
CACHE_SWEEP_SECONDS = int(os.environ.get("PROBPOSE_APP_CACHE_SWEEP", "300"))
CACHE_MAX_AGE_SECONDS = int(os.environ.get("PROBPOSE_APP_CACHE_MAX_AGE", "900"))
MAX_SESSIONS = int(os.environ.get("PROBPOSE_APP_MAX_SESSIONS", "24"))
SESSION_TTL_SECONDS = int(os.environ.get("PROBPOSE_APP_SESSION_TTL", "3600"))


def allowed_paths() -> list[str]:
    """Folders outside the repository the app may serve files from (example photos, CropCOCO images)."""
    return [str(p) for p in (SHARED_DATA, PRECOMPUTED_DIR) if p.is_dir()]


