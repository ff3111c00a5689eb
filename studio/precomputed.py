"""The analysis package's precomputed result sets (analysis/precomputed/<set>/, or a Hub dataset repo named by
PROBPOSE_RESULTS_REPO; see analysis/results.py) and the tabs' Recompute buttons.

The tabs show the set made with the models the app runs: official sets for the official ProbPose-s, demo sets for
the offline demo model, each with its provenance next to the figures. A Recompute is the visitor's own: it is kept
in memory for that browser session only (never written into the checkout), and "Back to the shipped results"
forgets it."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path

from studio import settings
from studio.models import baseline_spec, current_is_official, default_spec, load_model
from studio.state import notify

log = logging.getLogger("probpose.app")


def load_precomputed(name: str) -> dict | None:
    """A JSON result of the analysis package from analysis/precomputed/ (None when absent or unreadable)."""
    path = settings.PRECOMPUTED_DIR / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", path, e)
        return None


def pick(d: dict, *keys, default=None):
    for k in keys:
        if isinstance(d, dict) and k in d and d[k] is not None:
            return d[k]
    return default


def metrics_files() -> dict[str, dict]:
    """analysis/precomputed/**/metrics.json written by `python -m analysis evaluate` -> {model kind: metrics}."""
    found: dict[str, dict] = {}
    if not settings.PRECOMPUTED_DIR.is_dir():
        return found
    for path in sorted(settings.PRECOMPUTED_DIR.glob("**/metrics*.json")):
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


_FILE_KEYS = {"calibration.json": "calibration", "sweep.json": "sweep", "cropcoco_cases.json": "cases"}
_SESSIONS: OrderedDict[str, dict[str, dict]] = OrderedDict()  # session hash -> {file name: recomputed data}
_SESSIONS_LOCK = threading.Lock()
MAX_SESSIONS = 64  # recomputes kept in memory (oldest sessions forgotten first)


def _session_key(request) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def session_result(request, name: str) -> dict | None:
    key = _session_key(request)
    with _SESSIONS_LOCK:
        return (_SESSIONS.get(key) or {}).get(name) if key else None


def forget(request, name: str | None = None) -> None:
    """Drop this visitor's recompute of ``name`` (all of them when None): back to the shipped results."""
    key = _session_key(request)
    with _SESSIONS_LOCK:
        if key in _SESSIONS:
            if name is None:
                del _SESSIONS[key]
            else:
                _SESSIONS[key].pop(name, None)


def shipped(name: str) -> dict | None:
    """The shipped set's ``name`` for the models the app runs (official set for the official ProbPose-s, demo or
    other non-official sets otherwise). With none of the right kind, the other kind is shown with a note saying
    whose figures they are. ``data["provenance"]`` says where it comes from."""
    from analysis.results import list_sets, pick_set, result_roots

    sets = list_sets(result_roots(Path(settings.PRECOMPUTED_DIR)))
    official = current_is_official()
    file = _FILE_KEYS[name]
    rs = pick_set(sets, official=official, file=file)
    other = None if rs is not None else pick_set(sets, official=not official, file=file)
    from analysis.results import load_file

    data = load_file(rs or other, file) if (rs or other) else None
    if data is not None and other is not None:
        data["_note"] = (
            "**No results of the official models are available here**, so these figures are of the models named "
            "below, not of the official ProbPose-s the app runs (make them with `python -m analysis.precompute "
            "official`, or set `PROBPOSE_RESULTS_REPO`; docs/space.md)." if official else
            "**These figures are of the official models**, not of the offline demo model the app runs now.")
    return data


def load_latest(name: str, request=None) -> dict | None:
    """This visitor's recompute of ``name`` when there is one, else the shipped result (``shipped``)."""
    return session_result(request, name) or shipped(name)


def caption(data: dict | None) -> str:
    """Provenance line (+ a note when the figures are not of the models the app runs), for next to a figure."""
    from analysis.results import provenance_caption

    if not data:
        return ""
    note = data.get("_note")
    return (f"\n\n{note}" if note else "") + "\n\n" + provenance_caption(data)


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


def recompute(name: str, out_name: str, progress, request=None, **kwargs) -> dict | None:
    """Run ``analysis.precompute.<name>`` on a small subset; the result is this visitor's only (kept for their
    browser session, never written into the checkout) and carries provenance marked ``session``."""
    fn = _analysis_fn(name)
    if fn is None:
        notify(f"This installation's analysis package has no `{name}` yet; showing the precomputed results.")
        return None
    data = fn(max_people=settings.RECOMPUTE_PEOPLE, progress=_progress_cb(progress), **kwargs)
    if isinstance(data.get("provenance"), dict):
        data["provenance"] = {**data["provenance"], "session": True, "command": "", "origin": "Recompute button"}
    key = _session_key(request)
    if key:
        with _SESSIONS_LOCK:
            _SESSIONS.setdefault(key, {})[out_name] = data
            _SESSIONS.move_to_end(key)
            while len(_SESSIONS) > MAX_SESSIONS:
                _SESSIONS.popitem(last=False)
    return data


def model_sources() -> dict:
    """The loaded models the app runs by default (so a recompute uses exactly them, official or demo)."""
    return {"probpose_source": load_model(default_spec())[1], "baseline_source": load_model(baseline_spec())[1]}

