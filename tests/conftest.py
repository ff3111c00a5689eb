"""Shared fixtures. Real data comes from ../shared/data (beside the repo); tests that need it skip without it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROBPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
COCO_SUBSET = SHARED_DATA / "coco_subset"
# Environment that decides which official files probpose.hub and the app use; `offline_hub` clears it.
HUB_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PROBPOSE_ONLINE", "SPACE_ID", "PROBPOSE_WEIGHTS",
           "PROBPOSE_BASELINE_WEIGHTS", "PROBPOSE_RESULTS_REPO", "HF_ENDPOINT", "HF_HUB_CACHE",
           "HUGGINGFACE_HUB_CACHE", "HF_HOME", "PROBPOSE_HUB_REVISION")


def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """Nothing cached, the Hub and openmmlab unreachable (closed loopback ports), no env overrides."""
    from probpose import hub

    for k in HUB_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(hub, "VITPOSE_S_URL", f"http://127.0.0.1:{closed_port()}/vitpose.pth")
    hub.reset()
    yield monkeypatch
    hub.reset()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set PROBPOSE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data, or skip."""
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def coco_val() -> tuple[Path, Path]:
    """(image folder, annotation JSON) of the real COCO val subset (155 images, 468 people)."""
    return (_need(COCO_SUBSET / "val2017"),
            _need(COCO_SUBSET / "annotations" / "person_keypoints_val2017.json"))


@pytest.fixture(scope="session")
def coco_train() -> tuple[Path, Path]:
    """(image folder, annotation JSON) of the real COCO train subset (103 images, 282 people)."""
    return (_need(COCO_SUBSET / "train2017"),
            _need(COCO_SUBSET / "annotations" / "person_keypoints_train2017.json"))


@pytest.fixture(scope="session")
def tiny_probpose():
    """A random-init ProbPose with the tiny test config, in eval mode (seeded)."""
    import torch

    from probpose.models.probpose import probpose_test

    torch.manual_seed(0)
    return probpose_test().eval()


@pytest.fixture(scope="session")
def tiny_heatmap():
    """A random-init heatmap baseline with the tiny test config, in eval mode (seeded)."""
    import torch

    from probpose.models.heatmap import vitpose_test

    torch.manual_seed(0)
    return vitpose_test().eval()


# ---------------------------------------------------------------------------------------------- official files


def _hf_cache_put(cache: Path, repo_id: str, filename: str, write, repo_type: str = "model",
                  revision: str = "3f1c0ffee0d5a1b2c3d4e5f60718293a4b5c6d7e") -> Path:
    """Put one file into a Hugging Face cache laid out as huggingface_hub 2.x does: the content in
    ``blobs/<etag>``, ``snapshots/<commit>/<file>`` a relative symlink to it, ``refs/main`` holding the commit."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / f"blob-{filename.replace('/', '-')}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    write(blob)
    snap = repo / "snapshots" / revision / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


@pytest.fixture(scope="session")
def official_files(tmp_path_factory):
    """Stand-ins of the official files, built once per session (random weights, official names and layout):

    - ``hf_cache``: a Hugging Face cache holding ``vrg-prague/ProbPose-s/ProbPose-s.pth``, an mmengine checkpoint
      ``{"meta": {...numpy...}, "state_dict": probpose_s()}`` (float16 tensors to halve the I/O; the loader
      upcasts);
    - ``torch_home``: a torch hub folder holding mmpose's ViTPose-S file name with ``vitpose_s()`` weights in the
      same wrapper.
    Returns {"hf_cache": Path, "torch_home": Path, "probpose": Path, "vitpose": Path}.
    """
    import numpy as np
    import torch

    from probpose.hub import OFFICIAL_PROBPOSE_FILE, OFFICIAL_PROBPOSE_REPO, VITPOSE_S_FILE
    from probpose.models import probpose_s, vitpose_s

    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    meta = {"epoch": 210, "iter": 0, "mmengine_version": "0.10.3", "seed": 0,
            "dataset_meta": {"dataset_name": "coco", "num_keypoints": 17,
                             "sigmas": np.full(17, 0.05, dtype=np.float32)}}

    def ckpt(model):
        sd = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        return lambda path: torch.save({"meta": meta, "state_dict": sd}, path)

    pp = _hf_cache_put(root / "hf" / "hub", OFFICIAL_PROBPOSE_REPO, OFFICIAL_PROBPOSE_FILE, ckpt(probpose_s()))
    vit = root / "torch" / "hub" / "checkpoints" / VITPOSE_S_FILE
    vit.parent.mkdir(parents=True)
    ckpt(vitpose_s())(vit)
    return {"hf_cache": root / "hf" / "hub", "torch_home": root / "torch", "probpose": pp, "vitpose": vit}
