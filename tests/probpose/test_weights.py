"""Checkpoint I/O: mmengine pickles through the safe unpickler, trust policy, strict loading, safetensors, the Hub
cache. (The unpickler itself: test_safe_pickle.py.)"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from probpose import weights
from probpose.errors import CheckpointError
from probpose.models import HeatmapPose, ProbPose
from probpose.models.heatmap import VITPOSE_TEST_CONFIG, vitpose_s, vitpose_test
from probpose.models.probpose import PROBPOSE_S_CONFIG, PROBPOSE_TEST_CONFIG, probpose_test
from probpose.weights import (
    convert_state_dict,
    infer_config,
    load_into,
    load_pretrained,
    load_state_dict_file,
    save_safetensors,
)

SPEC_JSON = Path(__file__).resolve().parents[3] / "shared" / "spec" / "probpose_s_state_dict.json"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("PROBPOSE_WEIGHTS", "PROBPOSE_TRUST_CHECKPOINT", "PROBPOSE_HUB_REVISION", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def spec_keys() -> dict[str, list[int]]:
    if not SPEC_JSON.exists():
        pytest.skip(f"spec JSON not found at {SPEC_JSON}")
    return json.loads(SPEC_JSON.read_text())["keys"]


def _random_state_dict(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(1234, dtype=torch.int64)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.02
    return out


def _mmengine_meta() -> dict:
    """The kind of `meta` mmengine writes: numpy scalars and arrays, OrderedDict, plain text."""
    return {"epoch": np.int64(210), "iter": 123456, "seed": np.int32(7), "mmengine_version": "0.10.4",
            "cfg": "model = dict(type='TopdownPoseEstimator')", "time": "20250101_000000",
            "dataset_meta": {"dataset_name": "coco", "sigmas": np.array([0.026, 0.025], dtype=np.float32),
                             "flip_indices": [0, 2, 1], "keypoint_colors": np.zeros((17, 3), np.uint8),
                             "joint_weights": np.ones(17, dtype=np.float64), "scale": np.float64(1.25)},
            "hooks": collections.OrderedDict(a=1)}


def _sharp(model):
    """Give the final layer variance so probability maps have structure (and exact zeros)."""
    with torch.no_grad():
        model.head.final_layer.weight.normal_(0, 1.0)
    return model


# ----------------------------------------------------------------------------------------------- official layout


def test_official_mmengine_checkpoint_loads_strictly_with_the_safe_unpickler(tmp_path, spec_keys):
    sd = _random_state_dict(spec_keys)
    sd["data_preprocessor.mean"] = torch.zeros(3, 1, 1)  # present in some mmpose checkpoints; ignored
    path = tmp_path / "ProbPose-s.pth"
    torch.save({"meta": _mmengine_meta(), "state_dict": sd, "optimizer": {"state": {}}}, path)
    # The raw file is refused by a plain weights_only load: our unpickler is what makes it loadable.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    model = load_pretrained(path)
    assert isinstance(model, ProbPose) and not model.training
    assert model.config == PROBPOSE_S_CONFIG
    torch.testing.assert_close(model.backbone.layers[11].attn.qkv.weight, sd["backbone.layers.11.attn.qkv.weight"])
    torch.testing.assert_close(model.head.error_layers[12].bias, sd["head.error_layers.12.bias"])
    assert model.head.oks_layers[9].num_batches_tracked.item() == 1234
    assert model.metadata["kind"] == "probpose" and model.metadata["format"] == "pickle"
    assert model.metadata["meta"]["epoch"] == 210


def test_published_legacy_format_with_numpy1_names_loads(tmp_path):
    """mmengine's publish_model writes the legacy (non-zip) format; numpy 1.x pickles say numpy.core."""
    src = probpose_test()
    path = tmp_path / "published.pth"
    torch.save({"meta": _mmengine_meta(), "state_dict": src.state_dict()}, path,
               _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    # protocol-2 GLOBAL opcodes are newline-terminated text, so the module name can be rewritten in place
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    sd, meta = load_state_dict_file(path)
    assert meta["meta"]["epoch"] == 210 and meta["meta"]["mmengine_version"] == "0.10.4"
    load_into(probpose_test(), sd)


def test_mmpose_vitpose_s_layout_loads_into_heatmap_baseline(tmp_path, spec_keys):
    keys = {k: v for k, v in spec_keys.items()
            if k.startswith(("backbone.", "head.deconv_layers.", "head.final_layer."))}
    sd = _random_state_dict(keys, seed=1)
    path = tmp_path / "vitpose-s.pth"
    torch.save({"meta": _mmengine_meta(), "state_dict": sd}, path)
    loaded, meta = load_state_dict_file(path)
    cfg = infer_config(loaded, meta)
    assert cfg.backbone.embed_dim == 384 and type(cfg).__name__ == "HeatmapConfig"
    model = load_into(vitpose_s(), loaded)
    torch.testing.assert_close(model.head.final_layer.weight, sd["head.final_layer.weight"])


def test_module_prefix_and_wrappers_are_unwrapped(tmp_path):
    src = vitpose_test()
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    sd["data_preprocessor.std"] = torch.ones(3, 1, 1)
    path = tmp_path / "ddp.pt"
    torch.save({"model": sd, "message_hub": {"x": 1}}, path)
    loaded, _ = load_state_dict_file(path)
    assert set(loaded) == set(src.state_dict())
    model = load_pretrained(path, config=VITPOSE_TEST_CONFIG)
    assert isinstance(model, HeatmapPose)


def test_original_vitpose_repo_layout_is_mapped():
    torch.manual_seed(0)
    src = vitpose_test()
    ours = src.state_dict()
    renames = [("backbone.patch_embed.projection.", "backbone.patch_embed.proj."), (".ln1.", ".norm1."),
               (".ln2.", ".norm2."), (".ffn.layers.0.0.", ".mlp.fc1."), (".ffn.layers.1.", ".mlp.fc2."),
               ("backbone.layers.", "backbone.blocks."), ("head.", "keypoint_head.")]
    orig = {}
    for k, v in ours.items():
        if k == "backbone.ln1.weight" or k == "backbone.ln1.bias":
            orig[k.replace("backbone.ln1.", "backbone.last_norm.")] = v
            continue
        for a, b in renames:
            k = k.replace(a, b)
        orig[k] = v
    cls = torch.full((1, 1, 32), 0.5)
    orig["backbone.pos_embed"] = torch.cat([cls, ours["backbone.pos_embed"]], 1)  # extra class position
    assert "backbone.blocks.1.mlp.fc2.weight" in orig and "keypoint_head.final_layer.bias" in orig
    mapped = convert_state_dict(orig)
    assert set(mapped) == set(ours)
    # the original forward adds pos[:, :1] to every token: here 0.5 everywhere
    torch.testing.assert_close(mapped["backbone.pos_embed"], ours["backbone.pos_embed"] + 0.5)
    load_into(vitpose_test(), mapped)


def test_load_into_accepts_a_path(tmp_path):
    src = _sharp(probpose_test())
    path = save_safetensors(src, tmp_path / "init.safetensors", dtype=None)
    model = load_into(probpose_test(), path)
    assert torch.equal(model.head.final_layer.weight, src.head.final_layer.weight)


def test_pos_embed_with_class_position_is_dropped_like_mmpretrain():
    src = probpose_test()
    sd = dict(src.state_dict())
    sd["backbone.pos_embed"] = torch.cat([torch.full((1, 1, 32), 9.0), sd["backbone.pos_embed"]], 1)
    model = load_into(probpose_test(), sd)
    torch.testing.assert_close(model.backbone.pos_embed, src.backbone.pos_embed)


# ----------------------------------------------------------------------------------------------- strict errors


def test_missing_unexpected_and_mismatched_keys_are_named():
    sd = dict(probpose_test().state_dict())
    del sd["head.oks_layers.12.bias"]
    sd["head.extra_layer.weight"] = torch.zeros(3)
    sd["head.final_layer.weight"] = torch.zeros(17, 8, 1, 1)
    with pytest.raises(CheckpointError) as e:
        load_into(probpose_test(), sd)
    msg = str(e.value)
    assert "1 missing keys: head.oks_layers.12.bias" in msg
    assert "1 unexpected keys: head.extra_layer.weight" in msg
    assert "head.final_layer.weight checkpoint [17, 8, 1, 1] vs model [17, 16, 1, 1]" in msg
    assert "embed_dim=32" in msg


def test_many_missing_keys_are_counted_and_truncated():
    sd = {k: v for k, v in probpose_test().state_dict().items() if not k.startswith("backbone.")}
    with pytest.raises(CheckpointError) as e:
        load_into(probpose_test(), sd)
    n = sum(1 for k in probpose_test().state_dict() if k.startswith("backbone."))
    assert f"{n} missing keys" in str(e.value) and f"and {n - 10} more" in str(e.value)


def test_heatmap_checkpoint_into_probpose_fails_clearly(tmp_path):
    path = tmp_path / "hm.safetensors"
    save_safetensors(vitpose_test(), path)
    with pytest.raises(CheckpointError, match="heatmap"):
        load_pretrained(path, kind="probpose")
    with pytest.raises(CheckpointError, match="missing keys: head.probability_layers"):
        load_pretrained(path, config=PROBPOSE_TEST_CONFIG)


def test_unknown_architecture_without_config_asks_for_one(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(probpose_test().state_dict(), path)
    with pytest.raises(CheckpointError, match="config="):
        load_pretrained(path)
    assert isinstance(load_pretrained(path, config=PROBPOSE_TEST_CONFIG), ProbPose)


# ----------------------------------------------------------------------------------------------- trust policy


def test_untrusted_pickle_needs_explicit_trust(tmp_path, monkeypatch):
    src = probpose_test()
    path = tmp_path / "legacy.pth"
    torch.save({"meta": {"args": argparse.Namespace(lr=0.1)}, "state_dict": src.state_dict()}, path)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_file(path)
    msg = str(e.value)
    assert "argparse.Namespace" in msg and "trusted=True" in msg and "PROBPOSE_TRUST_CHECKPOINT" in msg
    sd, _ = load_state_dict_file(path, trusted=True)
    torch.testing.assert_close(sd["head.final_layer.weight"], src.state_dict()["head.final_layer.weight"])
    monkeypatch.setenv("PROBPOSE_TRUST_CHECKPOINT", "1")
    assert isinstance(load_pretrained(path, config=PROBPOSE_TEST_CONFIG), ProbPose)


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pth")
    for name in ("bad.pth", "bad.safetensors"):
        p = tmp_path / name
        p.write_bytes(b"\x00garbage" * 50)
        with pytest.raises(CheckpointError, match=name):
            load_state_dict_file(p)
        with pytest.raises(CheckpointError, match=name):
            load_state_dict_file(p, trusted=True)
    truncated = tmp_path / "trunc.pth"
    torch.save(probpose_test().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_state_dict_file(truncated)


# ----------------------------------------------------------------------------------------------- safetensors


def test_fp16_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    src = _sharp(probpose_test()).eval()
    src.temperature = 0.5
    path = tmp_path / "m.safetensors"
    save_safetensors(src, path, metadata={"epochs": 3, "note": "demo", "val": {"ap": 0.5}})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("head.final_layer.weight").dtype == torch.float16
        assert f.get_tensor("head.oks_layers.1.num_batches_tracked").dtype == torch.int64
    model = load_pretrained(path)
    assert model.config == PROBPOSE_TEST_CONFIG and not model.training
    assert model.backbone.pos_embed.dtype == torch.float32
    assert model.metadata["epochs"] == 3 and model.metadata["val"] == {"ap": 0.5}
    assert model.metadata["kind"] == "probpose" and model.metadata["format"] == "safetensors"
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = src(x), model(x)
    # fp16 keeps ~3 significant digits per weight
    torch.testing.assert_close(b.logits, a.logits, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(b.probmaps, a.probmaps, atol=2e-3, rtol=0)
    for name in ("presence", "visibility", "oks"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=2e-3, rtol=0)


def test_float32_safetensors_is_exact(tmp_path):
    src = vitpose_test().eval()
    path = save_safetensors(src, tmp_path / "hm.safetensors", dtype=None)
    model = load_pretrained(str(path))
    assert isinstance(model, HeatmapPose)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_safetensors(probpose_test(), tmp_path / "x.safetensors", metadata={"arr": np.zeros(2)})


def test_convert_cli(tmp_path):
    src = _sharp(probpose_test()).eval()
    pth = tmp_path / "in.pth"
    torch.save({"meta": _mmengine_meta(), "state_dict": src.state_dict()}, pth)
    dst = tmp_path / "out.safetensors"
    # no config in a .pth: the CLI fails cleanly for a non-official size
    assert weights.main(["convert", str(pth), str(dst)]) == 2 and not dst.exists()
    out = weights.convert_checkpoint(pth, dst, config=PROBPOSE_TEST_CONFIG)
    model = load_pretrained(out)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert model.metadata["converted_from"] == str(pth)
    dst2 = tmp_path / "again.safetensors"
    assert weights.main(["convert", str(out), str(dst2), "--fp16"]) == 0 and dst2.is_file()


# ----------------------------------------------------------------------------------------------- sources, Hub


def _fake_hub_cache(root: Path, payload: Path, rev: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    repo = root / "models--vrg-prague--ProbPose-s"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    target = snap / "ProbPose-s.pth"
    target.write_bytes(payload.read_bytes())
    return target


def test_hub_id_loads_from_local_cache_offline(tmp_path, monkeypatch):
    src = _sharp(probpose_test()).eval()
    pth = tmp_path / "src.pth"
    torch.save({"meta": _mmengine_meta(), "state_dict": src.state_dict()}, pth)
    cache = tmp_path / "hf"
    cached = _fake_hub_cache(cache, pth)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="SHA-256"):  # our random file is not the released one
        model = load_pretrained("vrg-prague/ProbPose-s", cache_dir=cache, config=PROBPOSE_TEST_CONFIG)
    assert Path(model.metadata["path"]) == cached and len(model.metadata["sha256"]) == 64
    assert model.metadata["source"] == "vrg-prague/ProbPose-s"
    converted = cached.with_suffix(".safetensors")
    assert converted.is_file(), "the .pth is converted once to safetensors beside it"
    cached.write_bytes(b"not a pickle any more")  # a second load must use the converted file
    again = load_pretrained("vrg-prague/ProbPose-s", cache_dir=cache, config=PROBPOSE_TEST_CONFIG)
    for k, v in src.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_hub_not_cached_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as e:
        load_pretrained("vrg-prague/ProbPose-s", cache_dir=tmp_path / "empty")
    msg = str(e.value)
    assert "ProbPose-s.pth" in msg and "PROBPOSE_WEIGHTS" in msg and "offline" in msg


def test_source_resolution_env_and_embedded(tmp_path, monkeypatch):
    path = save_safetensors(vitpose_test(), tmp_path / "env.safetensors")
    monkeypatch.setenv("PROBPOSE_WEIGHTS", str(path))
    assert isinstance(load_pretrained(), HeatmapPose)
    monkeypatch.delenv("PROBPOSE_WEIGHTS")
    monkeypatch.setitem(weights.ALIASES, "embedded", tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="embedded weights"):
        load_pretrained()
    monkeypatch.setitem(weights.ALIASES, "embedded", path)
    assert isinstance(load_pretrained("embedded"), HeatmapPose)
    with pytest.raises(CheckpointError, match="neither an existing file"):
        load_pretrained("no such thing")
    with pytest.raises(CheckpointError, match="does not exist|neither"):
        load_pretrained("runs/missing.pth")
    with pytest.raises(CheckpointError, match="directory"):
        load_pretrained(tmp_path)
