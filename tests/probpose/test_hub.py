"""probpose.hub: what is available offline / online, decided quickly, without touching the real network.

The Hub is simulated: a fake Hugging Face cache (conftest ``official_files``), a loopback server that answers, a
closed port, and a server that never answers; SPACE_ID and HF_HUB_OFFLINE set through the environment."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import warnings

import pytest
import torch

from probpose import hub
from probpose.errors import CheckpointError


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *a):
        pass


def _no_probe(*a, **k):
    raise AssertionError("the network must not be probed here")


def test_offline_flag_wins_and_probes_nothing(offline_hub):
    offline_hub.setattr(hub, "_probe", _no_probe)
    offline_hub.setenv("HF_HUB_OFFLINE", "1")
    offline_hub.setenv("SPACE_ID", "someone/space")  # offline beats "on a Space"
    st = hub.hub_status()
    assert not st.online and "HF_HUB_OFFLINE" in st.reason
    plan = hub.default_probpose()
    assert plan.source == "embedded" and not plan.official and "HF_HUB_OFFLINE" in plan.reason
    assert hub.default_baseline().source == "embedded-heatmap"
    with pytest.raises(CheckpointError, match="hf download vrg-prague/ProbPose-s"):
        hub.fetch_official_probpose()
    with pytest.raises(CheckpointError, match="td-hm_ViTPose-small"):
        hub.fetch_vitpose_s()
    offline_hub.delenv("HF_HUB_OFFLINE")
    offline_hub.setenv("PROBPOSE_ONLINE", "0")
    assert not hub.hub_status().online


def test_space_is_online_without_a_probe(offline_hub):
    offline_hub.setattr(hub, "_probe", _no_probe)
    offline_hub.setenv("SPACE_ID", "vrg-prague/probpose-studio")
    assert hub.hub_status().online and hub.openmmlab_status().online
    plan = hub.default_probpose()
    assert (plan.source, plan.official) == ("vrg-prague/ProbPose-s", True)
    base = hub.default_baseline()
    assert (base.source, base.official) == ("vitpose-s", True) and "ViTPose-S" in base.label


def test_unreachable_hub_is_decided_fast_and_remembered(offline_hub):
    t0 = time.perf_counter()
    st = hub.hub_status()
    assert not st.online and "unreachable" in st.reason
    assert time.perf_counter() - t0 < 2.0
    offline_hub.setattr(hub, "_probe", _no_probe)  # the answer is remembered
    assert hub.default_probpose().source == "embedded"


def test_silent_server_is_cut_off_at_the_timeout(offline_hub):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts the connection, never answers
    try:
        offline_hub.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        offline_hub.setenv("PROBPOSE_HUB_TIMEOUT", "0.5")
        t0 = time.perf_counter()
        st = hub.hub_status()
        took = time.perf_counter() - t0
    finally:
        srv.close()
    assert not st.online and took < 1.5, (st, took)


def test_answering_server_means_online(offline_hub):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        offline_hub.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        st = hub.hub_status()
    finally:
        server.shutdown()
    assert st.online and "HTTP 404" in st.reason
    assert hub.default_probpose().source == "vrg-prague/ProbPose-s"


def test_env_weights_override_everything(offline_hub, tmp_path):
    offline_hub.setattr(hub, "_probe", _no_probe)
    offline_hub.setenv("SPACE_ID", "x/y")
    offline_hub.setenv("PROBPOSE_WEIGHTS", str(tmp_path / "mine.safetensors"))
    offline_hub.setenv("PROBPOSE_BASELINE_WEIGHTS", "embedded-heatmap")
    assert hub.default_probpose().source == str(tmp_path / "mine.safetensors")
    assert not hub.default_probpose().official
    assert hub.default_baseline().source == "embedded-heatmap"


def test_cache_layout_is_huggingface_hubs(offline_hub, official_files):
    """The fake cache is read by huggingface_hub's own lookup, and ours agrees with it."""
    from huggingface_hub import try_to_load_from_cache

    offline_hub.setattr(hub, "_probe", _no_probe)
    offline_hub.setenv("HF_HUB_CACHE", str(official_files["hf_cache"]))
    theirs = try_to_load_from_cache("vrg-prague/ProbPose-s", "ProbPose-s.pth", cache_dir=official_files["hf_cache"])
    assert hub.official_probpose_cached() == official_files["probpose"] and str(theirs) == str(
        official_files["probpose"])
    plan = hub.default_probpose()
    assert plan.official and plan.source == str(official_files["probpose"]) and "cache" in plan.reason
    assert hub.fetch_official_probpose() == official_files["probpose"]
    offline_hub.setenv("PROBPOSE_HUB_REVISION", "v2")  # a revision that is not cached
    assert hub.official_probpose_cached() is None
    # HF_HOME is honoured when HF_HUB_CACHE is not set
    offline_hub.delenv("HF_HUB_CACHE")
    offline_hub.setenv("HF_HOME", str(official_files["hf_cache"].parent))
    assert hub.hf_cache_dir() == official_files["hf_cache"]


def test_official_probpose_layout_loads_strictly(offline_hub, official_files):
    from probpose.weights import load_pretrained

    offline_hub.setenv("HF_HUB_CACHE", str(official_files["hf_cache"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our stand-in is not the released file (SHA-256 warning, first load only)
        model = load_pretrained(str(hub.fetch_official_probpose()))
    assert model.kind == "probpose" and model.config.backbone.embed_dim == 384
    # the first load reads the mmengine pickle (its meta kept) and writes a .safetensors beside it for later loads
    assert "models--vrg-prague--ProbPose-s" in model.metadata["path"]
    assert model.metadata.get("meta", {"epoch": 210})["epoch"] == 210


def test_vitpose_s_loads_strictly_and_is_cached_as_safetensors(offline_hub, official_files, tmp_path):
    import shutil

    home = tmp_path / "torch"
    shutil.copytree(official_files["torch_home"], home)
    offline_hub.setenv("TORCH_HOME", str(home))
    offline_hub.setattr(hub, "_probe", _no_probe)
    offline_hub.setenv("HF_HUB_OFFLINE", "1")
    assert hub.vitpose_s_cached() == home / "hub" / "checkpoints" / hub.VITPOSE_S_FILE
    assert hub.default_baseline().source == "vitpose-s" and hub.default_baseline().official
    model = hub.load_vitpose_s()
    ref = torch.load(official_files["vitpose"], weights_only=False)["state_dict"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k].to(v.dtype))
    assert model.kind == "heatmap" and model.metadata["official"]
    conv = hub.vitpose_s_cached().with_suffix(".safetensors")
    assert conv.is_file()  # later loads skip the pickle
    (home / "hub" / "checkpoints" / hub.VITPOSE_S_FILE).unlink()
    again = hub.load_vitpose_s(hub.vitpose_s_cached())
    torch.testing.assert_close(again.state_dict()["head.final_layer.weight"], ref["head.final_layer.weight"].float())


def test_wrong_file_under_the_vitpose_name_is_a_clear_error(offline_hub, tmp_path):
    from probpose.models import vitpose_t

    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / hub.VITPOSE_S_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": vitpose_t().state_dict()}, ckpt)
    offline_hub.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        hub.load_vitpose_s()
