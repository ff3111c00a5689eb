"""The app's default models online / offline, simulated without any network: which ProbPose and baseline it opens
with, the banner next to every result of the offline demo model, the fallbacks, the typed weights path, the
analysis tabs' result sets per model and the per-visitor Recompute. Handlers are called as plain functions."""

from __future__ import annotations

import json
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from probpose import hub
from studio import calibration, compare, explore, inputs, models, precomputed, settings, sweep

BANNER = "Offline demo model, not the paper's ProbPose"


@pytest.fixture()
def world(offline_hub, tmp_path):
    """The offline world of `offline_hub`, with an empty result-set folder and no loaded models."""
    offline_hub.setattr(settings, "PRECOMPUTED_DIR", tmp_path / "precomputed")
    models.clear_model_cache()
    yield offline_hub
    models.clear_model_cache()


@pytest.fixture(scope="module")
def photo(coco_val) -> str:
    return str(coco_val[0] / "000000000885.jpg")


@pytest.fixture(scope="module")
def group_photo(coco_val) -> str:
    """COCO val 1000: upright people the offline HOG detector finds."""
    return str(coco_val[0] / "000000001000.jpg")


@pytest.fixture()
def official(world, official_files, tmp_path):
    """The official ProbPose-s in the HF cache and ViTPose-S in the torch hub folder; still no network."""
    world.setenv("HF_HUB_CACHE", str(official_files["hf_cache"]))
    shutil.copytree(official_files["torch_home"], tmp_path / "torch")
    world.setenv("TORCH_HOME", str(tmp_path / "torch"))
    warnings.filterwarnings("ignore", message=".*SHA-256.*")  # our stand-in is not the released file
    return world


def test_offline_opens_on_the_demo_models_with_a_banner_next_to_every_result(world, photo, group_photo):
    spec = models.model_spec(models.MODEL_DEFAULT)
    assert spec.demo and not spec.official and spec.key == "embedded" and "unreachable" in spec.reason
    assert "offline demo model" in models.header_title() and BANNER in models.embedded_status()
    _, drawing, data, *_rest, status, _path = explore.explore_run(photo, inputs.BOX_WHOLE)
    assert drawing is not None and BANNER in status and "unreachable" in status
    assert data["model"]["official"] is False and "Offline demo model" in data["model"]["warning"]
    data, _ = explore.predict(photo, "10,10,200,300")
    assert "Offline demo model" in data["model"]["warning"]
    state, *_views, status = compare.compare_run(photo, inputs.BOX_WHOLE)
    assert state[1].spec.key == "embedded-heatmap" and BANNER in status and "Offline demo baseline" in status
    _, _, md = sweep.sweep_preview(None, group_photo)  # automatic boxes: the offline HOG detector
    assert BANNER in md


@pytest.mark.slow
def test_official_files_in_the_cache_are_the_default(official, photo):
    spec = models.model_spec(models.MODEL_DEFAULT)
    assert spec.official and not spec.demo and "cache" in spec.reason and models.banner(spec) == ""
    assert models.header_title().startswith("Model: official ProbPose-s")
    state, _pp, _hm, *_views, status = compare.compare_run(photo, inputs.BOX_WHOLE)
    pp, hm = state
    assert pp.spec.official and pp.kind == "probpose" and "models--vrg-prague--ProbPose-s" in pp.metadata["path"]
    assert hm.spec.key == "vitpose-s" and hm.kind == "heatmap" and hm.spec.official
    assert "Offline demo" not in status and "official ViTPose-S" in status and "official ProbPose-s" in status
    _, _, data, *_ = explore.explore_run(photo, inputs.BOX_WHOLE)
    assert data["model"]["official"] is True and "warning" not in data["model"]


def test_space_with_an_unreachable_hub_falls_back_with_the_reason(world, photo):
    """SPACE_ID says online, so the official weights are chosen; the download fails (a closed port), and the demo
    model is used with a banner giving the reason."""
    world.setenv("SPACE_ID", "org/probpose-studio")
    world.setattr(hub, "_probe", lambda *a, **k: pytest.fail("a Space is online without probing"))
    spec = models.model_spec(models.MODEL_DEFAULT)
    assert spec.official and spec.key == hub.OFFICIAL_PROBPOSE_REPO and spec.fallback is not None
    world.setattr(hub, "fetch_official_probpose",
                  lambda: (_ for _ in ()).throw(hub.CheckpointError("download failed: connection refused")))
    used, model = models.load_model(spec)
    assert used.demo and model.kind == "probpose" and "could not be loaded" in used.reason
    _, _, _, _, _, status, _ = explore.explore_run(photo, inputs.BOX_WHOLE)
    assert BANNER in status and "connection refused" in status


def test_explicit_official_choice_offline_is_a_quick_clear_error(world, photo):
    world.setenv("HF_HUB_OFFLINE", "1")
    _, drawing, data, *_ = explore.explore_run(photo, inputs.BOX_WHOLE, "", models.MODEL_HUB)
    assert drawing is None and "HF_HUB_OFFLINE" in data["error"] and "hf download" in data["error"]


def test_typed_weights_path_is_used_whatever_the_dropdown(world, photo, tmp_path, tiny_probpose):
    from probpose.weights import save_safetensors

    path = save_safetensors(tiny_probpose, tmp_path / "mine.safetensors")
    for choice in (models.MODEL_DEFAULT, models.MODEL_DEMO, models.MODEL_DH):
        assert models.model_spec(choice, f" {path} ").key == str(path)
    session, *_rest, status, _ = explore.explore_run(photo, inputs.BOX_WHOLE, "", models.MODEL_DEFAULT, str(path))
    assert session.spec.key == str(path) and "from the weights box" in status and BANNER not in status
    world.setenv("PROBPOSE_WEIGHTS", str(path))  # the env var changes the default
    assert models.model_spec(models.MODEL_DEFAULT).key == str(path)


def test_nobody_found_is_said_plainly(world):
    flat = np.full((300, 400, 3), 120, np.uint8)
    _, drawing, data, *_ = explore.explore_run(flat, inputs.BOX_AUTO)
    assert drawing is None and "No person found by the HOG person detector" in data["error"]
    assert "whole image" in data["error"]
    _, drawing, *_ = explore.explore_run(flat, inputs.BOX_WHOLE)  # the explicit fallback runs
    assert drawing is not None


# ---------------------------------------------------------------------------------------------- analysis tabs


@pytest.fixture(scope="module")
def sweep_data(coco_val, tiny_probpose, tiny_heatmap, tmp_path_factory):
    from analysis.precompute import compute_sweep

    return compute_sweep(probpose_source=tiny_probpose, baseline_source=tiny_heatmap, data_dir=coco_val[0],
                         ann=coco_val[1], max_people=2, work_dir=tmp_path_factory.mktemp("crops"))


def _write_set(root, sid: str, official: bool, sweep_data: dict) -> None:
    prov = {"set": sid, "created": "2026-12-01", "command": f"make {sid}",
            "data": {"key": "cropcoco" if official else "cropcoco-style", "name": f"data of {sid}"},
            "models": {"probpose": {"name": f"probpose of {sid}", "official": official},
                       "baseline": {"name": f"baseline of {sid}", "official": official}}}
    d = root / sid
    d.mkdir(parents=True)
    (d / "provenance.json").write_text(json.dumps(prov))
    (d / "sweep.json").write_text(json.dumps({**sweep_data, "provenance": prov}))


def test_analysis_tabs_show_the_set_of_the_models_the_app_runs(official, sweep_data):
    root = settings.PRECOMPUTED_DIR
    _write_set(root, "demo_cropcoco-style", False, sweep_data)
    info, _ = sweep.sweep_views()  # official models, no official set yet: the demo set, said so
    assert "No results of the official models are available here" in info and "probpose of demo" in info
    _write_set(root, "official_cropcoco", True, sweep_data)
    info, fig = sweep.sweep_views()
    assert "probpose of official_cropcoco" in info and "make official_cropcoco" in info and fig.data
    assert "not an official model" not in info
    official.setenv("HF_HUB_CACHE", str(root / "nothing"))  # offline demo model: the demo set, never official
    info, _ = sweep.sweep_views()
    assert "probpose of demo_cropcoco-style (not an official model)" in info
    assert "No results of the official models" not in info


def test_recompute_is_the_visitors_own(world, tiny_probpose, tiny_heatmap, coco_val, tmp_path):
    from probpose.weights import save_safetensors

    world.setenv("PROBPOSE_WEIGHTS", str(save_safetensors(tiny_probpose, tmp_path / "pp.safetensors")))
    world.setenv("PROBPOSE_BASELINE_WEIGHTS", str(save_safetensors(tiny_heatmap, tmp_path / "hm.safetensors")))
    world.setattr(settings, "RECOMPUTE_PEOPLE", 2)
    alice, bob = SimpleNamespace(session_hash="alice"), SimpleNamespace(session_hash="bob")
    info, *_ = calibration.calibration_recompute(progress=None, request=alice)
    assert "Recomputed in this session" in info
    assert precomputed.session_result(alice, "calibration.json") is not None
    assert precomputed.session_result(bob, "calibration.json") is None  # bob still sees the shipped results
    assert not settings.PRECOMPUTED_DIR.exists()  # nothing written where the shipped files live
    info, *_ = calibration.calibration_shipped(request=alice)  # back to the shipped results
    assert precomputed.session_result(alice, "calibration.json") is None and "Recomputed" not in info
