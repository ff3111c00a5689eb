"""Which official files can be had here, decided in a few seconds at most (never minutes of silent retries).

The app and the analysis ask this module what to use by default:

- **ProbPose**: ``default_probpose()`` -> ``PROBPOSE_WEIGHTS`` when set; else the official ``vrg-prague/ProbPose-s``
  when it is in the Hugging Face cache or the Hub can be reached; else the embedded offline demo model.
- **Baseline**: ``default_baseline()`` -> ``PROBPOSE_BASELINE_WEIGHTS`` when set; else mmpose's released ViTPose-S
  (COCO 256x192) when it is cached or its server can be reached; else the embedded heatmap demo model.

"Can be reached" (``hub_status`` / ``openmmlab_status``), in this order:

1. ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) true, or ``PROBPOSE_ONLINE=0``: offline, nothing is contacted.
2. ``PROBPOSE_ONLINE=1``: online, no probe.
3. ``SPACE_ID`` set (a Hugging Face Space): online, no probe.
4. Otherwise one HTTP HEAD request, cut off after ``PROBPOSE_HUB_TIMEOUT`` seconds (default 3; DNS included,
   since the probe runs in a thread we stop waiting for). Any HTTP answer, even an error status, means reachable.
   The answer is remembered for 10 minutes.

The Hugging Face cache is found as huggingface_hub finds it (``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` >
``HF_HOME``/hub > ``XDG_CACHE_HOME``/huggingface/hub > ~/.cache/huggingface/hub), read at call time so a changed
environment is honoured. ViTPose-S is cached once in torch hub's folder (``$TORCH_HOME/hub/checkpoints``).
See docs/weights.md ("Official files online").
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from probpose.errors import CheckpointError

__all__ = [
    "OFFICIAL_PROBPOSE_REPO", "OFFICIAL_PROBPOSE_FILE", "VITPOSE_S_URL", "VITPOSE_S_FILE",
    "Reachability", "WeightsPlan", "hub_offline", "on_space", "hf_cache_dir", "hub_status", "openmmlab_status",
    "cached_file", "official_probpose_cached", "fetch_official_probpose", "vitpose_s_cached", "fetch_vitpose_s",
    "load_vitpose_s", "default_probpose", "default_baseline", "reset",
]

OFFICIAL_PROBPOSE_REPO = "vrg-prague/ProbPose-s"
OFFICIAL_PROBPOSE_FILE = "ProbPose-s.pth"
# mmpose's released ViTPose-S, COCO 256x192 (AP 0.739 in mmpose's model zoo). The 8 hex digits in the name are the
# start of the file's SHA-256 (mmengine's publish_model convention): torch hub checks them after the download.
VITPOSE_S_URL = ("https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
                 "td-hm_ViTPose-small_8xb64-210e_coco-256x192-62d7a712_20230314.pth")
VITPOSE_S_FILE = VITPOSE_S_URL.rsplit("/", 1)[1]
VITPOSE_S_SHA256_PREFIX = "62d7a712"

ENV_WEIGHTS = "PROBPOSE_WEIGHTS"
ENV_BASELINE = "PROBPOSE_BASELINE_WEIGHTS"
ENV_ONLINE = "PROBPOSE_ONLINE"
ENV_TIMEOUT = "PROBPOSE_HUB_TIMEOUT"
ENV_REVISION = "PROBPOSE_HUB_REVISION"
DEFAULT_TIMEOUT = 3.0
_TTL = 600.0  # seconds a probe answer is trusted


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _falsy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("0", "false", "no", "off")


def hub_offline() -> bool:
    """True when the environment forbids the network: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, or PROBPOSE_ONLINE=0."""
    return (_truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
            or _falsy(os.environ.get(ENV_ONLINE)))


def on_space() -> bool:
    """True on a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID", "").strip())


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved from the environment now (as huggingface_hub does at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class Reachability:
    """Whether a server can be used now, and why (for the UI and error messages)."""

    online: bool
    reason: str


_probe_cache: dict[str, tuple[float, Reachability]] = {}
_probe_lock = threading.Lock()


def reset() -> None:
    """Forget remembered probe answers (tests, or after the network came back)."""
    with _probe_lock:
        _probe_cache.clear()


def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT)))
    except ValueError:
        return DEFAULT_TIMEOUT


def _probe(url: str, timeout: float) -> Reachability:
    """One HEAD request in a daemon thread; we wait at most ``timeout`` s (a hanging DNS lookup included)."""
    box: list[Reachability] = []

    def run() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            box.append(Reachability(True, f"{url} answered"))
        except urllib.error.HTTPError as e:  # the server answered: reachable
            box.append(Reachability(True, f"{url} answered (HTTP {e.code})"))
        except Exception as e:  # DNS, refused, TLS, timeout: not reachable
            reason = getattr(e, "reason", e)
            box.append(Reachability(False, f"{url} is unreachable ({type(e).__name__}: {reason})"))

    t = threading.Thread(target=run, daemon=True, name="probpose-hub-probe")
    t.start()
    t.join(timeout)
    return box[0] if box else Reachability(False, f"{url} did not answer within {timeout:g} s")


def _status(url: str, refresh: bool) -> Reachability:
    if hub_offline():
        why = ("HF_HUB_OFFLINE is set" if _truthy(os.environ.get("HF_HUB_OFFLINE"))
               else "TRANSFORMERS_OFFLINE is set" if _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
               else f"{ENV_ONLINE}=0")
        return Reachability(False, f"offline ({why})")
    if _truthy(os.environ.get(ENV_ONLINE)):
        return Reachability(True, f"{ENV_ONLINE}=1")
    if on_space():
        return Reachability(True, f"running on the Hugging Face Space {os.environ['SPACE_ID']}")
    now = time.monotonic()
    with _probe_lock:
        hit = _probe_cache.get(url)
        if hit and not refresh and now - hit[0] < _TTL:
            return hit[1]
    res = _probe(url, _timeout())
    with _probe_lock:
        _probe_cache[url] = (time.monotonic(), res)
    return res


def hub_status(refresh: bool = False) -> Reachability:
    """Can the Hugging Face Hub be used now? (rules in the module docstring; at most PROBPOSE_HUB_TIMEOUT s)"""
    return _status(_endpoint() + "/api/models/" + OFFICIAL_PROBPOSE_REPO, refresh)


def openmmlab_status(refresh: bool = False) -> Reachability:
    """Can mmpose's download server (ViTPose-S) be used now? Same rules as ``hub_status``."""
    return _status(VITPOSE_S_URL, refresh)


# ----------------------------------------------------------------------------------------------- ProbPose-s


def cached_file(repo_id: str, filename: str, *, repo_type: str = "model", revision: str | None = None) -> Path | None:
    """A file of a Hub repo when it is in the local HF cache (``models--org--name/snapshots/<rev>/file`` with
    ``refs/<revision>``), else None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir()), revision=revision,
                                     repo_type=repo_type)
    except Exception:  # a malformed cache folder is simply "not cached"
        return None
    return Path(hit) if isinstance(hit, str) else None


def _revision() -> str:
    return os.environ.get(ENV_REVISION) or "main"


def official_probpose_cached() -> Path | None:
    """The official ProbPose-s.pth in the local HF cache (at PROBPOSE_HUB_REVISION, default main), else None."""
    return cached_file(OFFICIAL_PROBPOSE_REPO, OFFICIAL_PROBPOSE_FILE, revision=_revision())


def fetch_official_probpose() -> Path:
    """Local path of the official ProbPose-s.pth: the cache, else one download (only when the Hub is reachable).

    Raises:
        CheckpointError: not cached and the Hub cannot be used, or the download failed (says what to do).
    """
    hit = official_probpose_cached()
    if hit is not None:
        return hit
    status = hub_status()
    where = f"{OFFICIAL_PROBPOSE_REPO}/{OFFICIAL_PROBPOSE_FILE}"
    if not status.online:
        raise CheckpointError(
            f"the official weights {where} are not in the Hugging Face cache ({hf_cache_dir()}) and the Hub cannot "
            f"be used: {status.reason}. On a connected machine run `hf download {OFFICIAL_PROBPOSE_REPO} "
            f"{OFFICIAL_PROBPOSE_FILE}` and copy the cache here, or set {ENV_WEIGHTS} to the file.")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(OFFICIAL_PROBPOSE_REPO, OFFICIAL_PROBPOSE_FILE, revision=_revision(),
                                    cache_dir=str(hf_cache_dir())))
    except Exception as e:
        raise CheckpointError(f"downloading {where} from {_endpoint()} failed: {type(e).__name__}: {e}. "
                              f"Set {ENV_WEIGHTS} to a local copy, or retry later.") from e


# ----------------------------------------------------------------------------------------------- ViTPose-S


def vitpose_cache_dir() -> Path:
    """Torch hub's checkpoint folder ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def vitpose_s_cached() -> Path | None:
    """mmpose's ViTPose-S checkpoint when already downloaded (or its float32 .safetensors conversion), else None."""
    pth = vitpose_cache_dir() / VITPOSE_S_FILE
    if pth.is_file():
        return pth
    conv = pth.with_suffix(".safetensors")
    return conv if conv.is_file() else None


def fetch_vitpose_s() -> Path:
    """Local path of ViTPose-S: the torch hub cache, else one download checked against the SHA-256 prefix.

    Raises:
        CheckpointError: not cached and download.openmmlab.com cannot be used, or the download failed.
    """
    hit = vitpose_s_cached()
    if hit is not None:
        return hit
    dst = vitpose_cache_dir() / VITPOSE_S_FILE
    status = openmmlab_status()
    if not status.online:
        raise CheckpointError(
            f"the official ViTPose-S checkpoint is not cached ({dst}) and cannot be downloaded: {status.reason}. "
            f"Download {VITPOSE_S_URL} on a connected machine and put it at {dst}, or set {ENV_BASELINE} to it.")
    import torch.hub

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(VITPOSE_S_URL, str(dst), hash_prefix=VITPOSE_S_SHA256_PREFIX, progress=False)
    except Exception as e:  # network error or hash mismatch (torch hub then deletes the partial file)
        raise CheckpointError(f"downloading ViTPose-S from {VITPOSE_S_URL} failed: {type(e).__name__}: {e}. "
                              f"Set {ENV_BASELINE} to a local copy, or retry later.") from e
    return dst


def load_vitpose_s(path: str | os.PathLike | None = None, *, device: str = "cpu"):
    """mmpose's ViTPose-S loaded strictly into our ``vitpose_s`` heatmap model, in eval mode.

    The .pth goes through the safe loader (``probpose.weights.load_state_dict_file``) once; a float32
    .safetensors copy is written beside it (best effort) and used afterwards. ``model.metadata["official"]`` is
    True. Args: path (default: ``fetch_vitpose_s()``). Raises CheckpointError (offline, corrupt, wrong layout).
    """
    from probpose.models import vitpose_s
    from probpose.weights import load_into, load_state_dict_file, save_safetensors

    path = Path(path) if path is not None else fetch_vitpose_s()
    conv = path.with_suffix(".safetensors")
    src = conv if conv.is_file() else path
    sd, meta = load_state_dict_file(src)
    model = vitpose_s()
    load_into(model, sd)
    model.metadata = {**{k: v for k, v in meta.items() if k != "config"}, "kind": model.kind,
                      "config": model.config.to_dict(), "official": True,
                      "source": f"ViTPose-S (mmpose, COCO 256x192): {VITPOSE_S_URL}"}
    if src == path and path.suffix != ".safetensors":
        try:  # best effort: a read-only folder just means the pickle is read again next time
            save_safetensors(model, conv, metadata={"converted_from": path.name}, dtype=None)
        except OSError:
            pass
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------- default choices


@dataclass(frozen=True)
class WeightsPlan:
    """What to load by default and why.

    Attributes:
        source: what ``probpose.weights.load_pretrained`` takes (alias, file or Hub id); "vitpose-s" for the
            official ViTPose-S (load it with ``load_vitpose_s``).
        official: True for the released ProbPose-s / ViTPose-S weights.
        label: short human name, e.g. "official ProbPose-s (vrg-prague/ProbPose-s)".
        reason: why this was chosen (cache hit, Hub reachable, offline...).
    """

    source: str
    official: bool
    label: str
    reason: str


def _is_official_probpose(source: str) -> bool:
    s = source.strip()
    return s in (OFFICIAL_PROBPOSE_REPO, f"{OFFICIAL_PROBPOSE_REPO}/{OFFICIAL_PROBPOSE_FILE}") or (
        Path(s).name in (OFFICIAL_PROBPOSE_FILE, "ProbPose-s.safetensors")
        and "models--vrg-prague--ProbPose-s" in Path(s).parts)


def default_probpose() -> WeightsPlan:
    """The ProbPose weights to open with: PROBPOSE_WEIGHTS > cached official > reachable Hub > embedded demo."""
    env = os.environ.get(ENV_WEIGHTS, "").strip()
    if env:
        return WeightsPlan(env, _is_official_probpose(env), f"ProbPose from {ENV_WEIGHTS}={env}",
                           f"{ENV_WEIGHTS} is set")
    hit = official_probpose_cached()
    label = f"official ProbPose-s ({OFFICIAL_PROBPOSE_REPO})"
    if hit is not None:
        return WeightsPlan(str(hit), True, label, f"found in the Hugging Face cache ({hit})")
    status = hub_status()
    if status.online:
        return WeightsPlan(OFFICIAL_PROBPOSE_REPO, True, label, f"downloaded on first use: {status.reason}")
    return WeightsPlan("embedded", False, "embedded offline demo ProbPose",
                       f"the official weights are not cached and the Hub cannot be used: {status.reason}")


def default_baseline() -> WeightsPlan:
    """The heatmap baseline to compare with: PROBPOSE_BASELINE_WEIGHTS > cached or reachable official ViTPose-S >
    the embedded heatmap demo."""
    env = os.environ.get(ENV_BASELINE, "").strip()
    if env:
        return WeightsPlan(env, Path(env).name.startswith(VITPOSE_S_FILE.rsplit(".", 1)[0]),
                           f"baseline from {ENV_BASELINE}={env}", f"{ENV_BASELINE} is set")
    label = "official ViTPose-S (mmpose, COCO 256x192)"
    hit = vitpose_s_cached()
    if hit is not None:
        return WeightsPlan("vitpose-s", True, label, f"found in the torch hub cache ({hit})")
    status = openmmlab_status()
    if status.online:
        return WeightsPlan("vitpose-s", True, label, f"downloaded on first use: {status.reason}")
    return WeightsPlan("embedded-heatmap", False, "embedded offline demo heatmap baseline",
                       f"ViTPose-S is not cached and cannot be downloaded: {status.reason}")
