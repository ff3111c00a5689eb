"""Precomputed result sets for the app's analysis tabs: layout, provenance and where they are read from.

Layout (``analysis/precomputed/`` in the repository, or the same tree in a Hugging Face *dataset* repo)::

    index.json                      {"sets": {<set id>: <provenance>}}, rewritten by every precompute run
    README.md                       the index as a table (generated)
    <set id>/                       one set = one pair of models on one data set, e.g. official_cropcoco
        provenance.json             which models (official or not, source), which data, when, by which command
        calibration.json            ProbPose presence / map calibration
        sweep.json                  mAP / Ex-mAP / presence error vs threshold, both models
        cropcoco_cases.json         the worst people per model by Ex-OKS error
        images/                     optional: the case images (``--with-images``), so no data folder is needed
        README.md

Each of the three JSON files also carries the set's ``provenance`` dict, so a figure never travels without it.
``provenance_caption(data)`` is the one-line text the app shows next to every figure.

A set id is ``<models>_<data>``: models ``official`` (official ProbPose-s vs official ViTPose-S), ``demo`` (the
embedded offline demo models) or ``custom``; data ``cropcoco`` (the official release), ``coco-val2017``,
``cropcoco-style`` (crops we generate from the shared COCO subset) or ``coco-subset``.

Sources (``result_roots``): the repository folder (``PROBPOSE_PRECOMPUTED``, default ``analysis/precomputed``)
and, when ``PROBPOSE_RESULTS_REPO`` names a Hub dataset repo, its snapshot (downloaded when the Hub can be used,
else taken from the local HF cache; revision ``PROBPOSE_RESULTS_REVISION``, default main). A set found in both is
taken from the Hub repo.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResultSet", "FILES", "result_roots", "list_sets", "pick_set", "load_file", "provenance_caption",
           "model_caption", "ENV_RESULTS_REPO", "REPO_PRECOMPUTED"]

log = logging.getLogger("probpose.analysis")

REPO_PRECOMPUTED = Path(__file__).resolve().parent / "precomputed"
ENV_PRECOMPUTED = "PROBPOSE_PRECOMPUTED"
ENV_RESULTS_REPO = "PROBPOSE_RESULTS_REPO"
ENV_RESULTS_REVISION = "PROBPOSE_RESULTS_REVISION"
FILES = {"calibration": "calibration.json", "sweep": "sweep.json", "cases": "cropcoco_cases.json"}
# Which data set a tab prefers when several sets of the same models exist (first found wins).
DATA_ORDER = ("cropcoco", "cropcoco-style", "coco-val2017", "coco-subset")


@dataclass(frozen=True)
class ResultSet:
    """One precomputed set: its folder, id, provenance and where it came from ("repository" or the Hub repo)."""

    id: str
    dir: Path
    provenance: dict
    origin: str

    @property
    def official(self) -> bool:
        """True when every model of the set is an official release."""
        models = self.provenance.get("models") or {}
        return bool(models) and all(m.get("official") for m in models.values())

    @property
    def data_key(self) -> str:
        return str((self.provenance.get("data") or {}).get("key", ""))


def local_root() -> Path:
    return Path(os.environ.get(ENV_PRECOMPUTED) or REPO_PRECOMPUTED)


_HUB_TTL = 600.0  # seconds before the results repo is checked for updates again
_hub_seen: dict[tuple, tuple[float, Path | None, str]] = {}


def hub_root(repo_id: str | None = None) -> tuple[Path | None, str]:
    """(snapshot folder of the results dataset repo, note). Never waits on an unreachable Hub; the answer is
    remembered for 10 minutes (page loads do not each contact the Hub)."""
    import time

    from probpose.hub import hf_cache_dir, hub_status

    repo_id = repo_id or os.environ.get(ENV_RESULTS_REPO, "").strip()
    if not repo_id:
        return None, ""
    revision = os.environ.get(ENV_RESULTS_REVISION) or None
    key = (repo_id, revision, str(hf_cache_dir()))
    hit = _hub_seen.get(key)
    if hit and time.monotonic() - hit[0] < _HUB_TTL:
        return hit[1], hit[2]
    status = hub_status()
    try:
        from huggingface_hub import snapshot_download

        snap = snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=str(hf_cache_dir()),
                                 local_files_only=not status.online)
        res = (Path(snap), f"results from the Hub dataset {repo_id}")
    except Exception as e:  # not cached offline, no such repo, auth: the repository's files still serve
        res = (None, f"the results repo {repo_id} could not be read ({type(e).__name__}; Hub: {status.reason})")
    _hub_seen[key] = (time.monotonic(), *res)
    return res


def result_roots(local: Path | None = None) -> list[tuple[Path, str]]:
    """[(folder, origin)] to look for sets in, the Hub repo's first, then ``local`` (default: the repository's)."""
    roots = []
    hub, note = hub_root()
    if hub is not None:
        roots.append((hub, f"Hub dataset {os.environ.get(ENV_RESULTS_REPO)}"))
    elif note:
        log.warning(note)
    roots.append((local or local_root(), "repository"))
    return roots


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        if path.exists():
            log.warning("cannot read %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else None


def _legacy_provenance(root: Path) -> dict | None:
    """Files written before sets existed (three JSON files directly in the root): what their headers say."""
    cases = _read(root / FILES["cases"]) or {}
    cal = _read(root / FILES["calibration"]) or {}
    if not cases and not cal:
        return None
    models = {}
    for name in ("probpose", "baseline"):
        m = (cases.get(name) or {}).get("model") or (cal.get("model") if name == "probpose" else None)
        if m:
            models[name] = {"name": str(m), "official": False, "source": str(m)}
    data = dict(cases.get("data") or cal.get("data") or {})
    data.setdefault("key", "cropcoco-style" if data.get("dataset") == "cropcoco" else "coco-subset")
    return {"set": "legacy", "models": models, "data": data, "created": cases.get("created") or cal.get("created")}


def list_sets(roots: list[tuple[Path, str]] | None = None) -> dict[str, ResultSet]:
    """Every set under the roots ({set id: ResultSet}); an earlier root wins for the same id."""
    found: dict[str, ResultSet] = {}
    for root, origin in roots if roots is not None else result_roots():
        if not root.is_dir():
            continue
        for prov_file in sorted(root.glob("*/provenance.json")):
            prov = _read(prov_file)
            if prov is None:
                continue
            sid = str(prov.get("set") or prov_file.parent.name)
            found.setdefault(sid, ResultSet(sid, prov_file.parent, prov, origin))
        legacy = _legacy_provenance(root)
        if legacy is not None:
            found.setdefault("legacy", ResultSet("legacy", root, legacy, origin))
    return found


def pick_set(sets: dict[str, ResultSet], *, official: bool, file: str = "cases") -> ResultSet | None:
    """The set a tab shows: official sets when the app runs the official models, else non-official ones (never
    a demo set labelled as official, never an official set for the demo model); among those the data order
    ``DATA_ORDER``; only sets that hold ``file`` ("calibration" | "sweep" | "cases")."""
    cands = [s for s in sets.values() if s.official == official and (s.dir / FILES[file]).is_file()]
    if not cands:
        return None
    rank = {k: i for i, k in enumerate(DATA_ORDER)}
    return min(cands, key=lambda s: (rank.get(s.data_key, len(rank)), s.id))


def load_file(rs: ResultSet, file: str) -> dict | None:
    """One JSON file of a set with the set's provenance attached (``data["provenance"]``) and ``_dir`` (the set's
    folder, where ``images/`` may be)."""
    data = _read(rs.dir / FILES[file])
    if data is None:
        return None
    data.setdefault("provenance", rs.provenance)
    data["provenance"] = {**data["provenance"], "origin": rs.origin, "set": rs.id}
    data["_dir"] = str(rs.dir)
    return data


def model_caption(info: dict | None) -> str:
    """'official ProbPose-s (vrg-prague/ProbPose-s)' or '**embedded offline demo ...** (not the paper's model)'."""
    if not info:
        return "unknown model"
    name = str(info.get("name") or info.get("source") or "?")
    return name if info.get("official") else f"{name} (not an official model)"


def provenance_caption(data: dict | None, models: tuple[str, ...] = ("probpose", "baseline")) -> str:
    """One markdown line for under a figure: which models on which data, made when and how."""
    prov = (data or {}).get("provenance")
    if not prov:
        return "*Provenance unknown (a file without a provenance record).*"
    ms = prov.get("models") or {}
    parts = [f"{'ProbPose' if k == 'probpose' else 'baseline'}: {model_caption(ms[k])}" for k in models if k in ms]
    d = prov.get("data") or {}
    size = ", ".join(f"{d[k]} {k.split('_')[1]}" for k in ("num_images", "num_people") if d.get(k) is not None)
    data_txt = f"{d.get('name') or d.get('key') or '?'}" + (f" ({size})" if size else "")
    made = prov.get("created") or "?"
    how = f" by `{prov['command']}`" if prov.get("command") else ""
    where = f"; from the {prov['origin']}" if prov.get("origin") else ""
    kind = "Recomputed in this session" if prov.get("session") else "Precomputed"
    return f"*{kind}* · {' · '.join(parts)} · data: {data_txt} · made {made}{how}{where}."
