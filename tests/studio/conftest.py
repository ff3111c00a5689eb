"""Fixtures of the studio tests: the app served on loopback with tiny random-init checkpoints."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(app module, its URL, a temp folder): app.py launched on a free loopback port (module scope)."""
    import torch

    from probpose.models import probpose_test, vitpose_test
    from probpose.weights import save_safetensors

    tmp = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    env = {
        "PROBPOSE_WEIGHTS": str(save_safetensors(probpose_test().eval(), tmp / "pp.safetensors")),
        "PROBPOSE_BASELINE_WEIGHTS": str(save_safetensors(vitpose_test().eval(), tmp / "hm.safetensors")),
        "GRADIO_EXAMPLES_CACHE": str(tmp / "examples_cache"),
        "PROBPOSE_PRECOMPUTED": str(tmp / "precomputed"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    spec = importlib.util.spec_from_file_location("probpose_app_under_test", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    app.settings.PRECOMPUTED_DIR = Path(env["PROBPOSE_PRECOMPUTED"])  # read at import of studio.settings
    app.settings.RECOMPUTE_PEOPLE = 3  # the Recompute endpoints really run the analysis: keep it to a few people
    app.models.clear_model_cache()
    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                                allowed_paths=app.settings.allowed_paths())
    try:
        yield app, url, tmp
    finally:
        app.demo.close()
        app.models.clear_model_cache()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """(ProbPose, heatmap baseline) tiny random-init checkpoints, seeded, as .safetensors files."""
    import torch

    from probpose.models import probpose_test, vitpose_test
    from probpose.weights import save_safetensors

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    return (save_safetensors(probpose_test().eval(), d / "pp.safetensors"),
            save_safetensors(vitpose_test().eval(), d / "hm.safetensors"))


@pytest.fixture()
def studio_env(tiny_checkpoints, monkeypatch, tmp_path):
    """The handlers on the tiny checkpoints (PROBPOSE_WEIGHTS / the baseline variable) and an empty precomputed
    folder; the model cache is cleared before and after."""
    from studio import models, settings

    pp, hm = tiny_checkpoints
    monkeypatch.setenv("PROBPOSE_WEIGHTS", str(pp))
    monkeypatch.setenv(models.ENV_BASELINE, str(hm))
    monkeypatch.setattr(settings, "PRECOMPUTED_DIR", tmp_path / "precomputed")
    models.clear_model_cache()
    yield
    models.clear_model_cache()
