"""ProbPose in plain PyTorch: probability maps, presence, expected-OKS decoding (CVPR 2025, arXiv 2412.02254)."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names, imported lazily so that `import probpose` stays cheap and the CLI starts fast.
_EXPORTS = {
    "ProbPose": "probpose.models.probpose",
    "ProbPoseConfig": "probpose.models.probpose",
    "ProbPoseOutput": "probpose.models.probpose",
    "probpose_s": "probpose.models.probpose",
    "probpose_t": "probpose.models.probpose",
    "probpose_test": "probpose.models.probpose",
    "HeatmapPose": "probpose.models.heatmap",
    "vitpose_s": "probpose.models.heatmap",
    "load_pretrained": "probpose.weights",
    "PosePredictor": "probpose.inference",
    "PoseResult": "probpose.inference",
    "predict_image": "probpose.inference",
    "load_image": "probpose.image",
    "detect_people": "probpose.detect",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'probpose' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
