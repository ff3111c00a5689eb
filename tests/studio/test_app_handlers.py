"""The app's handlers as plain functions: tiny random-init models (saved as real checkpoints), real COCO photos."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import studio
from probpose.constants import KEYPOINT_NAMES
from studio import (
    calibration,
    compare,
    cropcoco,
    examples,
    explore,
    figures,
    inputs,
    models,
    settings,
    state,
    sweep,
)


@pytest.fixture(scope="module")
def photo(coco_val) -> str:
    return str(coco_val[0] / "000000000885.jpg")


def _count_forwards(spec: models.ModelSpec) -> list[int]:
    calls = [0]
    models.get_model(spec).register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_explore_redraw_reuses_cached_network_outputs(studio_env, photo):
    calls = _count_forwards(models.model_spec(models.MODEL_EMBEDDED))
    session, drawing, data, bars, kp, status, path = explore.explore_run(photo, inputs.BOX_WHOLE)
    assert calls[0] > 0 and isinstance(session, state.ExploreSession)
    ran = calls[0]
    assert drawing.ndim == 3 and drawing.shape[0] >= 427 and drawing.shape[1] >= 640  # padded canvas >= image
    assert len(data["people"]) == 1 and len(data["people"][0]["keypoints"]) == 17
    assert json.loads(Path(path).read_text())["people"] == data["people"]
    assert "1 person" in status
    for decoder in state.DECODER_CHOICES:
        for thr in (0.0, 0.5, 1.0):
            out = explore.explore_redraw(session, decoder, thr, 0.5, "left_wrist", 0, True)
            present = out[1]["people"][0]["present"]
            presence = out[1]["people"][0]["presence"]
            assert present == [p >= thr for p in presence]
            assert out[1]["settings"]["decoder"] == state.DECODER_KEYS[decoder]
    assert calls[0] == ran, "sliders / decoder / keypoint must re-decode without the network"
    # the two decoders give different keypoints for a random model's spread-out maps
    a = explore.explore_redraw(session, state.DECODER_EOKS)[1]["people"][0]["keypoints"]
    b = explore.explore_redraw(session, state.DECODER_ARGMAX)[1]["people"][0]["keypoints"]
    assert a != b


def test_keypoint_figure_panels(studio_env, photo):
    session = explore.explore_run(photo, inputs.BOX_WHOLE)[0]
    result = state.decode_session(session)
    fig = figures.keypoint_figure(session.image, result.people[0], 9, 0.9)
    names = {t.name for t in fig.data if t.name}
    assert {"argmax", "expected-OKS"} <= names
    assert len(fig.layout.annotations) >= 4  # three panel titles + the disagreement note


def test_predict_typed_boxes_and_json(studio_env, photo):
    data, drawing = explore.predict(photo, "100, 50, 300, 400\n350,60,500,420")
    assert [p["box"] for p in data["people"]] == [[100, 50, 300, 400], [350, 60, 500, 420]]
    assert data["model"]["kind"] == "probpose" and drawing.dtype == np.uint8


def test_automatic_boxes_say_nobody_and_whole_image_is_explicit(studio_env):
    flat = np.full((200, 160, 3), 127, np.uint8)  # nobody here
    session, drawing, data, *_ = explore.explore_run(flat)
    assert session is None and drawing is None and "No person found" in data["error"]
    session = explore.explore_run(flat, inputs.BOX_WHOLE)[0]  # the fallback, when asked for
    assert session.box_source == "whole"


def _png_bytes(arr, mode=None, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    im.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["rgba", "gray", "16bit", "cmyk"])
def test_unusual_image_modes_run(studio_env, tmp_path, kind):
    rng = np.random.default_rng(0)
    path = tmp_path / f"{kind}.png"
    if kind == "rgba":
        path.write_bytes(_png_bytes(rng.integers(0, 255, (120, 90, 4), dtype=np.uint8)))
    elif kind == "gray":
        path.write_bytes(_png_bytes(rng.integers(0, 255, (120, 90), dtype=np.uint8)))
    elif kind == "16bit":
        Image.fromarray(rng.integers(0, 65535, (120, 90), dtype=np.uint16)).save(path)
    else:
        path = tmp_path / "cmyk.jpg"
        Image.new("CMYK", (90, 120), (10, 200, 30, 0)).save(path)
    session, drawing, data, *_rest, status, _ = explore.explore_run(str(path), inputs.BOX_WHOLE)
    assert session is not None, status
    assert session.image.shape == (120, 90, 3) and drawing is not None


def test_bad_inputs_give_messages_not_exceptions(studio_env, tmp_path, photo):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 6000)).save(huge)  # 54 Mpx > the cap, tiny on disk
    not_ckpt = tmp_path / "weights.pth"
    not_ckpt.write_bytes(b"definitely not a checkpoint")
    cases = [
        (dict(payload=str(corrupt)), "corrupt.jpg"),  # the message names the file
        (dict(payload=str(empty)), "empty"),
        (dict(payload=str(huge)), "pixels"),
        (dict(payload=None), "No image"),
        (dict(payload=photo, box_mode=inputs.BOX_TYPED, boxes_text="5000,5000,6000,6000"), "outside"),
        (dict(payload=photo, box_mode=inputs.BOX_TYPED, boxes_text="1,2,three,4"), "four numbers"),
        (dict(payload=photo, box_mode=inputs.BOX_TYPED, boxes_text=""), "No boxes"),
        (dict(payload=photo, model_choice=models.MODEL_CUSTOM, model_path=str(not_ckpt)), "checkpoint"),
        (dict(payload=photo, model_choice=models.MODEL_CUSTOM, model_path=""), "path"),
    ]
    for kwargs, needle in cases:
        with pytest.warns(UserWarning):  # gr.Warning outside a request
            session, drawing, data, *_rest, status, path = explore.explore_run(**kwargs)
        assert session is None and drawing is None and path is None
        assert needle.lower() in status.lower(), (kwargs, status)
        assert needle.lower() in data["error"].lower()
    # and the app still serves
    assert explore.explore_run(photo, inputs.BOX_WHOLE)[0] is not None


def test_gradio_payloads_are_read_by_our_loader(studio_env, photo):
    # preprocess=False hands the raw FileData dict to the handler
    session = explore.explore_run({"path": photo, "orig_name": "x.jpg", "meta": {"_type": "gradio.FileData"}},
                            inputs.BOX_WHOLE)[0]
    assert session.image.shape == (427, 640, 3)


def test_big_image_is_downscaled(studio_env, monkeypatch):
    monkeypatch.setattr(settings, "MAX_SIDE", 300)
    image, notes = inputs.load_input_image(np.zeros((600, 400, 3), np.uint8))
    assert image.shape == (300, 200, 3) and any("downscaled" in n for n in notes)


def test_parse_boxes_and_click_corners():
    boxes = inputs.parse_boxes("[10, 20, 110, 220]\n300 400 250 350; -50,-50,40,60", (320, 480))
    np.testing.assert_allclose(boxes, [[10, 20, 110, 220], [250, 350, 300, 400], [-50, -50, 40, 60]])  # unclipped
    pending, text, mode, _ = inputs.add_box_corner(None, "", (50, 60))
    assert pending == [50, 60] and text == "" and mode == inputs.BOX_TYPED
    pending, text, _, hint = inputs.add_box_corner(pending, text, (10, 200))
    assert pending is None and text == "10,60,50,200" and "added" in hint
    _, text, _, _ = inputs.add_box_corner(*inputs.add_box_corner(None, text, (1, 1))[:2], (30, 30))
    assert text.splitlines() == ["10,60,50,200", "1,1,30,30"]


def test_compare_same_crops_and_cached_redraw(studio_env, photo):
    pp_calls = _count_forwards(models.model_spec(models.MODEL_EMBEDDED))
    hm_calls = _count_forwards(models.baseline_spec())
    state, pp_img, hm_img, maps, scores, rows, status = compare.compare_run(photo, inputs.BOX_TYPED, "100,50,300,400")
    assert state is not None, status
    np.testing.assert_allclose(state[0].outputs.centers, state[1].outputs.centers)
    assert len(rows) == 17 and rows[0][0] == "nose" and "baseline" in status
    ran = (pp_calls[0], hm_calls[0])
    out = compare.compare_redraw(state, "right_knee", 0.6, 0)
    assert out[0] is not None and (pp_calls[0], hm_calls[0]) == ran
    assert "right knee" in out[2].layout.annotations[0].text


def test_sweep_preview_runs_once_per_image(studio_env, photo):
    calls = _count_forwards(models.model_spec(models.MODEL_EMBEDDED))
    whole = dict(box_mode=inputs.BOX_WHOLE)
    state, drawing, md = sweep.sweep_preview(None, photo, 0.3, **whole)
    ran = calls[0]
    state, drawing2, md2 = sweep.sweep_preview(state, photo, 0.9, **whole)
    assert calls[0] == ran and "0.90" in md2 and drawing2 is not None


def test_analysis_views_from_precomputed_json(studio_env, tmp_path):
    pre = settings.PRECOMPUTED_DIR
    # nothing there yet: the tabs say so instead of failing
    info, table = cropcoco.cropcoco_table()
    assert "No precomputed" in info and table["data"] == []
    assert "No precomputed" in calibration.calibration_views()[0]
    pre.mkdir(parents=True)
    q = np.linspace(0.05, 1, 20).tolist()
    (pre / "calibration.json").write_text(json.dumps({
        "maps": {"temperature": 0.7, "before": {"nominal": q, "observed": q[::-1], "ece": 0.2},
                 "after": {"nominal": q, "observed": q, "ece": 0.01}},
        "presence": {"before": {"confidence": q, "frequency": q, "ece": 0.05}}}))
    info, maps_fig, pres_fig, table = calibration.calibration_views()
    assert table["data"][0] == ["maps", 0.2, 0.01, 0.7, "optimum"]
    assert len(maps_fig.data) == 3 and "ECE 0.010" in maps_fig.data[2].name
    thr = np.linspace(0, 1, 11).tolist()
    (pre / "sweep.json").write_text(json.dumps({"thresholds": thr, "models": {
        "probpose": {"mAP": thr, "Ex-mAP": [1 - abs(t - 0.3) for t in thr], "presence_error": thr},
        "baseline": {"mAP": thr, "Ex-mAP": thr, "presence_error": thr}}}))
    info, fig = sweep.sweep_views()
    stars = [t for t in fig.data if t.mode == "markers+text"]
    assert "0.30" in [s.text[0] for s in stars]


def test_tab_query_and_gpu_shim():
    assert examples.tab_from_query({"tab": "Calibration"}) == "calibration"
    assert examples.tab_from_query({"tab": "nope"}) == "explore" and examples.tab_from_query(None) == "explore"

    def f(x):
        return x + 1

    if studio.spaces is None:
        assert state.gpu(f) is f and state.gpu(duration=5)(f) is f
    assert state.device() in ("cpu", "cuda")
    assert inputs.keypoint_index("left wrist") == KEYPOINT_NAMES.index("left_wrist") == inputs.keypoint_index(9)


def test_views_read_the_analysis_metrics_format(studio_env):
    levels = [0.25, 0.5, 0.75, 1.0]
    metrics = {"model": "m", "kind": "probpose",
               "calibration": {"maps": {"temperature_fitted": 0.8,
                                        "coverage_before": {"levels": levels, "hit_rate": [0.1, 0.3, 0.6, 1.0]},
                                        "coverage_after": {"levels": levels, "hit_rate": levels},
                                        "coverage_ece_before": 0.12, "coverage_ece_after": 0.0}},
               "sweep": {"thresholds": [0.1, 0.3, 0.5], "ap": [0.5, 0.6, 0.4], "ex_ap": [0.4, 0.5, 0.3],
                         "presence_error": [0.3, 0.2, None]}}
    folder = settings.PRECOMPUTED_DIR / "probpose"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    info, maps_fig, _, table = calibration.calibration_views()
    assert table["data"] == [["maps", 0.12, 0.0, 0.8, "optimum"]] and len(maps_fig.data) == 3
    _, fig = sweep.sweep_views()
    assert [t.text[0] for t in fig.data if t.mode == "markers+text"] == ["0.30", "0.30", "0.30"]


# ---------------------------------------------------------------------------------------------- ProbPose-DH


@pytest.fixture(scope="module")
def tiny_dh(tmp_path_factory):
    import torch

    from probpose.models.dual import probpose_test_dh
    from probpose.weights import save_safetensors

    torch.manual_seed(0)
    return save_safetensors(probpose_test_dh().eval(), tmp_path_factory.mktemp("dh") / "dh.safetensors")


def test_dual_model_explore_redraw_and_keypoint_panel(studio_env, tiny_dh, photo):
    from probpose.draw import padded_canvas, pose_windows

    calls = _count_forwards(models.model_spec(models.MODEL_CUSTOM, str(tiny_dh)))
    session, drawing, data, bars, kp, status, path = explore.explore_run(
        photo, inputs.BOX_TYPED, "100,50,300,400", models.MODEL_CUSTOM, str(tiny_dh), keypoint="left_wrist", calibrated=True)
    assert session is not None and session.kind == "probpose_dh", status
    ran = calls[0]
    person = state.decode_session(session).people[0]
    # the canvas fits the wide window (dashed cyan) as well as the activation window
    assert drawing.shape == padded_canvas(session.image, pose_windows([person]))[0].shape
    assert drawing.shape[0] > padded_canvas(session.image, [person.window])[0].shape[0]
    source = data["people"][0]["source"]
    assert len(source) == 17 and set(source) <= {0, 1} and 1 in source  # this random model takes some from wide
    assert json.loads(Path(path).read_text())["people"][0]["source"] == source
    assert "source per keypoint" in status and "".join(map(str, source)) in status
    assert "wide window" in bars.data[0].name
    # both maps, each map's decode, and which one the merge kept for the selected keypoint
    k = KEYPOINT_NAMES.index("left_wrist")
    which = ("expert", "wide")[source[k]]
    names = {t.name for t in kp.data if t.name}
    assert {"decode (expert)", "decode (wide)", "argmax (expert)", "argmax (wide)", "merged keypoint"} <= names
    texts = [a.text for a in kp.layout.annotations]
    assert f"{which} map of left wrist (merge's choice)" in texts
    assert any(t.startswith(f"merge chose the {which} map") for t in texts) and f"the {which} map" in status
    # pictures travel as JPEG images (3 per map row), not as number lists (H13: redraw payload)
    pictures = [t for t in kp.data if t.type == "image"]
    assert len(pictures) == 6 and all(t.source.startswith("data:image/jpeg;base64,") for t in pictures)
    assert not [t for t in kp.data if t.type == "heatmap"]
    # calibrated temperature: raw DH maps have none; explained, never raised
    for decoder in state.DECODER_CHOICES:
        out = explore.explore_redraw(session, decoder, 0.4, 0.9, "nose", 0, True)
        assert out[0] is not None and "error" not in out[1] and "ignored" in out[4]
        assert out[1]["settings"]["calibrated_temperature"] is None and len(out[1]["people"][0]["source"]) == 17
    assert calls[0] == ran


def test_dual_embedded_choice(studio_env, tiny_dh, photo, monkeypatch, tmp_path):
    from probpose import weights

    monkeypatch.setitem(weights.ALIASES, "embedded-dh", tmp_path / "absent.safetensors")
    with pytest.warns(UserWarning):
        session, drawing, data, *_rest, status, _ = explore.explore_run(photo, inputs.BOX_WHOLE, "", models.MODEL_DH)
    assert session is None and drawing is None and "ProbPose-DH" in data["error"] and "ProbPose-DH" in status
    monkeypatch.setitem(weights.ALIASES, "embedded-dh", tiny_dh)
    data, drawing = explore.predict(photo, "100,50,300,400", models.MODEL_DH)
    assert data["model"]["kind"] == "probpose_dh" and len(data["people"][0]["wide_keypoints"]) == 17
    assert drawing is not None


def test_compare_with_dual_model(studio_env, tiny_dh, photo):
    state, pp_img, hm_img, maps, scores, rows, status = compare.compare_run(
        photo, inputs.BOX_TYPED, "100,50,300,400", models.MODEL_CUSTOM, str(tiny_dh), "left_wrist")
    assert state is not None and state[0].kind == "probpose_dh", status
    assert pp_img.shape[0] > hm_img.shape[0]  # the wide window needs a bigger canvas than the baseline's
    assert "ProbPose-DH" in maps.layout.annotations[0].text and "wide window" in scores.data[0].name
    assert "wide map" in status and any("outside the activation window" in r[3] for r in rows)
    out = compare.compare_redraw(state, "nose", 0.6, 0)
    assert out[0] is not None and len(out[4]) == 17


def test_redraw_sends_pictures_as_images_and_skips_unchanged_figures(studio_env, photo):
    """H13: the keypoint panel carries JPEG images (not number lists) and a redraw re-sends a figure only when it
    changed (Gradio has no partial figure update)."""
    import gradio as gr

    session, drawing, data, bars, kp, status, path = explore.explore_run(photo, inputs.BOX_WHOLE,
                                                                         keypoint="left_wrist")
    assert len(kp.to_json()) < 250_000 and not [t for t in kp.data if t.type == "heatmap"]
    assert all(t.source.startswith("data:image/jpeg;base64,") for t in kp.data if t.type == "image")
    skip = gr.skip()
    same_kp = explore.explore_redraw(session, state.DECODER_EOKS, 0.9, settings.DEFAULT_MASS, "left_wrist", 0, True)
    assert same_kp[3] == skip and same_kp[2] != skip  # threshold moved: bars change, the keypoint panel does not
    assert same_kp[1] != skip and same_kp[5].endswith(".json")  # ... and the keypoints JSON (present flags)
    assert same_kp[1]["settings"]["presence_threshold"] == 0.9
    other = explore.explore_redraw(session, state.DECODER_EOKS, 0.9, settings.DEFAULT_MASS, "right_knee", 0, True)
    assert other[3] != skip and other[2] == skip
    assert other[1] == skip and other[5] == skip  # another keypoint: the JSON and its file are not re-sent
    assert "right knee" in " ".join(a.text for a in other[3].layout.annotations)
