"""Shared fixtures. Real data comes from ../shared/data (beside the repo); tests that need it skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROBPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
COCO_SUBSET = SHARED_DATA / "coco_subset"


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
