"""The Gradio app launched on loopback, driven through gradio_client: every public endpoint, bad input, and ten
concurrent clients. Tiny random-init checkpoints stand in for the models (the wiring is what is tested here)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"predict", "explore", "redraw", "compare", "compare_redraw", "cropcoco_table", "cropcoco_case",
          "cropcoco_recompute", "calibration_recompute", "sweep_preview", "sweep_recompute", "analysis"}


@pytest.fixture(scope="module")
def photo(coco_val) -> str:
    return str(coco_val[0] / "000000000885.jpg")


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_every_public_endpoint(served, photo):
    from gradio_client import handle_file

    app, url, _ = served
    client = _client(url)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {n.lstrip("/") for n in api} == PUBLIC
    # every output has a name (a label), not Gradio's fallback `value_<id>`
    unnamed = {n: [r["label"] for r in ep["returns"] if r["label"].startswith("value_")] for n, ep in api.items()}
    assert not any(unnamed.values()), unnamed

    data, drawing = client.predict(handle_file(photo), "100,50,300,400", api_name="/predict")
    assert data["people"][0]["box"] == [100, 50, 300, 400] and len(data["people"][0]["keypoints"]) == 17
    assert np.asarray(Image.open(drawing)).shape[1] >= 640

    # ProbPose-DH from a checkpoint file: its kind is detected; merged keypoints carry their map (`source`)
    import torch

    from probpose.models.dual import probpose_test_dh
    from probpose.weights import save_safetensors

    torch.manual_seed(0)
    dh = save_safetensors(probpose_test_dh().eval(), served[2] / "dh.safetensors")
    data, drawing = client.predict(handle_file(photo), "100,50,300,400", app.models.MODEL_CUSTOM, str(dh),
                                   api_name="/predict")
    assert data["model"]["kind"] == "probpose_dh" and set(data["people"][0]["source"]) <= {0, 1}
    assert len(data["people"][0]["wide_window"]) == 4 and Path(drawing).is_file()

    out = client.predict(handle_file(photo), box_mode=app.inputs.BOX_WHOLE, keypoint="left_wrist", api_name="/explore")
    drawing, data, bars, kp, status, path = out
    assert "1 person" in status and json.loads(Path(path).read_text())["people"] == data["people"]
    assert bars["type"] == "plotly" and kp["type"] == "plotly"
    # the session lives in the client's gr.State: redraw re-decodes it
    out = client.predict(threshold=1.0, decoder=app.state.DECODER_ARGMAX, api_name="/redraw")
    assert out[1]["settings"] == {"decoder": "argmax", "presence_threshold": 1.0, "map_temperature": 0.5,
                                  "calibrated_temperature": None}
    assert out[1]["people"][0]["present"] == [p >= 1.0 for p in out[1]["people"][0]["presence"]]

    out = client.predict(handle_file(photo), box_mode=app.inputs.BOX_WHOLE, api_name="/compare")
    assert out[0] is not None and out[1] is not None and len(out[4]["data"]) == 17, out[-1]
    out = client.predict("right_ankle", 0.5, 0, api_name="/compare_redraw")
    assert "baseline" in out[-1]

    state_img, md = client.predict(handle_file(photo), 0.42, box_mode=app.inputs.BOX_WHOLE, api_name="/sweep_preview")
    assert state_img is not None and "0.42" in md

    analysis = client.predict(api_name="/analysis")
    assert len(analysis) == 8 and "No precomputed" in analysis[0]
    info, table = client.predict("probpose", api_name="/cropcoco_table")
    assert "CropCOCO" in info
    drawing, fig, md = client.predict("probpose", 0, api_name="/cropcoco_case")
    assert "No cases" in md
    for name, n in (("/calibration_recompute", 4), ("/sweep_recompute", 2)):
        assert len(client.predict(api_name=name)) == n
    assert len(client.predict("probpose", api_name="/cropcoco_recompute")) == 2


def test_bad_upload_and_bad_checkpoint_keep_serving(served, photo):
    from gradio_client import handle_file

    _, url, tmp = served
    client = _client(url)
    bad = tmp / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    data, drawing = client.predict(handle_file(str(bad)), api_name="/predict")
    assert "broken.png" in data["error"] and drawing is None
    not_ckpt = tmp / "model.safetensors"
    not_ckpt.write_bytes(b"nope")
    from studio.models import MODEL_CUSTOM

    data, drawing = client.predict(handle_file(photo), model_choice=MODEL_CUSTOM, model_path=str(not_ckpt),
                                   api_name="/predict")
    assert "error" in data and drawing is None
    data, drawing = client.predict(handle_file(photo), "100,50,300,400", api_name="/predict")
    assert "people" in data and drawing is not None


def test_ten_concurrent_clients(served, photo):
    from gradio_client import handle_file

    _, url, _ = served

    def one(i: int):
        data, drawing = _client(url).predict(handle_file(photo), f"{20 + i},40,{320 + i},400", api_name="/predict")
        return data, drawing

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    for i, (data, drawing) in enumerate(results):
        assert "error" not in data, data
        assert data["people"][0]["box"][0] == 20 + i and Path(drawing).is_file()
